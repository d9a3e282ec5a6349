"""Does flattening a picture help the teacher name rendered art? (issue 29, item 14)

The teacher was taught flat drawings: solid fills, a few gradients, outlines
in some styles. Fluent 3D is rendered: soft shading, highlights, textures.
This asks whether an image filter that pushes a picture towards flat art
before the teacher sees it (fewer colours, flattened shading) names Fluent
3D objects better, and what it costs the seen styles. It changes nothing in
the teacher and needs no training: a filter that helped could run on the
crops at inference.

For each filter, the whole scene is filtered, then the ground-truth boxes of
the first --probe scenes of each set are cropped as the detector's teacher
targets are cut (1x + 1.5x squares, averaged) and named over the 703 names (top-1,
and top-5) by the bundle's category embeddings.

    cd training
    python3 experiments/styles/flatten.py runs/teacher/miniclip.pt \\
        --sets runs/heldout/fluent3d runs/heldout/seen

About 4 minutes on two cores with the default 150 scenes per set.
"""
from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)

from teacher_crops import open_teacher, teacher_parser  # noqa: E402

from vildtrain.models.losses import crop_embeddings  # noqa: E402

FILTERS = {
    "none": lambda im: im,
    "posterize 3 bits": lambda im: ImageOps.posterize(im, 3),
    "posterize 2 bits": lambda im: ImageOps.posterize(im, 2),
    "32 colours (median cut)": lambda im: im.quantize(32, method=Image.Quantize.MEDIANCUT).convert("RGB"),
    "median 5": lambda im: im.filter(ImageFilter.MedianFilter(5)),
    "mode 5": lambda im: im.filter(ImageFilter.ModeFilter(5)),
    "saturation 1.5": lambda im: ImageEnhance.Color(im).enhance(1.5),
    "contrast 1.5": lambda im: ImageEnhance.Contrast(im).enhance(1.5),
    "saturation 1.5, 32 colours": lambda im: ImageEnhance.Color(im).enhance(1.5).quantize(
        32, method=Image.Quantize.MEDIANCUT).convert("RGB"),
}


@torch.no_grad()
def probe(clip, folder: str, count: int, index: dict[str, int], names: torch.Tensor) -> dict[str, tuple[float, float, int]]:
    """{filter: (top-1, top-5, objects)} on the true boxes of the first ``count`` scenes."""
    ann = json.load(open(os.path.join(folder, "annotations.json")))
    name = {c["id"]: c["name"] for c in ann["categories"]}
    by_image: dict = {}
    for a in ann["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    hits = {f: [0, 0] for f in FILTERS}
    n = 0
    for im in ann["images"][:count]:
        objs = by_image.get(im["id"], [])
        if not objs:
            continue
        pic = Image.open(os.path.join(folder, "images", im["file_name"])).convert("RGB")
        b = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in objs)], dtype=torch.float32)
        y = torch.tensor([index[name[a["category_id"]]] for a in objs])
        n += len(objs)
        for f, fn in FILTERS.items():
            t = torch.from_numpy(np.asarray(fn(pic), np.float32) / 255).permute(2, 0, 1)[None]
            top = (crop_embeddings(clip, t, [b]) @ names.T).topk(5, dim=1).indices
            hits[f][0] += int((top[:, 0] == y).sum())
            hits[f][1] += int((top == y[:, None]).any(1).sum())
    return {f: (h[0] / n, h[1] / n, n) for f, h in hits.items()}


def main() -> int:
    ap = teacher_parser(__doc__)
    ap.add_argument("--probe", type=int, default=150, help="scenes per set")
    args = ap.parse_args()
    opened = open_teacher("flatten", args.teacher, args.bundle)
    if opened is None:
        return 2
    man, index, names, clip, digest = opened
    t0 = time.time()
    res = {}
    for folder in args.sets:
        res[os.path.basename(os.path.normpath(folder))] = probe(clip, folder, args.probe, index, names)
        print(f"flatten: {folder} ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    sets = list(res)
    print(f"{man['name']}, teacher {args.teacher} ({digest}); true boxes of the first {args.probe} scenes "
          f"per set, top-1 / top-5 over {len(index)} names\n")
    print("| filter | " + " | ".join(f"{s} ({next(iter(res[s].values()))[2]} objects)" for s in sets) + " |")
    print("|---|" + "---:|" * len(sets))
    for f in FILTERS:
        print(f"| {f} | " + " | ".join(f"{res[s][f][0]:.3f} / {res[s][f][1]:.3f}" for s in sets) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
