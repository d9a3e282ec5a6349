"""Mask AP (COCO "segm") on hand-made masks whose IoUs are worked out by hand.

pycocotools is not installed here, so its semantics are pinned by hand: mask IoU
is |d & g| / |d | g| over pixels, matching and AP are bbox's."""
import numpy as np

from vildtrain.data.coco import rle_encode
from vildtrain.evaluate.cocoeval import IOU_THRESHOLDS, evaluate_detections, iou_masks, iou_xywh
from vildtrain.evaluate.evaluate import SEGM, mask_markdown


def _rect(y0, y1, x0, x1, shape=(20, 20)):
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


def test_mask_iou_by_hand_on_arrays_and_rle():
    g = _rect(0, 10, 0, 10)                       # 100 px
    d1 = _rect(0, 10, 5, 15)                      # 50 shared, union 150
    d2 = _rect(10, 20, 10, 20)                    # disjoint
    d3 = np.zeros((20, 20), bool)                 # empty
    want = [50 / 150, 0.0, 0.0]
    np.testing.assert_allclose(iou_masks([d1, d2, d3], [g])[:, 0], want)
    np.testing.assert_allclose(iou_masks([rle_encode(d) for d in (d1, d2, d3)], [rle_encode(g)])[:, 0], want)
    assert iou_masks([], [g]).shape == (0, 1)


def test_segm_uses_mask_overlap_not_box_overlap():
    # An L-shaped object and a detection covering the rest of the same box: their
    # boxes are identical (box IoU 1) but the masks share nothing (mask IoU 0).
    gt = _rect(0, 10, 0, 3) | _rect(7, 10, 0, 10)
    dt = _rect(0, 7, 3, 10)
    box = [0.0, 0.0, 10.0, 10.0]
    assert iou_xywh(np.array([box]), np.array([box]))[0, 0] == 1.0
    bbox = evaluate_detections({1: [(1, box)]}, {1: [(1, box, 0.9)]}, [1])
    segm = evaluate_detections({1: [(1, rle_encode(gt))]}, {1: [(1, dt, 0.9)]}, [1], iou_type="segm")
    np.testing.assert_allclose(bbox[1], np.ones(10))
    np.testing.assert_allclose(segm[1], np.zeros(10))


def test_segm_ap_by_hand():
    g1, g2 = _rect(0, 10, 0, 10), _rect(10, 20, 10, 20)
    gts = {1: [(1, rle_encode(g1)), (1, rle_encode(g2))], 2: [(2, rle_encode(g1))]}
    dts = {
        # image 1, category 1: mask IoU 0.8 with g1 (80 / 100) at 0.9, a false positive at 0.8,
        # an exact g2 at 0.7
        1: [(1, _rect(0, 8, 0, 10), 0.9), (1, _rect(0, 5, 12, 20), 0.8), (1, g2, 0.7)],
        # image 2, category 2: IoU 0.6 -> a match at thresholds 0.50..0.60 only
        2: [(2, rle_encode(_rect(0, 6, 0, 10)), 0.5)],
    }
    ap = evaluate_detections(gts, dts, [1, 2], iou_type="segm")
    tp_both = (51 * 1.0 + 50 * 2 / 3) / 101   # TP, FP, TP: precision 1 up to recall 1/2, then 2/3
    only_g2 = 51 * (1 / 3) / 101   # FP, FP, TP: precision 1/3 up to recall 1/2, nothing beyond
    want1 = [tp_both if t <= 0.8 + 1e-9 else only_g2 for t in IOU_THRESHOLDS]
    np.testing.assert_allclose(ap[1], want1)
    np.testing.assert_allclose(ap[2], [1.0 if t <= 0.6 + 1e-9 else 0.0 for t in IOU_THRESHOLDS])


def test_mask_table_shows_segm_next_to_bbox():
    row = {g: {"AP": 0.25, "AP50": 0.5, "categories": 3} for g in ("novel", "base", "all")}
    results = {"seen": {"ensemble": row, "ensemble" + SEGM: row}}
    table = mask_markdown(results, [("seen", "seen styles")], [("ViLD-ensemble", "ensemble")])
    assert "| ViLD-ensemble | segm | 0.250 | 0.500 |" in table
    assert "| ViLD-ensemble | bbox | 0.250 | 0.500 |" in table
