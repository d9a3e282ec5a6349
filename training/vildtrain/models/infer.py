"""PyTorch inference with exactly the semantics of docs/bundle.md ("Semantics").

The stages mirror the Go pipeline one for one, so every intermediate tensor can
be written as a golden file (:mod:`vildtrain.export.export`) and compared:

    preprocess -> backbone graph -> anchors -> propose (torchvision
    filter_proposals, keeping logits) -> MultiScaleRoIAlign -> box-head graph ->
    decode + clip -> score (text / image / ensemble) -> per-region best label ->
    threshold -> per-label NMS -> top-k -> map to the original image.

A fourth scorer, "clip" (mini-CLIP on cropped proposals, the paper's baseline),
classifies each proposal's 1x + 1.5x crop with the mini-CLIP image encoder; its
score is the geometric mean of the class probability and the RPN objectness
(sigmoid of the proposal logit), and its boxes are the proposals themselves.

    python3 -m vildtrain infer --checkpoint training/runs/detector/detector.pt IMAGE [--head ensemble]
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torchvision.models.detection._utils import BoxCoder
from torchvision.models.detection.rpn import concat_box_prediction_layers
from torchvision.ops import boxes as box_ops

from vildtrain.models.detector import BackboneGraph, DetectorConfig, VildDetector, backbone_output_names
from vildtrain.models.losses import CROP_SCALES, crop_embeddings

HEADS: tuple[str, ...] = ("text", "image", "ensemble", "clip")


# ---------------------------------------------------------------- preprocess

@dataclass
class Prepared:
    image: Tensor            # [1,3,Hp,Wp] normalised, zero-padded to size_divisible
    image01: Tensor          # [1,3,h,w] resized RGB in [0,1], unpadded
    original: tuple[int, int]  # (height, width) of the input image
    resized: tuple[int, int]   # (height, width) after resizing
    scale: tuple[float, float]  # resize factor (y, x) = resized / original


def resized_size(height: int, width: int, max_side: int) -> tuple[int, int]:
    """Longer side = max_side; the shorter rounds half up, at least 1."""
    if height >= width:
        return max_side, max(1, int(math.floor(width * max_side / height + 0.5)))
    return max(1, int(math.floor(height * max_side / width + 0.5))), max_side


def to_tensor01(img: Image.Image) -> Tensor:
    arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div(255.0)


def preprocess(img: Image.Image, cfg: DetectorConfig) -> Prepared:
    """docs/bundle.md "input". Resizing is bilinear with half-pixel centres and edge
    clamping, no antialiasing (``F.interpolate(mode="bilinear", align_corners=False)``)."""
    x = to_tensor01(img).unsqueeze(0)
    h0, w0 = x.shape[-2:]
    h, w = resized_size(h0, w0, cfg.max_side)
    if (h, w) != (h0, w0):
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
    mean = torch.tensor(cfg.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std).view(1, 3, 1, 1)
    norm = (x - mean) / std
    d = cfg.size_divisible
    hp, wp = int(math.ceil(h / d) * d), int(math.ceil(w / d) * d)
    padded = F.pad(norm, (0, wp - w, 0, hp - h))
    return Prepared(padded, x, (int(h0), int(w0)), (h, w), (h / h0, w / w0))


# ---------------------------------------------------------------- regions

@dataclass
class Regions:
    """Everything of one image that does not depend on the vocabulary."""
    prepared: Prepared
    outputs: dict[str, Tensor]        # backbone graph outputs by name
    anchors: dict[str, Tensor]        # per RPN level [h*w*A, 4]
    proposals: Tensor                 # [N,4] resized-image pixels
    proposal_logits: Tensor           # [N] (sigmoid = filter_proposals' scores)
    rois: Tensor                      # [N,C,S,S]
    text_embeddings: Tensor           # [N,D]
    image_embeddings: Tensor          # [N,D]
    box_deltas: Tensor                # [N,4]
    boxes: Tensor                     # [N,4] decoded, clipped, original-image pixels
    extra: dict = field(default_factory=dict)


def propose(model: VildDetector, logits: list[Tensor], deltas: list[Tensor], anchors: Tensor,
            image_size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """torchvision ``RegionProposalNetwork`` (eval) for one image, returning the
    kept proposals and their logits (torchvision returns sigmoid scores)."""
    rpn = model.rpn
    num_per_level = [int(o.shape[1] * o.shape[2] * o.shape[3]) for o in logits]
    obj, pred = concat_box_prediction_layers(logits, deltas)
    boxes = rpn.box_coder.decode(pred.detach(), [anchors]).view(-1, 4)
    obj = obj.detach().view(-1)
    pre = rpn.pre_nms_top_n()
    idx, levels, offset = [], [], 0
    for lvl, n in enumerate(num_per_level):
        k = min(pre, n)
        _, top = obj[offset:offset + n].topk(k)
        idx.append(top + offset)
        levels.append(torch.full((k,), lvl, dtype=torch.int64))
        offset += n
    idx_t = torch.cat(idx)
    lvl_t = torch.cat(levels)
    boxes, obj = boxes[idx_t], obj[idx_t]
    boxes = box_ops.clip_boxes_to_image(boxes, image_size)
    keep = box_ops.remove_small_boxes(boxes, rpn.min_size)
    boxes, obj, lvl_t = boxes[keep], obj[keep], lvl_t[keep]
    keep = torch.where(torch.sigmoid(obj) >= rpn.score_thresh)[0]
    boxes, obj, lvl_t = boxes[keep], obj[keep], lvl_t[keep]
    keep = box_ops.batched_nms(boxes, torch.sigmoid(obj), lvl_t, rpn.nms_thresh)
    keep = keep[: rpn.post_nms_top_n()]
    return boxes[keep], obj[keep]


@torch.no_grad()
def regions(model: VildDetector, img: Image.Image) -> Regions:
    """Run the vocabulary-independent part of the pipeline on one image."""
    model.eval()
    cfg = model.cfg
    prep = preprocess(img, cfg)
    graph = BackboneGraph(model)
    outs = dict(zip(backbone_output_names(cfg), graph(prep.image)))
    names = cfg.level_names
    logits = [outs[f"rpn_logits_{n}"] for n in names]
    deltas = [outs[f"rpn_deltas_{n}"] for n in names]
    image_list = model.image_list(prep.image, [prep.resized])
    anchors = model.rpn.anchor_generator(image_list, logits)[0]
    sizes = [int(lg.shape[2] * lg.shape[3] * lg.shape[1]) for lg in logits]
    anchors_by_level = dict(zip(names, anchors.split(sizes)))
    proposals, plogits = propose(model, logits, deltas, anchors, prep.resized)
    feats = {n: outs[f"feat_{n}"] for n in cfg.roi_level_names}
    rois = model.roi_pool(feats, [proposals], [prep.resized])
    text, image, bd = model.box_head(rois)
    coder = BoxCoder(tuple(cfg.box_coder_weights))
    boxes = coder.decode_single(bd, proposals)
    boxes = to_original(box_ops.clip_boxes_to_image(boxes, prep.resized), prep)
    return Regions(prep, outs, anchors_by_level, proposals, plogits, rois, text, image, bd, boxes)


# ---------------------------------------------------------------- scoring

@dataclass
class Vocabulary:
    """Classes to score against: label per class (several classes may share one),
    unit text embeddings [K,D] and whether each class is a base category."""
    labels: list[str]
    embeddings: Tensor
    base: list[bool]

    def unique_labels(self) -> list[str]:
        seen: dict[str, None] = {}
        for lb in self.labels:
            seen.setdefault(lb, None)
        return list(seen)


def class_probabilities(r: Regions, vocab: Vocabulary, background: Tensor, head: str,
                        temperature: float, ensemble_lambda: float, image_temperature: float = 0.0) -> Tensor:
    """Per-region probability of every class [N,K] for head text, image or ensemble;
    the image head divides by ``image_temperature`` when it is set (> 0)."""
    t = vocab.embeddings
    if head in ("text", "ensemble"):
        logits = torch.cat([r.text_embeddings @ background.view(-1, 1), r.text_embeddings @ t.t()], 1)
        p_text = torch.softmax(logits / temperature, dim=1)[:, 1:]
        if head == "text":
            return p_text
    p_img = torch.softmax(r.image_embeddings @ t.t() / (image_temperature or temperature), dim=1)
    if head == "image":
        return p_img
    if head != "ensemble":
        raise ValueError(f"infer: unknown head {head!r}")
    lam = ensemble_lambda
    base = torch.tensor(vocab.base, dtype=torch.bool).view(1, -1)
    p_base = p_text.pow(lam) * p_img.pow(1 - lam)
    p_other = p_text.pow(1 - lam) * p_img.pow(lam)
    return torch.where(base, p_base, p_other)


@torch.no_grad()
def teacher_crop_embeddings(graph, image01: Tensor, boxes: Tensor, size: int, mean, std,
                            scales: tuple[float, ...] = CROP_SCALES, mirror: bool = False) -> Tensor:
    """The teacher's embeddings [N,D] of boxes [N,4] of a [1,3,h,w] picture in [0,1]
    (its pixels): square crops at each scale (``losses.crop_images``), normalised
    with mean and std, run through ``graph`` (the image encoder, normalised crops ->
    unit embeddings), with ``mirror`` each crop also mirrored left to right,
    summed over the views and L2-normalised (docs/bundle.md "image_encoder" and
    "scoring", ``embedding.crops``)."""
    from vildtrain.models.losses import crop_images
    m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    acc = None
    for sc in scales:
        crops = (crop_images(image01, [boxes], size, sc) - m) / s
        emb = graph(crops)
        if mirror:
            emb = emb + graph(crops.flip(-1))
        acc = emb if acc is None else acc + emb
    return F.normalize(acc, dim=-1)


def crop_views(crops: dict, image_encoder: dict) -> tuple[tuple[float, ...], bool]:
    """(scales, mirror) of a manifest's ``embedding.crops``: its own ``scales``
    (absent: the image encoder's ``crop_scales``) and ``mirror`` (absent: false)."""
    return tuple(crops.get("scales") or image_encoder["crop_scales"]), bool(crops.get("mirror", False))


def region_crop_embeddings(model: VildDetector, r: Regions, graph, size: int, regions: int,
                           scales: tuple[float, ...] = CROP_SCALES, mirror: bool = False) -> Tensor:
    """The teacher's embeddings of the first ``regions`` regions of r: their refined
    boxes in resized-image pixels, cut from the resized picture (as the Go pipeline)."""
    from vildtrain.models.miniclip import IMAGE_MEAN, IMAGE_STD
    coder = BoxCoder(tuple(model.cfg.box_coder_weights))
    k = min(regions, int(r.proposals.shape[0]))
    boxes = box_ops.clip_boxes_to_image(coder.decode_single(r.box_deltas[:k], r.proposals[:k]), r.prepared.resized)
    return teacher_crop_embeddings(graph, r.prepared.image01, boxes, size, IMAGE_MEAN, IMAGE_STD, scales, mirror)


def fold_crops(probs: Tensor, crop_embeddings: Tensor, vocab: Vocabulary, crops: dict) -> Tensor:
    """The ensemble's probabilities [N,K] with the teacher's view of the first
    ``crop_embeddings.shape[0]`` regions folded in (docs/bundle.md "scoring",
    the manifest's ``embedding.crops``): p^(1-mu) * p_crop^mu, p_crop the softmax
    over the vocabulary of crop . class / crops["temperature"], mu
    crops["lambda_base"] for base classes and crops["lambda_novel"] for the others.
    The Go pipeline normalises p_crop over the bundle's own categories in either
    scores mode; with the whole category list as the vocabulary (the goldens, the
    evaluation) that is this softmax."""
    k = int(crop_embeddings.shape[0])
    if k == 0:
        return probs
    pc = torch.softmax(crop_embeddings @ vocab.embeddings.t() / crops["temperature"], dim=1)
    mu = torch.where(torch.tensor(vocab.base, dtype=torch.bool).view(1, -1),
                     torch.tensor(float(crops["lambda_base"])), torch.tensor(float(crops["lambda_novel"])))
    out = probs.clone()
    out[:k] = probs[:k].pow(1 - mu) * pc.pow(mu)
    return out


def label_probabilities(probs: Tensor, vocab: Vocabulary) -> tuple[Tensor, list[str]]:
    """Sum the probabilities of classes sharing a label -> [N,L] in first-seen label order."""
    labels = vocab.unique_labels()
    if len(labels) == len(vocab.labels):
        return probs, labels
    index = {lb: i for i, lb in enumerate(labels)}
    cols = torch.tensor([index[lb] for lb in vocab.labels])
    out = probs.new_zeros((probs.shape[0], len(labels)))
    out.index_add_(1, cols, probs)
    return out, labels


@dataclass
class Detection:
    label: str
    score: float
    box: list[float]                  # x1,y1,x2,y2 in original image pixels
    runners_up: list[tuple[str, float]] = field(default_factory=list)

    def to_json(self) -> dict:
        d: dict = {"label": self.label, "score": self.score, "box": self.box}
        if self.runners_up:
            d["runners_up"] = [{"label": lb, "score": s} for lb, s in self.runners_up]
        return d


def to_original(boxes: Tensor, prep: Prepared) -> Tensor:
    """Resized-image boxes -> original-image pixels: divide by the scale per axis, clip."""
    sy, sx = prep.scale
    out = boxes / torch.tensor([sx, sy, sx, sy], dtype=boxes.dtype)
    return box_ops.clip_boxes_to_image(out, prep.original)


def postprocess(boxes: Tensor, probs: Tensor, labels: list[str], score_threshold: float, nms_iou: float,
                max_detections: int, runners_up: int = 0, labels_per_box: int = 1) -> list[Detection]:
    """Labels per region, threshold, per-label NMS, top-k. ``boxes`` are in
    original-image pixels (NMS runs on them, as the Go pipeline does).

    Each region is reported with its ``labels_per_box`` best labels (1: its best
    only), each as a detection of its own when its score reaches the threshold;
    a detection's runners-up are the region's best labels other than its own."""
    if probs.shape[0] == 0 or probs.shape[1] == 0:
        return []
    if labels_per_box < 1:
        raise ValueError(f"infer: labels_per_box must be at least 1, not {labels_per_box}")
    per_box = min(labels_per_box, probs.shape[1])
    k = min(per_box + runners_up, probs.shape[1])
    top_s, top_i = probs.topk(k, dim=1)
    region = torch.arange(probs.shape[0]).repeat_interleave(per_box)
    rank = torch.arange(per_box).repeat(probs.shape[0])
    score, label = top_s[region, rank], top_i[region, rank]
    keep = torch.where(score >= score_threshold)[0]
    keep = keep[box_ops.batched_nms(boxes[region[keep]], score[keep], label[keep], nms_iou)]
    keep = keep[:max_detections]
    out = []
    for d in keep.tolist():
        i, j = int(region[d]), int(rank[d])
        ru = [(labels[int(top_i[i, m])], float(top_s[i, m])) for m in range(k) if m != j][:runners_up]
        out.append(Detection(labels[int(label[d])], float(score[d]), [float(v) for v in boxes[i]], ru))
    return out


def clip_crop_scores(clip, r: Regions, vocab: Vocabulary, temperature: float) -> Tensor:
    """Mini-CLIP on cropped proposals: sqrt(p_clip(class | 1x+1.5x crop) * sigmoid(logit))."""
    emb = crop_embeddings(clip, r.prepared.image01, [r.proposals])
    p = torch.softmax(emb @ vocab.embeddings.t() / temperature, dim=1)
    return (p * torch.sigmoid(r.proposal_logits).view(-1, 1)).sqrt()


@torch.no_grad()
def detect(model: VildDetector, r: Regions, vocab: Vocabulary, head: str = "ensemble", clip=None,
           score_threshold: float | None = None, nms_iou: float | None = None,
           max_detections: int | None = None, runners_up: int = 0,
           labels_per_box: int | None = None, crops: dict | None = None) -> list[Detection]:
    """Score regions against a vocabulary and post-process (docs/bundle.md "scoring").
    With ``crops`` (a manifest's ``embedding.crops``) the ensemble folds in the
    teacher's embeddings of the first regions' crops, ``r.extra["crop_embeddings"]``
    (:func:`region_crop_embeddings`)."""
    cfg = model.cfg
    if head == "clip":
        if clip is None:
            raise ValueError("infer: head 'clip' needs the mini-CLIP")
        probs, boxes = clip_crop_scores(clip, r, vocab, cfg.temperature), to_original(r.proposals, r.prepared)
    else:
        probs = class_probabilities(r, vocab, model.background_embedding(), head, cfg.temperature,
                                    cfg.ensemble_lambda, cfg.image_temperature)
        if head == "ensemble" and crops:
            probs = fold_crops(probs, r.extra["crop_embeddings"], vocab, crops)
        boxes = r.boxes
    probs, labels = label_probabilities(probs, vocab)
    return postprocess(boxes, probs, labels,
                       cfg.score_threshold if score_threshold is None else score_threshold,
                       cfg.nms_iou if nms_iou is None else nms_iou,
                       cfg.max_detections if max_detections is None else max_detections, runners_up,
                       cfg.labels_per_box if labels_per_box is None else labels_per_box)


def category_vocabulary(categories, embeddings: Tensor) -> Vocabulary:
    """The whole category list as a vocabulary (one class per category name)."""
    return Vocabulary([c.name for c in categories], embeddings, [c.split == "base" for c in categories])


def main(argv: list[str]) -> int:
    from vildtrain.models.miniclip import MINICLIP_HELP
    ap = argparse.ArgumentParser(prog="vildtrain infer", description=__doc__.split("\n\n")[0])
    ap.add_argument("image")
    ap.add_argument("--checkpoint", default="training/runs/detector/detector.pt")
    ap.add_argument("--miniclip", default=None, help=MINICLIP_HELP)
    ap.add_argument("--head", choices=HEADS, default="ensemble")
    ap.add_argument("--vocabulary", default=None, help="comma-separated names (default: every category)")
    ap.add_argument("--runners-up", type=int, default=0)
    ap.add_argument("--labels-per-box", type=int, default=None,
                    help="labels each region may be reported with (default: the checkpoint's labels_per_box)")
    args = ap.parse_args(argv)
    from vildtrain.data.categories import load_categories
    from vildtrain.models.detector import load_checkpoint
    from vildtrain.models.miniclip import load_teacher
    torch.set_num_threads(2)
    model, extra = load_checkpoint(args.checkpoint)
    clip, _ = load_teacher(extra, args.miniclip)
    cats = load_categories()
    base_names = {c.name for c in cats if c.split == "base"}
    base_names |= {s for c in cats if c.split == "base" for s in c.synonyms}
    names = [n.strip() for n in args.vocabulary.split(",")] if args.vocabulary else [c.name for c in cats]
    vocab = Vocabulary(names, clip.text_embeddings(names), [n in base_names for n in names])
    r = regions(model, Image.open(args.image))
    dets = detect(model, r, vocab, args.head, clip=clip, runners_up=args.runners_up,
                  labels_per_box=args.labels_per_box)
    json.dump([d.to_json() for d in dets], sys.stdout, indent=1)
    print()
    return 0
