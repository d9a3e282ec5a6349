"""A reference-size bundle with random weights: the architectures real ViLD
servers run, exported, with golden outputs, so the Go pipeline is checked and
timed at full size (docs/reference.md).

    python3 -m vildtrain export_reference --arch r50-fpn-clip-b32 --out training/runs/reference [--seed 0]

(The command is ``export_reference``; ``export-reference`` is the same command.)

``r50-fpn-clip-b32`` is

* the detector of torchvision's ``maskrcnn_resnet50_fpn``: a ResNet-50 body
  (Bottlenecks 3-4-6-3, BatchNorms folded into the convolutions on export) and
  a 256-channel FPN, p2..p5 pooled by RoIAlign and p6 (``LastLevelMaxPool``)
  for the RPN only; ``RPNHead`` with anchors 32..512 (one size per level) and
  aspect ratios 0.5, 1, 2; 1,000 pre-NMS proposals per level and 1,000 after NMS;
  input at 1,024 px on the longer side, padded to multiples of 64;
* a box head of torchvision's ``TwoMLPHead`` (fc6, fc7, 1,024 wide) with ViLD's
  text and image projections to 512 dimensions and class-agnostic box deltas;
* CLIP ViT-B/32's text transformer, with OpenAI's parameter names: 49,408-token
  embedding, 77 positions, 12 pre-norm residual blocks of width 512 with 8
  heads, a causal mask and QuickGELU, the final LayerNorm, pooled at the end
  token, projected to 512 dimensions;
* a tokenizer in exactly CLIP's file format (49,408 tokens: 256 byte symbols,
  the same with ``</w>``, 48,894 merges, the two special tokens; merges.txt with
  its ``#version: 0.2`` header): the project's BPE merges trained on its caption
  corpus, extended with constructed merges of byte symbol pairs to CLIP's count.

The weights are random (torchvision's and CLIP's initialisations, seeded); the
body's BatchNorm statistics are set from the golden images themselves, as
the fixture bundle does, so activations have unit scale through all 16
Bottlenecks instead of growing block by block. The graphs and goldens follow
docs/bundle.md exactly, like a trained export (``vildtrain export``): the
detector graphs store float16 weights, the text encoder float32.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch
from PIL import Image

from vildtrain.export.export import (_clear, _write_manifest, export_graphs, fold_batchnorm, git_commit, manifest,
                                     round_to_half, save_npy, store_half, write_golden_case, write_text_golden)
from vildtrain.models.infer import Vocabulary, preprocess
from vildtrain.models.reference import (CLIP_B32_TEXT, RESIDUAL_BN_SCALE, ClipTextTower, R50FPN, ReferenceBoxHead,  # noqa: F401
                                       build_detector, calibrate_batchnorm, reference_config)
from vildtrain.text import clip_tokenizer
from vildtrain.text.prompts import TEMPLATES

ARCHES = ("r50-fpn-clip-b32",)
NAME = "r50-fpn-clip-b32-random"
NOISE = 2.0  # golden images: Gaussian pixel noise (of 255), as a camera adds


# Golden cases at the reference size: (name, scene seed index, crop box in the
# 1,024 px scene or None, final size or None): no resize (1,024 x 512), downscaling
# (1,280 x 720 -> 1,024 x 576) and upscaling (600 x 450 -> 1,024 x 768, padded).
GOLDEN_CASES: list[tuple[str, int, tuple[int, int, int, int] | None, tuple[int, int] | None]] = [
    ("exact", 0, (0, 256, 1024, 768), None),
    ("downscale", 1, (0, 112, 1024, 688), (1280, 720)),
    ("upscale", 2, (100, 150, 700, 600), None),
]

# The manifest's categories: by default 1,000, an LVIS-sized vocabulary whose
# embeddings ship precomputed (category_embeddings.npy), as a served real model's
# would. They are the project's category names, then their synonyms as
# categories of their own (same split), in table order.
DEFAULT_CATEGORIES = 1000


class Category:
    def __init__(self, name: str, split: str, synonyms: tuple[str, ...] = ()) -> None:
        self.name, self.split, self.synonyms = name, split, synonyms


def reference_categories(n: int | None = None) -> list[Category]:
    """The first ``n`` (None: all) distinct names of the category table (names, then synonyms)."""
    from vildtrain.data.categories import load_categories
    table = load_categories()
    out: dict[str, Category] = {}
    for c in table:
        out.setdefault(c.name, Category(c.name, c.split))
    for c in table:
        for s in c.synonyms:
            out.setdefault(s, Category(s, c.split))
    if n is None:
        return list(out.values())
    if not 1 <= n <= len(out):
        raise ValueError(f"export_reference: --categories {n} not in [1, {len(out)}]")
    return list(out.values())[:n]


# ---------------------------------------------------------------- tokenizer

def clip_shaped_merges(base: list[tuple[str, str]], total: int = clip_tokenizer.CLIP_MERGES) -> list[tuple[str, str]]:
    """``base`` (trained merges) then constructed byte-pair merges whose results are
    new tokens, ``total`` in all: CLIP's vocabulary size with multi-level merges."""
    symbols = list(clip_tokenizer.bytes_to_unicode().values())
    tokens = set(symbols) | {s + clip_tokenizer.EOW for s in symbols} | {a + b for a, b in base}
    merges = list(base)
    for a, b in clip_tokenizer.synthetic_clip_merges(256 * 512):  # every byte symbol x (symbol, symbol</w>)
        if len(merges) == total:
            break
        if a + b not in tokens:
            tokens.add(a + b)
            merges.append((a, b))
    if len(merges) != total:
        raise ValueError(f"export_reference: only {len(merges)} merges, want {total}")
    return merges


def write_tokenizer(directory: str) -> clip_tokenizer.Tokenizer:
    """vocab.json + merges.txt in the Hugging Face CLIP layout, CLIP's size; returns it loaded."""
    with open(os.path.join(clip_tokenizer.data_dir(), "merges.txt"), encoding="utf-8") as f:
        base = clip_tokenizer.read_merges(f)
    merges = clip_shaped_merges(base)
    vocab = clip_tokenizer.layout_vocab(merges)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(directory, "merges.txt"), "w", encoding="utf-8", newline="\n") as f:
        f.write("#version: 0.2\n")
        f.writelines(f"{a} {b}\n" for a, b in merges)
    tok = clip_tokenizer.load(directory)
    if tok.vocab_size != CLIP_B32_TEXT["vocab_size"]:
        raise ValueError(f"export_reference: tokenizer has {tok.vocab_size} tokens, want {CLIP_B32_TEXT['vocab_size']}")
    return tok


# ---------------------------------------------------------------- golden images

def golden_images() -> dict[str, Image.Image]:
    """The golden cases' images: held-out pictogram scenes drawn at 1,024 px, with pixel noise."""
    from vildtrain.data.art import ArtLibrary
    from vildtrain.data.categories import load_categories
    from vildtrain.data.scenes import HELDOUT_SETS, generate_scene, scene_rng
    cats = load_categories()
    seed, styles = HELDOUT_SETS["seen"]
    art = ArtLibrary(styles=styles, categories=cats)
    out = {}
    for name, index, crop, size in GOLDEN_CASES:
        img, _ = generate_scene(scene_rng(seed + 104729, index), art, cats, styles, size=1024,
                                label_novel=True, min_px=48, max_px=400)
        if crop:
            img = img.crop(crop)
        if size:
            img = img.resize(size, Image.BILINEAR)
        # Flat areas give equal RPN logits at many places, and equal logits have no
        # defined order (the goldens compare proposals in order); noise breaks the ties.
        pixels = np.asarray(img.convert("RGB"), dtype=np.float32)
        pixels = pixels + np.random.default_rng(index).normal(0.0, NOISE, pixels.shape)
        out[name] = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))
    return out


# ---------------------------------------------------------------- the bundle

def log(msg: str, start: float) -> None:
    print(f"export_reference: [{time.time() - start:6.1f} s] {msg}", file=sys.stderr, flush=True)


@torch.no_grad()
def export_reference(out: str, arch: str = "r50-fpn-clip-b32", seed: int = 0,
                     num_categories: int = DEFAULT_CATEGORIES, images: dict[str, Image.Image] | None = None,
                     detector: str | None = None, clip_checkpoint: str | None = None,
                     tokenizer_source: str | None = None) -> dict:
    """Write the reference bundle to ``out`` (replaced); returns the manifest.

    With ``detector`` (a checkpoint for :mod:`convert_detector`) and/or
    ``clip_checkpoint`` (for :mod:`convert_clip`, with ``tokenizer_source``)
    those weights replace the random ones: a trained ViLD becomes a bundle."""
    if arch not in ARCHES:
        raise ValueError(f"export_reference: unknown --arch {arch!r}; known: {', '.join(ARCHES)}")
    start = time.time()
    torch.manual_seed(seed)
    images = images if images is not None else golden_images()
    if detector:
        from vildtrain.export.convert_detector import detector_from_state_dict
        model = detector_from_state_dict(torch.load(detector, map_location="cpu"))
        cfg = model.cfg
    else:
        cfg = reference_config()
        model = build_detector(cfg)
        calibrate_batchnorm(model, [preprocess(img, cfg).image for img in images.values()])
    if clip_checkpoint:
        from vildtrain.export.convert_clip import load_tower
        clip, _ = load_tower(clip_checkpoint)
    else:
        clip = ClipTextTower(**CLIP_B32_TEXT).eval()
    if cfg.embed_dim != clip.embed_dim:
        raise ValueError(f"export_reference: the detector embeds in {cfg.embed_dim} dimensions, the text tower "
                         f"in {clip.embed_dim}")
    log(f"R50-FPN ({sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters, "
        f"{detector or 'random, BatchNorms set from the golden images'}) and the text tower "
        f"({sum(p.numel() for p in clip.parameters()) / 1e6:.1f} M, {clip_checkpoint or 'random'})", start)
    fold_batchnorm(model)
    for part in (model.backbone, model.rpn, model.box_head):
        round_to_half(part)

    readme = _clear(out)
    if clip_checkpoint:
        from vildtrain.export.convert_clip import check_tokenizer, write_tokenizer as copy_tokenizer
        if not tokenizer_source:
            raise ValueError("export_reference: --clip needs --tokenizer")
        tokenizer = copy_tokenizer(tokenizer_source, os.path.join(out, "tokenizer"))
        check_tokenizer(clip, tokenizer)
    else:
        tokenizer = write_tokenizer(os.path.join(out, "tokenizer"))
    os.makedirs(os.path.join(out, "golden", "tokenizer"))
    clip_tokenizer.write_goldens(os.path.join(out, "golden", "tokenizer", "goldens.json"),
                                 clip_tokenizer.goldens(tokenizer, clip.context_length))
    log(f"tokenizer: {tokenizer.vocab_size} tokens, {len(tokenizer.merges)} merges; goldens of the tricky "
        f"inputs in golden/tokenizer", start)
    export_graphs(model, clip, out)
    for graph in ("backbone.onnx", "box_head.onnx"):
        store_half(os.path.join(out, graph))
    log("graphs exported", start)

    categories = reference_categories(num_categories)
    names = [c.name for c in categories]
    save_npy(os.path.join(out, "background.npy"), model.background_embedding())
    write_text_golden(os.path.join(out, "golden", "text"), clip, tokenizer, names[:2])
    ids = torch.from_numpy(tokenizer.encode_batch([t.format(n) for n in names[:2] for t in TEMPLATES],
                                                  clip.context_length))
    trim = float((clip.encode_trimmed(ids) - clip.encode_text(ids)).abs().max())
    if trim > 1e-5:
        raise ValueError(f"export_reference: trimmed text encoding differs by {trim:.3g} from the full context")
    log(f"text goldens written; the trimmed context differs by {trim:.2g} from the full one", start)
    logged = [0]

    def progress(done: int, total: int) -> None:   # about every tenth
        if done == total or done - logged[0] >= total / 10:
            logged[0] = done
            log(f"category embeddings {done}/{total}", start)

    cat_emb = clip.text_embeddings(names, tokenizer, TEMPLATES, progress=progress).float()
    save_npy(os.path.join(out, "category_embeddings.npy"), cat_emb)

    vocab = Vocabulary(names, cat_emb, [c.split == "base" for c in categories])
    counts = {}
    for case, img in images.items():
        counts[case] = write_golden_case(os.path.join(out, "golden", case), model, img, vocab)
        log(f"golden case {case} ({img.width}x{img.height}): {counts[case]} detections", start)

    cmd = f"python3 -m vildtrain export_reference --arch {arch} --out DIR --seed {seed} --categories {num_categories}"
    if detector or clip_checkpoint:
        cmd += (f" --detector {detector}" if detector else "") + (f" --clip {clip_checkpoint}" if clip_checkpoint else "") \
            + (f" --tokenizer {tokenizer_source}" if tokenizer_source else "")
    random = [part for part, given in (("detector", detector), ("text tower", clip_checkpoint)) if not given]
    training = {"command": cmd, "seed": seed, "commit": git_commit(),
                "note": (f"random weights ({', '.join(random)}): reference architectures for parity and latency"
                         if random else "converted weights"),
                "detector": {k: v for k, v in cfg.to_dict().items() if k != "extra"},
                "text_encoder": dict(clip.cfg), "golden_detections": counts}
    man = manifest(cfg, clip, categories, training, NAME if detector is None else "r50-fpn-vild")
    _write_manifest(out, man)
    if readme is not None:
        with open(os.path.join(out, "README.md"), "wb") as f:
            f.write(readme)
    log(f"wrote {out}", start)
    return man


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="vildtrain export_reference", description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="r50-fpn-clip-b32", choices=ARCHES)
    ap.add_argument("--out", required=True, help="bundle directory to (re)create")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--categories", type=int, default=DEFAULT_CATEGORIES,
                    help=f"manifest categories, precomputed (default {DEFAULT_CATEGORIES})")
    ap.add_argument("--detector", help="trained weights instead of random: a torchvision Mask R-CNN R50-FPN "
                    "state_dict with ViLD heads (see convert_detector)")
    ap.add_argument("--clip", help="trained text tower instead of random: OpenAI or Hugging Face CLIP (see convert_clip)")
    ap.add_argument("--tokenizer", help="with --clip: vocab.json + merges.txt directory or bpe_simple_vocab_16e6.txt.gz")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    man = export_reference(args.out, args.arch, args.seed, args.categories, detector=args.detector,
                           clip_checkpoint=args.clip, tokenizer_source=args.tokenizer)
    total = sum(os.path.getsize(os.path.join(args.out, f)) for f in man["sha256"]) / 1e6
    print(f"export_reference: wrote {args.out} ({len(man['sha256']) + 1} files, {total:.0f} MB)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
