"""Writes roialign/testdata/roialign_golden.json from torchvision's own
roi_align and MultiScaleRoIAlign on random features and boxes. Arrays are
base64 of little-endian float32.

Run from the repository root:  /usr/bin/python3 roialign/testdata/gen_roialign.py
"""
import base64
import json
import os
from collections import OrderedDict

import numpy as np
import torch
import torchvision
from torchvision.ops import MultiScaleRoIAlign, roi_align

rng = np.random.default_rng(0)


def b64(a):
    return base64.b64encode(np.ascontiguousarray(np.asarray(a), dtype="<f4").tobytes()).decode()


def random_boxes(n, h, w):
    """Boxes of every size, some reaching past the image, a few tiny."""
    x1 = rng.uniform(-10, w, n)
    y1 = rng.uniform(-10, h, n)
    side = np.exp(rng.uniform(np.log(0.5), np.log(max(h, w) * 1.2), size=(n, 2)))
    b = np.stack([x1, y1, x1 + side[:, 0], y1 + side[:, 1]], 1).astype(np.float32)
    return b


C = 6
out = {"torchvision": torchvision.__version__}

# Single-level roi_align with every option.
feat = rng.normal(size=(1, C, 20, 27)).astype(np.float32)
bx = random_boxes(40, 80, 108)
single = []
for aligned in (False, True):
    for sr in (2, 0, 1):
        for scale in (0.25, 0.5):
            pooled = roi_align(torch.from_numpy(feat), [torch.from_numpy(bx)], output_size=5,
                               spatial_scale=scale, sampling_ratio=sr, aligned=aligned)
            single.append({"aligned": aligned, "sampling_ratio": sr, "spatial_scale": scale,
                           "output_size": 5, "pooled": b64(pooled)})
out["single"] = {"feature": b64(feat), "shape": [C, 20, 27], "boxes": b64(bx), "cases": single}

# MultiScaleRoIAlign over four levels (strides 4, 8, 16, 32) of a 100x130
# image padded to 128x160, with boxes of every size so every level is used.
img_hw = (100, 130)
padded = (128, 160)
shapes = [(padded[0] // s, padded[1] // s) for s in (4, 8, 16, 32)]
feats = OrderedDict((f"p{i + 2}", torch.from_numpy(rng.normal(size=(1, C, h, w)).astype(np.float32)))
                    for i, (h, w) in enumerate(shapes))
bx = random_boxes(60, *img_hw)
bx = np.concatenate([bx, np.array([[10, 10, 234, 234], [0, 0, 112, 112], [5, 5, 61, 61], [0, 0, 130, 100],
                                   [-200, -200, 300, 300]], np.float32)])  # level boundaries; the last maps to p5
pooler = MultiScaleRoIAlign(list(feats), output_size=7, sampling_ratio=2)
pooled = pooler(feats, [torch.from_numpy(bx)], [img_hw])
levels = pooler.map_levels([torch.from_numpy(bx)])
out["multi"] = {"image_hw": list(img_hw), "shapes": [list(s) for s in shapes],
                "features": [b64(f) for f in feats.values()], "boxes": b64(bx),
                "scales": [float(s) for s in pooler.scales], "levels": [int(v) for v in levels],
                "canonical_scale": 224, "canonical_level": 4, "output_size": 7, "sampling_ratio": 2,
                "pooled": b64(pooled)}

path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "roialign_golden.json")
with open(path, "w") as f:
    json.dump(out, f, separators=(",", ":"))
print("wrote", path, os.path.getsize(path), "bytes", "levels used", sorted(set(out["multi"]["levels"])))
