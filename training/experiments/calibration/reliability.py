"""Reliability of the shipped default scores at each vocabulary size (issue 29).

The embedded bundle's default: stable scores (every name against the model's
own categories) with the teacher's crops folded in (manifest
`embedding.crops`, docs/decisions/0031). On the cached regions and crops of
explore.py and experiments/crops/explore.py, with explore.py's protocol (each
image's ground-truth names plus seeded random others, one label per region,
score >= 0.05, per-label NMS 0.5, greedy matching at IoU 0.5), prints for 10,
100 and 703 names the summary and, per 15-bin score bin, the detections, the
mean score and the share correct: where the scores are calibrated at every
size and where the share correct moves with the vocabulary.

    cd training
    python3 experiments/calibration/reliability.py --eval runs/heldout/seen --cache /tmp/calib-cache

With ``--scales T,TI,TC`` (repeatable) it prints instead one line per setting
with the text head's, the image head's and the crops' temperatures multiplied
by those factors: ECE at each size, the drift of the median true-box score
and of recall at 0.3 from 10 to 703 names, and pooled AP50. Sharper or
softer scores move ECE at 10 names and at 703 in opposite directions.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", ".."))

import explore as calib  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default="../models/default")
    ap.add_argument("--eval", default="runs/heldout/seen")
    ap.add_argument("--eval-count", type=int, default=500)
    ap.add_argument("--cache", default="/tmp/calib-cache")
    ap.add_argument("--scales", action="append", default=[], metavar="T,TI,TC",
                    help="factors for the text, image and crop temperatures; one summary line per setting")
    args = ap.parse_args()
    try:
        scales = [tuple(float(v) for v in s.split(",")) for s in args.scales]
        if any(len(f) != 3 or min(f) <= 0 for f in scales):
            raise ValueError
    except ValueError:
        print(f"reliability: --scales {args.scales}: need three positive factors each, e.g. 0.8,0.8,0.8", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    D = calib.Data(args.bundle, args.eval, args.eval_count, args.cache)
    man = json.load(open(os.path.join(args.bundle, "manifest.json")))
    cr = man["embedding"]["crops"]
    # the crops' teacher embeddings, cached by experiments/crops/explore.py (its first 300 regions)
    from importlib.util import module_from_spec, spec_from_file_location
    spec = spec_from_file_location("crops_explore", os.path.join(HERE, "..", "crops", "explore.py"))
    ce = module_from_spec(spec)
    spec.loader.exec_module(ce)
    boxes = [(None, None, None, torch.from_numpy(d["boxes"])) for d in D.images]
    crops = ce.crop_cache(args.bundle, args.eval, args.eval_count, args.cache, boxes, 300)
    from vildtrain.models.infer import Vocabulary, fold_crops
    emb = torch.from_numpy(np.load(os.path.join(args.bundle, "category_embeddings.npy")).astype(np.float32))
    vocab = Vocabulary([c["name"] for c in D.cats], emb, D.base.tolist())
    soft = calib.softmax_mode(D)
    every = np.arange(len(D.cats))
    for i, d in enumerate(D.images):
        d["index"] = i

    def default(d, V):
        """Stable scores (over every category) with the teacher's crops, the names V."""
        k = crops[d["index"]][:cr["regions"]].float()
        return fold_crops(torch.from_numpy(soft(d, every)), k, vocab, cr).numpy()[:, V]

    if scales:
        t0, ti0, tc0 = D.T, D.Ti, cr["temperature"]
        sizes = (10, 100, len(D.cats))
        print("| temperatures × (text, image, crops) | ECE 10 / 100 / 703 | median 10 → 703 | recall at 0.3, 10 → 703 "
              "| pooled AP50 10 / 100 / 703 |\n|---|---|---|---|---|")
        for ft, fi, fc in scales:
            D.T, D.Ti, cr = t0 * ft, ti0 * fi, dict(cr, temperature=tc0 * fc)
            soft = calib.softmax_mode(D)
            ms = [calib.metrics(*calib.detections(D, default, size)) for size in sizes]
            print(f"| {ft:g}, {fi:g}, {fc:g} | " + " / ".join(f"{m['ece']:.3f}" for m in ms)
                  + f" | {ms[0]['median']:.3f} → {ms[-1]['median']:.3f} | {ms[0]['recall03']:.3f} → {ms[-1]['recall03']:.3f} | "
                  + " / ".join(f"{m['ap50']:.3f}" for m in ms) + " |", flush=True)
        return 0

    print(f"{man['name']} ({args.bundle}), {len(D.images)} scenes of {args.eval}: stable scores with the teacher's crops\n")
    for size in (10, 100, len(D.cats)):
        Z, C, G, ngt = calib.detections(D, default, size)
        m = calib.metrics(Z, C, G, ngt)
        print(f"{size} names: median true-box score {m['median']:.3f}, recall at 0.3 {m['recall03']:.3f}, "
              f"ECE {m['ece']:.3f}, pooled AP50 {m['ap50']:.3f}, {m['n']} detections\n")
        keep = Z >= 0.05
        z, c = Z[keep], C[keep]
        bins = np.minimum((z * 15).astype(int), 14)
        print("| bin | detections | mean score | share correct |\n|---|---:|---:|---:|")
        for b in range(15):
            w = bins == b
            if w.any():
                print(f"| {b / 15:.2f}-{(b + 1) / 15:.2f} | {w.sum()} | {z[w].mean():.3f} | {c[w].mean():.3f} |")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
