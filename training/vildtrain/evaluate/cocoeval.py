"""COCO box AP: pycocotools' ``COCOeval`` (bbox, area "all", maxDets 100),
re-implemented in NumPy. :mod:`vildtrain.evaluate.evaluate` scores the detector
with it; the Go package ``eval`` follows it operation for operation
(eval/testdata/gen_golden.py writes the golden cases that pin that).

* per image and category, detections sorted by score (stable) and cut to 100;
* for each IoU threshold t in 0.50:0.05:0.95, each detection in score order is
  matched to the unmatched ground truth with the highest IoU >= t (boxes as
  x, y, w, h without the +1 of the old VOC code); unmatched detections are
  false positives; there are no crowd or ignored boxes in these sets;
* per category, the detections of all images are merged and sorted by score
  (stable), precision is made monotonically non-increasing from the right and
  sampled at the 101 recall points 0:0.01:1 (``searchsorted`` left; a recall
  point beyond the last reached recall gets precision 0); AP is the mean;
* categories without ground truth are left out of every mean.

Mask AP (``iou_type="segm"``, pycocotools' ``COCOeval(..., "segm")``) is the same
procedure with the IoU of instance masks instead of boxes: |d & g| / |d | g| in
pixels (no crowd regions, so pycocotools' crowd rule never applies; an empty
union counts as IoU 0). Masks are bool HxW arrays or COCO RLE dicts. Only the
area range "all" is evaluated, so the area of a mask (pycocotools' area-range
criterion for segm) never excludes anything.
"""
from __future__ import annotations

import numpy as np

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)
MAX_DETS = 100


def iou_xywh(dt: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """IoU matrix [len(dt), len(gt)] of x, y, w, h boxes."""
    if len(dt) == 0 or len(gt) == 0:
        return np.zeros((len(dt), len(gt)))
    dx1, dy1 = dt[:, 0:1], dt[:, 1:2]
    dx2, dy2 = dx1 + dt[:, 2:3], dy1 + dt[:, 3:4]
    gx1, gy1 = gt[:, 0], gt[:, 1]
    gx2, gy2 = gx1 + gt[:, 2], gy1 + gt[:, 3]
    iw = np.clip(np.minimum(dx2, gx2) - np.maximum(dx1, gx1), 0, None)
    ih = np.clip(np.minimum(dy2, gy2) - np.maximum(dy1, gy1), 0, None)
    inter = iw * ih
    union = (dt[:, 2:3] * dt[:, 3:4]) + (gt[:, 2] * gt[:, 3]) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def as_mask(m) -> np.ndarray:
    """A bool HxW mask from a bool array or a COCO RLE dict."""
    if isinstance(m, dict):
        from vildtrain.data.coco import rle_decode
        return rle_decode(m)
    return np.asarray(m, dtype=bool)


def iou_masks(dt: list, gt: list) -> np.ndarray:
    """IoU matrix [len(dt), len(gt)] of instance masks (bool HxW arrays or RLE dicts)."""
    if len(dt) == 0 or len(gt) == 0:
        return np.zeros((len(dt), len(gt)))
    d = np.stack([as_mask(m).ravel() for m in dt]).astype(np.float32)
    g = np.stack([as_mask(m).ravel() for m in gt]).astype(np.float32)
    if d.shape[1] != g.shape[1]:
        raise ValueError(f"cocoeval: detection masks of {d.shape[1]} pixels, ground truth of {g.shape[1]}")
    inter = (d @ g.T).astype(np.float64)
    union = d.sum(1, dtype=np.float64)[:, None] + g.sum(1, dtype=np.float64)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def match_image(dt_boxes, dt_scores: np.ndarray, gt_boxes,
                thresholds: np.ndarray = IOU_THRESHOLDS, iou_type: str = "bbox") -> tuple[np.ndarray, np.ndarray]:
    """One image, one category: (scores of the kept detections, tp [T, D] bool).
    ``iou_type`` "bbox": x, y, w, h arrays; "segm": lists of masks."""
    order = np.argsort(-dt_scores, kind="mergesort")[:MAX_DETS]
    dt_scores = dt_scores[order]
    if iou_type == "bbox":
        ious = iou_xywh(dt_boxes[order], gt_boxes)
    elif iou_type == "segm":
        ious = iou_masks([dt_boxes[i] for i in order], gt_boxes)
    else:
        raise ValueError(f"cocoeval: iou_type {iou_type!r}: bbox or segm")
    n_gt = ious.shape[1]
    tp = np.zeros((len(thresholds), len(dt_scores)), bool)
    for ti, t in enumerate(thresholds):
        taken = np.zeros(n_gt, bool)
        for d in range(len(dt_scores)):
            best, m = min(t, 1 - 1e-10), -1
            for g in range(n_gt):
                if taken[g] or ious[d, g] < best:
                    continue
                best, m = ious[d, g], g
            if m >= 0:
                taken[m] = True
                tp[ti, d] = True
    return dt_scores, tp


def average_precision(scores: list[np.ndarray], tps: list[np.ndarray], num_gt: int) -> np.ndarray:
    """Per IoU threshold AP [T] of one category from its per-image matches; NaN when num_gt == 0."""
    if num_gt == 0:
        return np.full(len(IOU_THRESHOLDS), np.nan)
    if not scores or sum(len(s) for s in scores) == 0:
        return np.zeros(len(IOU_THRESHOLDS))
    s = np.concatenate(scores)
    tp = np.concatenate(tps, axis=1)
    order = np.argsort(-s, kind="mergesort")
    tp = tp[:, order]
    tp_sum = np.cumsum(tp, axis=1, dtype=np.float64)
    fp_sum = np.cumsum(~tp, axis=1, dtype=np.float64)
    out = np.zeros(tp.shape[0])
    for t in range(tp.shape[0]):
        rc = tp_sum[t] / num_gt
        pr = tp_sum[t] / (tp_sum[t] + fp_sum[t] + np.spacing(1))
        pr = np.maximum.accumulate(pr[::-1])[::-1]
        inds = np.searchsorted(rc, RECALL_POINTS, side="left")
        q = np.where(inds < len(pr), pr[np.minimum(inds, len(pr) - 1)], 0.0)
        out[t] = q.mean()
    return out


def evaluate_detections(gts: dict[int, list[tuple[int, list[float]]]],
                        dts: dict[int, list[tuple[int, list[float], float]]],
                        category_ids: list[int], iou_type: str = "bbox") -> dict[int, np.ndarray]:
    """COCO bbox (or segm) AP per category.

    gts: image id -> [(category id, [x, y, w, h])]; dts: image id -> [(category id,
    [x, y, w, h], score)]. With ``iou_type="segm"`` the geometry is a mask (bool
    HxW or COCO RLE) instead of the box. Returns category id -> AP per IoU
    threshold [10] (NaN for categories without ground truth)."""
    segm = iou_type == "segm"
    per_cat_scores: dict[int, list[np.ndarray]] = {c: [] for c in category_ids}
    per_cat_tps: dict[int, list[np.ndarray]] = {c: [] for c in category_ids}
    num_gt = {c: 0 for c in category_ids}
    wanted = set(category_ids)
    for img in set(gts) | set(dts):
        g_by: dict[int, list[list[float]]] = {}
        for c, box in gts.get(img, []):
            if c in wanted:
                g_by.setdefault(c, []).append(box)
                num_gt[c] += 1
        d_by: dict[int, tuple[list, list]] = {}
        for c, box, score in dts.get(img, []):
            if c in wanted:
                d_by.setdefault(c, ([], []))
                d_by[c][0].append(box)
                d_by[c][1].append(score)
        for c, (boxes, scores) in d_by.items():
            if segm:
                s, tp = match_image(boxes, np.asarray(scores, np.float64), g_by.get(c, []), iou_type="segm")
            else:
                g = np.asarray(g_by.get(c, []), np.float64).reshape(-1, 4)
                s, tp = match_image(np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(scores, np.float64), g)
            per_cat_scores[c].append(s)
            per_cat_tps[c].append(tp)
    return {c: average_precision(per_cat_scores[c], per_cat_tps[c], num_gt[c]) for c in category_ids}


def summarize(ap: dict[int, np.ndarray], groups: dict[str, list[int]]) -> dict[str, dict[str, float]]:
    """Mean AP@[.5:.95] and AP50 over each group's categories with ground truth."""
    out = {}
    for name, ids in groups.items():
        rows = np.array([ap[c] for c in ids if c in ap and not np.isnan(ap[c][0])]).reshape(-1, len(IOU_THRESHOLDS))
        out[name] = {"AP": float(rows.mean()) if len(rows) else float("nan"),
                     "AP50": float(rows[:, 0].mean()) if len(rows) else float("nan"),
                     "categories": int(len(rows))}
    return out
