"""The ViLD detector: inference semantics against torchvision and docs/bundle.md,
the losses, and a tiny end-to-end training run (resumable, finite losses)."""
import dataclasses
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vildtrain.models import infer, losses
from vildtrain.models.detector import DetectorConfig, build_detector, init_body_from_miniclip, load_checkpoint
from vildtrain.models.miniclip import miniclip_digest

TINY = DetectorConfig(embed_dim=32, stem_channels=8, widths=(16, 16, 16, 16), blocks=(1, 1, 1, 1), fpn_channels=16,
                      head_hidden=32, rpn_batch_per_image=64, box_batch_per_image=64,
                      rpn_pre_nms_top_n_train=200, rpn_post_nms_top_n_train=60,
                      rpn_pre_nms_top_n_test=200, rpn_post_nms_top_n_test=50)


def tiny_clip():
    """A small, randomly initialised mini-CLIP: the interface of the real one at a
    fraction of the cost (the smoke tests check mechanics, not accuracy)."""
    from vildtrain.models.miniclip import MiniClip, MiniClipConfig
    torch.manual_seed(1)
    cfg = MiniClipConfig(image_size=32, embed_dim=32, widths=(8, 16, 16, 16), vocab_size=4096, context_length=32,
                         text_width=32, text_layers=1, text_heads=2)
    return MiniClip(cfg).eval()


def tiny_model(seed: int = 0):
    torch.manual_seed(seed)
    m = build_detector(TINY)
    # Spread the RPN logits so top-k and NMS orders are far from ties.
    for p in m.rpn.head.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return m.eval()


def scene_image(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    arr[h // 4: h // 2, w // 4: w // 2] = [250, 20, 20]
    return Image.fromarray(arr)


# ---------------------------------------------------------------- backbone

@torch.no_grad()
def test_body_starts_from_the_miniclip_image_tower():
    clip = tiny_clip()
    body = build_detector(TINY).backbone.body.eval()
    assert init_body_from_miniclip(body, clip.image) > 0
    x = torch.rand(2, 3, 64, 64)
    stem = body.stem(x)
    assert torch.equal(stem, clip.image.stem(x))
    c2 = body.stages[0](stem)   # TINY has one block per stage: mini-CLIP blocks 0, 2, 4 start the stages
    assert torch.equal(c2, clip.image.blocks[0](stem))
    assert torch.equal(body.stages[1](c2), clip.image.blocks[2](c2))


def test_body_init_refuses_a_mismatched_tower():
    import dataclasses
    body = build_detector(dataclasses.replace(TINY, stem_channels=12)).backbone.body
    with pytest.raises(ValueError, match="does not match"):
        init_body_from_miniclip(body, tiny_clip().image)


# ---------------------------------------------------------------- preprocess

@pytest.mark.parametrize("size,resized,padded", [
    ((384, 256), (256, 384), (256, 384)),     # (w, h) -> (h, w): no resize
    ((600, 300), (192, 384), (192, 384)),     # downscale, no padding needed
    ((700, 280), (154, 384), (192, 384)),     # downscale, pad rows to 64
    ((150, 61), (156, 384), (192, 384)),      # upscale, 61*384/150 = 156.16
    ((5, 1000), (384, 2), (384, 64)),         # the short side keeps >= 1 px
])
def test_preprocess_sizes(size, resized, padded):
    img = scene_image(*size)
    p = infer.preprocess(img, DetectorConfig())
    assert p.resized == resized
    assert tuple(p.image.shape[2:]) == padded
    assert p.scale == (resized[0] / size[1], resized[1] / size[0])
    # padding is zero after normalisation
    assert float(p.image[..., resized[0]:, :].abs().sum()) == 0.0
    assert float(p.image[..., :, resized[1]:].abs().sum()) == 0.0


def test_preprocess_exact_when_no_resize():
    img = scene_image(384, 256)
    cfg = DetectorConfig()
    p = infer.preprocess(img, cfg)
    x = torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255.0
    want = (x - torch.tensor(cfg.mean).view(3, 1, 1)) / torch.tensor(cfg.std).view(3, 1, 1)
    assert torch.equal(p.image[0], want)


def test_resized_size_rounds_half_up():
    assert infer.resized_size(100, 200, 384) == (192, 384)
    assert infer.resized_size(1, 768, 384) == (1, 384)       # 0.5 rounds up to 1
    assert infer.resized_size(3, 768, 384) == (2, 384)       # 1.5 rounds up to 2


# ---------------------------------------------------------------- regions

def test_regions_match_torchvision_rpn_and_pooler():
    m = tiny_model()
    img = scene_image(300, 200)
    r = infer.regions(m, img)
    feats = m.backbone(r.prepared.image)
    with torch.no_grad():
        boxes, scores = m.rpn.filter_proposals(*_rpn_inputs(m, r, feats))
    assert r.proposals.shape[0] == boxes[0].shape[0] > 0
    assert torch.equal(r.proposals, boxes[0])
    torch.testing.assert_close(torch.sigmoid(r.proposal_logits), scores[0], rtol=0, atol=0)
    assert r.proposals.shape[0] <= TINY.rpn_post_nms_top_n_test
    # anchors: torchvision's AnchorGenerator, level by level, h*w*A each
    for name, stride in zip(TINY.level_names, TINY.strides):
        h, w = r.outputs[f"rpn_logits_{name}"].shape[2:]
        a = r.anchors[name]
        assert a.shape == (h * w * 3, 4)
        # location-major, anchor-minor: anchor 3 is anchor 0 shifted by one stride in x
        torch.testing.assert_close(a[3] - a[0], torch.tensor([stride, 0, stride, 0], dtype=torch.float32))
    # pooled features: MultiScaleRoIAlign with torchvision's level mapping
    assert r.rois.shape == (r.proposals.shape[0], TINY.fpn_channels, 7, 7)
    # refined boxes are inside the original image
    assert float(r.boxes[:, 2].max()) <= 300 and float(r.boxes[:, 3].max()) <= 200
    assert torch.allclose(r.text_embeddings.norm(dim=1), torch.ones(len(r.boxes)), atol=1e-5)


def _rpn_inputs(m, r, feats):
    from torchvision.models.detection.rpn import concat_box_prediction_layers
    feats = list(feats.values())
    logits, deltas = m.rpn.head(feats)
    il = m.image_list(r.prepared.image, [r.prepared.resized])
    anchors = m.rpn.anchor_generator(il, feats)
    counts = [o[0].numel() for o in logits]
    obj, pred = concat_box_prediction_layers(logits, deltas)
    props = m.rpn.box_coder.decode(pred, anchors).view(1, -1, 4)
    return props, obj, [r.prepared.resized], counts


# ---------------------------------------------------------------- scoring

def _unit(*rows):
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)


def test_class_probabilities_follow_the_contract():
    t = _unit([1, 0, 0], [0, 1, 0], [0, 0, 1])
    bg = _unit([1, 1, 1])[0]
    text = _unit([1, 0.2, 0], [0.1, 0.1, 1])
    image = _unit([0.3, 1, 0], [0, 0.5, 1])
    r = infer.Regions(None, {}, {}, torch.zeros(2, 4), torch.zeros(2), torch.zeros(2, 1, 1, 1), text, image,
                      torch.zeros(2, 4), torch.zeros(2, 4))
    vocab = infer.Vocabulary(["a", "b", "c"], t, [True, False, True])
    tau, lam = 0.05, 2 / 3
    p_text = torch.softmax(torch.cat([text @ bg.view(-1, 1), text @ t.t()], 1) / tau, 1)[:, 1:]
    p_img = torch.softmax(image @ t.t() / tau, 1)
    torch.testing.assert_close(infer.class_probabilities(r, vocab, bg, "text", tau, lam), p_text)
    torch.testing.assert_close(infer.class_probabilities(r, vocab, bg, "image", tau, lam), p_img)
    ens = infer.class_probabilities(r, vocab, bg, "ensemble", tau, lam)
    for k, base in enumerate(vocab.base):
        w = lam if base else 1 - lam
        torch.testing.assert_close(ens[:, k], p_text[:, k] ** w * p_img[:, k] ** (1 - w))
    # the text head keeps probability mass for the background; the image head does not
    assert (p_text.sum(1) < 1).all()


def test_shared_labels_sum_and_postprocess():
    vocab = infer.Vocabulary(["dog", "cat", "dog"], torch.zeros(3, 2), [True, True, True])
    probs = torch.tensor([[0.3, 0.4, 0.2], [0.05, 0.01, 0.0], [0.1, 0.6, 0.1], [0.5, 0.1, 0.3]])
    merged, labels = infer.label_probabilities(probs, vocab)
    assert labels == ["dog", "cat"]
    torch.testing.assert_close(merged, torch.tensor([[0.5, 0.4], [0.05, 0.01], [0.2, 0.6], [0.8, 0.1]]))
    boxes = torch.tensor([[0, 0, 10, 10], [50, 50, 60, 60], [1, 1, 10, 10], [1, 0, 10, 10]], dtype=torch.float32)
    dets = infer.postprocess(boxes, merged, labels, score_threshold=0.1, nms_iou=0.5, max_detections=10,
                             runners_up=1)
    # region 1 is below the threshold; regions 0 and 3 are both "dog" and overlap: 3 wins;
    # region 2 is "cat" and survives beside them
    assert [(d.label, round(d.score, 3)) for d in dets] == [("dog", 0.8), ("cat", 0.6)]
    assert dets[0].box == [1.0, 0.0, 10.0, 10.0]
    assert dets[0].runners_up == [("cat", pytest.approx(0.1))]
    assert len(infer.postprocess(boxes, merged, labels, 0.1, 0.5, max_detections=1)) == 1


def test_postprocess_reports_several_labels_per_box():
    labels = ["dog", "cat", "owl"]
    probs = torch.tensor([[0.6, 0.3, 0.1], [0.7, 0.2, 0.1]])
    boxes = torch.tensor([[0, 0, 10, 10], [50, 50, 60, 60]], dtype=torch.float32)
    one = infer.postprocess(boxes, probs, labels, 0.25, 0.5, 10)
    assert [(d.label, round(d.score, 3)) for d in one] == [("dog", 0.7), ("dog", 0.6)]
    two = infer.postprocess(boxes, probs, labels, 0.25, 0.5, 10, runners_up=2, labels_per_box=2)
    # region 0's second label passes the threshold and becomes a detection of its own;
    # region 1's (cat 0.2) does not
    assert [(d.label, round(d.score, 3), d.box[0]) for d in two] == [("dog", 0.7, 50.0), ("dog", 0.6, 0.0),
                                                                     ("cat", 0.3, 0.0)]
    # each detection's runners-up are the region's other labels
    assert [lb for lb, _ in two[1].runners_up] == ["cat", "owl"]
    assert [lb for lb, _ in two[2].runners_up] == ["dog", "owl"]
    # more labels than classes is every class; max_detections still caps the total
    assert len(infer.postprocess(boxes, probs, labels, 0.0, 0.5, 10, labels_per_box=9)) == 6
    assert len(infer.postprocess(boxes, probs, labels, 0.0, 0.5, 4, labels_per_box=9)) == 4
    with pytest.raises(ValueError, match="labels_per_box"):
        infer.postprocess(boxes, probs, labels, 0.0, 0.5, 10, labels_per_box=0)


def test_detect_all_heads_on_a_tiny_model():
    m = tiny_model()
    clip = tiny_clip()
    r = infer.regions(m, scene_image(200, 160))
    vocab = infer.Vocabulary(["dog", "cat", "kettle"], clip.text_embeddings(["dog", "cat", "kettle"]),
                             [True, True, False])
    for head in infer.HEADS:
        dets = infer.detect(m, r, vocab, head, clip=clip, score_threshold=0.0)
        assert dets, head
        assert all(d.label in {"dog", "cat", "kettle"} and 0 <= d.score <= 1 for d in dets)
        assert all(0 <= d.box[0] <= d.box[2] <= 200 and 0 <= d.box[1] <= d.box[3] <= 160 for d in dets)
        assert [d.score for d in dets] == sorted((d.score for d in dets), reverse=True)


# ---------------------------------------------------------------- losses

def test_losses():
    cls = _unit([1, 0], [0, 1])
    bg = _unit([-1, -1])[0]
    region = _unit([1, 0.01], [-1, -1.01])
    # region 0 is class 1, region 1 is background: tiny loss; swapped labels: large
    good = losses.vild_text_loss(region, torch.tensor([1, 0]), cls, bg, 0.01)
    bad = losses.vild_text_loss(region, torch.tensor([0, 2]), cls, bg, 0.01)
    assert float(good) < 1e-3 < 10 < float(bad)
    d = losses.distillation_loss(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[0.0, 1.0], [0.0, 1.0]]))
    assert math.isclose(float(d), 1.0)  # mean over regions of the L1 norm: (2 + 0) / 2
    deltas = torch.tensor([[0.0, 0, 0, 0], [1.0, 0, 0, 0]])
    targets = torch.tensor([[1.0, 0, 0, 0], [1.0, 0, 0, 0]])
    # only the positive region (label > 0) counts, normalised by both regions
    assert math.isclose(float(losses.box_regression_loss(deltas, targets, torch.tensor([1, 0]))),
                        (1 - 0.5 / 9) / 2, rel_tol=1e-6)


def test_crops_are_square_and_scaled():
    boxes = torch.tensor([[10.0, 20.0, 30.0, 60.0]])
    b1 = losses.crop_boxes(boxes, 1.0)
    torch.testing.assert_close(b1, torch.tensor([[0.0, 20.0, 40.0, 60.0]]))
    b15 = losses.crop_boxes(boxes, 1.5)
    torch.testing.assert_close(b15, torch.tensor([[-10.0, 10.0, 50.0, 70.0]]))
    # a crop of a constant patch reads that constant
    img = torch.zeros(1, 3, 100, 100)
    img[:, :, 20:60, 0:40] = 0.5
    crop = losses.crop_images(img, [boxes], 8, 1.0)
    assert crop.shape == (1, 3, 8, 8)
    torch.testing.assert_close(crop, torch.full_like(crop, 0.5))


def test_teacher_embeddings_average_the_two_crops():
    clip = tiny_clip()
    img = torch.rand(1, 3, 96, 96)
    boxes = [torch.tensor([[10.0, 10.0, 50.0, 40.0], [30.0, 30.0, 90.0, 90.0]])]
    got = losses.crop_embeddings(clip, img, boxes)
    e1 = clip.encode_image(losses.crop_images(img, boxes, 32, 1.0))
    e2 = clip.encode_image(losses.crop_images(img, boxes, 32, 1.5))
    torch.testing.assert_close(got, F.normalize(e1 + e2, dim=-1))


# ---------------------------------------------------------------- training

def _args(out, *extra):
    from vildtrain.train.train_detector import build_parser
    return build_parser().parse_args(["--out", str(out), "--batch", "2", "--size", "128", "--procs", "1",
                                      "--warmup", "2", "--log-every", "1", "--lr", "1e-3", "--time-budget", "0",
                                      *extra])


def test_training_step_learns_a_fixed_batch():
    from vildtrain.data.categories import load_categories
    from vildtrain.train.detector_data import SceneStream, base_categories, collate
    from vildtrain.train.detector_step import LossWeights, make_sampler, train_step
    torch.manual_seed(0)
    clip = tiny_clip()
    cats = load_categories()[:80]
    base, index = base_categories(cats)
    images, targets = collate([SceneStream(3, 10, index, size=128, categories=cats)[i] for i in range(2)])
    assert all(int(t["labels"].min()) >= 1 for t in targets if len(t["labels"]))
    base_text = clip.text_embeddings([c.name for c in base])
    model = build_detector(TINY).train()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    sampler, g = make_sampler(TINY), torch.Generator().manual_seed(0)
    seen = []
    for _ in range(12):
        loss, parts = train_step(model, clip, sampler, images, targets, base_text, LossWeights(), 8, 4, g)
        assert all(math.isfinite(v) for v in parts.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        seen.append(float(loss))
    assert np.mean(seen[-3:]) < 0.7 * np.mean(seen[:3]), seen


def test_bf16_backbone_step_follows_the_float32_step():
    """--precision bf16: the same loss and backbone gradients as float32 within
    bfloat16's precision, and every weight and gradient stays float32."""
    from vildtrain.data.categories import load_categories
    from vildtrain.train.detector_data import SceneStream, base_categories, collate
    from vildtrain.train.detector_step import LossWeights, make_sampler, train_step
    torch.manual_seed(0)
    clip = tiny_clip()
    cats = load_categories()[:80]
    base, index = base_categories(cats)
    images, targets = collate([SceneStream(5, 10, index, size=128, categories=cats)[i] for i in range(2)])
    base_text = clip.text_embeddings([c.name for c in base])
    model = build_detector(TINY).train()
    sampler = make_sampler(TINY)
    body = [p for n, p in model.named_parameters() if n.startswith("backbone.")]
    out = {}
    for bf16 in (False, True):
        torch.manual_seed(1)
        model.zero_grad()
        loss, parts = train_step(model, clip, sampler, images, targets, base_text, LossWeights(), 8, 4,
                                 torch.Generator().manual_seed(0), bf16_backbone=bf16)
        loss.backward()
        assert loss.dtype == torch.float32
        assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in body)
        out[bf16] = (float(loss), torch.cat([p.grad.flatten() for p in body]))
    (l32, g32), (l16, g16) = out[False], out[True]
    assert abs(l16 - l32) <= 0.02 * abs(l32), (l16, l32)
    assert float(g16.norm()) > 0 and not torch.equal(g16, g32)  # bfloat16 did compute
    assert float(torch.nn.functional.cosine_similarity(g16, g32, dim=0)) > 0.95


def test_training_scene_density_is_a_setting():
    from vildtrain.data.categories import load_categories
    from vildtrain.train.detector_data import SceneStream, base_categories
    cats = load_categories()[:80]
    _, index = base_categories(cats)
    sparse = SceneStream(3, 10, index, size=128, categories=cats, objects=(1, 1))
    dense = SceneStream(3, 10, index, size=128, categories=cats, objects=(12, 12))
    n_sparse = sum(len(sparse[i][2]) for i in range(4))
    n_dense = sum(len(dense[i][2]) for i in range(4))
    assert n_sparse <= 4 < n_dense, (n_sparse, n_dense)
    with pytest.raises(ValueError, match="objects per scene"):
        SceneStream(3, 10, index, categories=cats, objects=(5, 2))


def test_grid_scenes_are_an_even_share_of_the_stream():
    from vildtrain.data.categories import load_categories
    from vildtrain.train.detector_data import SceneStream, base_categories
    cats = load_categories()[:80]
    _, index = base_categories(cats)
    for f in (0.0, 0.25, 0.5, 1.0):
        s = SceneStream(3, 10, index, size=128, categories=cats, grid_fraction=f)
        flags = [s.is_grid(i) for i in range(400)]
        assert sum(flags) == round(400 * f)
        # evenly spread: every 4 consecutive items hold the same number of grid scenes
        assert len({sum(flags[k:k + 4]) for k in range(0, 400, 4)}) == 1
    half = SceneStream(3, 10, index, size=128, categories=cats, objects=(1, 1), grid_fraction=0.5)
    labelled = [len(half[i][2]) for i in range(8)]
    assert max(labelled[0::2]) <= 1 and sum(labelled[1::2]) > 8, labelled
    # grid scenes hold base categories only, unless asked for novel ones too
    assert {c.id for c in half.grid_categories} == set(index)
    both = SceneStream(3, 10, index, size=128, categories=cats, grid_fraction=0.5, grid_novel=True)
    assert len(both.grid_categories) == len(cats) > len(index)
    with pytest.raises(ValueError, match="grid scene fraction"):
        SceneStream(3, 10, index, categories=cats, grid_fraction=1.5)


def test_grid_sides_set_the_cells_of_grid_scenes():
    from vildtrain.data.categories import load_categories
    from vildtrain.data.scenes import GRID_SIDES
    from vildtrain.train.detector_data import SceneStream, base_categories
    from vildtrain.train.train_detector import build_parser
    cats = load_categories()[:80]
    _, index = base_categories(cats)
    assert build_parser().parse_args([]).grid_sides == GRID_SIDES
    assert build_parser().parse_args(["--grid-sides", "6,8"]).grid_sides == (6, 8)
    for bad in ("", "4,x", "0,4"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["--grid-sides", bad])
    ones = SceneStream(3, 10, index, size=128, categories=cats, grid_fraction=1.0, grid_sides=(1,))
    twos = SceneStream(3, 10, index, size=128, categories=cats, grid_fraction=1.0, grid_sides=(2,))
    # one cell holds at most one labelled object, a 2 x 2 grid at most four, and they fill it
    assert max(len(ones[i][2]) for i in range(6)) <= 1
    counts = [len(twos[i][2]) for i in range(6)]
    assert max(counts) <= 4 and sum(counts) > 6, counts
    with pytest.raises(ValueError, match="grid sides"):
        SceneStream(3, 10, index, categories=cats, grid_sides=())


def test_train_smoke_resume_equals_uninterrupted(tmp_path):
    from vildtrain.data.categories import load_categories
    from vildtrain.train.detector_run import train
    clip = tiny_clip()
    cats = load_categories()[:80]  # a smaller vocabulary keeps the text embeddings quick
    assert {c.split for c in cats} == {"base", "novel"}
    a = train(_args(tmp_path / "a", "--steps", "3", "--freeze", "2"), clip=clip, categories=cats, cfg=TINY,
              argv=["--steps", "3", "--freeze", "2"])
    assert a["done"] and a["step"] == 3
    assert all(math.isfinite(v) for v in a["final"].values())
    model_a, extra = load_checkpoint(str(tmp_path / "a" / "detector.pt"))
    assert extra["seed"] == 0 and extra["steps"] == 3 and "train_detector" in extra["command"]
    from vildtrain.train.train_detector import build_parser
    assert extra["distill_weight"] == build_parser().parse_args([]).distill_weight == 0.25
    # the run names the mini-CLIP it distilled from (in memory here: a digest, no path)
    assert extra["teacher"] == {"digest": miniclip_digest(clip)}
    # the body started from the mini-CLIP: with --freeze 2 (the default is 0: the stem alone) the stem
    # and first two stages still hold its
    # weights and BatchNorm statistics; the third stage (trained) has moved away from them
    assert extra["settings"]["init"] == "miniclip" and extra["settings"]["freeze"] == 2
    body, tower = model_a.backbone.body, clip.image
    for a_, b_ in zip(body.stem.state_dict().values(), tower.stem.state_dict().values()):
        assert torch.equal(a_, b_)
    for stage in (0, 1):   # TINY has one block per stage; mini-CLIP stage i starts at block 2i
        for a_, b_ in zip(body.stages[stage][0].state_dict().values(), tower.blocks[2 * stage].state_dict().values()):
            assert torch.equal(a_, b_)
    assert not torch.equal(body.stages[2][0].conv1.weight, tower.blocks[4].conv1.weight)

    first = train(_args(tmp_path / "b", "--steps", "3", "--freeze", "2", "--max-steps-now", "1"), clip=clip, categories=cats,
                  cfg=TINY)
    assert not first["done"] and first["step"] == 1
    assert not os.path.exists(tmp_path / "b" / "detector.pt")
    # a run in progress can be loaded for evaluation from its training checkpoint
    partial, where = load_checkpoint(str(tmp_path / "b" / "checkpoint.pt"))
    assert where == {"step": 1, "total": 3, "teacher": extra["teacher"]} and not partial.training
    # resuming against another mini-CLIP would mix two teachers in one run
    other = tiny_clip()
    with torch.no_grad():
        other.logit_scale.add_(1.0)
    with pytest.raises(ValueError, match="resume with the same --miniclip"):
        train(_args(tmp_path / "b", "--steps", "3", "--freeze", "2", "--resume"), clip=other, categories=cats, cfg=TINY)
    second = train(_args(tmp_path / "b", "--steps", "3", "--freeze", "2", "--resume"), clip=clip, categories=cats, cfg=TINY)
    assert second["done"] and second["step"] == 3
    model_b, _ = load_checkpoint(str(tmp_path / "b" / "detector.pt"))
    for (name, pa), pb in zip(model_a.state_dict().items(), model_b.state_dict().values()):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6, msg=name)


def test_train_data_parallel_processes(tmp_path):
    from vildtrain.data.categories import load_categories
    from vildtrain.train.detector_run import train
    args = _args(tmp_path, "--steps", "2")
    args.procs = 2
    summary = train(args, clip=tiny_clip(), categories=load_categories()[:80], cfg=TINY)
    assert summary["done"] and summary["step"] == 2
    assert all(math.isfinite(v) for v in summary["final"].values())
    model, extra = load_checkpoint(str(tmp_path / "detector.pt"))
    assert extra["images_seen"] == 4 and extra["settings"]["procs"] == 2


def test_time_budget_ends_the_run_with_a_final_model(tmp_path):
    from vildtrain.data.categories import load_categories
    from vildtrain.train.detector_run import train
    args = _args(tmp_path, "--steps", "50", "--box-positive-fraction", "0.5", "--roi-canonical-scale", "48",
                 "--head-hidden", "48", "--image-head-hidden", "24", "--box-rois", "40",
                 "--rpn-train-proposals", "120")
    args.time_budget = 1e-4  # minutes: spent during setup, so the first step is the last
    summary = train(args, clip=tiny_clip(), categories=load_categories()[:80], cfg=TINY)
    assert summary["done"] and summary["step"] == summary["total"] == 1
    model, extra = load_checkpoint(str(tmp_path / "detector.pt"))
    assert extra["steps"] == 1
    # the sampling setting is part of the saved model's configuration
    assert model.cfg.box_positive_fraction == 0.5 and TINY.box_positive_fraction == 0.75
    assert model.cfg.roi_canonical_scale == 48 and TINY.roi_canonical_scale == 224
    assert model.cfg.box_batch_per_image == 40 and TINY.box_batch_per_image == 64
    assert model.cfg.rpn_post_nms_top_n_train == 120 != TINY.rpn_post_nms_top_n_train
    assert model.rpn._post_nms_top_n["training"] == 120
    # so are the box head's widths, and the towers have them
    assert (model.cfg.head_hidden, model.cfg.image_head_hidden) == (48, 24) and TINY.head_hidden == 32
    assert model.box_head.text_proj.in_features == 48 and model.box_head.box_pred.in_features == 48
    assert model.box_head.image_proj.in_features == 24


def test_head_widths_default_to_the_config_and_refuse_zero(tmp_path):
    from vildtrain.data.categories import load_categories
    from vildtrain.train.detector_run import train
    args = _args(tmp_path, "--steps", "1")
    assert args.head_hidden is None and args.image_head_hidden is None   # the config's widths stay
    for flag in ("--head-hidden", "--image-head-hidden"):
        with pytest.raises(ValueError, match=flag):
            train(_args(tmp_path, "--steps", "1", flag, "0"), clip=tiny_clip(),
                  categories=load_categories()[:80], cfg=TINY)


def test_roi_canonical_scale_picks_the_pooling_level(tmp_path):
    from vildtrain.data.categories import load_categories
    from vildtrain.train.detector_run import train
    # level floor(4 + log2(side / scale)), clamped to p2..p5
    for scale, side, level in ((224, 48, "p2"), (224, 120, "p3"), (48, 12, "p2"), (48, 24, "p3"), (48, 47, "p3"),
                               (48, 48, "p4"), (48, 95, "p4"), (48, 96, "p5"), (48, 300, "p5")):
        model = build_detector(dataclasses.replace(TINY, roi_canonical_scale=scale))
        got = model.roi_pool.map_levels([torch.tensor([[10.0, 10.0, 10.0 + side, 10.0 + side]])])
        assert TINY.roi_level_names[int(got)] == level, (scale, side)
    with pytest.raises(ValueError, match="roi-canonical-scale"):
        train(_args(tmp_path, "--steps", "1", "--roi-canonical-scale", "0"), clip=tiny_clip(),
              categories=load_categories()[:80], cfg=TINY)


def test_box_positive_fraction_sets_the_labelled_share_of_sampled_rois(tmp_path):
    from vildtrain.data.categories import load_categories
    from vildtrain.train.detector_data import SceneStream, base_categories
    from vildtrain.train.detector_run import train
    from vildtrain.train.detector_step import make_sampler
    cats = load_categories()[:80]
    _, index = base_categories(cats)
    _, boxes, labels = SceneStream(3, 10, index, size=128, categories=cats, grid_fraction=1.0, grid_sides=(6,))[0]
    assert len(labels) >= 20
    g = torch.Generator().manual_seed(0)
    # every labelled box four times, jittered by at most 1 px (all IoU >= 0.5), plus background boxes
    near = boxes.repeat(4, 1) + torch.rand(4 * len(boxes), 4, generator=g) - 0.5
    far = torch.tensor([[0.0, 0.0, 2.0, 2.0]]).repeat(200, 1) + 200.0
    targets = [{"boxes": boxes, "labels": labels}]
    batch = TINY.box_batch_per_image
    assert 4 * len(boxes) >= batch
    counts = {}
    for f in (0.25, 0.5):
        torch.manual_seed(0)
        _, _, got, _ = make_sampler(dataclasses.replace(TINY, box_positive_fraction=f)).select_training_samples(
            [torch.cat([near, far])], targets)
        counts[f] = int((got[0] > 0).sum())
        assert got[0].numel() == batch and counts[f] == int(batch * f)
    assert counts[0.5] == 2 * counts[0.25]
    for bad in ("0", "1.5"):
        with pytest.raises(ValueError, match="box-positive-fraction"):
            train(_args(tmp_path / bad, "--steps", "1", "--box-positive-fraction", bad), clip=tiny_clip(),
                  categories=cats, cfg=TINY)
    for flag in ("--shade", "--randconv"):
        with pytest.raises(ValueError, match=flag):
            train(_args(tmp_path / flag, "--steps", "1", flag, "1.5"), clip=tiny_clip(), categories=cats, cfg=TINY)
    for bad in ("0", "-8"):
        with pytest.raises(ValueError, match="box-rois"):
            train(_args(tmp_path / f"rois{bad}", "--steps", "1", "--box-rois", bad), clip=tiny_clip(),
                  categories=cats, cfg=TINY)
        with pytest.raises(ValueError, match="rpn-train-proposals"):
            train(_args(tmp_path / f"props{bad}", "--steps", "1", "--rpn-train-proposals", bad), clip=tiny_clip(),
                  categories=cats, cfg=TINY)


def test_diagnose_counts_every_ground_truth_box(tmp_path):
    import json as json_
    from vildtrain.data import scenes
    from vildtrain.data.categories import load_categories
    from vildtrain.tools.diagnose import diagnose
    cats = load_categories()[:80]
    coco = scenes.write_set(str(tmp_path), "seen", 3, categories=cats)
    model = build_detector(TINY).eval()
    result = diagnose(model, tiny_clip(), cats, str(tmp_path), count=3)
    anns = coco["annotations"]
    split = {c.id: c.split for c in cats}
    assert result["images"] == 3 and result["boxes"] == len(anns) > 0
    assert result["boxes_by_split"] == {s: sum(split[a["category_id"]] == s for a in anns) for s in ("base", "novel")}
    assert 0.0 <= result["rpn_recall"] <= 1.0
    for head in ("text", "image", "miniclip"):
        for s, v in result["top1"][head].items():
            assert (v is None) == (result["boxes_by_split"][s] == 0)
            assert v is None or 0.0 <= v <= 1.0
            t5 = result["top5"][head][s]
            assert (t5 is None) == (v is None) and (v is None or v <= t5 <= 1.0)
    from vildtrain.tools.diagnose import size_bin
    sides = [size_bin((a["bbox"][2] * a["bbox"][3]) ** 0.5) for a in anns]
    assert result["boxes_by_size"] == {b: sides.count(b) for b in result["boxes_by_size"]}
    assert sum(result["boxes_by_size"].values()) == len(anns)
    # top-1 over all sizes is the box-weighted mean of the per-size figures
    hits = sum(v * result["boxes_by_size"][b] for b, v in result["top1_by_size"]["text"].items() if v is not None)
    split_hits = sum(v * result["boxes_by_split"][s] for s, v in result["top1"]["text"].items() if v is not None)
    assert abs(hits - split_hits) < 1e-6
    # every wrong answer on a base box is counted once, as a (true, answered) pair of different names
    names = {c.name: c for c in cats}
    for head in ("text", "image", "miniclip"):
        e = result["base_errors"][head]
        top1 = result["top1"][head]["base"]
        n_base = result["boxes_by_split"]["base"]
        assert e["errors"] == (round(n_base * (1 - top1)) if top1 is not None else 0)
        assert 0 <= e["to_novel"] <= e["errors"]
        assert sum(k for _, _, k in e["pairs"]) <= e["errors"]
        for t, a, k in e["pairs"]:
            assert t != a and names[t].split == "base" and k >= 1
    json_.dumps(result)


def test_size_bins_cover_every_side():
    from vildtrain.tools.diagnose import size_bin
    assert [size_bin(s) for s in (0.5, 31.9, 32, 64, 127, 128, 4000)] == \
        ["0-32", "0-32", "32-64", "64-128", "64-128", "128+", "128+"]


def test_recorded_command_leaves_out_pause_and_resume():
    from vildtrain.train.detector_run import reproducing_command
    base = "python3 -m vildtrain train_detector --out runs/d --steps 1601 --grid-scenes 0.5"
    assert reproducing_command(base + " --resume") == base
    assert reproducing_command(base + " --max-steps-now 600") == base
    assert reproducing_command("python3 -m vildtrain train_detector --resume --max-steps-now=460 --out 'a b'") == \
        "python3 -m vildtrain train_detector --out 'a b'"
    assert reproducing_command(base) == base


class _Clock:
    """A stand-in for time.time: each reading is ``first`` seconds after the last,
    then ``then`` seconds once ``switch_after`` readings have been taken (a machine
    that slows down, or a slow spell that ends)."""

    def __init__(self, first: float, then: float, switch_after: int) -> None:
        self.t, self.calls = 1000.0, 0
        self.first, self.then, self.switch_after = first, then, switch_after

    def time(self) -> float:
        self.calls += 1
        self.t += self.first if self.calls <= self.switch_after else self.then
        return self.t


@pytest.mark.parametrize("refit_every", [5, 0])
def test_schedule_is_refitted_when_the_machine_slows_down(tmp_path, monkeypatch, capsys, refit_every):
    from vildtrain.data.categories import load_categories
    from vildtrain.train import detector_run
    monkeypatch.setattr(detector_run, "time", _Clock(1.0, 3.0, switch_after=15))
    args = _args(tmp_path, "--steps", "60", "--calibrate", "6", "--refit-every", str(refit_every))
    args.time_budget = 1.5  # minutes of the fake clock: 60 one-second steps fit, not at three seconds each
    summary = detector_run.train(args, clip=tiny_clip(), categories=load_categories()[:80], cfg=TINY)
    err = capsys.readouterr().err
    assert summary["done"]
    if refit_every:
        # the schedule shrank to what the slower rate fits, and its last step came
        # inside the budget (the backstop never fired)
        assert "would overrun" in err and "time budget reached" not in err
        assert 20 < summary["total"] < 60
    else:
        # fitted once while fast, the schedule only ends at the budget's backstop, cut short
        assert "would overrun" not in err and "time budget reached" in err


def test_device_must_be_cpu_or_an_available_cuda_in_one_process(tmp_path):
    from vildtrain.data.categories import load_categories
    from vildtrain.train.detector_run import train
    cats = load_categories()[:80]
    with pytest.raises(ValueError, match="need cpu or cuda"):
        train(_args(tmp_path, "--steps", "1", "--device", "tpu"), clip=tiny_clip(), categories=cats, cfg=TINY)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="sees no CUDA device"):
            train(_args(tmp_path, "--steps", "1", "--device", "cuda"), clip=tiny_clip(), categories=cats, cfg=TINY)
    else:
        args = _args(tmp_path, "--steps", "1", "--device", "cuda")
        args.procs = 2
        with pytest.raises(ValueError, match="--procs 1"):
            train(args, clip=tiny_clip(), categories=cats, cfg=TINY)


def test_schedule_grows_back_when_a_slow_spell_ends(tmp_path, monkeypatch, capsys):
    from vildtrain.data.categories import load_categories
    from vildtrain.train import detector_run
    monkeypatch.setattr(detector_run, "time", _Clock(3.0, 1.0, switch_after=12))
    args = _args(tmp_path, "--steps", "60", "--calibrate", "6", "--refit-every", "5")
    args.time_budget = 1.5
    summary = detector_run.train(args, clip=tiny_clip(), categories=load_categories()[:80], cfg=TINY)
    err = capsys.readouterr().err
    fitted = [int(line.rsplit("training ", 1)[1].split()[0]) for line in err.splitlines()
              if line.startswith("train_detector:") and "training " in line]
    assert "would overrun" in err and "has room for" in err, err
    assert fitted[0] < summary["total"] <= 60   # shrunk while slow, grown back after, never past --steps
    assert summary["done"] and "time budget reached" not in err


def test_profile_step_times_every_phase_of_a_training_step():
    from vildtrain.tools.profile_step import PHASES, profile_steps
    out = profile_steps(freeze=2, scenes=1, steps=1, warmup=0, ops=5)
    assert set(out["phases_ms"]) == set(PHASES)
    assert "Self CPU" in out["ops_table"] and "aten::" in out["ops_table"], out["ops_table"]
    assert all(ms > 0 for ms in out["phases_ms"].values()), out
    # the phases are inside the profiled step: together they cannot take longer than it
    assert sum(out["phases_ms"].values()) <= out["profiled_step_ms"] * 1.05, out
    assert out["step_ms"] > 0, out


def test_profile_step_precisions_and_poolers_are_lists_of_known_names():
    import argparse
    from vildtrain.tools.profile_step import _poolers, _precisions
    assert _precisions("fp32,bf16") == ["fp32", "bf16"]
    assert _precisions("bf16") == ["bf16"]
    assert _poolers("torchvision,bag") == ["torchvision", "bag"]
    for parse, bad in ((_precisions, "fp16"), (_precisions, "bf16,bf16"), (_precisions, ""),
                       (_poolers, "grid"), (_poolers, "bag,bag")):
        with pytest.raises(argparse.ArgumentTypeError):
            parse(bad)


def test_profile_step_box_rois_sets_the_sampler_of_each_profiled_run(capsys):
    import argparse
    from vildtrain.tools.profile_step import _box_rois, main, profile_steps
    assert _box_rois("256,512") == [256, 512]
    for bad in ("0", "256,256", "", "many"):
        with pytest.raises(argparse.ArgumentTypeError):
            _box_rois(bad)
    assert profile_steps(freeze=2, scenes=1, steps=1, warmup=0, box_rois=24)["box_rois"] == 24
    assert main(["--box-rois", "16,32", "--freeze", "2", "--scenes", "1", "--steps", "1", "--warmup", "0"]) == 0
    out = capsys.readouterr().out
    assert "16 RoIs ms" in out and "32 RoIs step:" in out, out


def test_profile_step_image_head_and_distill_variants(capsys, monkeypatch):
    import argparse

    from vildtrain.tools.profile_step import _distill, _image_head_hidden, main
    import vildtrain.train.detector_step as td
    assert _image_head_hidden("256,1024") == [256, 1024]
    assert _distill("24+8,48+16") == [(24, 8), (48, 16)]
    for parse, bad in ((_image_head_hidden, "0"), (_image_head_hidden, "64,64"), (_distill, "24"),
                       (_distill, "0+0"), (_distill, "4+2,4+2"), (_distill, "a+b")):
        with pytest.raises(argparse.ArgumentTypeError):
            parse(bad)
    built, distilled = [], []
    build, step = td.build_student, td.train_step

    def spy_build(cfg, *a, **k):
        built.append(cfg.image_head_hidden)
        return build(cfg, *a, **k)

    def spy_step(*a, **k):
        distilled.append(a[7:9])
        return step(*a, **k)
    monkeypatch.setattr(td, "build_student", spy_build)
    monkeypatch.setattr(td, "train_step", spy_step)
    assert main(["--image-head-hidden", "64,128", "--distill", "4+2", "--freeze", "2", "--scenes", "1",
                 "--steps", "1", "--warmup", "0"]) == 0
    out = capsys.readouterr().out
    assert "image head 64 ms" in out and "image head 128 step:" in out, out
    assert built == [64, 128] and set(distilled) == {(4, 2)}, (built, distilled)


def test_profile_step_torchvision_pooler_pools_like_the_trainers():
    from vildtrain.tools.profile_step import torchvision_pooler
    model = tiny_model()
    pool = torchvision_pooler(model.roi_pool)
    assert type(pool).__name__ == "MultiScaleRoIAlign" and pool.scales == model.roi_pool.scales
    g = torch.Generator().manual_seed(0)
    feats = {n: torch.randn(1, 16, 64 // s, 64 // s, generator=g) for n, s in zip(TINY.roi_level_names, TINY.strides)}
    boxes = [torch.tensor([[1.0, 2.0, 30.0, 20.0], [0.0, 0.0, 63.0, 63.0], [40.0, 10.0, 44.0, 50.0]])]
    torch.testing.assert_close(pool(feats, boxes, [(64, 64)]), model.roi_pool(feats, boxes, [(64, 64)]),
                               rtol=1e-4, atol=1e-5)


def test_box_iou_is_torchvision_bit_for_bit():
    from torchvision.ops import box_iou as tv_box_iou

    from vildtrain.models.detector import box_iou, build_detector
    g = torch.Generator().manual_seed(3)
    for n, m in ((1, 1), (7, 500), (40, 3000)):
        xy1 = torch.rand(n, 2, generator=g) * 300
        b1 = torch.cat([xy1, xy1 + torch.rand(n, 2, generator=g) * 90 + 1], 1)
        xy2 = torch.rand(m, 2, generator=g) * 380 - 20
        b2 = torch.cat([xy2, xy2 + torch.rand(m, 2, generator=g) * 200 + 1], 1)
        b2[0] = b1[0]  # an exact match, IoU 1
        got, want = box_iou(b1, b2), tv_box_iou(b1, b2)
        assert got.shape == (n, m)
        assert torch.equal(got, want)
        assert got[0, 0] == 1.0 and (got >= 0).all() and (got <= 1).all()
    assert build_detector().rpn.box_similarity is box_iou


def test_train_continues_from_a_detector_checkpoint_on_more_styles(tmp_path):
    """--init PATH starts every weight from a trained detector (e.g. the bundle's,
    rebuilt by detector_from_bundle); --styles teacher draws scenes from every
    style but Fluent 3D, --shade and --randconv restyle a share of the objects. A checkpoint of another architecture is refused."""
    from vildtrain.data.categories import load_categories
    from vildtrain.models.detector import save_checkpoint
    from vildtrain.train.detector_run import train
    clip = tiny_clip()
    cats = load_categories()[:80]
    torch.manual_seed(5)
    start = build_detector(TINY).eval()
    save_checkpoint(str(tmp_path / "start.pt"), start)
    out = train(_args(tmp_path / "a", "--steps", "2", "--init", str(tmp_path / "start.pt"), "--styles", "teacher",
                      "--shade", "0.5", "--randconv", "0.5"), clip=clip, categories=cats, cfg=TINY)
    assert out["done"]
    trained, extra = load_checkpoint(str(tmp_path / "a" / "detector.pt"))
    assert (extra["settings"]["styles"], extra["settings"]["shade"], extra["settings"]["randconv"]) == ("teacher", 0.5, 0.5)
    # two small steps from the start's weights: every weight near its start, the trained ones moved
    fresh = build_detector(TINY)
    moved = 0
    for (name, w), w0, wf in zip(trained.state_dict().items(), start.state_dict().values(), fresh.state_dict().values()):
        if not w.is_floating_point() or "running" in name:
            continue
        torch.testing.assert_close(w, w0, atol=0.02, rtol=0, msg=name)
        moved += int(not torch.equal(w, w0))
    assert moved > 10
    save_checkpoint(str(tmp_path / "other.pt"), build_detector(dataclasses.replace(TINY, fpn_channels=8)))
    with pytest.raises(ValueError, match="another architecture.*fpn_channels"):
        train(_args(tmp_path / "b", "--steps", "1", "--init", str(tmp_path / "other.pt")), clip=clip,
              categories=cats, cfg=TINY)
