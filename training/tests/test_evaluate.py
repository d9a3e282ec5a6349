"""COCO-style AP on hand-made cases whose values are worked out by hand."""
import math

import numpy as np
import pytest

from vildtrain.evaluate.cocoeval import IOU_THRESHOLDS, evaluate_detections, iou_xywh, summarize
from vildtrain.evaluate.evaluate import markdown


def test_iou_xywh():
    dt = np.array([[0, 0, 10, 10], [5, 0, 10, 10], [20, 20, 1, 1]], float)
    gt = np.array([[0, 0, 10, 10]], float)
    np.testing.assert_allclose(iou_xywh(dt, gt)[:, 0], [1.0, 50 / 150, 0.0])
    assert iou_xywh(dt[:0], gt).shape == (0, 1)


def test_hand_made_ap():
    gts = {
        1: [(1, [0, 0, 10, 10]), (1, [20, 20, 10, 10]), (2, [0, 0, 10, 10]), (3, [0, 0, 10, 10])],
        2: [(4, [0, 0, 10, 10])],
    }
    dts = {
        1: [
            # category 1: TP, FP, TP in score order -> precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1
            (1, [0, 0, 10, 10], 0.9), (1, [100, 100, 10, 10], 0.8), (1, [20, 20, 10, 10], 0.7),
            # category 2: IoU 0.77 -> a match for thresholds 0.50..0.75 only
            (2, [0, 0, 10, 7.7], 0.9),
            # category 3: a higher-scored false positive, then the true positive
            (3, [50, 50, 10, 10], 0.9), (3, [0, 0, 10, 10], 0.8),
            # category 5: detections but no ground truth anywhere
            (5, [0, 0, 10, 10], 0.5),
        ],
        # category 4: ground truth, no detection
    }
    ap = evaluate_detections(gts, dts, [1, 2, 3, 4, 5])
    # category 1: recall points 0..0.50 (51 of them) read precision 1, the other 50 read 2/3
    want1 = (51 * 1.0 + 50 * 2 / 3) / 101
    np.testing.assert_allclose(ap[1], np.full(10, want1))
    np.testing.assert_allclose(ap[2], [1.0 if t < 0.77 else 0.0 for t in IOU_THRESHOLDS])
    np.testing.assert_allclose(ap[3], np.full(10, 0.5))
    np.testing.assert_allclose(ap[4], np.zeros(10))
    assert np.isnan(ap[5]).all()

    s = summarize(ap, {"novel": [1, 2], "base": [3, 4, 5], "all": [1, 2, 3, 4, 5]})
    assert math.isclose(s["novel"]["AP50"], (want1 + 1.0) / 2)
    assert math.isclose(s["novel"]["AP"], (want1 + 0.6) / 2)
    assert math.isclose(s["base"]["AP50"], 0.25)  # category 5 has no ground truth: left out
    assert s["base"]["categories"] == 2
    assert math.isclose(s["all"]["AP"], (want1 + 0.6 + 0.5 + 0.0) / 4)


def test_greedy_matching_takes_best_iou_and_duplicates_are_false_positives():
    gts = {1: [(1, [0, 0, 10, 10]), (1, [4, 0, 10, 10])]}
    # the first detection overlaps both ground truths (IoU 0.43 and 1) and takes the
    # better one; a later duplicate of it overlaps only the other ground truth at
    # IoU 0.43 < 0.5 and is a false positive.
    dts = {1: [(1, [4, 0, 10, 10], 0.9), (1, [0, 0, 10, 10], 0.8), (1, [4, 0, 10, 10], 0.7)]}
    ap = evaluate_detections(gts, dts, [1])
    # scores .9 (TP), .8 (TP: IoU 1 with the first ground truth), .7 (duplicate, FP)
    np.testing.assert_allclose(ap[1], np.ones(10))
    dts = {1: [(1, [4, 0, 10, 10], 0.9), (1, [4, 0, 10, 10], 0.8), (1, [0, 0, 10, 10], 0.7)]}
    ap = evaluate_detections(gts, dts, [1])
    # TP, FP (duplicate), TP: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1
    np.testing.assert_allclose(ap[1], np.full(10, (51 + 50 * 2 / 3) / 101))


def test_max_dets_per_image_and_category():
    gts = {1: [(1, [0, 0, 10, 10])]}
    # 100 higher-scored false positives push the true positive past maxDets
    dts = {1: [(1, [50 + i, 50, 5, 5], 1.0 - i * 1e-3) for i in range(100)] + [(1, [0, 0, 10, 10], 0.01)]}
    assert evaluate_detections(gts, dts, [1])[1].max() == 0.0
    dts[1] = dts[1][1:]
    assert evaluate_detections(gts, dts, [1])[1][0] > 0.0


def test_markdown_table_has_every_method_and_set():
    row = {"novel": {"AP": 0.1, "AP50": 0.2, "categories": 3}, "base": {"AP": 0.3, "AP50": 0.4, "categories": 5},
           "all": {"AP": 0.25, "AP50": 0.35, "categories": 8}}
    methods = [("ViLD-text", "text"), ("ViLD-ensemble", "ensemble")]
    sets = [("seen", "seen styles"), ("openmoji", "OpenMoji")]
    md = markdown({s: {m: row for _, m in methods} for s, _ in sets}, sets, methods)
    assert "| ViLD-text | 0.200 | 0.400 | 0.200 | 0.400 |" in md
    assert md.count("| ViLD-ensemble |") == 3


def test_evaluate_command_end_to_end_serial_equals_parallel(tmp_path):
    import json

    from test_detector import tiny_clip, tiny_model
    from vildtrain.evaluate.evaluate import main
    from vildtrain.models.detector import save_checkpoint
    from vildtrain.models.miniclip import miniclip_digest, save_miniclip

    save_checkpoint(str(tmp_path / "det.pt"), tiny_model(), extra={"command": "train", "train_seconds": 1.0})
    save_miniclip(tiny_clip(), str(tmp_path / "clip.pt"), half=False)
    common = ["--checkpoint", str(tmp_path / "det.pt"), "--miniclip", str(tmp_path / "clip.pt"),
              "--data", str(tmp_path / "data"), "--sets", "seen", "--count", "4", "--clip-proposals", "10"]
    assert main([*common, "--procs", "1", "--out", str(tmp_path / "serial")]) == 0
    assert main([*common, "--procs", "2", "--out", str(tmp_path / "parallel")]) == 0
    with open(tmp_path / "data" / "seen" / "annotations.json") as f:
        assert len(json.load(f)["images"]) == 4
    serial = json.loads((tmp_path / "serial" / "results.json").read_text())
    parallel = json.loads((tmp_path / "parallel" / "results.json").read_text())
    assert serial["results"] == parallel["results"]
    assert serial["meta"]["miniclip"] == str(tmp_path / "clip.pt")
    assert serial["meta"]["miniclip_digest"] == miniclip_digest(tiny_clip())
    assert serial["meta"]["labels_per_box"] == 20  # COCO-style per-class output by default
    with pytest.raises(SystemExit):
        main([*common, "--labels-per-box", "0", "--out", str(tmp_path / "bad")])
    row = serial["results"]["seen"]["ensemble"]
    assert row["all"]["categories"] == row["novel"]["categories"] + row["base"]["categories"] > 0
    assert 0.0 <= row["all"]["AP"] <= row["all"]["AP50"] <= 1.0
    md = (tmp_path / "serial" / "results.md").read_text()
    assert "mini-CLIP on crops" in md and "seen styles" in md
