"""A trained detector with the shipped bundle's scoring settings (issue 29).

A detector straight from ``train_detector`` scores its image head at ViLD's
single temperature and has no teacher crops in its ensemble. The shipped
bundle scores the image head at its own temperature (docs/decisions/0030)
and folds the teacher's view of the first regions into the ensemble
(docs/decisions/0031, manifest ``embedding.crops``). This writes two copies
of a detector checkpoint so that ``vildtrain evaluate`` measures it as the
bundle is scored: one with the bundle's image temperature, one with that and
the bundle's crop fold (whose teacher is then the detector's own). Nothing is
refitted: the settings are the bundle's, tuned for the bundle's detector.

    cd training
    python3 experiments/styles/shipped_settings.py runs/detector-allstyles/detector.pt
    python3 -m vildtrain evaluate --checkpoint runs/detector-allstyles/detector-t003-crops.pt \\
        --data runs/heldout --sets seen,fluent3d --methods ensemble --procs 1 --out runs/eval-allstyles-t003-crops
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", help="a final detector.pt")
    ap.add_argument("--bundle", default="../models/default")
    args = ap.parse_args()
    if not os.path.exists(args.checkpoint):
        print(f"shipped_settings: no such checkpoint: {args.checkpoint}", file=sys.stderr)
        return 2
    blob = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
    if "state" not in blob:
        print(f"shipped_settings: {args.checkpoint} is a run's checkpoint.pt, not a final detector.pt",
              file=sys.stderr)
        return 2
    emb = json.load(open(os.path.join(args.bundle, "manifest.json")))["embedding"]
    temperature = emb.get("image_temperature")
    crops = emb.get("crops")
    if not temperature or not crops:
        print(f"shipped_settings: {args.bundle} has no image temperature or crop fold", file=sys.stderr)
        return 2
    stem = os.path.splitext(args.checkpoint)[0]
    tag = f"t{str(temperature).replace('.', '')}"
    blob["config"]["image_temperature"] = float(temperature)
    torch.save(blob, f"{stem}-{tag}.pt")
    blob["extra"]["crops"] = dict(crops)
    torch.save(blob, f"{stem}-{tag}-crops.pt")
    print(f"shipped_settings: wrote {stem}-{tag}.pt (image temperature {temperature}) and {stem}-{tag}-crops.pt "
          f"(and crops {json.dumps(crops)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
