"""Teacher-forced logit conformance with llama.cpp on Gemma 3 270M.

Windows of 1024 tokens, scoring their second half, so every scored
position lies beyond the 512-token sliding window of the local layers
(their ring-buffer KV cache is exercised, not just causal attention).
Criteria as for SmolLM2 (see test_logits.py for why top-1 is checked
against the noise floor rather than 99 %): mean KL <= 0.01, perplexity
within 1 %, top-1 >= 95 %. The vocabulary is 262,144 wide, so the logits
(2 GB) are compared window by window from a memory-mapped file.
"""
import pathlib
import re

import numpy as np

from conftest import ROOT, THREADS, run_frugal
from test_logits import log_softmax

CTX = 1024
FIRST = CTX // 2
CHUNKS = 4
TEXT = pathlib.Path("/usr/share/common-licenses/GPL-3")


def test_gemma_logits_match_llama_cpp(gemma3, tmp_path):
    from llama_cpp import Llama
    lo, to = tmp_path / "logits.npy", tmp_path / "tokens.npy"
    out = run_frugal("perplexity", "-m", gemma3, "-f", TEXT, "-c", CTX, "--chunks", CHUNKS, "-t", THREADS,
                     "--logits-out", lo, "--tokens-out", to).stdout.decode()
    printed_ppl = float(re.search(r"PPL = ([0-9.]+)", out).group(1))
    ours_all = np.load(lo, mmap_mode="r")
    windows = np.load(to)
    ref = Llama(model_path=str(gemma3), n_ctx=CTX, n_batch=CTX, n_ubatch=CTX, logits_all=True,
                n_threads=THREADS, verbose=False)
    agree = kl_sum = nll_ref = nll_ours = 0.0
    n = 0
    per = CTX - 1 - FIRST
    for w, win in enumerate(windows):
        ref.reset()
        ref.eval([int(t) for t in win])
        theirs = np.array(ref.scores[FIRST:CTX - 1], dtype=np.float32)
        ours = np.asarray(ours_all[w * per:(w + 1) * per])
        targets = win[FIRST + 1:CTX]
        lp_o, lp_r = log_softmax(ours), log_softmax(theirs)
        agree += float(np.sum(ours.argmax(-1) == theirs.argmax(-1)))
        kl_sum += float(np.sum(np.exp(lp_r) * (lp_r - lp_o)))
        idx = np.arange(per)
        nll_ref -= float(lp_r[idx, targets].sum())
        nll_ours -= float(lp_o[idx, targets].sum())
        n += per
    top1, kl = agree / n, kl_sum / n
    ppl_ref, ppl_ours = np.exp(nll_ref / n), np.exp(nll_ours / n)
    line = (f"gemma3 gpl3: {n} positions (all beyond the sliding window), top-1 {top1:.4f}, KL mean {kl:.5f}, "
            f"PPL llama.cpp {ppl_ref:.4f} frugal {ppl_ours:.4f}")
    (ROOT / "build" / "conformance-gemma3.txt").write_text(line + "\n")
    print(line)
    assert n >= 2000
    assert abs(printed_ppl / ppl_ours - 1) < 1e-3
    assert kl <= 0.01, line
    assert abs(ppl_ours / ppl_ref - 1) <= 0.01, line
    assert top1 >= 0.95, line
