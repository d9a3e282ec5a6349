"""Writes boxes/testdata/boxes_golden.json from torchvision's own box code.

Run from the repository root:  /usr/bin/python3 boxes/testdata/gen_boxes.py
"""
import json
import math
import os

import numpy as np
import torch
import torchvision
from torchvision.models.detection._utils import BoxCoder
from torchvision.ops import boxes as box_ops

torch.manual_seed(0)
rng = np.random.default_rng(0)


def random_boxes(n, extent=200.0, max_side=80.0):
    xy = rng.uniform(0, extent, size=(n, 2))
    wh = rng.uniform(1, max_side, size=(n, 2))
    return np.concatenate([xy, xy + wh], axis=1).astype(np.float32)


def f32list(a):
    return [float(v) for v in np.asarray(a, dtype=np.float32).reshape(-1)]


out = {"torchvision": torchvision.__version__}

# IoU matrix.
a, b = random_boxes(20), random_boxes(30)
a[0] = b[0]  # identical boxes
a[1] = [500, 500, 510, 510]  # disjoint from everything
out["iou"] = {"a": f32list(a), "b": f32list(b),
              "iou": f32list(box_ops.box_iou(torch.from_numpy(a), torch.from_numpy(b)))}

# NMS and label-wise NMS; torchvision takes the "coordinate trick" path below
# 1000 boxes and the per-class loop above, both are covered.
nms_cases = []
for name, n, classes, thr in [("small", 300, 5, 0.5), ("dense", 200, 3, 0.7),
                              ("vanilla_path", 1500, 7, 0.5), ("one_class", 500, 1, 0.3)]:
    bx = random_boxes(n, extent=150.0 if name == "dense" else 300.0)
    sc = rng.random(n).astype(np.float32)
    cl = rng.integers(0, classes, size=n)
    tb, ts = torch.from_numpy(bx), torch.from_numpy(sc)
    nms_cases.append({
        "name": name, "boxes": f32list(bx), "scores": f32list(sc), "classes": [int(c) for c in cl],
        "iou_threshold": thr,
        "nms": [int(i) for i in torchvision.ops.nms(tb, ts, thr)],
        "batched_nms": [int(i) for i in torchvision.ops.batched_nms(tb, ts, torch.from_numpy(cl), thr)],
    })
# Ties: equal scores are visited in index order (torchvision sorts stably).
bx = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [50, 50, 60, 60], [51, 50, 61, 60]], np.float32)
sc = np.array([0.5, 0.5, 0.9, 0.5, 0.5], np.float32)
nms_cases.append({
    "name": "ties", "boxes": f32list(bx), "scores": f32list(sc), "classes": [0, 0, 0, 0, 0],
    "iou_threshold": 0.5,
    "nms": [int(i) for i in torchvision.ops.nms(torch.from_numpy(bx), torch.from_numpy(sc), 0.5)],
    "batched_nms": [int(i) for i in torchvision.ops.batched_nms(
        torch.from_numpy(bx), torch.from_numpy(sc), torch.zeros(5, dtype=torch.int64), 0.5)],
})
out["nms"] = nms_cases

# Box coder decode, with deltas large enough to hit the dw/dh clamp.
coder_cases = []
for weights in [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)]:
    ref = random_boxes(200)
    deltas = rng.normal(0, 1.5, size=(200, 4)).astype(np.float32)
    deltas[:10, 2:] = 30.0  # clamped at log(1000/16) after weighting
    deltas[10:20, 2:] = -8.0
    coder = BoxCoder(weights)
    dec = coder.decode_single(torch.from_numpy(deltas), torch.from_numpy(ref))
    coder_cases.append({"weights": list(weights), "ref": f32list(ref), "deltas": f32list(deltas),
                        "decoded": f32list(dec)})
out["coder"] = coder_cases
out["clip_value"] = math.log(1000.0 / 16)

# Clip and remove small boxes.
bx = rng.uniform(-50, 250, size=(100, 4)).astype(np.float32)
bx[:, 2:] = bx[:, :2] + rng.uniform(-2, 60, size=(100, 2)).astype(np.float32)
clipped = box_ops.clip_boxes_to_image(torch.from_numpy(bx), (120, 180))
out["clip"] = {"boxes": f32list(bx), "height": 120, "width": 180, "clipped": f32list(clipped),
               "min_size": 3.5,
               "keep": [int(i) for i in box_ops.remove_small_boxes(clipped, 3.5)]}

path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "boxes_golden.json")
with open(path, "w") as f:
    json.dump(out, f, separators=(",", ":"))
print("wrote", path, os.path.getsize(path), "bytes")
