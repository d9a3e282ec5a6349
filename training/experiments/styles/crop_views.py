"""More views of each region for the teacher's crops (issue 29, item 13).

The bundle's crop fold (docs/decisions/0031) embeds each of the 100 best
regions with the teacher at two square crops, 1x and 1.5x, as ViLD does.
This measures test-time augmentation of those crops: a 1.25x square between
them, and each crop mirrored left to right, for

- naming: the ground-truth boxes of the first --probe scenes of each set,
  top-1 over the 703 names (single views and sums of views);
- AP in the bundle's pipeline, with the crops of each set of views folded
  in as the manifest says (its regions, temperature and weights); one view
  (1.25x alone) costs half the bundle's two, four views twice, six three times.

    cd training
    python3 experiments/styles/crop_views.py runs/teacher/miniclip.pt \\
        --sets runs/heldout/fluent3d runs/heldout/seen --cache /tmp/calib-cache

About 15 minutes on two cores: six views of 100 regions of 500 scenes per
set are embedded once and cached in --cache by the teacher's digest.
"""
from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(HERE, "..", "calibration"))
sys.path.insert(0, HERE)

from teacher_crops import crops_module, fold_ap, fold_header, fold_set, open_teacher, teacher_parser  # noqa: E402

from vildtrain.models.losses import crop_images  # noqa: E402

VIEWS = [(1.0, False), (1.25, False), (1.5, False), (1.0, True), (1.25, True), (1.5, True)]
PROBE_VIEWS = [(0.8, False), (2.0, False)] + VIEWS
COMBINATIONS = {  # name: views (indices into VIEWS); the first is the bundle's
    "1x + 1.5x (the bundle)": [0, 2],
    "1x + 1.25x + 1.5x": [0, 1, 2],
    "1x + 1.5x, and mirrored": [0, 2, 3, 5],
    "1x + 1.25x + 1.5x, and mirrored": [0, 1, 2, 3, 4, 5],
    "1.25x alone": [1],
    "1.25x, and mirrored": [1, 4],
}


def view_name(v: tuple[float, bool]) -> str:
    return f"{v[0]:g}x" + (" mirrored" if v[1] else "")


@torch.no_grad()
def embed_views(clip, image01: torch.Tensor, boxes: torch.Tensor, views) -> torch.Tensor:
    """[len(views), N, D] unit teacher embeddings of each box's square crop per view."""
    out = []
    for scale, mirror in views:
        c = crop_images(image01, [boxes], clip.image_size, scale)
        out.append(clip.encode_image(c.flip(-1) if mirror else c))
    return torch.stack(out)


def image01(folder: str, file_name: str) -> torch.Tensor:
    a = np.asarray(Image.open(os.path.join(folder, "images", file_name)).convert("RGB"), np.float32) / 255
    return torch.from_numpy(a).permute(2, 0, 1)[None]


def main() -> int:
    ap = teacher_parser(__doc__)
    ap.add_argument("--count", type=int, default=500)
    ap.add_argument("--probe", type=int, default=150)
    ap.add_argument("--cache", default="/tmp/calib-cache")
    args = ap.parse_args()
    opened = open_teacher("crop_views", args.teacher, args.bundle)
    if opened is None:
        return 2
    man, index, names, clip, digest = opened
    print(f"{man['name']}, teacher {args.teacher} ({digest})\n")

    print("Naming the true boxes, top-1 over 703 names:\n")
    probes = [[view_name(v)] for v in PROBE_VIEWS[:5]]
    probes += [p for p in ([view_name(VIEWS[i]) for i in c] for c in COMBINATIONS.values()) if p not in probes]
    print("| views | " + " | ".join(os.path.basename(os.path.normpath(f)) for f in args.sets) + " |\n"
          "|---|" + "---:|" * len(args.sets))
    right = {}
    for folder in args.sets:
        ann = json.load(open(os.path.join(folder, "annotations.json")))
        cat = {c["id"]: index[c["name"]] for c in ann["categories"]}
        by_image: dict = {}
        for a in ann["annotations"]:
            by_image.setdefault(a["image_id"], []).append(a)
        emb, y = [], []
        for im in ann["images"][:args.probe]:
            objs = by_image.get(im["id"], [])
            if objs:
                b = torch.tensor([[x, y0, x + w, y0 + h] for x, y0, w, h in (a["bbox"] for a in objs)], dtype=torch.float32)
                emb.append(embed_views(clip, image01(folder, im["file_name"]), b, PROBE_VIEWS))
                y += [cat[a["category_id"]] for a in objs]
        e, y = torch.cat(emb, 1), torch.tensor(y)
        keys = [view_name(v) for v in PROBE_VIEWS]
        for p in probes:
            s = F.normalize(sum(e[keys.index(k)] for k in p), dim=1)
            right.setdefault(" + ".join(p), []).append(((s @ names.T).argmax(1) == y).float().mean().item())
    for k, v in right.items():
        print(f"| {k} | " + " | ".join(f"{x:.3f}" for x in v) + " |")

    ce = crops_module()
    fold = man["embedding"]["crops"]
    print("\nAP with the crops of each set of views folded in as the bundle folds its own:\n\n"
          + fold_header("set", "views"))
    for folder in args.sets:
        s = fold_set(ce, args.bundle, man, folder, args.count, args.cache)
        path = os.path.join(args.cache, f"{os.path.basename(os.path.normpath(folder))}_{args.count}_views{fold['regions']}_{digest}.pt")
        if os.path.exists(path):
            views = torch.load(path)
        else:
            ann = json.load(open(os.path.join(folder, "annotations.json")))
            views, t0 = [], time.time()
            for i, (im, reg) in enumerate(zip(ann["images"][:args.count], s.regions)):
                views.append(embed_views(clip, image01(folder, im["file_name"]), reg[3][:fold["regions"]], VIEWS).half())
                if (i + 1) % 100 == 0:
                    print(f"crop_views: {folder} {i + 1}/{args.count} ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
            torch.save(views, path)
        for label, idx in COMBINATIONS.items():
            crops = [F.normalize(v[idx].float().sum(0), dim=1) for v in views]
            print(f"| {os.path.basename(os.path.normpath(folder))} | {label} | {fold_ap(ce, s, crops, fold)} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
