"""Copies of a bundle whose exemplar shift is scaled, for `vild exemplars-eval`.

An exemplar's embedding is moved across the modality gap by the bundle's shift
(``image_encoder_shift.npy``: the mean text embedding of its categories minus
the mean exemplar embedding of generated scenes' objects, docs/exemplars.md).
Each copy holds the shift times one factor (its digest rewritten in the
manifest, so the copy opens, and the factor recorded as ``gap.scale``; its exemplar golden case no longer matches, so
`go test ./exemplar` is not for these copies). Nothing of the copies ships.

    python3 experiments/exemplars/shift_scale.py ../models/default /tmp/shift 1.15 1.3
    # then, from the repository root, for each copy:
    go run ./cmd/vild exemplars-eval --model /tmp/shift/1.15 ...
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys

import numpy as np


def scaled_copy(bundle: str, out: str, factor: float) -> float:
    """Copy ``bundle`` to ``out`` with its shift times ``factor``; returns the new length."""
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(bundle, out)
    with open(os.path.join(out, "manifest.json"), encoding="utf-8") as f:
        man = json.load(f)
    name = man["image_encoder"]["shift"]
    path = os.path.join(out, name)
    shift = np.load(path).astype(np.float32) * np.float32(factor)
    np.save(path, shift)
    with open(path, "rb") as f:
        man["sha256"][name] = hashlib.sha256(f.read()).hexdigest()
    gap = man["image_encoder"].setdefault("gap", {})
    gap["scale"] = float(gap.get("scale", 1.0)) * factor   # provenance, as image_encoder --shift-scale writes it
    with open(os.path.join(out, "manifest.json"), "w", encoding="utf-8") as f:
        f.write(json.dumps(man, indent=1) + "\n")
    return float(np.linalg.norm(shift))


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("bundle")
    ap.add_argument("out", help="a directory that gets one copy per factor, named by it")
    ap.add_argument("factors", type=float, nargs="+")
    args = ap.parse_args(argv)
    for a in args.factors:
        dst = os.path.join(args.out, f"{a:g}")
        print(f"{dst}: shift x {a:g}, length {scaled_copy(args.bundle, dst, a):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
