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
import math
import os
import sys
import time
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from torchvision.models import resnet50
from torchvision.models.resnet import Bottleneck
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.detection.faster_rcnn import TwoMLPHead
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from vildtrain.export.export import (_clear, _write_manifest, export_graphs, fold_batchnorm, git_commit, manifest,
                                     round_to_half, save_npy, store_half, write_golden_case, write_text_golden)
from vildtrain.models.detector import DetectorConfig, VildDetector
from vildtrain.models.infer import Vocabulary, preprocess
from vildtrain.text import clip_tokenizer
from vildtrain.text.prompts import TEMPLATES

ARCHES = ("r50-fpn-clip-b32",)
NAME = "r50-fpn-clip-b32-random"
RESIDUAL_BN_SCALE = 0.2
NOISE = 2.0  # golden images: Gaussian pixel noise (of 255), as a camera adds

# CLIP ViT-B/32's text tower (OpenAI's ModifiedResNet/ViT configs share it).
CLIP_B32_TEXT = {"vocab_size": 49408, "context_length": 77, "width": 512, "layers": 12, "heads": 8, "embed_dim": 512}

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


def reference_config() -> DetectorConfig:
    """The manifest numbers of torchvision's Mask R-CNN R50-FPN (test time), ViLD's 512-d heads."""
    return DetectorConfig(
        embed_dim=512, widths=(256, 512, 1024, 2048), blocks=(3, 4, 6, 3), fpn_channels=256,
        anchor_sizes=(32, 64, 128, 256, 512), aspect_ratios=(0.5, 1.0, 2.0),
        rpn_pre_nms_top_n_test=1000, rpn_post_nms_top_n_test=1000, rpn_nms_iou=0.7,
        head_hidden=1024, image_head_hidden=1024, max_side=1024, size_divisible=64,
        extra={"arch": "r50-fpn-clip-b32"})


# ---------------------------------------------------------------- detector parts

class R50FPN(nn.Module):
    """torchvision's ``resnet_fpn_backbone("resnet50")`` (state_dict keys ``body.*``,
    ``fpn.*`` as in ``maskrcnn_resnet50_fpn``'s ``backbone.*``), with plain
    BatchNorm2d (folded on export) and levels named p2..p6."""

    def __init__(self, cfg: DetectorConfig) -> None:
        super().__init__()
        net = resnet50(weights=None, norm_layer=nn.BatchNorm2d)
        self.body = IntermediateLayerGetter(net, {f"layer{i + 1}": f"p{i + 2}" for i in range(4)})
        self.fpn = FeaturePyramidNetwork(list(cfg.widths), cfg.fpn_channels, extra_blocks=LastLevelMaxPool())
        self.names = cfg.level_names

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        out = self.fpn(self.body(x))
        return OrderedDict((name, f) for name, f in zip(self.names, out.values()))


class ReferenceBoxHead(nn.Module):
    """Pooled RoIs -> (text embeddings, image embeddings, box deltas): torchvision's
    ``TwoMLPHead`` (fc6, fc7) shared by ViLD's text and image projections and a
    class-agnostic box regressor."""

    def __init__(self, cfg: DetectorConfig) -> None:
        super().__init__()
        self.box_head = TwoMLPHead(cfg.fpn_channels * cfg.roi_output_size ** 2, cfg.head_hidden)
        self.text_proj = nn.Linear(cfg.head_hidden, cfg.embed_dim)
        self.image_proj = nn.Linear(cfg.head_hidden, cfg.embed_dim)
        self.box_pred = nn.Linear(cfg.head_hidden, 4)
        nn.init.normal_(self.box_pred.weight, std=0.001)   # torchvision's FastRCNNPredictor bbox_pred
        nn.init.zeros_(self.box_pred.bias)

    def forward(self, rois: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        h = self.box_head(rois)
        return F.normalize(self.text_proj(h), dim=-1), F.normalize(self.image_proj(h), dim=-1), self.box_pred(h)


def build_detector(cfg: DetectorConfig) -> VildDetector:
    """A VildDetector (torchvision's RPN, anchors and RoIAlign, the same inference
    code and exporter as the trained detector) with the R50-FPN body and box head."""
    model = VildDetector(DetectorConfig(**{**cfg.to_dict(), "widths": (8, 8, 8, 8), "blocks": (1, 1, 1, 1),
                                           "fpn_channels": cfg.fpn_channels}))
    model.cfg = cfg
    model.backbone = R50FPN(cfg)
    model.box_head = ReferenceBoxHead(cfg)
    # The last BatchNorm of each Bottleneck at scale 0.2 instead of 1 (trained
    # ResNets have small ones; torchvision's zero_init_residual starts them at 0):
    # at 1 the residual stream grows block by block and float32 rounding with it
    # (PyTorch float32 vs float64 on a golden image: 5e-4 at 1, 2e-5 at 0.2).
    for m in model.backbone.body.modules():
        if isinstance(m, Bottleneck):
            nn.init.constant_(m.bn3.weight, RESIDUAL_BN_SCALE)
    # The RPN objectness layer at 0.1 instead of torchvision's 0.01, so the random
    # logits spread and the goldens' top-n and NMS orders are not near-ties.
    nn.init.normal_(model.rpn.head.cls_logits.weight, std=0.1)
    return model.eval()


@torch.no_grad()
def calibrate_batchnorm(model: VildDetector, images: list[Tensor]) -> None:
    """Set every body BatchNorm's statistics to the mean and variance of its input
    over ``images`` (train-mode passes with a cumulative average)."""
    bns = [m for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.backbone.train()
    for x in images:
        model.backbone.body(x)
    model.backbone.eval()
    for bn in bns:
        bn.momentum = 0.1


# ---------------------------------------------------------------- CLIP text tower

class QuickGELU(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


class Attention(nn.Module):
    """``nn.MultiheadAttention``'s parameters (in_proj_weight/bias, out_proj), written out."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        b, length, width = x.shape
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        split = lambda t: t.reshape(b, length, self.heads, -1).transpose(1, 2)  # noqa: E731
        q, k, v = split(q), split(k), split(v)
        att = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1]) + mask
        y = (att.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, length, width)
        return self.out_proj(y)


ACTIVATIONS = {"quick_gelu": QuickGELU, "gelu": nn.GELU}


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int, activation: str = "quick_gelu") -> None:
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = Attention(width, heads)
        self.mlp = nn.Sequential(OrderedDict([("c_fc", nn.Linear(width, 4 * width)),
                                              ("gelu", ACTIVATIONS[activation]()),
                                              ("c_proj", nn.Linear(4 * width, width))]))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x), mask)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, activation: str = "quick_gelu") -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads, activation) for _ in range(layers))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        for block in self.resblocks:
            x = block(x, mask)
        return x


class ClipTextTower(nn.Module):
    """CLIP's text encoder with OpenAI's state_dict keys (``token_embedding``,
    ``positional_embedding``, ``transformer.resblocks.N.*``, ``ln_final``,
    ``text_projection``) and initialisation (``CLIP.initialize_parameters``).

    ``encode_text(ids)``: int64 [B, L] CLIP layout -> [B, D], L2-normalised,
    pooled at the end token (the largest id: ArgMax in the graph)."""

    def __init__(self, vocab_size: int, context_length: int, width: int, layers: int, heads: int,
                 embed_dim: int, activation: str = "quick_gelu") -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"export_reference: activation {activation!r}; known: {', '.join(ACTIVATIONS)}")
        self.cfg = {"vocab_size": vocab_size, "context_length": context_length, "width": width,
                    "layers": layers, "heads": heads, "embed_dim": embed_dim, "activation": activation}
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, width))
        self.transformer = Transformer(width, layers, heads, activation)
        self.ln_final = nn.LayerNorm(width)
        self.text_projection = nn.Parameter(torch.empty(width, embed_dim))
        self.register_buffer("attn_mask", torch.full((context_length, context_length), float("-inf")).triu(1),
                             persistent=False)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        proj_std = width ** -0.5 * (2 * layers) ** -0.5
        for block in self.transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=width ** -0.5)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.zeros_(block.attn.out_proj.bias)
            nn.init.normal_(block.mlp.c_fc.weight, std=(2 * width) ** -0.5)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
        nn.init.normal_(self.text_projection, std=width ** -0.5)

    @property
    def context_length(self) -> int:
        return self.cfg["context_length"]

    @property
    def embed_dim(self) -> int:
        return self.cfg["embed_dim"]

    def encode_text(self, ids: Tensor) -> Tensor:
        length = ids.shape[1]
        x = self.token_embedding(ids) + self.positional_embedding[:length]
        x = self.ln_final(self.transformer(x, self.attn_mask[:length, :length]))
        x = x[torch.arange(x.shape[0]), ids.argmax(dim=-1)] @ self.text_projection
        return F.normalize(x, dim=-1)

    @torch.no_grad()
    def encode_trimmed(self, ids: Tensor) -> Tensor:
        """``encode_text`` on the ids cut after the batch's last end token. The same
        numbers: with the causal mask no position attends to a later one, so the
        padding after the end token never reaches the pooled position (checked
        against ``encode_text`` by the exporter and tests/test_reference.py)."""
        return self.encode_text(ids[:, : int(ids.argmax(dim=-1).max()) + 1])

    @torch.no_grad()
    def text_embeddings(self, names: list[str], tokenizer, templates: list[str] | None = None,
                        batch: int = 240, progress=None) -> Tensor:
        """Prompt-ensemble embeddings [K, D] (mean of the unit prompt embeddings, renormalised)."""
        templates = templates or TEMPLATES
        per = max(1, batch // len(templates))
        out = []
        for start in range(0, len(names), per):
            chunk = names[start:start + per]
            ids = torch.from_numpy(tokenizer.encode_batch([t.format(n) for n in chunk for t in templates],
                                                          self.context_length))
            emb = self.encode_trimmed(ids).view(len(chunk), len(templates), -1).mean(dim=1)
            out.append(F.normalize(emb, dim=-1))
            if progress:
                progress(start + len(chunk), len(names))
        return torch.cat(out)


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
