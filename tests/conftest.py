"""Shared fixtures for the Python tests: paths to the built tool and the
model, and llama.cpp (llama-cpp-python) as the reference engine."""
import os
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
FRUGAL = ROOT / "build" / "frugal"
MODELS = pathlib.Path(os.environ.get("FRUGAL_MODELS", pathlib.Path.home() / ".cache/frugal/models"))
SMOLLM2 = MODELS / "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA3 = MODELS / "gemma-3-270m-Q4_K_M.gguf"
THREADS = 2


def run_frugal(*args, input=None, check=True, timeout=600):
    """Runs build/frugal with args; returns the CompletedProcess (text)."""
    proc = subprocess.run([str(FRUGAL), *map(str, args)], input=input, capture_output=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"frugal {' '.join(map(str, args))} failed ({proc.returncode}):\n"
                             f"{proc.stderr.decode(errors='replace')}")
    return proc


@pytest.fixture(scope="session")
def smollm2():
    assert FRUGAL.exists(), "build/frugal is missing: run make"
    assert SMOLLM2.exists(), "model missing: run scripts/fetch-model smollm2-135m"
    return SMOLLM2


@pytest.fixture(scope="session")
def llama_vocab(smollm2):
    from llama_cpp import Llama
    return Llama(model_path=str(smollm2), vocab_only=True, verbose=False)


@pytest.fixture(scope="session")
def gemma3():
    assert FRUGAL.exists(), "build/frugal is missing: run make"
    assert GEMMA3.exists(), "model missing: run scripts/fetch-model gemma3-270m"
    return GEMMA3
