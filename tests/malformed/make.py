#!/usr/bin/env python3
"""make.py - writes the malformed GGUF files of cases.py into a directory
(one NAME.gguf each, plus the valid controls as valid-NAME.gguf), or prints
the table of cases for docs/fuzzing.md.

    tests/malformed/make.py OUTDIR
    tests/malformed/make.py --markdown
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cases import CASES, valid_models  # noqa: E402


def write_all(outdir):
    os.makedirs(outdir, exist_ok=True)
    for c in CASES:
        with open(os.path.join(outdir, c.name + ".gguf"), "wb") as f:
            f.write(c.build())
    for name, data in valid_models().items():
        with open(os.path.join(outdir, "valid-" + name + ".gguf"), "wb") as f:
            f.write(data)
    return len(CASES)


def markdown():
    lines = ["| # | file | refused by | status | message contains |",
             "|---|------|------------|--------|------------------|"]
    for i, c in enumerate(CASES, 1):
        msg = c.message.replace("|", "\\|")
        lines.append(f"| {i} | `{c.name}` | {c.check} | {c.status} | `{msg}` |")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    if sys.argv[1] == "--markdown":
        print(markdown())
    else:
        print(f"make.py: {write_all(sys.argv[1])} malformed files in {sys.argv[1]}")
