"""COCO-style evaluation of the detector on the fixed held-out scene sets.

    python3 -m vildtrain evaluate --checkpoint training/runs/detector/detector.pt \
        --data training/runs/heldout --out training/runs/eval

For each set (seen styles, OpenMoji, Fluent 3D; written by ``python3 -m vildtrain
scenes --set NAME --out DATA/NAME`` when missing) every image is run once through
the detector (:func:`vildtrain.models.infer.regions`) and scored four ways against the
WHOLE vocabulary (every category, as LVIS does): ViLD-text, ViLD-image,
ViLD-ensemble, and the mini-CLIP on cropped proposals. Reported: AP@[.5:.95]
and AP50 averaged over the novel, base and all categories that have ground
truth in the set.

The detections are the detector's own post-processing (score threshold 0.05,
per-label NMS, at most 100 per image) with per-class output, as COCO-style
evaluation of a detector expects: each region is reported with every label
that reaches the threshold (``--labels-per-box 20``; 20 labels at 0.05 exhaust
a region's probability), each a detection of its own. ``--labels-per-box 1``
measures the server's default output, each region's best label only.

The metric is COCO's box AP, re-implemented in NumPy in
:mod:`vildtrain.evaluate.cocoeval` (its docstring gives the details).

With ``--mask-head PATH`` (a trained :mod:`vildtrain.models.mask_head`) every
detection of the text, image and ensemble heads also gets an instance mask
(:func:`vildtrain.models.mask_head.detection_masks`: its box pooled 14x14, the
head's 28x28 probabilities pasted into the image, >= 0.5), and mask AP
(COCO "segm", against the scenes' RLE masks) is reported next to box AP:

    python3 -m vildtrain evaluate --checkpoint runs/from-bundle/detector.pt \
        --mask-head runs/mask-head/mask_head.pt --sets seen --methods ensemble --out runs/mask-head/eval

A detector rebuilt from a bundle whose ensemble asks the teacher about the best
regions' crops (``embedding.crops``, docs/decisions/0031; ``detector_from_bundle``
keeps the setting in the checkpoint) is scored that way too, as the Go
pipeline scores it; ``--no-crops`` leaves them out (ViLD's two heads).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field

import torch
from PIL import Image

from vildtrain.evaluate.cocoeval import evaluate_detections, summarize

# Labels one region may be reported with: COCO-style per-class output (every
# label scoring at least 0.05 is at most 20 labels; docs/decisions/0006).
EVAL_LABELS_PER_BOX = 20
METHODS: list[tuple[str, str]] = [("ViLD-text", "text"), ("ViLD-image", "image"), ("ViLD-ensemble", "ensemble"),
                                  ("mini-CLIP on crops", "clip")]
SETS: list[tuple[str, str]] = [("seen", "seen styles"), ("openmoji", "OpenMoji"), ("fluent3d", "Fluent 3D")]


@dataclass
class SceneSet:
    name: str
    root: str
    images: list[dict]
    gts: dict[int, list[tuple[int, list[float]]]]
    segms: dict[int, list[tuple[int, dict]]] = field(default_factory=dict)  # image id -> [(category, RLE)]


def load_set(root: str, name: str) -> SceneSet:
    with open(os.path.join(root, "annotations.json"), encoding="utf-8") as f:
        data = json.load(f)
    gts: dict[int, list[tuple[int, list[float]]]] = {im["id"]: [] for im in data["images"]}
    segms: dict[int, list[tuple[int, dict]]] = {im["id"]: [] for im in data["images"]}
    for a in data["annotations"]:
        gts[a["image_id"]].append((a["category_id"], list(a["bbox"])))
        if "segmentation" in a:
            segms[a["image_id"]].append((a["category_id"], a["segmentation"]))
    return SceneSet(name, root, data["images"], gts, segms)


def ensure_set(data_dir: str, name: str, count: int) -> SceneSet:
    root = os.path.join(data_dir, name)
    ann = os.path.join(root, "annotations.json")
    if os.path.exists(ann):
        s = load_set(root, name)
        if len(s.images) >= count:
            s.images = s.images[:count]
            keep = {im["id"] for im in s.images}
            s.gts = {k: v for k, v in s.gts.items() if k in keep}
            s.segms = {k: v for k, v in s.segms.items() if k in keep}
            return s
    from vildtrain.data.scenes import write_set
    print(f"evaluate: writing {count} scenes of set {name} to {root}", file=sys.stderr, flush=True)
    write_set(root, name, count, progress=True)
    return load_set(root, name)


@torch.no_grad()
def run_set(model, clip, s: SceneSet, vocab, name_to_id: dict[str, int], clip_proposals: int,
            methods: list[tuple[str, str]] = METHODS, log_every: int = 50,
            labels_per_box: int | None = None, mask=None, crops: dict | None = None) -> dict[str, dict]:
    """Detections of every method on every image of a set -> {method: dts}; with
    ``mask`` = (mask head, mask pooler) also {method + SEGM: mask detections} for
    the heads other than "clip" (masks as COCO RLE); with ``crops`` (a bundle's
    ``embedding.crops``) the ensemble asks the teacher, ``clip``'s image encoder
    with the bundle's int8 weights, about the first regions' crops."""
    from vildtrain.models.infer import detect, region_crop_embeddings, regions
    from vildtrain.models.losses import CROP_SCALES
    graph = None
    if crops and any(m == "ensemble" for _, m in methods):
        from vildtrain.export.image_encoder import encoder_graph
        graph = encoder_graph(clip)
    dts: dict[str, dict] = {m: {} for _, m in methods}
    if mask is not None:
        dts.update({m + SEGM: {} for _, m in methods if m != "clip"})
    t0 = time.time()
    for i, im in enumerate(s.images):
        img = Image.open(os.path.join(s.root, "images", im["file_name"])).convert("RGB")
        r = regions(model, img)
        if graph is not None:
            r.extra["crop_embeddings"] = region_crop_embeddings(
                model, r, graph, clip.image_size, crops["regions"],
                tuple(crops.get("scales") or CROP_SCALES), bool(crops.get("mirror", False)))
        for _, head in methods:
            if head == "clip":
                # the top proposals by objectness (they come sorted) keep the crop cost bounded
                n = clip_proposals
                sub = type(r)(**{**r.__dict__, "proposals": r.proposals[:n],
                                 "proposal_logits": r.proposal_logits[:n]})
                dets = detect(model, sub, vocab, "clip", clip=clip, labels_per_box=labels_per_box)
            else:
                dets = detect(model, r, vocab, head, labels_per_box=labels_per_box, crops=crops)
            dts[head][im["id"]] = [(name_to_id[d.label], [d.box[0], d.box[1], d.box[2] - d.box[0],
                                                          d.box[3] - d.box[1]], d.score) for d in dets]
            if mask is not None and head != "clip":
                dts[head + SEGM][im["id"]] = mask_detections(mask, r, dets, name_to_id)
        if (i + 1) % log_every == 0 or i + 1 == len(s.images):
            rate = (i + 1) / (time.time() - t0)
            print(f"evaluate: {s.name} {i + 1}/{len(s.images)} ({rate:.2f} img/s, ETA "
                  f"{(len(s.images) - i - 1) / rate / 60:.1f} min)", file=sys.stderr, flush=True)
    return dts


SEGM = "/segm"   # key suffix of a method's mask detections and mask AP


def mask_detections(mask, r, dets, name_to_id: dict[str, int]) -> list[tuple[int, dict, float]]:
    """(category id, RLE mask, score) of each detection; the labels of one region share
    its box, so each distinct box is run through the mask head once."""
    from vildtrain.data.coco import rle_encode
    from vildtrain.models.mask_head import detection_masks
    head, pooler = mask
    unique: dict[tuple, int] = {}
    for d in dets:
        unique.setdefault(tuple(d.box), len(unique))
    boxes = list(unique)
    masks = detection_masks(head, pooler, r, [type(dets[0])("", 0.0, list(b)) for b in boxes]) if boxes else []
    rles = [rle_encode(m) for m in masks]
    return [(name_to_id[d.label], rles[unique[tuple(d.box)]], d.score) for d in dets]


def mask_markdown(results: dict, sets: list[tuple[str, str]], methods: list[tuple[str, str]]) -> str:
    """Mask AP next to box AP, per set and method (the methods that have masks)."""
    out = []
    for key, title in sets:
        out += [f"{title}, mask AP (segm) and box AP (bbox) of the same detections (AP = AP@[.5:.95]):", "",
                "| method | iou | novel AP | novel AP50 | base AP | base AP50 | all AP | all AP50 |",
                "|---|---|---:|---:|---:|---:|---:|---:|"]
        for label, m in methods:
            if m + SEGM not in results[key]:
                continue
            for kind, rk in (("segm", m + SEGM), ("bbox", m)):
                r = results[key][rk]
                out.append(f"| {label} | {kind} | " + " | ".join(
                    f"{r[g][k]:.3f}" for g in ("novel", "base", "all") for k in ("AP", "AP50")) + " |")
        out.append("")
    return "\n".join(out)


def markdown(results: dict, sets: list[tuple[str, str]], methods: list[tuple[str, str]]) -> str:
    lines = ["| method | " + " | ".join(f"{title} novel AP50 | {title} base AP50" for _, title in sets) + " |",
             "|---|" + "---:|---:|" * len(sets)]
    for label, m in methods:
        cells = []
        for key, _ in sets:
            r = results[key][m]
            cells += [f"{r['novel']['AP50']:.3f}", f"{r['base']['AP50']:.3f}"]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    out = ["AP50 on novel and base categories, whole vocabulary as the query:", "", *lines, ""]
    for key, title in sets:
        out += [f"{title} (AP = AP@[.5:.95]):", "",
                "| method | novel AP | novel AP50 | base AP | base AP50 | all AP | all AP50 |",
                "|---|---:|---:|---:|---:|---:|---:|"]
        for label, m in methods:
            r = results[key][m]
            out.append(f"| {label} | " + " | ".join(
                f"{r[g][k]:.3f}" for g in ("novel", "base", "all") for k in ("AP", "AP50")) + " |")
        n = results[key][methods[0][1]]
        out += ["", f"({n['novel']['categories']} novel and {n['base']['categories']} base categories with ground "
                    f"truth.)", ""]
    return "\n".join(out)


def _shard(job: tuple) -> dict[str, dict]:
    """One process's share of a set (run under ``ProcessPoolExecutor``)."""
    (checkpoint, miniclip, labels, embeddings, base, s, name_to_id, clip_proposals, threads, labels_per_box,
     methods, mask_head, crops) = job
    torch.set_num_threads(threads)
    from vildtrain.models.detector import load_checkpoint
    from vildtrain.models.infer import Vocabulary
    from vildtrain.models.miniclip import load_miniclip
    model, _ = load_checkpoint(checkpoint)
    clip = load_miniclip(miniclip)
    vocab = Vocabulary(labels, torch.from_numpy(embeddings), base)
    return run_set(model, clip, s, vocab, name_to_id, clip_proposals, methods=methods, labels_per_box=labels_per_box,
                   mask=load_mask(mask_head, model) if mask_head else None, crops=crops)


def load_mask(path: str, model):
    """(mask head, mask pooler) for ``evaluate --mask-head``."""
    from vildtrain.models.mask_head import load_mask_head, mask_pooler
    head, _ = load_mask_head(path)
    return head, mask_pooler(model.cfg, head.cfg.roi_output_size)


def run_set_parallel(checkpoint: str, miniclip: str | None, s: SceneSet, vocab, name_to_id: dict[str, int],
                     clip_proposals: int, procs: int, threads: int = 1,
                     labels_per_box: int | None = None, methods: list[tuple[str, str]] = METHODS,
                     mask_head: str | None = None, crops: dict | None = None) -> dict[str, dict]:
    """:func:`run_set` over ``procs`` processes, each taking every procs-th image."""
    import concurrent.futures
    import multiprocessing
    jobs = []
    for r in range(procs):
        part = SceneSet(f"{s.name}[{r}]", s.root, s.images[r::procs], {})
        jobs.append((checkpoint, miniclip, vocab.labels, vocab.embeddings.numpy(), vocab.base, part, name_to_id,
                     clip_proposals, threads, labels_per_box, methods, mask_head, crops))
    merged: dict[str, dict] = {}
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=procs, mp_context=ctx) as pool:
        for part in pool.map(_shard, jobs):
            for m, d in part.items():
                merged.setdefault(m, {}).update(d)
    return merged


def main(argv: list[str]) -> int:
    from vildtrain.models.miniclip import MINICLIP_HELP
    ap = argparse.ArgumentParser(prog="vildtrain evaluate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="training/runs/detector/detector.pt",
                    help="a final detector.pt, or a run's checkpoint.pt to evaluate it before it ends")
    ap.add_argument("--miniclip", default=None, help=MINICLIP_HELP)
    ap.add_argument("--data", default="training/runs/heldout", help="folder of the held-out sets")
    ap.add_argument("--sets", default="seen,openmoji,fluent3d")
    ap.add_argument("--count", type=int, default=500, help="images per set")
    ap.add_argument("--clip-proposals", type=int, default=50,
                    help="top proposals per image classified by the mini-CLIP row")
    ap.add_argument("--procs", type=int, default=2, help="processes (one torch thread each)")
    ap.add_argument("--labels-per-box", type=int, default=EVAL_LABELS_PER_BOX,
                    help="labels each region may be reported with, each a detection: the default is COCO-style "
                         "per-class output; 1 keeps each region's best label only, as the server does by default")
    ap.add_argument("--methods", default=",".join(m for _, m in METHODS),
                    help="heads to score with, of " + ", ".join(m for _, m in METHODS))
    ap.add_argument("--mask-head", default=None,
                    help="a trained mask head (mask_head.pt): adds mask AP for the text, image and ensemble heads")
    ap.add_argument("--no-crops", action="store_true",
                    help="leave the teacher's crops out of the ensemble of a detector rebuilt from a bundle that "
                         "has them (embedding.crops, docs/decisions/0031): ViLD's two heads")
    ap.add_argument("--out", default="training/runs/eval")
    args = ap.parse_args(argv)
    methods = [(label, m) for label, m in METHODS if m in args.methods.split(",")]
    unknown = set(args.methods.split(",")) - {m for _, m in METHODS}
    if unknown or not methods:
        ap.error(f"--methods {args.methods}: choose from {', '.join(m for _, m in METHODS)}")
    if args.labels_per_box < 1:
        ap.error(f"--labels-per-box must be at least 1, not {args.labels_per_box}")
    torch.set_num_threads(2)
    from vildtrain.data.categories import load_categories
    from vildtrain.models.detector import load_checkpoint
    from vildtrain.models.infer import category_vocabulary
    from vildtrain.models.miniclip import load_teacher, miniclip_digest
    model, extra = load_checkpoint(args.checkpoint)
    clip, clip_path = load_teacher(extra, args.miniclip)
    # a detector rebuilt from a bundle carries the bundle's embedding.crops
    crops = None if args.no_crops else extra.get("crops")
    cats = load_categories()
    vocab = category_vocabulary(cats, clip.text_embeddings([c.name for c in cats]).float())
    name_to_id = {c.name: c.id for c in cats}
    groups = {"novel": [c.id for c in cats if c.split == "novel"], "base": [c.id for c in cats if c.split == "base"],
              "all": [c.id for c in cats]}
    chosen = [s for s in SETS if s[0] in args.sets.split(",")]
    results: dict = {}
    t0 = time.time()
    for key, _ in chosen:
        s = ensure_set(args.data, key, args.count)
        if args.procs > 1:
            dts = run_set_parallel(args.checkpoint, clip_path, s, vocab, name_to_id, args.clip_proposals,
                                   args.procs, labels_per_box=args.labels_per_box, methods=methods,
                                   mask_head=args.mask_head, crops=crops)
        else:
            dts = run_set(model, clip, s, vocab, name_to_id, args.clip_proposals, methods=methods,
                          labels_per_box=args.labels_per_box,
                          mask=load_mask(args.mask_head, model) if args.mask_head else None, crops=crops)
        results[key] = {}
        for _, m in methods:
            ap_per_cat = evaluate_detections(s.gts, dts[m], [c.id for c in cats])
            results[key][m] = summarize(ap_per_cat, groups)
            if m + SEGM in dts:
                ap_per_cat = evaluate_detections(s.segms, dts[m + SEGM], [c.id for c in cats], iou_type="segm")
                results[key][m + SEGM] = summarize(ap_per_cat, groups)
    os.makedirs(args.out, exist_ok=True)
    table = markdown(results, chosen, methods)
    if args.mask_head:
        table += "\n" + mask_markdown(results, chosen, methods)
    meta = {"checkpoint": args.checkpoint, "miniclip": clip_path, "miniclip_digest": miniclip_digest(clip),
            "images_per_set": args.count, "clip_proposals": args.clip_proposals,
            "labels_per_box": args.labels_per_box,
            "command": "python3 -m vildtrain evaluate " + " ".join(argv), "eval_seconds": round(time.time() - t0, 1),
            "train_seconds": extra.get("train_seconds"), "training_command": extra.get("command"),
            "training_steps": extra.get("steps"), "images_seen": extra.get("images_seen"),
            "methods": [m for _, m in methods], "mask_head": args.mask_head, "crops": crops}
    if args.mask_head:
        from vildtrain.models.mask_head import load_mask_head
        mextra = load_mask_head(args.mask_head)[1]
        meta["mask_head_training"] = {k: mextra.get(k) for k in ("command", "steps", "images_seen", "rois_seen",
                                                                  "train_seconds")}
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=1)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(table + "\n")
    print(table)
    return 0
