"""A tiny, randomly initialised bundle with golden outputs, for the Go tests.

    python3 -m vildtrain fixture_bundle --out testdata/tinybundle

It follows docs/bundle.md exactly, with torchvision's own components: a small
conv body with a 3-level FeaturePyramidNetwork (p3, p4 pooled by RoIAlign; p5
from LastLevelMaxPool, RPN only), RPNHead, AnchorGenerator,
RegionProposalNetwork.filter_proposals, MultiScaleRoIAlign, a TwoMLPHead box
head with text/image embedding heads and class-agnostic deltas decoded by
BoxCoder, and a one-block causal transformer text encoder pooled at the end token
(ArgMax of the ids, inside the graph). The weights are random: the goldens test
numerics, not accuracy. The same harness in Go runs over the trained bundle.

Everything is deterministic (seed 0), so re-running the command reproduces the
committed files byte for byte, given the same torch/onnx versions.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
from collections import OrderedDict

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import TwoMLPHead
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead, concat_box_prediction_layers
from torchvision.models.detection._utils import BoxCoder
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign, batched_nms, boxes as box_ops
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from torchvision.ops.poolers import initLevelMapper

from vildtrain.text import clip_tokenizer
from vildtrain.text.prompts import TEMPLATES

OPSET = 17
SEED = 0
CHANNELS = 16
DIM = 32
CONTEXT = 16
MAX_SIDE = 128
DIVISIBLE = 32
LEVELS = [
    {"name": "p3", "stride": 8, "anchor_sizes": [16], "rpn": True, "roi": True},
    {"name": "p4", "stride": 16, "anchor_sizes": [32], "rpn": True, "roi": True},
    {"name": "p5", "stride": 32, "anchor_sizes": [64], "rpn": True, "roi": False},
]
RATIOS = [0.5, 1.0, 2.0]
MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]
RPN_CFG = {"pre_nms_top_n": 200, "post_nms_top_n": 60, "nms_iou": 0.7, "min_size": 0.001,
           "score_threshold": 0.0, "box_coder_weights": [1.0, 1.0, 1.0, 1.0]}
ROI_CFG = {"output_size": 7, "sampling_ratio": 2, "aligned": False, "canonical_scale": 224, "canonical_level": 4}
BOX_WEIGHTS = [10.0, 10.0, 5.0, 5.0]
EMBEDDING = {"dim": DIM, "temperature": 0.01, "ensemble_lambda": 2.0 / 3.0}
POSTPROCESS = {"score_threshold": 0.05, "nms_iou": 0.5, "max_detections": 100}
CATEGORIES = [
    {"name": "cat", "split": "base", "synonyms": ["kitty"]},
    {"name": "dog", "split": "base", "synonyms": ["puppy"]},
    {"name": "mug", "split": "base"},
    {"name": "kettle", "split": "novel"},
    {"name": "red umbrella", "split": "novel"},
    {"name": "apple", "split": "base"},
    {"name": "bicycle", "split": "novel"},
    {"name": "hot air balloon", "split": "novel"},
]
ROIS_SAVED = 6  # golden rois.npy keeps the first few proposals' pooled features


class Backbone(nn.Module):
    """image [1,3,H,W] -> per level: feat_L (roi levels), rpn_logits_L, rpn_deltas_L."""

    def __init__(self) -> None:
        super().__init__()
        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.BatchNorm2d(cout), nn.ReLU())
        self.stem = nn.Sequential(block(3, 8), block(8, 12), block(12, 16))   # stride 8
        self.c4 = block(16, 24)                                               # stride 16
        self.fpn = FeaturePyramidNetwork([16, 24], CHANNELS, extra_blocks=LastLevelMaxPool())
        self.rpn_head = RPNHead(CHANNELS, len(RATIOS))
        for layer in self.rpn_head.modules():
            # Wider than torchvision's N(0, 0.01) so the logits spread and the
            # goldens' top-k and NMS orders are far from ties.
            if isinstance(layer, nn.Conv2d):
                nn.init.normal_(layer.weight, std=0.2)
                nn.init.normal_(layer.bias, std=0.5)
        nn.init.normal_(self.rpn_head.cls_logits.weight, std=1.0)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                nn.init.uniform_(m.weight, 0.5, 1.5)
                nn.init.normal_(m.bias, std=0.1)
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)

    def features(self, image: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        c3 = self.stem(image)
        c4 = self.c4(c3)
        out = self.fpn(OrderedDict([("p3", c3), ("p4", c4)]))
        return OrderedDict([("p3", out["p3"]), ("p4", out["p4"]), ("p5", out["pool"])])

    def forward(self, image: torch.Tensor):
        feats = self.features(image)
        logits, deltas = self.rpn_head(list(feats.values()))
        outs = []
        for i, level in enumerate(LEVELS):
            if level["roi"]:
                outs.append(feats[level["name"]])
            outs += [logits[i], deltas[i]]
        return tuple(outs)


def backbone_output_names() -> list[str]:
    names = []
    for level in LEVELS:
        if level["roi"]:
            names.append(f"feat_{level['name']}")
        names += [f"rpn_logits_{level['name']}", f"rpn_deltas_{level['name']}"]
    return names


class BoxHead(nn.Module):
    """rois [N,C,S,S] -> text_embeddings [N,D], image_embeddings [N,D], box_deltas [N,4]."""

    def __init__(self) -> None:
        super().__init__()
        size = ROI_CFG["output_size"]
        self.mlp = TwoMLPHead(CHANNELS * size * size, 32)
        self.norm = nn.BatchNorm1d(32)
        self.text = nn.Linear(32, DIM)
        self.image = nn.Linear(32, DIM)
        self.deltas = nn.Linear(32, 4)
        nn.init.normal_(self.deltas.weight, std=0.05)
        # No bias: the embedding directions then vary with the region.
        nn.init.zeros_(self.text.bias)
        nn.init.zeros_(self.image.bias)

    def forward(self, rois: torch.Tensor):
        x = self.norm(self.mlp(rois))
        return F.normalize(self.text(x), dim=-1), F.normalize(self.image(x), dim=-1), self.deltas(x)


class TextEncoder(nn.Module):
    """input_ids [B,L] -> text_embeddings [B,D]: one pre-norm causal transformer block,
    pooled at the end token (the largest id, found by ArgMax), as CLIP does."""

    def __init__(self, vocab_size: int, width: int = 16, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.token = nn.Embedding(vocab_size, width)
        self.position = nn.Parameter(torch.randn(CONTEXT, width) * 0.1)
        self.ln1, self.ln2, self.ln_final = nn.LayerNorm(width), nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.out = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))
        self.proj = nn.Linear(width, DIM, bias=False)
        self.register_buffer("mask", torch.full((CONTEXT, CONTEXT), float("-inf")).triu(1), persistent=False)
        # Scaled so that random prompt-ensemble embeddings of different names
        # differ (pairwise cosine <= 0.94) instead of collapsing onto one vector.
        nn.init.normal_(self.qkv.weight, std=0.2)
        nn.init.normal_(self.out.weight, std=1.0)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        b, length = input_ids.shape
        x = self.token(input_ids) + self.position[:length]
        q, k, v = self.qkv(self.ln1(x)).chunk(3, dim=-1)
        split = lambda t: t.reshape(b, length, self.heads, -1).transpose(1, 2)  # noqa: E731
        q, k, v = split(q), split(k), split(v)
        att = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1]) + self.mask[:length, :length]
        y = (att.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, length, -1)
        x = x + self.out(y)
        x = x + self.mlp(self.ln2(x))
        x = self.ln_final(x)
        x = x[torch.arange(b), input_ids.argmax(dim=-1)]
        return F.normalize(self.proj(x), dim=-1)


# ---------------------------------------------------------------------------
# The inference semantics of docs/bundle.md, with torchvision's components.

def preprocess(img: Image.Image) -> tuple[torch.Tensor, dict]:
    """docs/bundle.md "input": RGB -> [0,1] -> resize the longer side to MAX_SIDE
    (F.interpolate bilinear, align_corners=False, no antialias; the shorter side
    rounds half up) -> normalise -> zero-pad to multiples of DIVISIBLE."""
    arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    x = torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div(255.0)[None]
    h, w = x.shape[-2:]
    if h >= w:
        rh, rw = MAX_SIDE, max(1, int(math.floor(w * MAX_SIDE / h + 0.5)))
    else:
        rh, rw = max(1, int(math.floor(h * MAX_SIDE / w + 0.5))), MAX_SIDE
    if (rh, rw) != (h, w):
        x = F.interpolate(x, size=(rh, rw), mode="bilinear", align_corners=False)
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    pw, ph = math.ceil(rw / DIVISIBLE) * DIVISIBLE, math.ceil(rh / DIVISIBLE) * DIVISIBLE
    x = F.pad(x, (0, pw - rw, 0, ph - rh))
    meta = {"width": w, "height": h, "resized_width": rw, "resized_height": rh,
            "padded_width": pw, "padded_height": ph, "scale_x": rw / w, "scale_y": rh / h}
    return x.contiguous(), meta


def make_rpn(head: RPNHead) -> RegionProposalNetwork:
    anchors = AnchorGenerator(sizes=tuple(tuple(l["anchor_sizes"]) for l in LEVELS),
                              aspect_ratios=(tuple(RATIOS),) * len(LEVELS))
    return RegionProposalNetwork(
        anchors, head, fg_iou_thresh=0.7, bg_iou_thresh=0.3, batch_size_per_image=256, positive_fraction=0.5,
        pre_nms_top_n={"training": RPN_CFG["pre_nms_top_n"], "testing": RPN_CFG["pre_nms_top_n"]},
        post_nms_top_n={"training": RPN_CFG["post_nms_top_n"], "testing": RPN_CFG["post_nms_top_n"]},
        nms_thresh=RPN_CFG["nms_iou"], score_thresh=RPN_CFG["score_threshold"]).eval()


def make_pooler() -> MultiScaleRoIAlign:
    names = [l["name"] for l in LEVELS if l["roi"]]
    pooler = MultiScaleRoIAlign(names, ROI_CFG["output_size"], ROI_CFG["sampling_ratio"],
                                canonical_scale=ROI_CFG["canonical_scale"], canonical_level=ROI_CFG["canonical_level"])
    # The scales are the strides (torchvision would infer them from the sizes,
    # which rounds wrongly on small padded images).
    strides = [l["stride"] for l in LEVELS if l["roi"]]
    pooler.scales = [1.0 / s for s in strides]
    pooler.map_levels = initLevelMapper(int(math.log2(strides[0])), int(math.log2(strides[-1])),
                                        canonical_scale=ROI_CFG["canonical_scale"],
                                        canonical_level=ROI_CFG["canonical_level"])
    return pooler


def score(text_emb, image_emb, boxes, classes: torch.Tensor, base: torch.Tensor, background: torch.Tensor,
          labels: list[str]) -> list[dict]:
    """docs/bundle.md scoring with the ensemble head, one class per label."""
    tau, lam = EMBEDDING["temperature"], EMBEDDING["ensemble_lambda"]
    logits_text = torch.cat([text_emb @ background[:, None], text_emb @ classes.T], dim=1) / tau
    p_text = logits_text.softmax(dim=1)[:, 1:]
    p_img = (image_emb @ classes.T / tau).softmax(dim=1)
    p = torch.where(base[None], p_text ** lam * p_img ** (1 - lam), p_text ** (1 - lam) * p_img ** lam)
    best, label = p.max(dim=1)
    keep = best >= POSTPROCESS["score_threshold"]
    boxes, best, label = boxes[keep], best[keep], label[keep]
    keep = batched_nms(boxes, best, label, POSTPROCESS["nms_iou"])[: POSTPROCESS["max_detections"]]
    return [{"label": labels[int(label[i])], "score": float(best[i]), "box": [float(v) for v in boxes[i]]}
            for i in keep]


@torch.no_grad()
def regions(img: Image.Image, backbone: Backbone, rpn: RegionProposalNetwork, pooler: MultiScaleRoIAlign) -> dict:
    """Preprocess, backbone, anchors, proposals and pooled features of one image."""
    image, meta = preprocess(img)
    outputs = dict(zip(backbone_output_names(), backbone(image)))
    size = (meta["resized_height"], meta["resized_width"])
    logits = [outputs[f"rpn_logits_{l['name']}"] for l in LEVELS]
    deltas = [outputs[f"rpn_deltas_{l['name']}"] for l in LEVELS]
    anchors = rpn.anchor_generator(ImageList(image, [size]), logits)[0]
    counts = [o[0].numel() for o in logits]
    objectness, pred = concat_box_prediction_layers(logits, deltas)
    proposals = rpn.box_coder.decode(pred, [anchors]).view(1, -1, 4)
    boxes, scores = rpn.filter_proposals(proposals, objectness, [size], counts)
    feats = OrderedDict((l["name"], outputs[f"feat_{l['name']}"]) for l in LEVELS if l["roi"])
    rois = pooler(feats, [boxes[0]], [size])
    return {"image": image, "meta": meta, "size": size, "outputs": outputs, "anchors": anchors.split(counts),
            "proposals": boxes[0], "scores": scores[0], "rois": rois}


@torch.no_grad()
def calibrate(box_head: "BoxHead", rois: torch.Tensor) -> None:
    """Set the box head's BatchNorm statistics from real regions, so that random
    region embeddings differ between regions (else they all point one way)."""
    x = box_head.mlp(rois)
    box_head.norm.running_mean.copy_(x.mean(dim=0))
    box_head.norm.running_var.copy_(x.var(dim=0) + 1e-3)


@torch.no_grad()
def golden_case(out: str, img: Image.Image, backbone: Backbone, box_head: "BoxHead", rpn: RegionProposalNetwork,
                pooler: MultiScaleRoIAlign, classes, base, background, labels) -> None:
    os.makedirs(out, exist_ok=True)
    img.save(os.path.join(out, "input.png"))
    r = regions(img, backbone, rpn, pooler)
    meta, size = r["meta"], r["size"]
    with open(os.path.join(out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    save = lambda name, t: np.save(os.path.join(out, name), t.detach().numpy().astype(t.dtype == torch.int64 and "<i8" or "<f4"))  # noqa: E731
    save("image.npy", r["image"])
    for name, t in r["outputs"].items():
        save(f"{name}.npy", t)
    for level, a in zip(LEVELS, r["anchors"]):
        save(f"anchors_{level['name']}.npy", a)
    proposals = r["proposals"]
    save("proposals.npy", proposals)
    save("proposal_scores.npy", r["scores"])
    save("rois.npy", r["rois"][:ROIS_SAVED])
    text_emb, image_emb, box_deltas = box_head(r["rois"])
    save("text_embeddings.npy", text_emb)
    save("image_embeddings.npy", image_emb)
    save("box_deltas.npy", box_deltas)

    refined = BoxCoder(tuple(BOX_WEIGHTS)).decode_single(box_deltas, proposals)
    refined = box_ops.clip_boxes_to_image(refined, size)
    refined = refined / torch.tensor([meta["scale_x"], meta["scale_y"]] * 2)
    refined = box_ops.clip_boxes_to_image(refined, (meta["height"], meta["width"]))
    save("boxes.npy", refined)
    dets = score(text_emb, image_emb, refined, classes, base, background, labels)
    with open(os.path.join(out, "detections.json"), "w") as f:
        json.dump(dets, f, indent=1)


def scene(w: int, h: int, seed: int) -> Image.Image:
    """A small synthetic scene: a gradient with a few coloured shapes."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / w, y * 255 / h, np.full_like(x, 128.0)], -1).astype(np.uint8)
    img = Image.fromarray(base)
    draw = ImageDraw.Draw(img)
    for _ in range(4):
        x0, y0 = rng.integers(0, w - 8), rng.integers(0, h - 8)
        x1, y1 = x0 + rng.integers(6, max(7, w // 2)), y0 + rng.integers(6, max(7, h // 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x1, y1], fill=colour)
    return img


CASES = {"exact": (128, 96), "downscale": (150, 100), "upscale": (60, 90)}


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read())
    return h.hexdigest()


def export(model: nn.Module, args: tuple, path: str, inputs: list[str], outputs: list[str], dynamic: dict) -> None:
    torch.onnx.export(model, args, path, opset_version=OPSET, input_names=inputs, output_names=outputs,
                      dynamic_axes=dynamic, do_constant_folding=True)
    onnx.checker.check_model(onnx.load(path))


@torch.no_grad()
def build(out: str, tokenizer_dir: str | None = None) -> None:
    torch.manual_seed(SEED)
    if os.path.exists(out):
        shutil.rmtree(out)
    os.makedirs(os.path.join(out, "tokenizer"))
    tok_dir = tokenizer_dir or clip_tokenizer.data_dir()
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(os.path.join(tok_dir, name), os.path.join(out, "tokenizer", name))
    tok = clip_tokenizer.load(tok_dir)

    backbone, box_head = Backbone().eval(), BoxHead().eval()
    text = TextEncoder(len(tok.encoder)).eval()

    rpn, pooler = make_rpn(backbone.rpn_head), make_pooler()
    scenes = {case: scene(w, h, i) for i, (case, (w, h)) in enumerate(sorted(CASES.items()))}
    calibrate(box_head, torch.cat([regions(img, backbone, rpn, pooler)["rois"] for img in scenes.values()]))

    image = torch.randn(1, 3, 96, 128)
    export(backbone, (image,), os.path.join(out, "backbone.onnx"), ["image"], backbone_output_names(),
           {"image": {2: "H", 3: "W"}, **{n: {2: f"h_{n}", 3: f"w_{n}"} for n in backbone_output_names()}})
    rois = torch.randn(5, CHANNELS, ROI_CFG["output_size"], ROI_CFG["output_size"])
    export(box_head, (rois,), os.path.join(out, "box_head.onnx"), ["rois"],
           ["text_embeddings", "image_embeddings", "box_deltas"],
           {"rois": {0: "N"}, "text_embeddings": {0: "N"}, "image_embeddings": {0: "N"}, "box_deltas": {0: "N"}})
    ids = torch.from_numpy(tok.encode_batch(["a photo of a dog.", "a kettle"], CONTEXT))
    export(text, (ids,), os.path.join(out, "text_encoder.onnx"), ["input_ids"], ["text_embeddings"],
           {"input_ids": {0: "B"}, "text_embeddings": {0: "B"}})

    background = F.normalize(torch.randn(DIM), dim=0)
    np.save(os.path.join(out, "background.npy"), background.numpy().astype("<f4"))
    names = [c["name"] for c in CATEGORIES]
    prompts = [t.format(n) for n in names for t in TEMPLATES]
    prompt_ids = torch.from_numpy(tok.encode_batch(prompts, CONTEXT))
    prompt_emb = text(prompt_ids)
    classes = F.normalize(prompt_emb.view(len(names), len(TEMPLATES), -1).mean(dim=1), dim=-1)
    np.save(os.path.join(out, "category_embeddings.npy"), classes.numpy().astype("<f4"))

    gdir = os.path.join(out, "golden", "text")
    os.makedirs(gdir)
    with open(os.path.join(gdir, "prompts.json"), "w") as f:
        json.dump(prompts[: 2 * len(TEMPLATES)], f, indent=1)
    np.save(os.path.join(gdir, "input_ids.npy"), prompt_ids[: 2 * len(TEMPLATES)].numpy().astype("<i8"))
    np.save(os.path.join(gdir, "text_embeddings.npy"), prompt_emb[: 2 * len(TEMPLATES)].numpy().astype("<f4"))

    base = torch.tensor([c["split"] == "base" for c in CATEGORIES])
    for case, img in scenes.items():
        golden_case(os.path.join(out, "golden", case), img, backbone, box_head, rpn, pooler,
                    classes, base, background, names)

    files = []
    for root, _, fnames in os.walk(out):
        for fname in fnames:
            rel = os.path.relpath(os.path.join(root, fname), out).replace(os.sep, "/")
            if rel != "manifest.json":
                files.append(rel)
    manifest = {
        "format": "vild-bundle/1",
        "name": "tiny-random-fixture",
        "input": {"max_side": MAX_SIDE, "size_divisible": DIVISIBLE, "mean": MEAN, "std": STD, "resize": "bilinear"},
        "fpn": {"channels": CHANNELS, "levels": LEVELS},
        "anchors": {"aspect_ratios": RATIOS},
        "rpn": RPN_CFG,
        "roi_align": ROI_CFG,
        "box_head": {"box_coder_weights": BOX_WEIGHTS},
        "embedding": EMBEDDING,
        "postprocess": POSTPROCESS,
        "text": {"tokenizer": "clip-bpe", "context_length": CONTEXT, "templates": TEMPLATES},
        "categories": CATEGORIES,
        "training": {"command": "python3 -m vildtrain fixture_bundle --out DIR", "seed": SEED,
                     "commit": "", "note": "random weights: a numerics fixture, not a detector"},
        "sha256": {f: sha256(os.path.join(out, f)) for f in sorted(files)},
    }
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="vildtrain fixture_bundle", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="bundle directory to (re)create")
    p.add_argument("--tokenizer", default=None, help="directory with vocab.json + merges.txt "
                   "(default: training/data/tokenizer)")
    args = p.parse_args(argv)
    build(args.out, args.tokenizer)
    print(f"fixture_bundle: wrote {args.out}")
    return 0
