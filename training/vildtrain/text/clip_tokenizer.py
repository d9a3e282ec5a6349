"""CLIP's text tokenizer (byte-level BPE), parameterised by a vocab.json + merges.txt.

This mirrors ``clip/simple_tokenizer.py`` of OpenAI's CLIP step by step, so the
Go package ``tokenizer`` (which must equal this module on every input, see
``tokenizer/testdata/goldens.json``) serves both our own small vocabulary and a
real CLIP ViT-B/32 vocabulary (49,408 tokens, context 77):

1. clean: Unicode NFC (CLIP runs ``ftfy.fix_text`` here, which is not available;
   see docs/tokenizer.md), ``html.unescape`` twice, strip, whitespace runs to one
   space, strip, ``str.lower()``;
2. pre-tokenise with CLIP's pattern
   ``<|startoftext|>|<|endoftext|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+``
   (case-insensitive, as CLIP compiles it); Python's ``re`` has no ``\\p{..}``,
   so the letter and number classes are built from ``unicodedata`` categories;
3. each piece: UTF-8 bytes through CLIP's ``bytes_to_unicode`` table, then BPE
   with ``</w>`` on the last symbol, merges applied lowest rank first exactly as
   CLIP's ``bpe()``; the pieces ``<|startoftext|>``/``<|endoftext|>`` map to the
   special ids, as in CLIP;
4. with a context: ``[sot] + ids + [eot]``, zero-padded; too long is truncated
   and the last token set to ``eot`` (CLIP's ``truncate=True``).

Command line::

    python3 -m vildtrain clip_tokenizer "a photo of a dog."          # print ids
    python3 -m vildtrain clip_tokenizer --goldens tokenizer/testdata/goldens.json
"""
from __future__ import annotations

import argparse
import base64
import functools
import gzip
import html
import json
import os
import re
import sys
import unicodedata
from typing import Iterable, Sequence

import numpy as np

from vildtrain.paths import TRAINING_DIR

SOT = "<|startoftext|>"
EOT = "<|endoftext|>"
EOW = "</w>"
DEFAULT_CONTEXT = 77


def data_dir() -> str:
    """training/data/tokenizer: the committed vocab.json + merges.txt."""
    return os.path.join(TRAINING_DIR, "data", "tokenizer")


@functools.lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """CLIP's (and GPT-2's) reversible map from bytes to printable code points."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def _category_ranges(first_letter: str) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    start = None
    for cp in range(0x110000):
        ok = unicodedata.category(chr(cp))[0] == first_letter
        if ok and start is None:
            start = cp
        elif not ok and start is not None:
            out.append((start, cp - 1))
            start = None
    if start is not None:
        out.append((start, 0x10FFFF))
    return out


def _class_body(ranges: Iterable[tuple[int, int]]) -> str:
    parts = []
    for lo, hi in ranges:
        parts.append(re.escape(chr(lo)) if lo == hi else re.escape(chr(lo)) + "-" + re.escape(chr(hi)))
    return "".join(parts)


@functools.lru_cache(maxsize=1)
def pattern() -> re.Pattern:
    """CLIP's pre-tokenisation pattern with \\p{L} and \\p{N} spelled out (IGNORECASE, as CLIP)."""
    letters = _class_body(_category_ranges("L"))
    numbers = _class_body(_category_ranges("N"))
    return re.compile(
        r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d"
        rf"|[{letters}]+|[{numbers}]|[^\s{letters}{numbers}]+",
        re.IGNORECASE)


_SURROGATES = re.compile("[\ud800-\udfff]")
_WHITESPACE = re.compile(r"\s+")


def clean(text: str) -> str:
    """CLIP's basic_clean + whitespace_clean + lower(), with NFC in place of ftfy.

    Lone surrogates (which cannot be UTF-8 encoded) become U+FFFD first.
    """
    text = _SURROGATES.sub("\ufffd", text)
    text = unicodedata.normalize("NFC", text)
    text = html.unescape(html.unescape(text))
    text = text.strip()
    text = _WHITESPACE.sub(" ", text)
    text = text.strip()
    return text.lower()


def pretokenize(text: str) -> list[str]:
    """Cleaned text -> CLIP's pieces (not byte-encoded)."""
    return pattern().findall(text)


def byte_encode(piece: str) -> str:
    enc = bytes_to_unicode()
    return "".join(enc[b] for b in piece.encode("utf-8"))


def _pairs(word: Sequence[str]) -> set[tuple[str, str]]:
    return {(word[i], word[i + 1]) for i in range(len(word) - 1)}


class Tokenizer:
    """A CLIP tokenizer over one vocabulary.

    ``vocab`` maps token strings (in bytes_to_unicode space) to ids, which must be
    exactly 0..N-1; ``merges`` are the BPE merges, rank = position.
    """

    def __init__(self, vocab: dict[str, int], merges: Sequence[tuple[str, str]]) -> None:
        ids = sorted(vocab.values())
        if ids != list(range(len(ids))):
            raise ValueError("clip_tokenizer: vocab ids must be 0..N-1 without gaps or repeats")
        for tok in (SOT, EOT):
            if tok not in vocab:
                raise ValueError(f"clip_tokenizer: vocab lacks {tok}")
        for sym in bytes_to_unicode().values():
            for tok in (sym, sym + EOW):
                if tok not in vocab:
                    raise ValueError(f"clip_tokenizer: vocab lacks byte token {tok!r}")
        for i, (a, b) in enumerate(merges):
            if a + b not in vocab:
                raise ValueError(f"clip_tokenizer: merge {i + 1} ({a} {b}) result not in vocab")
        self.encoder = dict(vocab)
        self.decoder = {v: k for k, v in vocab.items()}
        self.merges = list(merges)
        self.bpe_ranks = {m: i for i, m in enumerate(self.merges)}
        if len(self.bpe_ranks) != len(self.merges):
            raise ValueError("clip_tokenizer: duplicate merges")
        self.sot_id = vocab[SOT]
        self.eot_id = vocab[EOT]
        self.vocab_size = len(vocab)
        self.byte_decoder = {v: k for k, v in bytes_to_unicode().items()}
        self.cache: dict[str, str] = {SOT: SOT, EOT: EOT}

    def bpe(self, token: str) -> str:
        """CLIP's bpe(): a byte-encoded piece -> space-separated vocab tokens."""
        if token in self.cache:
            return self.cache[token]
        word = tuple(token[:-1]) + (token[-1] + EOW,)
        pairs = _pairs(word)
        if not pairs:
            return token + EOW
        ranks = self.bpe_ranks
        while True:
            bigram = min(pairs, key=lambda pair: ranks.get(pair, float("inf")))
            if bigram not in ranks:
                break
            first, second = bigram
            new_word: list[str] = []
            i = 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                except ValueError:
                    new_word.extend(word[i:])
                    break
                new_word.extend(word[i:j])
                i = j
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    new_word.append(first + second)
                    i += 2
                else:
                    new_word.append(word[i])
                    i += 1
            word = tuple(new_word)
            if len(word) == 1:
                break
            pairs = _pairs(word)
        out = " ".join(word)
        if len(self.cache) < 1 << 16:
            self.cache[token] = out
        return out

    def encode(self, text: str) -> list[int]:
        """Token ids of text, without start/end tokens."""
        ids: list[int] = []
        for piece in pretokenize(clean(text)):
            ids.extend(self.encoder[t] for t in self.bpe(byte_encode(piece)).split(" "))
        return ids

    def encode_bytes(self, data: bytes) -> list[int]:
        """Token ids of raw bytes; invalid UTF-8 becomes U+FFFD per maximal subpart."""
        return self.encode(data.decode("utf-8", "replace"))

    def encode_context(self, text: str, context_length: int = DEFAULT_CONTEXT) -> tuple[list[int], int]:
        """[sot] + ids + [eot], zero-padded to context_length, truncated CLIP-style.

        Returns the ids and the position of the first end token (where the text
        encoder pools; equal to argmax when eot is the largest id).
        """
        if context_length < 2:
            raise ValueError(f"clip_tokenizer: context length {context_length} < 2")
        tokens = [self.sot_id] + self.encode(text) + [self.eot_id]
        if len(tokens) > context_length:
            tokens = tokens[:context_length]
            tokens[-1] = self.eot_id
        eot = tokens.index(self.eot_id)
        return tokens + [0] * (context_length - len(tokens)), eot

    def encode_batch(self, texts: Sequence[str], context_length: int = DEFAULT_CONTEXT) -> np.ndarray:
        """CLIP's tokenize(texts, context_length, truncate=True) as int64 [B, L]."""
        out = np.zeros((len(texts), context_length), dtype=np.int64)
        for i, text in enumerate(texts):
            out[i] = self.encode_context(text, context_length)[0]
        return out

    def decode(self, ids: Iterable[int]) -> str:
        """Ids back to text, as CLIP's decode(): every piece is followed by a space."""
        text = "".join(self.decoder[int(i)] for i in ids)
        raw = bytearray(self.byte_decoder[c] for c in text)
        return raw.decode("utf-8", "replace").replace(EOW, " ").strip()


def read_merges(lines: Iterable[str], limit: int | None = None, skip_first: bool = False) -> list[tuple[str, str]]:
    """Merges from merges.txt lines: an optional ``#version`` first line, then "a b" per line.

    skip_first drops the first line whatever it says (CLIP's .gz starts with a header line).
    """
    merges = []
    for n, line in enumerate(lines, start=1):
        line = line.rstrip("\n")
        if n == 1 and (skip_first or line.startswith("#version")):
            continue
        if not line:
            continue
        parts = line.split(" ")
        if len(parts) != 2 or not parts[0] or not parts[1]:
            raise ValueError(f"clip_tokenizer: merges line {n}: want two tokens separated by one space")
        merges.append((parts[0], parts[1]))
        if limit is not None and len(merges) == limit:
            break
    return merges


def layout_vocab(merges: Sequence[tuple[str, str]]) -> dict[str, int]:
    """CLIP's vocab layout: byte symbols, byte symbols + </w>, merges in order, sot, eot."""
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + EOW for s in symbols] + ["".join(m) for m in merges] + [SOT, EOT]
    vocab = {}
    for t in tokens:
        if t in vocab:
            raise ValueError(f"clip_tokenizer: token {t!r} appears twice in the layout")
        vocab[t] = len(vocab)
    return vocab


CLIP_MERGES = 49152 - 256 - 2  # 48,894: how many merges CLIP reads from its .gz


def synthetic_clip_merges(n: int = CLIP_MERGES) -> list[tuple[str, str]]:
    """n merges made by construction, for a vocab shaped like real CLIP's (49,408 tokens).

    Merge k joins byte symbol k // 512 with the k % 512-th of (byte symbols, then
    byte symbols + </w>). The Go tests build the same list (tokenizer/clipshape_test.go).
    """
    symbols = list(bytes_to_unicode().values())
    ends = symbols + [s + EOW for s in symbols]
    return [(symbols[k // len(ends)], ends[k % len(ends)]) for k in range(n)]


def load(directory: str | None = None) -> Tokenizer:
    """Load dir/vocab.json + dir/merges.txt (default: the committed training/data/tokenizer).

    A directory holding only CLIP's ``bpe_simple_vocab_16e6.txt.gz`` is read the
    way CLIP reads it (first 48,894 merges, vocab built by layout).
    """
    directory = directory or data_dir()
    vocab_path = os.path.join(directory, "vocab.json")
    gz_path = os.path.join(directory, "bpe_simple_vocab_16e6.txt.gz")
    if not os.path.exists(vocab_path) and os.path.exists(gz_path):
        with gzip.open(gz_path, "rt", encoding="utf-8") as f:
            merges = read_merges(f, limit=CLIP_MERGES, skip_first=True)
        return Tokenizer(layout_vocab(merges), merges)
    with open(vocab_path, encoding="utf-8") as f:
        vocab = json.load(f)
    with open(os.path.join(directory, "merges.txt"), encoding="utf-8") as f:
        merges = read_merges(f)
    return Tokenizer(vocab, merges)


@functools.lru_cache(maxsize=1)
def default() -> Tokenizer:
    """The committed tokenizer, loaded once per process."""
    return load()


# ---------------------------------------------------------------------------
# Golden inputs shared with the Go tests (tokenizer/testdata/goldens.json).

def golden_inputs() -> list[dict]:
    """Tricky inputs: each {"name", "text"} or {"name", "bytes_b64"} (raw, maybe invalid UTF-8)."""
    long_words = " ".join(f"word{i} apple-pie" for i in range(60))
    cases = [
        ("empty", ""),
        ("whitespace_only", " \t\n\r\u3000\u00a0 "),
        ("simple", "a photo of a dog."),
        ("prompt_template", "there is a hot pepper in the scene."),
        ("mixed_case", "A PhOtO oF a DOG"),
        ("accents_nfc", "café naïve résumé"),
        ("accents_nfd", "cafe\u0301 nai\u0308ve"),
        ("cjk", "東京タワーと富士山 한국어"),
        ("emoji", "🐶 dog 🐕‍🦺 service dog 👍🏽 🇯🇵"),
        ("punctuation", "hello, world!!! (really?) -- yes... #1 @user"),
        ("numbers", "1234567890 3.14 1,000 ١٢٣ ½ ²"),
        ("apostrophes", "it's they're we've i'm you'll he'd don't"),
        ("apostrophes_upper", "IT'S THEY'RE WE'VE I'M YOU'LL HE'D DON'T"),
        ("apostrophe_alone", "' '' 's' rock'n'roll"),
        ("typographic_apostrophe", "it\u2019s a dog\u2019s life"),
        ("html_entities", "fish &amp; chips &lt;b&gt; &quot;q&quot; &#39;s &#x1F600; &amp;amp; &copy"),
        ("html_numeric_edge", "&#0; &#128; &#x80; &#1; &#xD800; &#1114112; &#65 &#x41"),
        ("html_named_prefix", "&notit; &ampfoo &AMP; &unknown; & ;"),
        ("special_tokens", "<|startoftext|>hi<|endoftext|> <|ENDOFTEXT|>"),
        ("unknown_word", "xyzzyqwv glorptastic supercalifragilisticexpialidocious"),
        ("long_repeated_letter", "a" * 300),
        ("greek_final_sigma", "ΟΔΟΣ ΣΟΦΟΣ Σ"),
        ("dotted_capital_i", "İSTANBUL"),
        ("long_s", "'ſ <|ſtartoftext|>"),
        ("control_chars", "a\x1cb\x1fc\x85d\x00e\x7f"),
        ("zero_width", "zero\u200bwidth\u200djoiner\ufeff"),
        ("combining_only", "\u0301\u0301 \u0345"),
        ("arabic_hebrew", "مرحبا שלום"),
        ("devanagari", "नमस्ते दुनिया"),
        ("math_symbols", "x² + y² = z² ∑∫√∞ ≠ ≤"),
        ("tabs_newlines", "line one\n\nline\ttwo\r\nthree"),
        ("long_text_truncation", long_words),
        ("private_use", "\ue000\uf8ff\U000f0000"),
        ("fullwidth", "ＡＢＣ ｄｏｇ １２３"),
        ("roman_numerals", "Ⅻ ⅻ Ⅰ"),
        ("circled", "Ⓐ ⓐ ①"),
    ]
    out = [{"name": n, "text": t} for n, t in cases]
    raw = [
        ("invalid_utf8_lone_continuation", b"dog \x80 cat"),
        ("invalid_utf8_truncated", b"caf\xc3 \xe2\x82 \xf0\x9f\x90"),
        ("invalid_utf8_overlong", b"\xc0\xaf \xe0\x80\xaf \xed\xa0\x80 \xf4\x90\x80\x80 \xff\xfe"),
    ]
    out += [{"name": n, "bytes_b64": base64.b64encode(b).decode("ascii")} for n, b in raw]
    return out


def golden_text(case: dict) -> str:
    if "text" in case:
        return case["text"]
    return base64.b64decode(case["bytes_b64"]).decode("utf-8", "replace")


def goldens(tok: Tokenizer, context_length: int = DEFAULT_CONTEXT) -> dict:
    out = []
    for case in golden_inputs():
        text = golden_text(case)
        ctx, eot = tok.encode_context(text, context_length)
        out.append({**case, "ids": tok.encode(text), "context": ctx, "eot": eot})
    return {"context_length": context_length, "vocab_size": tok.vocab_size, "cases": out}


def _runs(classify) -> list[list]:
    """[[first, last, class], ...] over every code point but surrogates, merging equal neighbours."""
    runs: list[list] = []
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        c = classify(chr(cp))
        if runs and runs[-1][2] == c and runs[-1][1] == cp - 1:
            runs[-1][1] = cp
        else:
            runs.append([cp, cp, c])
    return runs


def unicode_table() -> dict:
    """Per-code-point behaviour of this Python's cleaning and pre-tokenising steps.

    The Go tests compare their own behaviour on every code point against this,
    tolerating differences only on code points unassigned in this Python's
    Unicode database (Go's tables may be a newer Unicode version).
    """
    letters = _class_body(_category_ranges("L"))
    numbers = _class_body(_category_ranges("N"))
    is_letter = re.compile(f"[{letters}]", re.IGNORECASE).fullmatch
    is_number = re.compile(f"[{numbers}]", re.IGNORECASE).fullmatch
    is_other = re.compile(rf"[^\s{letters}{numbers}]", re.IGNORECASE).fullmatch

    def piece_class(ch: str) -> str:
        # the order of CLIP's alternatives: letters, then a number, then others
        if is_letter(ch):
            return "L"
        if is_number(ch):
            return "N"
        if is_other(ch):
            return "O"
        return "S"

    def sigma_class(ch: str) -> str:
        # probe str.lower()'s Final_Sigma rule: case-ignorable (I), cased (C) or neither (-)
        if ("A" + ch + "\u03a3").lower()[-1] == "\u03c2" and ("1" + ch + "\u03a3").lower()[-1] != "\u03c2":
            return "I"
        if ("1" + ch + "\u03a3").lower()[-1] == "\u03c2":
            return "C"
        return "-"

    chars = [chr(cp) for cp in range(0x110000) if not 0xD800 <= cp <= 0xDFFF]
    return {
        "unidata_version": unicodedata.unidata_version,
        "assigned": [r[:2] for r in _runs(lambda ch: unicodedata.category(ch) != "Cn") if r[2]],
        "space": [ord(ch) for ch in chars if ch.isspace()],
        "piece_class": _runs(piece_class),
        "sigma_class": _runs(sigma_class),
        "lower": [[ord(ch), ch.lower()] for ch in chars if ch.lower() != ch],
        "nfc": [[ord(ch), unicodedata.normalize("NFC", ch)] for ch in chars
                if unicodedata.normalize("NFC", ch) != ch],
    }


def write_goldens(path: str, g: dict) -> None:
    """JSON with one case per line (readable diffs)."""
    head = {k: v for k, v in g.items() if k != "cases"}
    lines = [json.dumps(c, ensure_ascii=False) for c in g["cases"]]
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(json.dumps(head, ensure_ascii=False)[:-1] + ', "cases": [\n')
        f.write(",\n".join(lines))
        f.write("\n]}\n")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m vildtrain clip_tokenizer",
                                 description="Encode text with CLIP's tokenizer, or write golden ids.")
    ap.add_argument("text", nargs="*", help="texts to encode (one line of ids each)")
    ap.add_argument("--dir", help="tokenizer dir (vocab.json + merges.txt); default: the committed one")
    ap.add_argument("--context", type=int, default=0, help="pad/truncate to this context length")
    ap.add_argument("--goldens", metavar="PATH", help="write golden ids for the tricky inputs to PATH")
    ap.add_argument("--clip-shape-goldens", metavar="PATH",
                    help="write golden ids of the same inputs under the synthetic 49,408-token CLIP-shaped vocab")
    ap.add_argument("--unicode-table", metavar="PATH",
                    help="write per-code-point cleaning/pre-tokenising behaviour (for the Go tests)")
    args = ap.parse_args(argv)
    tok = load(args.dir)
    if args.goldens:
        write_goldens(args.goldens, goldens(tok))
        print(f"wrote {args.goldens}", file=sys.stderr)
    if args.unicode_table:
        with open(args.unicode_table, "w", encoding="utf-8", newline="\n") as f:
            t = unicode_table()
            f.write("{\n" + ",\n".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in t.items()) + "\n}\n")
        print(f"wrote {args.unicode_table}", file=sys.stderr)
    if args.clip_shape_goldens:
        merges = synthetic_clip_merges()
        write_goldens(args.clip_shape_goldens, goldens(Tokenizer(layout_vocab(merges), merges)))
        print(f"wrote {args.clip_shape_goldens}", file=sys.stderr)
    for text in args.text:
        ids = tok.encode_context(text, args.context)[0] if args.context else tok.encode(text)
        print(" ".join(map(str, ids)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
