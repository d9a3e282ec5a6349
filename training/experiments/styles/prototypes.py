"""Categories named by their drawings as well as their names (issue 29, item 12).

The teacher names a Fluent 3D drawing on white by its text embedding less
often than its own image embedding finds a seen-style drawing of the same
category (item 6). This asks whether a classifier made of the teacher's
*image* embeddings of each category's seen-style art (a prototype per
category, as multi-modal classifiers for open-vocabulary detection do)
names Fluent 3D better than the names do, and what it gives the bundle's
pipeline:

1. prototypes, each the unit sum over the eight teacher styles of the unit
   mean embedding of a category's art in that style:
   - **tiles**: the art on white at 64 px (the teacher resizes it to 32),
     1x and on a 1.5x white square, as the crops are cut;
   - **scenes**: crops (1x + 1.5x) of the labelled objects of generated
     scenes drawn in one teacher style at a time (--scenes per style, seeds
     4242 + style index; never the held-out seeds), no Fluent 3D anywhere;
2. naming, top-1 over the 703 names, against the names (the bundle's
   category embeddings), the prototypes, and the two added:
   - the art on white (Fluent 3D; and each of Noto, Twemoji and OpenMoji
     by prototypes of the other seven styles);
   - the ground-truth boxes of the first --probe scenes of each set, cropped
     as the teacher crops regions, and the same objects cut out by their
     ground-truth masks and laid on white (what a perfect mask would give);
3. AP in the bundle's pipeline (its regions, the teacher's crops folded in
   as its manifest says): the image head and the crops scored against
   unit(name + a * unit(scene prototype + the bundle's modality-gap shift))
   instead of the name, for each a in --blend; the text head keeps the names.

    cd training
    python3 experiments/styles/prototypes.py runs/teacher/miniclip.pt \\
        --sets runs/heldout/fluent3d runs/heldout/seen --cache /tmp/calib-cache

About 15 minutes on two cores (the regions of each set, if not in --cache,
take about 2.5 minutes more).
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
sys.path.insert(0, os.path.join(HERE, "..", "calibration"))   # the region cache, for experiments/ensemble's Set
sys.path.insert(0, HERE)

from art_similarity import tile  # noqa: E402
from explore import load_regions  # noqa: E402  (experiments/calibration's region cache)
from teacher_crops import crops_module, fold_ap, fold_header, fold_set, open_teacher, teacher_parser  # noqa: E402

from vildtrain.data.art import STYLES_TEACHER, ArtLibrary  # noqa: E402
from vildtrain.data.categories import load_categories  # noqa: E402
from vildtrain.data.coco import rle_decode  # noqa: E402
from vildtrain.data.scenes import generate_scene, scene_rng  # noqa: E402
from vildtrain.models.detector import DetectorConfig  # noqa: E402
from vildtrain.models.infer import preprocess  # noqa: E402
from vildtrain.models.losses import crop_embeddings  # noqa: E402

SCENE_SEED = 4242


def unit_sum(parts: list[torch.Tensor]) -> torch.Tensor:
    """Unit sum of unit rows; an all-zero row (no art in a style) adds nothing."""
    return F.normalize(sum(F.normalize(p, dim=1) for p in parts), dim=1)


def padded(t: torch.Tensor, scale: float = 1.5) -> torch.Tensor:
    n = t.shape[-1]
    big = int(round(n * scale))
    o = (big - n) // 2
    x = torch.ones(3, big, big)
    x[:, o:o + n, o:o + n] = t
    return x


@torch.no_grad()
def tile_embeddings(clip, lib: ArtLibrary, rows: dict[int, int], style: str, n: int) -> torch.Tensor:
    """[n, D]: each category's tile in ``style`` (1x + 1.5x on white); zero where it has none."""
    out = torch.zeros(n, clip.embed_dim)
    have = [(cid, r) for cid, r in rows.items() if lib.has(cid, style)]
    t = torch.stack([tile(lib, cid, style, 64) for cid, _ in have])
    e = clip.encode_image(t) + clip.encode_image(torch.stack([padded(x) for x in t]))
    out[[r for _, r in have]] = F.normalize(e, dim=1)
    return out


@torch.no_grad()
def scene_sums(clip, cats, rows: dict[int, int], scenes: int) -> dict[str, torch.Tensor]:
    """Per teacher style, [n, D] sums of the crop embeddings of each category's objects."""
    cfg = DetectorConfig()
    out = {}
    t0 = time.time()
    for k, style in enumerate(STYLES_TEACHER):
        art = ArtLibrary(styles=(style,), categories=cats)
        acc = torch.zeros(len(rows), clip.embed_dim)
        for i in range(scenes):
            img, objs = generate_scene(scene_rng(SCENE_SEED + k, i), art, cats, (style,), label_novel=True)
            objs = [o for o in objs if o.labelled]
            if not objs:
                continue
            prep = preprocess(img, cfg)
            sy, sx = prep.scale
            b = torch.tensor([[o.bbox[0], o.bbox[1], o.bbox[0] + o.bbox[2], o.bbox[1] + o.bbox[3]] for o in objs],
                             dtype=torch.float32) * torch.tensor([sx, sy, sx, sy])
            acc.index_add_(0, torch.tensor([rows[o.category_id] for o in objs]), crop_embeddings(clip, prep.image01, [b]))
        out[style] = acc
        print(f"prototypes: {style}, {scenes} scenes, {int((acc.norm(dim=1) > 0).sum())} categories "
              f"({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    return out


@torch.no_grad()
def ground_truth_crops(clip, folder: str, count: int, index: dict[str, int]):
    """(in context [M, D], on white by the true mask [M, D], labels [M]) of the first ``count`` scenes."""
    ann = json.load(open(os.path.join(folder, "annotations.json")))
    name = {c["id"]: c["name"] for c in ann["categories"]}
    by_image: dict = {}
    for a in ann["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    ctx, white, labels = [], [], []
    for im in ann["images"][:count]:
        objs = by_image.get(im["id"], [])
        if not objs:
            continue
        img = torch.from_numpy(np.asarray(Image.open(os.path.join(folder, "images", im["file_name"])).convert("RGB"),
                                          np.float32) / 255).permute(2, 0, 1)[None]
        b = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in objs)], dtype=torch.float32)
        ctx.append(crop_embeddings(clip, img, [b]))
        cut = []
        for a, box in zip(objs, b):
            m = torch.from_numpy(rle_decode(a["segmentation"]).astype(np.float32))[None, None]
            cut.append(crop_embeddings(clip, img * m + (1 - m), [box[None]]))
        white.append(torch.cat(cut))
        labels += [index[name[a["category_id"]]] for a in objs]
    return torch.cat(ctx), torch.cat(white), torch.tensor(labels)


def top1(e: torch.Tensor, classifier: torch.Tensor, y: torch.Tensor) -> float:
    return ((e @ classifier.T).argmax(1) == y).float().mean().item()


def main() -> int:
    ap = teacher_parser(__doc__)
    ap.add_argument("--count", type=int, default=500, help="scenes per set for AP")
    ap.add_argument("--probe", type=int, default=150, help="scenes per set for the naming of true boxes")
    ap.add_argument("--scenes", type=int, default=400, help="generated scenes per teacher style for the prototypes")
    ap.add_argument("--blend", type=float, nargs="*", default=[0.5, 1.0])
    ap.add_argument("--cache", default="/tmp/calib-cache")
    args = ap.parse_args()
    opened = open_teacher("prototypes", args.teacher, args.bundle)
    if opened is None:
        return 2
    man, index, names, clip, digest = opened
    shift = torch.from_numpy(np.load(os.path.join(args.bundle, "image_encoder_shift.npy")).astype(np.float32))
    cats = load_categories()
    rows = {c.id: index[c.name] for c in cats}
    n = len(index)

    lib = ArtLibrary(styles=("fluent3d",) + STYLES_TEACHER, categories=cats)
    tiles = {s: tile_embeddings(clip, lib, rows, s, n) for s in ("fluent3d",) + STYLES_TEACHER}
    path = os.path.join(args.cache, f"prototypes_{digest}_{args.scenes}.pt")
    if os.path.exists(path):
        sums = torch.load(path)
    else:
        sums = scene_sums(clip, cats, rows, args.scenes)
        os.makedirs(args.cache, exist_ok=True)
        torch.save(sums, path)
    p_tile = unit_sum([tiles[s] for s in STYLES_TEACHER])
    p_scene = unit_sum(list(sums.values()))
    both = lambda p: F.normalize(names + F.normalize(p + shift, dim=1), dim=1)  # noqa: E731

    print(f"{man['name']}, teacher {args.teacher} ({digest}); prototypes from {args.scenes} scenes per style\n")
    print("Naming, top-1 over 703 names:\n\n"
          "| objects | n | names | tile prototypes | scene prototypes | names + tile prototypes | names + scene prototypes |\n"
          "|---|---:|---:|---:|---:|---:|---:|")

    def line(label: str, e: torch.Tensor, y: torch.Tensor, pt: torch.Tensor, ps: torch.Tensor) -> None:
        print(f"| {label} | {len(y)} | {top1(e, names, y):.3f} | {top1(e, pt, y):.3f} | {top1(e, ps, y):.3f} | "
              f"{top1(e, both(pt), y):.3f} | {top1(e, both(ps), y):.3f} |", flush=True)

    for style in ("fluent3d", "noto", "twemoji", "openmoji"):
        have = tiles[style].norm(dim=1) > 0
        y = torch.nonzero(have).flatten()
        others = [s for s in STYLES_TEACHER if s != style]
        pt = p_tile if style == "fluent3d" else unit_sum([tiles[s] for s in others])
        ps = p_scene if style == "fluent3d" else unit_sum([sums[s] for s in others])
        label = f"{style} art on white" + ("" if style == "fluent3d" else " (prototypes of the other seven styles)")
        line(label, tiles[style][y], y, pt, ps)
    for folder in args.sets:
        ctx, white, y = ground_truth_crops(clip, folder, args.probe, index)
        line(f"{os.path.basename(os.path.normpath(folder))} true boxes, in context", ctx, y, p_tile, p_scene)
        line(f"{os.path.basename(os.path.normpath(folder))} true boxes, cut out on white", white, y, p_tile, p_scene)

    ce = crops_module()
    fold = man["embedding"]["crops"]
    print("\nAP in the bundle's pipeline (image head and crops against the classifier, text head against the names):\n\n"
          + fold_header("set", "image-side classifier"))
    for folder in args.sets:
        s = fold_set(ce, args.bundle, man, folder, args.count, args.cache)
        crops = ce.crop_cache(args.bundle, folder, args.count, args.cache, s.regions, fold["regions"], args.teacher)
        regions, _, _ = load_regions(args.bundle, folder, args.count, args.cache)
        for a in [0.0] + list(args.blend):
            c = names if a == 0 else F.normalize(names + a * F.normalize(p_scene + shift, dim=1), dim=1)
            s.emb = c
            s.regions = [(sb, st, ie @ c.T, boxes) for (sb, st, _, boxes), (_, ie, _) in zip(s.regions, regions)]
            label = "names (the bundle)" if a == 0 else f"names + {a:g} × scene prototypes"
            print(f"| {os.path.basename(os.path.normpath(folder))} | {label} | {fold_ap(ce, s, crops, fold)} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
