"""Writes rpn/testdata/rpn_golden.json from torchvision's own RPN code.

An eval-mode torchvision RegionProposalNetwork whose head returns fixed random
tensors runs its real forward (AnchorGenerator, concat_box_prediction_layers,
BoxCoder.decode, filter_proposals). Arrays are base64 of little-endian float32.

Run from the repository root:  /usr/bin/python3 rpn/testdata/gen_rpn.py
"""
import base64
import json
import os

import numpy as np
import torch
import torchvision
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import RegionProposalNetwork

rng = np.random.default_rng(0)
SIZES = ((16,), (32,), (64,), (128,), (256,))
RATIOS = (0.5, 1.0, 2.0)


def b64(a):
    return base64.b64encode(np.ascontiguousarray(a, dtype="<f4").tobytes()).decode()


class FixedHead(torch.nn.Module):
    """Stands in for RPNHead: returns the given per-level outputs."""

    def __init__(self, logits, deltas):
        super().__init__()
        self.logits, self.deltas = logits, deltas

    def forward(self, features):
        return self.logits, self.deltas


def case(name, image_hw, padded_hw, feat_hw, pre, post, nms, min_size, score_thresh, saturate=False):
    a = len(RATIOS)
    logits = [torch.from_numpy(rng.normal(0, 2, size=(1, a, h, w)).astype(np.float32)) for h, w in feat_hw]
    deltas = [torch.from_numpy(rng.normal(0, 0.6, size=(1, 4 * a, h, w)).astype(np.float32)) for h, w in feat_hw]
    if saturate:
        # Logits above ~16.6 give sigmoid exactly 1.0 in float32: ties in score
        # that torchvision breaks by position; a few deltas hit the dw/dh clamp.
        for lg in logits:
            flat = lg.view(-1)
            idx = torch.from_numpy(rng.choice(flat.numel(), size=min(40, flat.numel()), replace=False))
            flat[idx] = torch.from_numpy(rng.uniform(17, 30, size=len(idx)).astype(np.float32))
        deltas[0].view(-1)[:50] = 9.0
    anchor_gen = AnchorGenerator(SIZES, (RATIOS,) * len(SIZES))
    rpn = RegionProposalNetwork(
        anchor_gen, FixedHead(logits, deltas), fg_iou_thresh=0.7, bg_iou_thresh=0.3,
        batch_size_per_image=256, positive_fraction=0.5,
        pre_nms_top_n=dict(training=pre, testing=pre), post_nms_top_n=dict(training=post, testing=post),
        nms_thresh=nms, score_thresh=score_thresh)
    rpn.min_size = min_size
    rpn.eval()
    images = ImageList(torch.zeros(1, 3, *padded_hw), [tuple(image_hw)])
    features = {str(i): torch.zeros(1, 1, h, w) for i, (h, w) in enumerate(feat_hw)}
    with torch.no_grad():
        (props,), _ = rpn(images, features)
        anchors = anchor_gen(images, list(features.values()))[0]
        # filter_proposals' scores (sigmoid of the kept logits), recomputed the
        # way forward does to record them alongside the boxes.
        obj, pred = torchvision.models.detection.rpn.concat_box_prediction_layers(logits, deltas)
        dec = rpn.box_coder.decode(pred, [anchors]).view(1, -1, 4)
        counts = [a * h * w for h, w in feat_hw]
        boxes2, scores2 = rpn.filter_proposals(dec, obj, images.image_sizes, counts)
    assert torch.equal(boxes2[0], props)
    return {
        "name": name, "image_hw": list(image_hw), "padded_hw": list(padded_hw), "feat_hw": [list(f) for f in feat_hw],
        "sizes": [list(s) for s in SIZES], "aspect_ratios": list(RATIOS),
        "pre_nms_top_n": pre, "post_nms_top_n": post, "nms_iou": nms, "min_size": min_size,
        "score_threshold": score_thresh,
        "logits": [b64(x) for x in logits], "deltas": [b64(x) for x in deltas],
        "anchors": b64(anchors), "proposals": b64(props), "scores": b64(scores2[0]),
    }


out = {"torchvision": torchvision.__version__, "cases": [
    # 90x120 resized in a 96x128 tensor; p6 is 2x2 so its strides are 48 and 64.
    case("small_topn", (90, 120), (96, 128), [(24, 32), (12, 16), (6, 8), (3, 4), (2, 2)],
         pre=300, post=200, nms=0.7, min_size=1e-3, score_thresh=0.0),
    case("thresholds", (96, 71), (96, 96), [(24, 24), (12, 12), (6, 6), (3, 3), (2, 2)],
         pre=1000, post=300, nms=0.5, min_size=6.0, score_thresh=0.3),
    case("saturated", (64, 64), (64, 64), [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)],
         pre=150, post=120, nms=0.7, min_size=1e-3, score_thresh=0.0, saturate=True),
]}
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rpn_golden.json")
with open(path, "w") as f:
    json.dump(out, f, separators=(",", ":"))
print("wrote", path, os.path.getsize(path), "bytes")
