"""Writes rle.json for mask/rle_test.go with the Python encoder of the
training data (vildtrain.data.coco, pycocotools' rleToString) and real
segmentations of the held-out set.

Run from this directory: /usr/bin/python3 make_rle.py [annotations.json]
(default ../../training/runs/heldout/seen/annotations.json, written by
`python3 -m vildtrain heldout`).
"""
import json
import sys

import numpy as np

sys.path.insert(0, "../../training")
from vildtrain.data.coco import rle_area, rle_encode  # noqa: E402

rng = np.random.default_rng(0)
cases = []


def add(name, m, rows=True):
    m = np.asarray(m, dtype=np.uint8)
    c = {"name": name, **rle_encode(m)}
    if rows:
        c["rows"] = ["".join(str(v) for v in r) for r in m]
    cases.append(c)


add("empty 2x3", np.zeros((2, 3)))
add("full 3x2", np.ones((3, 2)))
add("first pixel", [[1, 0], [0, 0]])
add("last pixel", [[0, 0], [0, 1]])
add("diagonal 4x4", np.eye(4))
add("random 7x5", rng.random((7, 5)) > 0.5)
add("random 40x60", rng.random((40, 60)) > 0.3)
yy, xx = np.mgrid[:50, :70]
add("disc 50x70", (yy - 22) ** 2 + (xx - 40) ** 2 < 15 ** 2)
big = np.zeros((300, 400), np.uint8)
big[10:290, 5:395] = 1   # long runs: counts over 2^15, negative differences
big[100:120, 100:300] = 0
add("long runs 300x400", big, rows=False)   # rle_test.go draws the same rectangles

path = sys.argv[1] if len(sys.argv) > 1 else "../../training/runs/heldout/seen/annotations.json"
with open(path) as f:
    anns = json.load(f)["annotations"]
real = [{"size": a["segmentation"]["size"], "counts": a["segmentation"]["counts"], "area": rle_area(a["segmentation"])}
        for a in anns[:6]]
with open("rle.json", "w") as f:
    json.dump({"synthetic": cases, "heldout": real}, f)
