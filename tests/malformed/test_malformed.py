"""Malformed model files (tests/malformed/cases.py): `frugal info` and
`frugal run` must refuse each one with exit status 1 and one clear line on
stderr naming the problem - never a crash, a signal or a sanitizer report.

The files are generated into a temporary directory at test time. The
binary is build/frugal, or $FRUGAL_BIN (make test-sanitize points it at
the ASan+UBSan build).
"""
import os
import pathlib
import subprocess
import sys

import pytest

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from cases import CASES, valid_models  # noqa: E402

ROOT = HERE.parent.parent
FRUGAL = pathlib.Path(os.environ.get("FRUGAL_BIN", ROOT / "build" / "frugal"))
SANITIZER_WORDS = ("Sanitizer", "runtime error:", "LeakSanitizer", "SUMMARY:")
COMMANDS = {
    "info": lambda path: ["info", path],
    "run": lambda path: ["run", "-m", path, "-p", "hi", "-n", "2", "--temp", "0", "-t", "1"],
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    assert FRUGAL.exists(), f"{FRUGAL} is missing: run make"
    d = tmp_path_factory.mktemp("malformed")
    for c in CASES:
        (d / (c.name + ".gguf")).write_bytes(c.build())
    for name, data in valid_models().items():
        (d / (name + ".gguf")).write_bytes(data)
    return d


def frugal(*args):
    return subprocess.run([str(FRUGAL), *map(str, args)], capture_output=True, timeout=120,
                          stdin=subprocess.DEVNULL)


def test_there_are_at_least_30_cases():
    assert len(CASES) >= 30
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_malformed_file_is_refused_clearly(files, case, command):
    path = files / (case.name + ".gguf")
    proc = frugal(*COMMANDS[command](path))
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 1, f"exit status {proc.returncode} (negative: killed by a signal)\n{err}"
    assert not any(w in err for w in SANITIZER_WORDS), err
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"want one line, got:\n{err}"
    line = lines[0]
    assert line.startswith(f"frugal: cannot load {path}: {case.status}: "), line
    assert case.message in line, f"want '{case.message}' in: {line}"
    assert proc.stdout == b""


@pytest.mark.parametrize("name", sorted(valid_models()))
def test_valid_controls_load_and_generate(files, name):
    """The unbroken files the cases start from do load, so each case fails
    for the one thing it breaks."""
    path = files / (name + ".gguf")
    info = frugal("info", path)
    assert info.returncode == 0, info.stderr.decode(errors="replace")
    run = frugal("run", "-m", path, "--raw", "-p", "hello world", "-n", "4", "--temp", "0", "-t", "1")
    err = run.stderr.decode(errors="replace")
    assert run.returncode == 0, err
    assert not any(w in err for w in SANITIZER_WORDS), err
