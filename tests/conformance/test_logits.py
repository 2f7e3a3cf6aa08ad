"""Teacher-forced logit conformance with llama.cpp on the real model.

Both engines evaluate exactly the same token windows (frugal writes them
with --tokens-out); we compare the logits of every scored position:
mean KL(llama.cpp || frugal) <= 0.01, the perplexity of each text within
1 % of llama.cpp's on the same positions, and top-1 agreement.

On top-1: activations are quantized to 8 bits before every matmul (as
llama.cpp does), and that rounding amplifies any float difference, even a
different summation order, into logit noise of about 0.15 on this model.
Our own AVX2 and AVX-512 kernels, which differ only in summation order
(1e-6 relative), agree on top-1 at only ~96 % and KL ~0.004. And llama.cpp
itself agrees with the model computed without that rounding (the float
reference in reference_model.py) at only ~97 %. So the tests check that
llama.cpp and frugal agree at least as well as frugal agrees with itself
across kernel levels (the noise floor), that frugal is as close to the
unrounded model as llama.cpp is, and top-1 >= 95 %.

Texts: two licence texts every Debian system ships (English prose) and a
Python standard-library module (code).
"""
import argparse
import pathlib
import re

import numpy as np
import pytest

from conftest import ROOT, THREADS, run_frugal

CTX = 512
FIRST = CTX // 2
TEXTS = [
    ("gpl3", pathlib.Path("/usr/share/common-licenses/GPL-3"), 4),
    ("apache2", pathlib.Path("/usr/share/common-licenses/Apache-2.0"), 2),
    ("python", pathlib.Path(argparse.__file__), 3),
]


def log_softmax(x):
    x = x.astype(np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


@pytest.fixture(scope="module")
def comparison(smollm2, tmp_path_factory):
    from llama_cpp import Llama
    ref = Llama(model_path=str(smollm2), n_ctx=CTX, n_batch=CTX, n_ubatch=CTX, logits_all=True,
                n_threads=THREADS, verbose=False)
    tmp = tmp_path_factory.mktemp("logits")
    results = {}
    for name, path, chunks in TEXTS:
        assert path.exists(), f"{path} is missing"
        lo, to = tmp / f"{name}.logits.npy", tmp / f"{name}.tokens.npy"
        out = run_frugal("perplexity", "-m", smollm2, "-f", path, "-c", CTX, "--chunks", chunks,
                         "-t", THREADS, "--logits-out", lo, "--tokens-out", to).stdout.decode()
        ppl = float(re.search(r"PPL = ([0-9.]+)", out).group(1))
        ours = np.load(lo)
        windows = np.load(to)
        refs, targets = [], []
        for w in windows:
            ref.reset()
            ref.eval([int(t) for t in w])
            refs.append(np.array(ref.scores[FIRST:CTX - 1], dtype=np.float32))
            targets.append(w[FIRST + 1:CTX])
        results[name] = (ours, np.concatenate(refs), np.concatenate(targets), ppl, windows)
    return results


class Tally:
    """Running top-1 agreement and mean KL(a || b) of logit pairs."""

    def __init__(self):
        self.agree = self.kl = 0.0
        self.n = 0

    def add(self, a, b):
        la, lb = log_softmax(a), log_softmax(b)
        self.agree += float(np.sum(a.argmax(-1) == b.argmax(-1)))
        self.kl += float(np.sum(np.exp(la) * (la - lb)))
        self.n += len(a)

    def top1(self):
        return self.agree / self.n

    def mean_kl(self):
        return self.kl / self.n


def check_as_close_to_the_model(ours, theirs):
    """frugal is as close to the unrounded model as llama.cpp is: top-1
    within 1.5 points of llama.cpp's, KL at most 1.2x llama.cpp's + 0.0005.
    Returns the line that reports both."""
    line = (f"vs the float reference: llama.cpp top-1 {theirs.top1():.4f} KL {theirs.mean_kl():.5f}, "
            f"frugal top-1 {ours.top1():.4f} KL {ours.mean_kl():.5f}")
    assert ours.top1() >= theirs.top1() - 0.015, line
    assert ours.mean_kl() <= 1.2 * theirs.mean_kl() + 0.0005, line
    return line


def metrics(ours, ref, targets):
    lp_ours, lp_ref = log_softmax(ours), log_softmax(ref)
    top1 = float(np.mean(ours.argmax(-1) == ref.argmax(-1)))
    kl = np.sum(np.exp(lp_ref) * (lp_ref - lp_ours), axis=-1)
    idx = np.arange(len(targets))
    ppl_ref = float(np.exp(-lp_ref[idx, targets].mean()))
    ppl_ours = float(np.exp(-lp_ours[idx, targets].mean()))
    return top1, float(kl.mean()), float(kl.max()), ppl_ref, ppl_ours


def test_enough_positions(comparison):
    total = sum(len(r[0]) for r in comparison.values())
    assert total >= 2000, total


def test_top1_and_kl(comparison):
    lines, ours_all, ref_all, tg_all = [], [], [], []
    for name, (ours, ref, targets, _, _) in comparison.items():
        assert ours.shape == ref.shape
        top1, kl, klmax, pr, po = metrics(ours, ref, targets)
        lines.append(f"{name}: {len(ours)} positions, top-1 {top1:.4f}, KL mean {kl:.5f} max {klmax:.4f}, "
                     f"PPL llama.cpp {pr:.4f} frugal {po:.4f}")
        ours_all.append(ours), ref_all.append(ref), tg_all.append(targets)
    top1, kl, klmax, pr, po = metrics(np.concatenate(ours_all), np.concatenate(ref_all), np.concatenate(tg_all))
    lines.append(f"all: top-1 {top1:.4f}, KL mean {kl:.5f} max {klmax:.4f}")
    (ROOT / "build" / "conformance-smollm2.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    assert top1 >= 0.95, lines
    assert kl <= 0.01, lines


def test_agreement_is_at_the_noise_floor(smollm2, comparison, tmp_path):
    """llama.cpp vs frugal is no further apart than frugal's AVX2 kernels
    vs its AVX-512 kernels on the same windows."""
    import os
    import subprocess
    from conftest import FRUGAL
    if " avx512vnni " not in " " + pathlib.Path("/proc/cpuinfo").read_text().replace("avx512_vnni", "avx512vnni") + " ":
        pytest.skip("needs a CPU with AVX-512 VNNI for two kernel levels to compare")
    name, path, chunks = TEXTS[0]
    outs = {}
    for isa in ("avx2", "avx512"):
        lo = tmp_path / f"{isa}.npy"
        env = dict(os.environ, FRUGAL_ISA=isa)
        subprocess.run([str(FRUGAL), "perplexity", "-m", str(smollm2), "-f", str(path), "-c", str(CTX),
                        "--chunks", str(chunks), "-t", str(THREADS), "--logits-out", str(lo)],
                       env=env, check=True, capture_output=True)
        outs[isa] = np.load(lo)
    ours, ref, targets, _, _ = comparison[name]
    floor_top1, floor_kl, _, _, _ = metrics(outs["avx2"], outs["avx512"], targets)
    top1, kl, _, _, _ = metrics(ours, ref, targets)
    print(f"noise floor: top-1 {floor_top1:.4f} KL {floor_kl:.5f}; llama.cpp: top-1 {top1:.4f} KL {kl:.5f}")
    assert kl <= 1.5 * floor_kl + 0.001, (kl, floor_kl)
    assert top1 >= floor_top1 - 0.02, (top1, floor_top1)


def test_perplexity_within_one_percent(comparison):
    for name, (ours, ref, targets, printed, _) in comparison.items():
        _, _, _, ppl_ref, ppl_ours = metrics(ours, ref, targets)
        assert abs(printed / ppl_ours - 1) < 1e-3, (name, printed, ppl_ours)  # printed = its own logits
        assert abs(ppl_ours / ppl_ref - 1) <= 0.01, (name, ppl_ours, ppl_ref)


def test_as_close_to_the_model_as_llama_cpp(smollm2, comparison):
    """Both engines against the model computed without 8-bit activations
    (reference_model.py), on the same windows and positions."""
    from reference_model import ReferenceModel
    model = ReferenceModel(smollm2)
    ours_t, theirs_t = Tally(), Tally()
    for name, (ours, ref, _, _, windows) in comparison.items():
        exact = np.concatenate([model.logits(w, FIRST)[:CTX - 1 - FIRST] for w in windows])
        ours_t.add(exact, ours)
        theirs_t.add(exact, ref)
    line = check_as_close_to_the_model(ours_t, theirs_t)
    with open(ROOT / "build" / "conformance-smollm2.txt", "a") as f:
        f.write(line + "\n")
    print(line)
