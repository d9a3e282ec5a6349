"""Add a trained mask head to an exported vild bundle.

    python3 -m vildtrain export_mask_head --mask-head runs/mask-head/mask_head.pt --bundle OUT_BUNDLE

Writes into the bundle directory (which must already hold a detector export):

* ``mask_head.onnx``: pooled RoIs ``rois`` [N,C,14,14] -> ``mask_logits``
  [N,1,28,28] (class-agnostic), weights rounded to and stored as float16 as
  the detector's graphs are (:func:`vildtrain.export.export.store_half`);
* the manifest's ``mask_head`` section: the graph, the mask RoIAlign
  (output 14, the box RoIAlign's sampling ratio, canonical scale and level,
  aligned false), the mask size 28, the threshold 0.5, how masks are pasted
  (torchvision ``paste_masks_in_image``), the head's width, layers and FLOPs
  per RoI, its training record and its golden files;
* per golden case with detections (``golden/<case>/``): ``mask_boxes.npy``
  (the first up to MASK_GOLDEN_DETECTIONS detections' boxes, original-image
  pixels), ``mask_logits.npy`` (the graph's output on their 14x14 pooled
  features, pooled from the case's own ``feat_p*.npy`` and the boxes times the
  resize scale; the pooled features themselves are left to the reader, who has
  the feature maps, to keep the bundle small), and ``masks_bits.npy`` (the
  detections' sigmoids pasted into the original image and thresholded, [N,H,W]
  bits in C order packed eight to a byte, first pixel in the high bit, as
  ``np.packbits`` of the flattened masks: a 1-D uint8 array of ceil(N*H*W/8)).

The manifest's digests are recomputed; a bundle over MAX_BUNDLE_MB is refused.
A bundle without these keeps its old meaning (masks are optional).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from types import SimpleNamespace

import numpy as np
import torch

from vildtrain.export.export import OPSET, _write_manifest, export_graph, round_to_half, save_npy, store_half
from vildtrain.models.detector import DetectorConfig
from vildtrain.models.mask_head import (MaskHead, load_mask_head, manifest_section, mask_pooler,
                                        pasted_probabilities)

MAX_BUNDLE_MB = 40.0
MASK_GOLDEN_DETECTIONS = 5
GOLDEN_FILES = ("mask_boxes.npy", "mask_logits.npy", "masks_bits.npy")


def bundle_detector_config(man: dict) -> DetectorConfig:
    """The detector configuration a bundle manifest records (training.detector)."""
    return DetectorConfig.from_dict(man["training"]["detector"])


def golden_regions(case_dir: str, det: DetectorConfig) -> SimpleNamespace:
    """What :func:`vildtrain.models.mask_head.pasted_probabilities` reads, from a golden case's files."""
    with open(os.path.join(case_dir, "meta.json")) as f:
        meta = json.load(f)
    outputs = {f"feat_{n}": torch.from_numpy(np.load(os.path.join(case_dir, f"feat_{n}.npy")))
               for n in det.roi_level_names}
    prepared = SimpleNamespace(original=(meta["height"], meta["width"]),
                               resized=(meta["resized_height"], meta["resized_width"]),
                               scale=(meta["scale_y"], meta["scale_x"]))
    return SimpleNamespace(prepared=prepared, outputs=outputs)


def write_mask_golden(case_dir: str, head: MaskHead, det: DetectorConfig) -> int:
    """One golden case's mask files; returns the number of detections covered (0: none written)."""
    path = os.path.join(case_dir, "detections.json")
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        dets = json.load(f)[:MASK_GOLDEN_DETECTIONS]
    if not dets:
        return 0
    boxes = torch.tensor([d["box"] for d in dets], dtype=torch.float32)
    r = golden_regions(case_dir, det)
    _, logits, pasted = pasted_probabilities(head, mask_pooler(det, head.cfg.roi_output_size), r, boxes)
    save_npy(os.path.join(case_dir, "mask_boxes.npy"), boxes)
    save_npy(os.path.join(case_dir, "mask_logits.npy"), logits)
    np.save(os.path.join(case_dir, "masks_bits.npy"), np.packbits((pasted >= head.cfg.threshold).numpy(), axis=None))
    return len(dets)


def bundle_megabytes(out: str) -> float:
    total = 0
    for root, _, files in os.walk(out):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total / 1e6


@torch.no_grad()
def export_mask_head(mask_head: str, out: str) -> dict:
    """Add the mask head at ``mask_head`` (a mask_head.pt) to the bundle at ``out``; returns the manifest."""
    man_path = os.path.join(out, "manifest.json")
    if not os.path.exists(man_path):
        raise FileNotFoundError(f"export_mask_head: {out} has no manifest.json; export the detector first")
    with open(man_path, encoding="utf-8") as f:
        man = json.load(f)
    det = bundle_detector_config(man)
    head, extra = load_mask_head(mask_head)
    if head.cfg.in_channels != det.fpn_channels:
        raise ValueError(f"export_mask_head: the head reads {head.cfg.in_channels} channels, the bundle's FPN has "
                         f"{det.fpn_channels}")
    head = copy.deepcopy(head).eval()
    round_to_half(head)   # the graph stores float16 weights; the goldens use exactly those
    s = head.cfg.roi_output_size
    graph = os.path.join(out, "mask_head.onnx")
    export_graph(head, (torch.randn(3, head.cfg.in_channels, s, s),), graph, ["rois"], ["mask_logits"],
                 {"rois": {0: "N"}, "mask_logits": {0: "N"}})
    store_half(graph)
    golden = {}
    gdir = os.path.join(out, "golden")
    for case in sorted(os.listdir(gdir)) if os.path.isdir(gdir) else []:
        n = write_mask_golden(os.path.join(gdir, case), head, det)
        if n:
            golden[case] = n
    section = manifest_section(head.cfg, det)
    section["opset"] = OPSET
    section["golden"] = {"files": list(GOLDEN_FILES), "detections": golden}
    section["training"] = {k: extra.get(k) for k in ("command", "seed", "steps", "images_seen", "rois_seen",
                                                     "train_seconds")}
    man.pop("sha256", None)
    man["mask_head"] = section
    _write_manifest(out, man)
    size = bundle_megabytes(out)
    if size > MAX_BUNDLE_MB:
        raise ValueError(f"export_mask_head: the bundle is {size:.1f} MB, over {MAX_BUNDLE_MB:g} MB")
    return man


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="vildtrain export_mask_head", description=__doc__.split("\n\n")[0])
    ap.add_argument("--mask-head", default="checkpoints/mask_head.pt", help="a trained mask_head.pt")
    ap.add_argument("--bundle", required=True, help="an exported bundle directory to add the mask head to")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    man = export_mask_head(args.mask_head, args.bundle)
    sec = man["mask_head"]
    print(f"export_mask_head: wrote {os.path.join(args.bundle, 'mask_head.onnx')} "
          f"({os.path.getsize(os.path.join(args.bundle, 'mask_head.onnx')) / 1e3:.0f} kB, "
          f"{sec['flops_per_roi'] / 1e6:.1f} MFLOP per RoI), goldens {sec['golden']['detections']}; "
          f"bundle {bundle_megabytes(args.bundle):.1f} MB", file=sys.stderr)
    return 0
