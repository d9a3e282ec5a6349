"""Write eval/testdata/golden.json: randomised COCO cases scored by vildtrain.evaluate.cocoeval.

    PYTHONPATH=training /usr/bin/python3 eval/testdata/gen_golden.py

Each case holds a COCO ground-truth dict, COCO-results detections and what the
Python evaluation gives for them (per-category AP at every IoU threshold, the
novel/base/all summary). eval's golden test reads the same ground truth and
detections through the Go readers and must agree within 1e-9.

The cases stress what the arithmetic is sensitive to: ties in scores (within and
across images), IoUs exactly on a threshold (integer boxes), duplicate boxes,
crowded overlaps, more than 100 detections of a category in one image, images
without ground truth or without detections, detections on images the ground
truth does not list, categories without ground truth (with and without
detections) and detections of categories the ground truth does not list.
"""
from __future__ import annotations

import json
import math
import os
import random

from vildtrain.evaluate import cocoeval as ev

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden.json")


def nan_to_none(xs):
    return [None if math.isnan(float(x)) else float(x) for x in xs]


def rand_box(rng: random.Random, size: int, integer: bool) -> list[float]:
    w = rng.randint(2, size // 2) if integer else rng.uniform(1.0, size / 2)
    h = rng.randint(2, size // 2) if integer else rng.uniform(1.0, size / 2)
    x = rng.randint(0, size - int(w)) if integer else rng.uniform(0, size - w)
    y = rng.randint(0, size - int(h)) if integer else rng.uniform(0, size - h)
    return [float(x), float(y), float(w), float(h)]


def jitter(rng: random.Random, box: list[float], amount: float, integer: bool) -> list[float]:
    x, y, w, h = box
    if integer:
        a = max(1, int(amount * max(w, h)))
        return [x + rng.randint(-a, a), y + rng.randint(-a, a), max(1.0, w + rng.randint(-a, a)),
                max(1.0, h + rng.randint(-a, a))]
    a = amount * max(w, h)
    return [x + rng.uniform(-a, a), y + rng.uniform(-a, a), max(0.5, w + rng.uniform(-a, a)),
            max(0.5, h + rng.uniform(-a, a))]


def make_case(name: str, seed: int, n_images: int, n_cats: int, integer: bool, score_levels: int | None,
              crowd: bool = False, many: bool = False) -> dict:
    rng = random.Random(seed)
    size = 64 if integer else 200
    cats = []
    for i in range(n_cats):
        split = "base" if i % 3 != 2 else "novel"
        cats.append({"id": 10 + i, "name": f"category {i}", "split": split})
    images, anns, dets = [], [], []

    def score() -> float:
        if score_levels:
            return rng.randint(1, score_levels) / score_levels
        return rng.random()

    # The last category never has ground truth; the one before has neither GT nor detections.
    gt_cats = cats[:-2] if n_cats > 2 else cats
    for i in range(n_images):
        img_id = i + 1
        images.append({"id": img_id, "file_name": f"{img_id:06d}.jpg", "width": size, "height": size})
        kind = rng.random()
        if i == 0:
            continue  # no ground truth, no detections
        n_gt = 0 if kind < 0.15 else rng.randint(1, 12 if crowd else 6)
        gts = []
        for _ in range(n_gt):
            c = rng.choice(gt_cats)["id"]
            if crowd and gts and rng.random() < 0.6:
                box = jitter(rng, rng.choice(gts)[1], 0.3, integer)
            else:
                box = rand_box(rng, size, integer)
            gts.append((c, box))
            if rng.random() < 0.1:
                gts.append((c, list(box)))  # exact duplicate
        for c, box in gts:
            anns.append({"id": len(anns) + 1, "image_id": img_id, "category_id": c, "bbox": box,
                         "area": box[2] * box[3], "iscrowd": 0})
        if 0.15 <= kind < 0.25:
            continue  # ground truth without detections
        for c, box in gts:
            for _ in range(rng.randint(0, 3)):
                r = rng.random()
                if r < 0.2:
                    d = list(box)
                elif r < 0.35 and integer:
                    # IoU exactly 0.5 (half the height) or 0.75 (w*3/4 when w divisible by 4)
                    x, y, w, h = box
                    d = [x, y, w, h / 2] if rng.random() < 0.5 else [x, y, w * 3 / 4, h]
                else:
                    d = jitter(rng, box, rng.choice([0.05, 0.15, 0.3]), integer)
                dc = c if rng.random() < 0.85 else rng.choice(cats)["id"]
                dets.append({"image_id": img_id, "category_id": dc, "bbox": d, "score": score()})
        for _ in range(rng.randint(0, 4)):  # background false positives, any category
            dets.append({"image_id": img_id, "category_id": rng.choice(cats)["id"],
                         "bbox": rand_box(rng, size, integer), "score": score()})
        if many and i % 3 == 1:
            c = gts[0][0] if gts else cats[0]["id"]
            base = gts[0][1] if gts else rand_box(rng, size, integer)
            for _ in range(rng.randint(101, 160)):
                dets.append({"image_id": img_id, "category_id": c, "bbox": jitter(rng, base, 0.2, integer),
                             "score": score()})
    # detections on an image the ground truth does not list, and of an unknown category
    dets.append({"image_id": n_images + 1, "category_id": gt_cats[0]["id"], "bbox": rand_box(rng, size, integer),
                 "score": score()})
    dets.append({"image_id": 2, "category_id": 999, "bbox": rand_box(rng, size, integer), "score": score()})
    rng.shuffle(dets)  # within-image order matters for ties: keep it arbitrary but fixed

    coco = {"info": {"case": name, "seed": seed}, "images": images, "annotations": anns, "categories": cats}
    gts_by: dict[int, list] = {im["id"]: [] for im in images}
    for a in anns:
        gts_by[a["image_id"]].append((a["category_id"], list(a["bbox"])))
    dts_by: dict[int, list] = {}
    for d in dets:
        dts_by.setdefault(d["image_id"], []).append((d["category_id"], list(d["bbox"]), d["score"]))
    # The Go side takes images in ascending id order (pycocotools' order); Python's
    # set iteration gives the same order for these small contiguous ids.
    order = list(set(gts_by) | set(dts_by))
    assert order == sorted(order), order
    cat_ids = [c["id"] for c in cats]
    ap = ev.evaluate_detections(gts_by, dts_by, cat_ids)
    groups = {"novel": [c["id"] for c in cats if c["split"] == "novel"],
              "base": [c["id"] for c in cats if c["split"] == "base"], "all": cat_ids}
    summary = ev.summarize(ap, groups)
    for g in summary.values():
        for k in ("AP", "AP50"):
            if math.isnan(g[k]):
                g[k] = None
    return {"name": name, "coco": coco, "detections": dets,
            "want": {"per_category": {str(c): nan_to_none(ap[c]) for c in cat_ids}, "summary": summary}}


def main() -> None:
    cases = [
        make_case("integer-ties", 1, 12, 6, integer=True, score_levels=5),
        make_case("float-scores", 2, 15, 7, integer=False, score_levels=None),
        make_case("crowded", 3, 10, 5, integer=True, score_levels=20, crowd=True),
        make_case("many-detections", 4, 9, 6, integer=False, score_levels=50, many=True),
        make_case("many-detections-ties", 5, 7, 7, integer=True, score_levels=3, many=True, crowd=True),
        make_case("small", 6, 3, 3, integer=True, score_levels=2),
    ]
    out = {"generator": "PYTHONPATH=training /usr/bin/python3 eval/testdata/gen_golden.py",
           "iou_thresholds": [float(x) for x in ev.IOU_THRESHOLDS],
           "recall_points": [float(x) for x in ev.RECALL_POINTS],
           "max_dets": ev.MAX_DETS, "cases": cases}
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(out, f, separators=(",", ":"), allow_nan=False)
        f.write("\n")
    print(f"wrote {OUT}: {len(cases)} cases, {sum(len(c['detections']) for c in cases)} detections")


if __name__ == "__main__":
    main()
