"""CLIP tokenizer (vildtrain.clip_tokenizer) and BPE trainer (vildtrain.bpe)."""
from __future__ import annotations

import filecmp
import gzip
import json
import os
from collections import Counter

import numpy as np
import pytest

from vildtrain.text import bpe
from vildtrain.text import clip_tokenizer as ct

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TESTDATA = os.path.join(REPO, "tokenizer", "testdata")


@pytest.fixture(scope="module")
def tok() -> ct.Tokenizer:
    return ct.default()


SMALL_CORPUS = ["a photo of a dog.", "a photo of a cat.", "a drawing of a hot dog.", "the dog's bone",
                "hot pepper", "hot dog", "dogs and cats", "a picture of a pepper."]


def small_tokenizer() -> ct.Tokenizer:
    merges = bpe.train(bpe.word_counts(SMALL_CORPUS), 40)
    return ct.Tokenizer(ct.layout_vocab(merges), merges)


def test_bytes_to_unicode_is_a_bijection_onto_printable_chars():
    table = ct.bytes_to_unicode()
    assert sorted(table) == list(range(256))
    assert len(set(table.values())) == 256
    assert all(ch.isprintable() and not ch.isspace() for ch in table.values())
    assert table[ord("a")] == "a" and table[ord(" ")] == "Ġ"


@pytest.mark.parametrize("raw,want", [
    ("  A  Photo\tof\n\nA Dog  ", "a photo of a dog"),
    ("fish &amp; chips", "fish & chips"),
    ("&amp;lt;", "<"),  # unescaped twice, as CLIP does
    ("cafe\u0301", "caf\u00e9"),  # NFC
    ("ΟΔΟΣ", "οδος"),  # str.lower's final sigma
    ("a\x1cb", "a b"),  # \x1c is whitespace to Python
    ("\u3000\u00a0", ""),
    ("bad \ud800 surrogate", "bad \ufffd surrogate"),
])
def test_clean(raw, want):
    assert ct.clean(raw) == want


@pytest.mark.parametrize("text,want", [
    ("it's a dog's life", ["it", "'s", "a", "dog", "'s", "life"]),
    ("you'll we've i'm he'd don't they're", ["you", "'ll", "we", "'ve", "i", "'m", "he", "'d", "don", "'t",
                                             "they", "'re"]),
    ("abc123 4.5", ["abc", "1", "2", "3", "4", ".", "5"]),
    ("héllo 東京 😀👍!!", ["héllo", "東京", "😀👍!!"]),
    ("<|startoftext|>x<|endoftext|>", ["<|startoftext|>", "x", "<|endoftext|>"]),
    ("'ſ", ["'ſ"]),  # CLIP's pattern is case-insensitive: ſ folds to s
    ("!'s", ["!'", "s"]),
])
def test_pretokenize(text, want):
    assert ct.pretokenize(text) == want


def test_bpe_applies_lowest_rank_first_like_clip():
    # "abc": pairs (a,b) rank 1 and (b,c</w>) rank 0 -> "a" "bc</w>"; then (a, bc</w>) rank 2.
    merges = [("b", "c</w>"), ("a", "b"), ("a", "bc</w>")]
    t = ct.Tokenizer(ct.layout_vocab(merges), merges)
    assert t.bpe("abc") == "abc</w>"
    assert t.bpe("ab") == "a b</w>"  # (a, b) never meets b</w>
    # all occurrences of the chosen pair merge left to right, without overlap
    merges = [("a", "a")]
    t = ct.Tokenizer(ct.layout_vocab(merges), merges)
    assert t.bpe("aaaa") == "aa a a</w>"
    assert t.bpe("aaa") == "aa a</w>"
    assert t.bpe("x") == "x</w>"


def test_encode_context_pads_truncates_and_places_eot(tok):
    ids, eot = tok.encode_context("a photo of a dog.", 16)
    body = tok.encode("a photo of a dog.")
    assert ids[: len(body) + 2] == [tok.sot_id] + body + [tok.eot_id]
    assert ids[len(body) + 2:] == [0] * (16 - len(body) - 2)
    assert eot == len(body) + 1 == int(np.argmax(ids))
    long = " ".join(["dog"] * 100)
    ids, eot = tok.encode_context(long, 8)
    assert ids == [tok.sot_id] + [tok.encode("dog")[0]] * 6 + [tok.eot_id] and eot == 7
    ids, eot = tok.encode_context("", 4)
    assert ids == [tok.sot_id, tok.eot_id, 0, 0] and eot == 1
    with pytest.raises(ValueError):
        tok.encode_context("x", 1)


def test_encode_batch(tok):
    out = tok.encode_batch(["a dog", "", "a photo of a hot pepper in the scene."], 12)
    assert out.dtype == np.int64 and out.shape == (3, 12)
    assert [int(r.argmax()) for r in out] == [tok.encode_context(t, 12)[1] for t in
                                              ["a dog", "", "a photo of a hot pepper in the scene."]]


def test_eot_is_the_largest_id_and_layout_is_clips(tok):
    vocab = tok.encoder
    assert tok.eot_id == tok.vocab_size - 1 and tok.sot_id == tok.vocab_size - 2
    symbols = list(ct.bytes_to_unicode().values())
    assert [vocab[s] for s in symbols] == list(range(256))
    assert [vocab[s + "</w>"] for s in symbols] == list(range(256, 512))
    assert [vocab["".join(m)] for m in tok.merges] == list(range(512, 512 + len(tok.merges)))


@pytest.mark.parametrize("text", ["a photo of a dog.", "hot pepper and a poodle", "fish & chips 123",
                                  "café 東京 😀"])
def test_decode_round_trip(tok, text):
    assert tok.decode(tok.encode(text)) == " ".join(ct.pretokenize(ct.clean(text)))


def test_committed_goldens_match_the_python_tokenizer(tok):
    with open(os.path.join(TESTDATA, "goldens.json"), encoding="utf-8") as f:
        committed = json.load(f)
    assert committed == ct.goldens(tok, committed["context_length"])


def test_clip_shaped_vocab_and_its_goldens(tmp_path):
    merges = ct.synthetic_clip_merges()
    assert len(merges) == 48894
    # CLIP's own file: bpe_simple_vocab_16e6.txt.gz, read as CLIP reads it (extra lines ignored)
    with gzip.open(tmp_path / "bpe_simple_vocab_16e6.txt.gz", "wt", encoding="utf-8") as f:
        f.write("\"bpe_simple_vocab_16e6.txt#version: 0.2\n")
        f.write("\n".join(f"{a} {b}" for a, b in merges + [("x", "y")] * 3) + "\n")
    t = ct.load(str(tmp_path))
    assert t.vocab_size == 49408 and t.sot_id == 49406 and t.eot_id == 49407
    ids, eot = t.encode_context("a photo of a dog. " * 40, 77)
    assert len(ids) == 77 and ids[0] == 49406 and ids[76] == 49407 and eot == 76
    with open(os.path.join(TESTDATA, "goldens_clip_shape.json"), encoding="utf-8") as f:
        committed = json.load(f)
    assert committed == ct.goldens(t, committed["context_length"])


def test_loader_errors_name_the_problem(tmp_path):
    (tmp_path / "merges.txt").write_text("#version: 0.2\na b\nbad line here\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 3"):
        ct.read_merges(open(tmp_path / "merges.txt", encoding="utf-8"))
    vocab = ct.layout_vocab([])
    del vocab[ct.EOT]
    with pytest.raises(ValueError):
        ct.Tokenizer(vocab, [])


def test_trainer_is_deterministic_and_merges_frequent_pairs():
    counts = bpe.word_counts(SMALL_CORPUS)
    assert counts["dog"] == 4 and counts["Ġ"] == 0
    first = bpe.train(counts, 40)
    assert first == bpe.train(Counter(dict(reversed(list(counts.items())))), 40)
    # the most frequent pair: "a</w>" is not a pair; "o f</w>" (4x "of") ties with others, "d o" (dog 4 + dogs 1)
    assert first[0] == ("d", "o")
    # every merge's result exists when it is learned, so BPE reproduces the training words whole
    t = small_tokenizer()
    for word in ("photo", "dog", "pepper"):
        assert t.bpe(ct.byte_encode(word)) == word + "</w>"
    assert len(t.encoder) == 512 + len(t.merges) + 2


def test_trainer_tie_break_is_the_smaller_pair():
    # every pair occurs exactly twice: the smallest pair in code point order wins first
    counts = Counter({"ba": 1, "dc": 1})
    counts.update({"ba": 1, "dc": 1})
    merges = bpe.train(counts, 10)
    assert merges == [("b", "a</w>"), ("d", "c</w>")]


def test_trainer_stops_below_min_frequency():
    assert bpe.train(Counter({"ab": 1}), 10) == []
    assert bpe.train(Counter({"ab": 1}), 10, min_frequency=1) == [("a", "b</w>")]


def test_write_round_trip(tmp_path):
    merges = bpe.train(bpe.word_counts(SMALL_CORPUS), 40)
    bpe.write(str(tmp_path), merges)
    t = ct.load(str(tmp_path))
    assert t.merges == merges
    assert (tmp_path / "merges.txt").read_text(encoding="utf-8").startswith("#version: 0.2\n")
    for text in SMALL_CORPUS:
        assert t.encode(text) == small_tokenizer().encode(text)


def test_committed_tokenizer_is_reproduced_by_the_trainer(tmp_path, cache_dir):
    data = os.path.join(cache_dir, "npm", "emojibase-data", "en", "data.json")
    if not os.path.exists(data):
        pytest.skip(f"{data} missing: run scripts/setup.sh")
    assert bpe.main(["--out", str(tmp_path), "--cache", cache_dir]) == 0
    for name in ("vocab.json", "merges.txt"):
        assert filecmp.cmp(tmp_path / name, os.path.join(ct.data_dir(), name), shallow=False), \
            f"{name} differs: retrain with python3 -m vildtrain bpe"
