"""The mask head, its RoIAlign, targets, pasting and its second-stage training."""
import argparse
import math

import numpy as np
import pytest
import torch
from torchvision.models.detection.roi_heads import paste_masks_in_image, project_masks_on_boxes
from torchvision.ops import MultiScaleRoIAlign

from test_detector import TINY, tiny_model
from vildtrain.models.mask_head import (MaskConfig, MaskHead, detection_masks, flops_per_roi, load_mask_head,
                                        mask_pooler, paste_masks)
from vildtrain.train import train_mask_head as tmh


def test_head_shapes_and_training_path_matches_the_modules():
    torch.manual_seed(0)
    head = MaskHead(MaskConfig(in_channels=16, width=8, layers=2))
    x = torch.randn(5, 16, 14, 14)
    head.train()
    fast = head(x)
    head.eval()
    ref = head(x)   # torchvision's modules, ConvTranspose2d included
    assert ref.shape == (5, 1, 28, 28)
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-5)


def test_flops_per_roi_by_hand():
    # 4 x (14*14 px * 64 out * 64 in * 9) + 28*28 * 64 * 64 (2x2 stride 2) + 28*28 * 64 (1x1)
    macs = 4 * 14 * 14 * 64 * 64 * 9 + 28 * 28 * 64 * 64 + 28 * 28 * 64
    assert flops_per_roi(MaskConfig()) == 2 * macs == 64_325_632
    # ten detections add at most 25% to a detect request of about 11.9 GFLOP
    assert 10 * flops_per_roi(MaskConfig()) < 0.25 * 11.9e9


def test_mask_pooler_is_torchvisions_multiscale_roialign_at_14():
    torch.manual_seed(0)
    feats = {f"p{i}": torch.randn(1, 16, 128 // 2 ** i, 128 // 2 ** i) for i in range(2, 6)}
    boxes = [torch.tensor([[3.0, 4.0, 20.0, 30.0], [10.0, 0.0, 120.0, 100.0], [0.5, 60.0, 64.0, 127.0]])]
    ours = mask_pooler(TINY)
    ref = MultiScaleRoIAlign(TINY.roi_level_names, 14, TINY.roi_sampling_ratio,
                             canonical_scale=TINY.roi_canonical_scale, canonical_level=TINY.roi_canonical_level)
    ref.scales, ref.map_levels = ours.scales, ours.map_levels
    torch.testing.assert_close(ours(feats, boxes, [(128, 128)]), ref(feats, boxes, [(128, 128)]),
                               rtol=1e-4, atol=1e-5)


def test_targets_are_torchvisions_project_masks_on_boxes():
    masks = torch.zeros(2, 40, 40, dtype=torch.bool)
    masks[0, 5:20, 5:15] = True
    masks[1, 10:39, 20:30] = True
    rois = torch.tensor([[4.0, 4.0, 16.0, 21.0], [18.0, 8.0, 33.0, 39.0], [5.0, 5.0, 15.0, 20.0]])
    idx = torch.tensor([0, 1, 0])
    ours = tmh.mask_targets(masks, rois, idx, 28)
    ref = project_masks_on_boxes(masks.to(torch.uint8), rois, idx, 28)
    torch.testing.assert_close(ours, ref)
    assert ours[2].mean() > 0.8   # a RoI on a full rectangle is mostly mask (its edge samples straddle it)


def test_rois_are_the_objects_boxes_jitter_and_positive_proposals():
    gt = torch.tensor([[10.0, 10.0, 50.0, 50.0], [60.0, 60.0, 100.0, 90.0]])
    proposals = torch.tensor([[12.0, 11.0, 49.0, 52.0],     # IoU > 0.5 with object 0
                              [0.0, 0.0, 5.0, 5.0],         # background
                              [61.0, 59.0, 101.0, 88.0]])   # object 1
    g = torch.Generator().manual_seed(0)
    rois, idx = tmh.mask_rois(gt, proposals, 10, 0.1, g)
    assert rois.shape == (6, 4) and idx.tolist()[:2] == [0, 1]
    torch.testing.assert_close(rois[:2], gt)
    assert sorted(idx.tolist()) == [0, 0, 0, 1, 1, 1]
    assert not any(torch.equal(r, proposals[1]) for r in rois)
    small, sidx = tmh.mask_rois(gt, proposals, 3, 0.1, g)
    assert small.shape == (3, 4) and sidx.tolist()[:2] == [0, 1]
    none, nidx = tmh.mask_rois(gt[:0], proposals, 10, 0.1, g)
    assert none.shape == (0, 4) and nidx.numel() == 0


def test_paste_is_torchvisions_then_threshold():
    probs = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    boxes = torch.tensor([[5.0, 6.0, 30.0, 40.0], [0.0, 0.0, 63.0, 20.0]])
    got = paste_masks(probs, boxes, (48, 64), 0.5)
    ref = paste_masks_in_image(probs, boxes, (48, 64), padding=1)[:, 0] >= 0.5
    assert torch.equal(got, ref)
    assert not got[0, :, 33:].any() and not got[0, 42:].any()   # nothing beyond the box and its padding
    assert paste_masks(probs[:0], boxes[:0], (48, 64), 0.5).shape == (0, 48, 64)


def test_detection_masks_on_a_resized_image():
    from PIL import Image
    from vildtrain.models.infer import Detection, regions
    model = tiny_model()
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 200, 3), dtype=np.uint8))
    r = regions(model, img)
    head = MaskHead(MaskConfig(in_channels=TINY.fpn_channels, width=8, layers=1)).eval()
    with torch.no_grad():   # a head whose masks are all foreground
        head.predictor.mask_fcn_logits.bias.fill_(10.0)
    dets = [Detection("a", 0.9, [10.0, 20.0, 60.0, 70.0]), Detection("b", 0.5, [100.0, 0.0, 199.0, 95.0])]
    masks = detection_masks(head, mask_pooler(model.cfg), r, dets)
    assert len(masks) == 2 and masks[0].shape == (96, 200) and masks[0].dtype == bool
    ys, xs = np.nonzero(masks[0])
    # inside the box's pixels 10..60 x 20..70; its outermost pixels read the zero padding
    assert xs.min() >= 10 and ys.min() >= 20 and xs.max() <= 60 and ys.max() <= 70
    assert masks[0][21:70, 11:60].all()
    assert detection_masks(head, mask_pooler(model.cfg), r, []) == []


def _synthetic_scenes(size=128):
    def scene(i):
        rng = np.random.default_rng([5, i])
        img = rng.integers(0, 255, (3, size, size), dtype=np.uint8)
        boxes, masks = [], []
        for _ in range(int(rng.integers(1, 4))):
            x, y = (int(v) for v in rng.integers(0, size - 40, 2))
            w, h = (int(v) for v in rng.integers(10, 40, 2))
            m = np.zeros((size, size), bool)
            m[y:y + h, x:x + w] = True
            img[:, y:y + h, x:x + w] = 250
            boxes.append([x, y, x + w, y + h])
            masks.append(m)
        return (torch.from_numpy(img), torch.tensor(boxes, dtype=torch.float32), torch.from_numpy(np.stack(masks)))
    return scene


def _args(out, **kw):
    args = tmh.build_parser().parse_args(["--out", str(out), "--time-budget", "0", "--steps", "3", "--batch", "2",
                                          "--rois", "6", "--size", "128", "--width", "8", "--layers", "1",
                                          "--log-every", "1", "--threads", "1"])
    for k, v in kw.items():
        setattr(args, k, v)
    return args


def test_training_resumes_exactly_and_writes_the_head(tmp_path, capsys):
    model = tiny_model()
    whole = tmh.train(_args(tmp_path / "a"), model=model, scenes=_synthetic_scenes())
    assert whole["done"] and whole["images_seen"] == 6 and whole["rois_seen"] > 0
    assert math.isfinite(whole["final_loss"])
    part = tmh.train(_args(tmp_path / "b", max_steps_now=2), model=model, scenes=_synthetic_scenes())
    assert not part["done"] and part["step"] == 2
    assert not (tmp_path / "b" / "mask_head.pt").exists()
    tmh.train(_args(tmp_path / "b", resume=True), model=model, scenes=_synthetic_scenes())
    a, ea = load_mask_head(str(tmp_path / "a" / "mask_head.pt"))
    b, eb = load_mask_head(str(tmp_path / "b" / "mask_head.pt"))
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    assert ea["steps"] == eb["steps"] == 3 and ea["rois_seen"] == eb["rois_seen"]
    err = capsys.readouterr().err
    assert "resumed at step 2/3" in err and "img/s" in err and "ETA" in err
    # the frozen detector did not move
    for (k, v), w in zip(model.state_dict().items(), tiny_model().state_dict().values()):
        assert torch.equal(v, w), k


def test_training_stops_at_the_time_budget(tmp_path, capsys):
    # 0.05 min = 3 s: far fewer than 10,000 steps fit; the run ends there and is done
    summary = tmh.train(_args(tmp_path, steps=10_000, time_budget=0.05, calibrate=2, refit_every=2),
                        model=tiny_model(), scenes=_synthetic_scenes())
    assert summary["done"] and 2 < summary["step"] < 10_000 and summary["total"] == summary["step"]
    assert summary["elapsed_s"] < 20
    assert (tmp_path / "mask_head.pt").exists()
    assert "would overrun the 0.05 min budget" in capsys.readouterr().err


def test_training_refuses_bad_settings(tmp_path):
    with pytest.raises(ValueError, match="time-budget"):
        tmh.train(_args(tmp_path, time_budget=31.0), model=tiny_model(), scenes=_synthetic_scenes())
    with pytest.raises(ValueError, match="held-out"):
        from vildtrain.data.scenes import HELDOUT_SEEDS
        tmh.MaskScenes(HELDOUT_SEEDS["seen"])


def test_scenes_give_only_labelled_base_objects_masks(cache_dir):
    from vildtrain.data.art import ArtLibrary
    from vildtrain.data.categories import load_categories
    from vildtrain.data.scenes import TRAIN_STYLES, generate_scene, scene_rng
    cats = load_categories()
    split = {c.id: c.split for c in cats}
    scenes = tmh.MaskScenes(3, size=128, categories=cats)
    art = ArtLibrary(styles=TRAIN_STYLES, categories=cats)
    novel_seen = 0
    for i in range(4):
        img, boxes, masks = scenes(i)
        _, objs = generate_scene(scene_rng(3, i), art, cats, TRAIN_STYLES, size=128, label_novel=False)
        labelled = [o for o in objs if o.labelled]
        novel_seen += sum(split[o.category_id] == "novel" for o in objs)
        assert all(split[o.category_id] == "base" for o in labelled)
        assert img.shape == (3, 128, 128) and masks.shape == (len(labelled), 128, 128)
        for o, box, m in zip(labelled, boxes, masks):
            assert np.array_equal(m.numpy(), o.mask)
            assert box.tolist() == [o.bbox[0], o.bbox[1], o.bbox[0] + o.bbox[2], o.bbox[1] + o.bbox[3]]
    assert novel_seen > 0   # novel objects were in the pictures, and their masks were left out
