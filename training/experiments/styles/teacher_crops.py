"""The bundle's detector with another teacher's crop scores (issue 29).

The embedded bundle folds the teacher's view of its first regions into the
ensemble (docs/decisions/0031; manifest `embedding.crops`). Since the text
tower of a teacher continued with `train_clip --freeze-text` keeps every
category embedding, its image tower can take the committed one's place in
that fold without retraining the detector. This measures the bundle's
detector so, with the manifest's fold settings (regions, temperature, the
weights per split), on held-out sets, with the evaluation's post-processing
and COCO AP: the quickest way to see what a better Fluent 3D teacher would
give the shipped pipeline.

    cd training
    python3 experiments/styles/teacher_crops.py checkpoints/miniclip.pt runs/miniclip-combined/miniclip.pt \\
        --sets runs/heldout/fluent3d runs/heldout/seen --cache /tmp/calib-cache

The regions come from the region cache of experiments/calibration/explore.py
(built on first use); each teacher's crop embeddings (1x and 1.5x squares of
the refined boxes, float32 teacher, where the bundle's image_encoder.onnx has
int8 weights; experiments/crops/explore.py's crop_cache) are cached in
--cache by the checkpoint's digest, about 5 minutes per teacher and 500
scenes on two cores.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(HERE, "..", "calibration"))   # the region cache, for experiments/ensemble's Set


def crops_module():
    from importlib.util import module_from_spec, spec_from_file_location
    spec = spec_from_file_location("crops_explore", os.path.join(HERE, "..", "crops", "explore.py"))
    module = module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fold_set(ce, bundle: str, man: dict, folder: str, count: int, cache: str):
    """experiments/ensemble's Set of one scene folder, the image head at the bundle's temperature."""
    s = ce.Set(bundle, folder, count, cache)
    s.Ti = man["embedding"].get("image_temperature") or s.T
    return s


def fold_ap(ce, s, crops, fold: dict) -> str:
    """The table cells (novel, base, all; AP and AP50) of the pipeline with ``crops`` folded in as ``fold`` says."""
    r = ce.measure(s, crops, "fused", fold["lambda_base"], fold["lambda_novel"], fold["temperature"], 1,
                   fold["regions"])
    return " | ".join(f"{r[g][k]:.3f}" for g in ("novel", "base", "all") for k in ("AP", "AP50"))


def fold_header(*first: str) -> str:
    """The Markdown header of a table whose rows end in fold_ap's cells, after the columns ``first``."""
    cols = list(first) + [f"{g} {k}" for g in ("novel", "base", "all") for k in ("AP", "AP50")]
    return "| " + " | ".join(cols) + " |\n|" + "---|" * len(first) + "---:|" * 6


def teacher_parser(doc: str) -> argparse.ArgumentParser:
    """The arguments the one-teacher scripts share: the teacher, --bundle and --sets."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("teacher", help="the bundle's teacher (make miniclip: runs/teacher/miniclip.pt)")
    ap.add_argument("--bundle", default="../models/default")
    ap.add_argument("--sets", nargs="+", default=["runs/heldout/fluent3d", "runs/heldout/seen"])
    return ap


def open_teacher(prog: str, teacher: str, bundle: str):
    """(manifest, name -> row, the bundle's category embeddings [C, D], the teacher, its file digest);
    None, after saying so, when the checkpoint is missing."""
    import hashlib

    import numpy as np
    from vildtrain.models.miniclip import load_miniclip
    if not os.path.exists(teacher):
        print(f"{prog}: no such checkpoint: {teacher} (make miniclip builds it)", file=sys.stderr)
        return None
    torch.set_num_threads(2)
    man = json.load(open(os.path.join(bundle, "manifest.json")))
    index = {c["name"]: i for i, c in enumerate(man["categories"])}
    names = torch.from_numpy(np.load(os.path.join(bundle, "category_embeddings.npy")).astype(np.float32))
    digest = hashlib.sha256(open(teacher, "rb").read()).hexdigest()[:12]
    return man, index, names, load_miniclip(teacher).eval(), digest


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("teachers", nargs="+", help="mini-CLIP checkpoints (text tower the committed one's)")
    ap.add_argument("--bundle", default="../models/default")
    ap.add_argument("--sets", nargs="+", default=["runs/heldout/fluent3d", "runs/heldout/seen"])
    ap.add_argument("--count", type=int, default=500)
    ap.add_argument("--cache", default="/tmp/calib-cache")
    args = ap.parse_args()
    missing = [t for t in args.teachers if not os.path.exists(t)]
    if missing:
        print(f"teacher_crops: no such checkpoint: {', '.join(missing)}", file=sys.stderr)
        return 2
    torch.set_num_threads(2)
    ce = crops_module()
    man = json.load(open(os.path.join(args.bundle, "manifest.json")))
    fold = man["embedding"]["crops"]
    print(f"{man['name']} ({args.bundle}), crops folded as its manifest says: {json.dumps(fold)}\n")
    print(fold_header("teacher", "set"))
    for folder in args.sets:
        s = fold_set(ce, args.bundle, man, folder, args.count, args.cache)
        for teacher in args.teachers:
            crops = ce.crop_cache(args.bundle, folder, args.count, args.cache, s.regions, fold["regions"], teacher)
            print(f"| {teacher} | {os.path.basename(os.path.normpath(folder))} | {fold_ap(ce, s, crops, fold)} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
