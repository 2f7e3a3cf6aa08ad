"""SentencePiece tokenizer conformance: on Gemma 3's vocabulary
(tokenizer.ggml.model "llama") frugal and llama.cpp give identical token
ids, on the shared corpus and on seeded random strings (spaces, newlines,
tabs, special-token fragments, invalid UTF-8), with special-token parsing
on and off and with BOS."""
import json
import pathlib
import random

import pytest

from conftest import FRUGAL, MODELS, run_frugal

GEMMA = MODELS / "gemma-3-270m-Q4_K_M.gguf"
if not GEMMA.exists():
    pytest.skip(f"Gemma 3 270M model missing ({GEMMA})", allow_module_level=True)

CORPUS = json.loads((pathlib.Path(__file__).parent / "tokenizer_corpus.json").read_text())

# Pieces whose mixes exercise what SentencePiece is touchy about: spaces
# (U+2581 included), runs that are user-defined tokens, special tokens and
# parts of them, characters with no token (byte fallback).
PIECES = [" ", "  ", "   ", "\n", "\n\n", "\t", "\r\n", "a", "the", " the", "Hello", "\u2581",
          "<start_of_turn>", "<end_of_turn>", "<bos>", "<eos>", "<unused5>", "</s>", "<s>",
          "<table>", "</td>", "<start_of", "turn>", "<", ">", "123", "3.14", "\u00e9", "\u4e2d\u6587",
          "\U0001F600", "\U0001F468\u200d\U0001F469", "\u0301", "\u00a0", "\u3000", "\u0416",
          "'s", "\\", "{", "def", "\x7f", "\x01", "\ufeff", "\U00020000", "\ue000"]


def random_texts(n, seed=1234):
    rnd = random.Random(seed)
    texts = []
    for _ in range(n):
        texts.append("".join(rnd.choice(PIECES) for _ in range(rnd.randint(0, 30))).encode())
    for _ in range(n // 5):  # invalid UTF-8: lead bytes without their continuations, and so on
        texts.append(bytes(rnd.choice([0x20, 0x61, 0x80, 0x96, 0xC3, 0xE2, 0xF0, 0xFF,
                                       rnd.randint(1, 255)]) for _ in range(rnd.randint(1, 12))))
    return texts


TEXTS = [t.encode() for t in CORPUS if "\0" not in t] + random_texts(1000)


def frugal_tokenize_all(texts, tmp_path, special, bos=False):
    path = tmp_path / "corpus.bin"
    path.write_bytes(b"".join(t + b"\0" for t in texts))
    args = ["tokenize", "-m", GEMMA, "-f", path, "--split-nul"]
    if not special:
        args.append("--no-special")
    if bos:
        args.append("--bos")
    out = run_frugal(*args).stdout.decode().split("\n")
    assert len(out) == len(texts) + 1, "one line of ids per text"
    return [[int(x) for x in line.split()] for line in out[:-1]]


@pytest.fixture(scope="module")
def gemma_vocab():
    assert FRUGAL.exists(), "build/frugal is missing: run make"
    from llama_cpp import Llama
    return Llama(model_path=str(GEMMA), vocab_only=True, verbose=False)


def assert_same(vocab, texts, ours, special, bos=False):
    mismatches = []
    for text, got in zip(texts, ours):
        want = vocab.tokenize(text, add_bos=bos, special=special)
        if got != want:
            mismatches.append((text, got, want))
    assert not mismatches, f"{len(mismatches)} of {len(texts)} differ, first: {mismatches[0]!r}"


@pytest.mark.parametrize("special", [True, False])
def test_ids_identical_to_llama_cpp(gemma_vocab, tmp_path, special):
    ours = frugal_tokenize_all(TEXTS, tmp_path, special)
    assert_same(gemma_vocab, TEXTS, ours, special)


def test_bos_identical_to_llama_cpp(gemma_vocab, tmp_path):
    # Gemma's add_bos_token is true, so both prepend <bos> (id 2).
    texts = TEXTS[:200]
    ours = frugal_tokenize_all(texts, tmp_path, True, bos=True)
    assert all(ids[:1] == [2] for ids in ours)
    assert_same(gemma_vocab, texts, ours, True, bos=True)
