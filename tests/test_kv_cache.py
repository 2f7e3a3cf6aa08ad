"""The compressed and budgeted KV cache through the CLI: perplexity scored
decode-style on a real model with KL against the f16 cache, bench at a
depth, and bad options rejected with a clear message."""
import re

import pytest

from conftest import THREADS, run_frugal

TEXT = "/usr/share/common-licenses/GPL-3"


def perplexity(model, *args):
    out = run_frugal("perplexity", "-m", model, "-f", TEXT, "-c", 512, "--chunks", 2, "-t", THREADS, *args)
    text = out.stdout.decode()
    r = {"ppl": float(re.search(r"PPL = ([0-9.]+)", text).group(1)),
         "kv_mib": float(re.search(r"KV cache: \S+, peak ([0-9.]+) MiB", text).group(1))}
    kl = re.search(r"KL divergence from .*: ([0-9.]+) .*top-1 agreement ([0-9.]+)%", text)
    if kl:
        r["kl"], r["top1"] = float(kl.group(1)), float(kl.group(2))
    return r


@pytest.fixture(scope="module")
def base(smollm2, tmp_path_factory):
    path = tmp_path_factory.mktemp("kv") / "f16.npy"
    r = perplexity(smollm2, "--logits-out", path)
    return r, path


def test_f16_against_itself_is_exact(smollm2, base):
    r0, path = base
    r = perplexity(smollm2, "--kl-base", path)
    assert r["ppl"] == r0["ppl"] and r["kl"] < 1e-9 and r["top1"] == 100.0


# (type, max PPL increase, max KL, max KV memory vs f16): measured on this
# text 2026-11-26: q8 -0.0 %, KL 0.004; kivi4 +0.8 %, KL 0.012; kivi2
# +29 %, KL 0.30 (2-bit keys hurt this small model; docs/kv-cache.md)
@pytest.mark.parametrize("kind, dppl, kl, mem", [
    ("q8", 0.01, 0.01, 0.60),
    ("kivi4", 0.03, 0.03, 0.40),
    ("kivi2", 0.40, 0.50, 0.30),
])
def test_compressed_cache_quality_and_memory(smollm2, base, kind, dppl, kl, mem):
    r0, path = base
    r = perplexity(smollm2, "--kv-type", kind, "--kl-base", path)
    assert abs(r["ppl"] / r0["ppl"] - 1) < dppl, r
    assert 0 < r["kl"] < kl, r
    assert r["kv_mib"] < mem * r0["kv_mib"], r


@pytest.mark.parametrize("policy", ["window", "scissorhands"])
def test_budgeted_cache_holds_the_budget(smollm2, base, policy):
    r0, path = base
    r = perplexity(smollm2, "--kv-budget", 128, "--kv-policy", policy, "--kl-base", path)
    # 128 of up to 511 tokens kept: some loss, but the model still reads the text
    assert r0["ppl"] < r["ppl"] < 2 * r0["ppl"], r
    assert r["kv_mib"] < 0.5 * r0["kv_mib"], r


def test_bench_at_depth_reports_the_cache(smollm2):
    out = run_frugal("bench", "-m", smollm2, "-p", 0, "-n", 4, "-r", 1, "-t", THREADS, "-d", 300,
                     "--kv-type", "kivi4", "--no-probe").stdout.decode()
    assert "| kivi4 | tg4 @ d300 |" in out
    assert re.search(r"KV cache at depth 300: [0-9.]+ MiB", out)


def test_generation_with_a_budget_runs_past_the_context(smollm2):
    # with a budget the default position limit is 2^20 (memory follows the
    # budget); a 64-token budget is far below the 130 tokens held at the end
    out = run_frugal("run", "-m", smollm2, "-p", "Count: 1, 2, 3,", "--raw", "-n", 120, "--temp", 0,
                     "-t", THREADS, "--kv-budget", 64, "--kv-type", "q8")
    assert b"context full" not in out.stderr
    assert b"generated 120 tokens" in out.stderr


@pytest.mark.parametrize("cmd", ["run", "perplexity", "bench"])
@pytest.mark.parametrize("args, msg", [
    (["--kv-type", "int3"], b"unknown value 'int3' for --kv-type"),
    (["--kv-budget", "10"], b"--kv-budget expects an integer in 64.."),
    (["--kv-policy", "lru"], b"unknown value 'lru' for --kv-policy"),
    (["--kv-residual", "40"], b"--kv-residual must be a multiple of 32"),
])
def test_bad_kv_options_are_rejected(smollm2, cmd, args, msg):
    proc = run_frugal(cmd, "-m", smollm2, "-f" if cmd == "perplexity" else "-p", TEXT if cmd == "perplexity" else "hi",
                      *args, check=False) if cmd != "bench" else run_frugal(cmd, "-m", smollm2, *args, check=False)
    assert proc.returncode == 2, proc.stderr
    assert msg in proc.stderr
