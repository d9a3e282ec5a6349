"""A small byte-level BPE trainer that writes CLIP-format tokenizer files.

Corpus (see docs/tokenizer.md): every English label and tag in emojibase-data's
``en/data.json`` (skin-tone variants left out), the category names, synonyms and
descriptive tags of ``training/data/categories.tsv`` (when it exists), every prompt
template of :data:`vildtrain.text.prompts.TEMPLATES` filled with each of those, and
the templates. The descriptive tags count as they did before synonyms were curated
(docs/data.md), so the curation leaves the tokenizer, and the token ids the
committed mini-CLIP was trained on, unchanged.

Training is the standard algorithm on a word-frequency table: each text is
cleaned and pre-tokenised exactly as :mod:`vildtrain.text.clip_tokenizer` does,
each piece becomes byte symbols with ``</w>`` on the last one, and the most frequent
adjacent pair is merged until the merge budget is spent or no pair occurs
twice. Ties are broken by the smaller pair (first symbol, then second, in code
point order), so training is deterministic.

Output, in the Hugging Face CLIP layout: ``merges.txt`` (``#version: 0.2`` then
one "a b" merge per line) and ``vocab.json`` (token -> id, laid out as CLIP's:
256 byte symbols, the same + ``</w>``, merged tokens in merge order, then
``<|startoftext|>`` and ``<|endoftext|>``, so the end token has the largest id).

    python3 -m vildtrain bpe --out training/data/tokenizer
"""
from __future__ import annotations

import argparse
import heapq
import json
import os
import sys
from collections import Counter, defaultdict
from typing import Iterable, Sequence

from vildtrain.paths import REPO_DIR
from vildtrain.text import clip_tokenizer as ct

# 512 byte tokens + 3,582 merges + 2 special tokens = 4,096 (docs/tokenizer.md says why).
DEFAULT_MERGES = 3582
MIN_FREQUENCY = 2


def emojibase_texts(path: str) -> list[str]:
    """Labels and tags of every emojibase entry (skin-tone variants are left out)."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    texts: list[str] = []
    for entry in data:
        if entry.get("label"):
            texts.append(entry["label"])
        texts.extend(t for t in entry.get("tags", []) if t)
    return texts


def category_texts(categories: Sequence, templates: Sequence[str]) -> list[str]:
    """Names, synonyms and descriptive tags, and every template filled with each of them."""
    texts: list[str] = []
    for c in categories:
        names = [c.name, *c.synonyms, *c.tags]
        texts.extend(names)
        for n in names:
            texts.extend(t.format(n) for t in templates)
    return texts


def default_corpus(cache_dir: str | None = None, categories_path: str | None = None) -> list[str]:
    """The corpus the committed tokenizer is trained on."""
    from vildtrain.text.prompts import TEMPLATES
    cache_dir = cache_dir or os.environ.get("VILD_CACHE") or os.path.join(REPO_DIR, ".cache")
    texts = emojibase_texts(os.path.join(cache_dir, "npm", "emojibase-data", "en", "data.json"))
    from vildtrain.data.categories import default_path, load_categories
    path = categories_path or default_path()
    if os.path.exists(path):
        texts += category_texts(load_categories(path), TEMPLATES)
    else:
        print(f"bpe: {path} not found; training without category names", file=sys.stderr)
    texts += list(TEMPLATES)
    return texts


def word_counts(texts: Iterable[str]) -> Counter:
    """Byte-encoded pieces (CLIP's pre-tokeniser) and how often each occurs."""
    counts: Counter = Counter()
    for text in texts:
        for piece in ct.pretokenize(ct.clean(text)):
            if piece in (ct.SOT, ct.EOT):
                continue
            counts[ct.byte_encode(piece)] += 1
    return counts


def _merge_word(word: tuple[str, ...], a: str, b: str) -> tuple[str, ...]:
    out: list[str] = []
    i = 0
    while i < len(word):
        if i < len(word) - 1 and word[i] == a and word[i + 1] == b:
            out.append(a + b)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


def _word_pairs(word: tuple[str, ...]) -> Counter:
    return Counter(zip(word, word[1:]))


def train(counts: Counter, num_merges: int, min_frequency: int = MIN_FREQUENCY) -> list[tuple[str, str]]:
    """Learn up to num_merges merges from a piece -> count table."""
    words = [tuple(p[:-1]) + (p[-1] + ct.EOW,) for p in sorted(counts)]
    freq = [counts[p] for p in sorted(counts)]
    pair_count: dict[tuple[str, str], int] = defaultdict(int)
    where: dict[tuple[str, str], set[int]] = defaultdict(set)
    for i, w in enumerate(words):
        for pair, n in _word_pairs(w).items():
            pair_count[pair] += n * freq[i]
            where[pair].add(i)
    heap = [(-n, pair) for pair, n in pair_count.items()]
    heapq.heapify(heap)
    merges: list[tuple[str, str]] = []
    while len(merges) < num_merges and heap:
        neg, pair = heapq.heappop(heap)
        if pair_count.get(pair, 0) != -neg:
            continue  # stale entry
        if -neg < min_frequency:
            break
        merges.append(pair)
        a, b = pair
        changed: set[tuple[str, str]] = set()
        for i in sorted(where.pop(pair, ())):
            old = words[i]
            new = _merge_word(old, a, b)
            if new == old:
                continue
            before, after = _word_pairs(old), _word_pairs(new)
            for p, n in before.items():
                pair_count[p] -= n * freq[i]
                changed.add(p)
                if p not in after and p != pair:
                    where[p].discard(i)
            for p, n in after.items():
                pair_count[p] += n * freq[i]
                where[p].add(i)
                changed.add(p)
            words[i] = new
        pair_count.pop(pair, None)
        changed.discard(pair)
        for p in changed:
            n = pair_count.get(p, 0)
            if n <= 0:
                pair_count.pop(p, None)
                where.pop(p, None)
            else:
                heapq.heappush(heap, (-n, p))
    return merges


def write(out_dir: str, merges: Sequence[tuple[str, str]]) -> dict[str, int]:
    """Write vocab.json + merges.txt in the Hugging Face CLIP layout; return the vocab."""
    vocab = ct.layout_vocab(merges)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "merges.txt"), "w", encoding="utf-8", newline="\n") as f:
        f.write("#version: 0.2\n")
        for a, b in merges:
            f.write(f"{a} {b}\n")
    with open(os.path.join(out_dir, "vocab.json"), "w", encoding="utf-8", newline="\n") as f:
        json.dump(vocab, f, ensure_ascii=False)
        f.write("\n")
    return vocab


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m vildtrain bpe",
                                 description="Train the byte-level BPE tokenizer on the caption corpus.")
    ap.add_argument("--out", default=ct.data_dir(), help="output directory (default: training/data/tokenizer)")
    ap.add_argument("--merges", type=int, default=DEFAULT_MERGES, help="merge budget")
    ap.add_argument("--min-frequency", type=int, default=MIN_FREQUENCY)
    ap.add_argument("--cache", help="asset cache dir (default: $VILD_CACHE or .cache)")
    ap.add_argument("--categories", help="categories.tsv (default: training/data/categories.tsv)")
    args = ap.parse_args(argv)
    texts = default_corpus(args.cache, args.categories)
    counts = word_counts(texts)
    merges = train(counts, args.merges, args.min_frequency)
    vocab = write(args.out, merges)
    print(f"bpe: {len(texts)} texts, {len(counts)} distinct pieces, {len(merges)} merges, "
          f"vocab {len(vocab)} -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
