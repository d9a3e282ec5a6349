"""Where a held-out set's AP is lost: finding the objects, or naming them.

For every ground-truth object of a set, with the bundle's detector (rebuilt in
PyTorch, regions cached as in sweep.py):

- box recall: whether any of the image's final boxes (all of them, and the 100
  with the highest objectness, 1 - p_text(background)) overlaps it at IoU >= 0.5;
- naming: on the box that overlaps it best, the rank of its true category among
  all 703 under the text, image and ensemble heads (top-1 and top-5 accuracy);
- class-agnostic AP: boxes scored by their objectness, class-agnostic NMS at
  IoU 0.5, the best 100 per image, any ground truth matches.

    cd training
    python3 experiments/ensemble/diagnose.py --sets runs/heldout/seen runs/heldout/fluent3d \\
        --cache /tmp/calib-cache
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch
from torchvision.ops import nms

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from sweep import Set, probabilities  # noqa: E402

from vildtrain.evaluate.cocoeval import evaluate_detections, summarize  # noqa: E402


def iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU [len(a), len(b)] of x1y1x2y2 boxes."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(2)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def diagnose(s: Set, top: int = 100) -> dict:
    found_all = found_top = n = 0
    ranks = {h: [] for h in ("text", "image", "ensemble")}
    agnostic = {}
    for im_id, (sb, St, Si, boxes) in zip(s.ids, s.regions):
        gts = s.gts[im_id]
        p_bg = torch.softmax(torch.cat([sb.view(-1, 1), St], 1) / s.T, 1)[:, 0]
        obj = 1 - p_bg
        order = obj.argsort(descending=True)
        kept = nms(boxes, obj, 0.5)[:top]
        agnostic[im_id] = [(0, [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])], float(o))
                           for b, o in zip(boxes[kept], obj[kept])]
        if not gts:
            continue
        g = torch.tensor([[x, y, x + w, y + h] for _, (x, y, w, h) in gts], dtype=boxes.dtype)
        m = iou(boxes, g)
        found_all += int((m.max(0).values >= 0.5).sum())
        found_top += int((m[order[:top]].max(0).values >= 0.5).sum())
        n += len(gts)
        best = m.argmax(0)
        probs = {h: probabilities(s, sb, St, Si, h, 2 / 3, 2 / 3, s.T) for h in ranks}
        for j, (c, _) in enumerate(gts):
            if m[best[j], j] < 0.5:
                continue
            for h, p in probs.items():
                row = p[best[j]]
                ranks[h].append(int((row > row[c]).sum()))
    ap = summarize(evaluate_detections({k: [(0, b) for _, b in v] for k, v in s.gts.items()}, agnostic, [0]),
                   {"any": [0]})["any"]
    out = {"objects": n, "box_recall_all": found_all / n, f"box_recall_top{top}": found_top / n,
           "class_agnostic_AP50": ap["AP50"], "class_agnostic_AP": ap["AP"]}
    for h, r in ranks.items():
        r = np.array(r)
        out[f"{h}_top1_on_found"] = float((r == 0).mean())
        out[f"{h}_top5_on_found"] = float((r < 5).mean())
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default="../models/default")
    ap.add_argument("--sets", nargs="+", default=["runs/heldout/seen", "runs/heldout/fluent3d"])
    ap.add_argument("--count", type=int, default=500)
    ap.add_argument("--cache", default="/tmp/calib-cache")
    args = ap.parse_args()
    torch.set_num_threads(1)
    keys = None
    for folder in args.sets:
        d = diagnose(Set(args.bundle, folder, args.count, args.cache))
        if keys is None:
            keys = list(d)
            print("| set | " + " | ".join(keys) + " |")
            print("|---|" + "---:|" * len(keys))
        print(f"| {folder} | " + " | ".join(f"{d[k]:.3f}" if isinstance(d[k], float) else str(d[k]) for k in keys)
              + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
