"""Tokenizer conformance: frugal and llama.cpp give identical token ids on
a corpus of varied strings, with special-token parsing on and off."""
import json
import pathlib

import pytest

from conftest import run_frugal

CORPUS = json.loads((pathlib.Path(__file__).parent / "tokenizer_corpus.json").read_text())


def frugal_tokenize_all(model, texts, tmp_path, special):
    blob = b"".join(t.encode("utf-8") + b"\0" for t in texts)
    path = tmp_path / "corpus.bin"
    path.write_bytes(blob)
    args = ["tokenize", "-m", model, "-f", path, "--split-nul"]
    if not special:
        args.append("--no-special")
    out = run_frugal(*args).stdout.decode().split("\n")
    assert len(out) == len(texts) + 1, "one line of ids per text"
    return [[int(x) for x in line.split()] for line in out[:-1]]


def test_corpus_is_large_and_varied():
    assert len(CORPUS) >= 200
    assert any(any("\u4e00" <= c <= "\u9fff" for c in t) for t in CORPUS)  # CJK
    assert any("<|im_start|>" in t for t in CORPUS)


@pytest.mark.parametrize("special", [True, False])
def test_ids_identical_to_llama_cpp(smollm2, llama_vocab, tmp_path, special):
    texts = [t for t in CORPUS if "\0" not in t]
    ours = frugal_tokenize_all(smollm2, texts, tmp_path, special)
    mismatches = []
    for text, got in zip(texts, ours):
        want = llama_vocab.tokenize(text.encode("utf-8"), add_bos=False, special=special)
        if got != want:
            mismatches.append((text, got, want))
    assert not mismatches, f"{len(mismatches)} of {len(texts)} differ, first: {mismatches[0]!r}"
