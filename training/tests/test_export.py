"""The exporter writes a complete, self-consistent bundle (docs/bundle.md).

The graphs' numbers under ONNX Runtime are checked against the golden files by
the Go harness (go test ./pipeline), which has the runtime."""
import copy
import hashlib
import json
import os

import numpy as np
import onnx
import pytest
import torch

from test_detector import TINY, tiny_clip, tiny_model
from vildtrain.export.export import (GOLDEN_CASES, HALF_MIN_ELEMENTS, ROIS_SAVED, export_bundle, export_graph,
                                     fold_batchnorm, round_to_half, store_half)
from vildtrain.models.detector import backbone_output_names, save_checkpoint
from vildtrain.models.miniclip import miniclip_digest, teacher_record
from vildtrain.text.prompts import TEMPLATES

RUNTIME = ["backbone.onnx", "box_head.onnx", "text_encoder.onnx", "tokenizer/vocab.json", "tokenizer/merges.txt",
           "background.npy", "category_embeddings.npy"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from vildtrain.data.categories import load_categories
    tmp = tmp_path_factory.mktemp("bundle")
    model = tiny_model()
    ckpt = str(tmp / "detector.pt")
    save_checkpoint(ckpt, model, extra={"command": "python3 -m vildtrain train_detector --steps 4", "seed": 7,
                                        "steps": 4, "distill_weight": 1.0, "teacher": teacher_record(tiny_clip())})
    cats = load_categories()[:40]
    out = str(tmp / "bundle")
    os.makedirs(out)   # a previous export: its README.md stays, everything else goes
    with open(os.path.join(out, "README.md"), "w") as f:
        f.write("about this bundle\n")
    with open(os.path.join(out, "stale.onnx"), "w") as f:
        f.write("old graph")
    man = export_bundle(ckpt, out, clip=tiny_clip(), categories=cats, name="smoke")
    return out, man, model, cats


def as_exported(model):
    """A copy of the model with the weights the exporter puts in the graphs."""
    m = copy.deepcopy(model).eval()
    fold_batchnorm(m)
    for part in (m.backbone, m.rpn, m.box_head):
        round_to_half(part)
    return m


def load(out, name):
    return np.load(os.path.join(out, name))


def test_export_refuses_a_mini_clip_the_detector_was_not_distilled_from(bundle):
    out, _, _, cats = bundle
    other = tiny_clip()
    with torch.no_grad():
        other.logit_scale.add_(1.0)
    before = sorted(os.listdir(out))
    with pytest.raises(ValueError, match="distilled from"):
        export_bundle(os.path.join(os.path.dirname(out), "detector.pt"), out, clip=other, categories=cats,
                      name="smoke")
    assert sorted(os.listdir(out)) == before   # the existing bundle is untouched


def test_reexport_keeps_only_the_readme(bundle):
    out, man, _, _ = bundle
    with open(os.path.join(out, "README.md")) as f:
        assert f.read() == "about this bundle\n"
    assert not os.path.exists(os.path.join(out, "stale.onnx"))
    assert "README.md" not in man["sha256"] and "stale.onnx" not in man["sha256"]


def test_manifest_and_files(bundle):
    out, man, model, cats = bundle
    with open(os.path.join(out, "manifest.json")) as f:
        assert json.load(f) == json.loads(json.dumps(man))
    assert man["format"] == "vild-bundle/1" and man["name"] == "smoke"
    for name in RUNTIME:
        assert name in man["sha256"], name
    for name, digest in man["sha256"].items():
        with open(os.path.join(out, name), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == digest, name
    assert [lv["name"] for lv in man["fpn"]["levels"]] == ["p2", "p3", "p4", "p5", "p6"]
    assert [lv["stride"] for lv in man["fpn"]["levels"]] == [4, 8, 16, 32, 64]
    assert [lv["roi"] for lv in man["fpn"]["levels"]] == [True, True, True, True, False]
    assert man["input"]["size_divisible"] % 64 == 0
    assert man["rpn"]["post_nms_top_n"] == TINY.rpn_post_nms_top_n_test
    assert man["embedding"] == {"dim": 32, "temperature": 0.01, "ensemble_lambda": pytest.approx(2 / 3)}
    assert man["text"]["templates"] == TEMPLATES and man["text"]["context_length"] == 32
    assert [c["name"] for c in man["categories"]] == [c.name for c in cats]
    assert {c["split"] for c in man["categories"]} == {"base", "novel"}
    assert man["training"]["seed"] == 7 and "train_detector" in man["training"]["command"]
    assert man["training"]["miniclip_digest"] == miniclip_digest(tiny_clip())
    bg = load(out, "background.npy")
    assert bg.dtype == np.dtype("<f4") and bg.shape == (32,)
    np.testing.assert_allclose(bg, model.background_embedding().detach().numpy(), atol=1e-7)
    emb = load(out, "category_embeddings.npy")
    assert emb.shape == (len(cats), 32)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_graphs_pass_the_checker_with_dynamic_axes(bundle):
    out, man, model, _ = bundle
    want = {
        "backbone.onnx": (["image"], backbone_output_names(TINY)),
        "box_head.onnx": (["rois"], ["text_embeddings", "image_embeddings", "box_deltas"]),
        "text_encoder.onnx": (["input_ids"], ["text_embeddings"]),
    }
    for name, (inputs, outputs) in want.items():
        g = onnx.load(os.path.join(out, name))
        onnx.checker.check_model(g)
        assert max(o.version for o in g.opset_import if o.domain in ("", "ai.onnx")) == 17
        assert [i.name for i in g.graph.input] == inputs
        assert [o.name for o in g.graph.output] == outputs
        dims = g.graph.input[0].type.tensor_type.shape.dim
        if name == "backbone.onnx":
            assert dims[2].dim_param and dims[3].dim_param and dims[1].dim_value == 3
        else:
            assert dims[0].dim_param
    assert "rpn_logits_p6" in backbone_output_names(TINY) and "feat_p6" not in backbone_output_names(TINY)


def test_golden_cases(bundle):
    out, man, model, cats = bundle
    names = [c.name for c in cats]
    for case, *_ in GOLDEN_CASES:
        d = f"golden/{case}"
        with open(os.path.join(out, d, "meta.json")) as f:
            meta = json.load(f)
        image = load(out, f"{d}/image.npy")
        assert image.shape == (1, 3, meta["padded_height"], meta["padded_width"])
        assert max(meta["resized_width"], meta["resized_height"]) == man["input"]["max_side"]
        assert meta["scale_x"] == meta["resized_width"] / meta["width"]
        # the backbone outputs are what the graph gives for image.npy, with the
        # weights the graph stores (BatchNorm folded, rounded to float16)
        with torch.no_grad():
            from vildtrain.models.detector import BackboneGraph
            outs = BackboneGraph(as_exported(model))(torch.from_numpy(image))
        for name, t in zip(backbone_output_names(TINY), outs):
            np.testing.assert_array_equal(load(out, f"{d}/{name}.npy"), t.numpy())
        for level in ("p2", "p3", "p4", "p5", "p6"):
            h, w = load(out, f"{d}/rpn_logits_{level}.npy").shape[2:]
            assert load(out, f"{d}/anchors_{level}.npy").shape == (h * w * 3, 4)
        props = load(out, f"{d}/proposals.npy")
        scores = load(out, f"{d}/proposal_scores.npy")
        n = len(props)
        assert 0 < n <= man["rpn"]["post_nms_top_n"] and scores.shape == (n,)
        assert (np.diff(scores) <= 0).all()
        assert load(out, f"{d}/rois.npy").shape == (min(n, ROIS_SAVED), TINY.fpn_channels, 7, 7)
        for name, dim in (("text_embeddings", 32), ("image_embeddings", 32), ("box_deltas", 4)):
            assert load(out, f"{d}/{name}.npy").shape == (n, dim)
        boxes = load(out, f"{d}/boxes.npy")
        assert boxes.shape == (n, 4)
        assert (boxes[:, 2] <= meta["width"]).all() and (boxes[:, 3] <= meta["height"]).all()
        with open(os.path.join(out, d, "detections.json")) as f:
            dets = json.load(f)
        assert all(set(x) == {"label", "score", "box"} and x["label"] in names for x in dets)
        assert [x["score"] for x in dets] == sorted((x["score"] for x in dets), reverse=True)
        assert all(x["score"] >= man["postprocess"]["score_threshold"] for x in dets)


def test_text_golden_matches_category_embeddings(bundle):
    out, man, _, cats = bundle
    with open(os.path.join(out, "golden/text/prompts.json")) as f:
        prompts = json.load(f)
    ids = load(out, "golden/text/input_ids.npy")
    emb = load(out, "golden/text/text_embeddings.npy")
    assert ids.dtype == np.dtype("<i8") and ids.shape == (len(prompts), 32)
    assert prompts[: len(TEMPLATES)] == [t.format(cats[0].name) for t in TEMPLATES]
    k = len(prompts) // len(TEMPLATES)
    mean = emb.reshape(k, len(TEMPLATES), -1).mean(axis=1)
    mean /= np.linalg.norm(mean, axis=1, keepdims=True)
    np.testing.assert_allclose(mean, load(out, "category_embeddings.npy")[:k], atol=1e-5)


def test_detector_graphs_store_their_weights_as_float16(bundle):
    out, _, model, _ = bundle
    for name in ("backbone.onnx", "box_head.onnx"):
        g = onnx.load(os.path.join(out, name))
        large = [i for i in g.graph.initializer if np.prod(i.dims) >= HALF_MIN_ELEMENTS]
        assert large and all(i.data_type == onnx.TensorProto.FLOAT16 for i in large), name
        casts = {n.input[0]: n for n in g.graph.node if n.op_type == "Cast"}
        for i in large:   # each is read through a Cast to float32
            assert casts[i.name].attribute[0].i == onnx.TensorProto.FLOAT
    # the text encoder, which is not the detector's, stays float32
    g = onnx.load(os.path.join(out, "text_encoder.onnx"))
    assert all(i.data_type != onnx.TensorProto.FLOAT16 for i in g.graph.initializer)
    # the stored values are exactly the exported model's (rounded) weights
    g = onnx.load(os.path.join(out, "box_head.onnx"))
    weights = [p.detach().numpy() for p in as_exported(model).box_head.parameters()]
    for init in g.graph.initializer:
        if init.data_type == onnx.TensorProto.FLOAT16:
            a = onnx.numpy_helper.to_array(init).astype(np.float32)
            assert any(w.shape == a.shape and np.array_equal(w, a) for w in weights), init.name


def test_folding_batchnorm_keeps_the_outputs():
    model = tiny_model().eval()
    with torch.no_grad():
        for m in model.modules():   # give the BatchNorms statistics that matter
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    x = torch.randn(1, 3, 128, 128)
    from vildtrain.models.detector import BackboneGraph
    with torch.no_grad():
        before = BackboneGraph(model)(x)
        folded = copy.deepcopy(model)
        n = fold_batchnorm(folded)
        after = BackboneGraph(folded)(x)
    assert n > 0 and not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    for a, b in zip(before, after):
        torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)


def test_store_half_refuses_weights_that_are_not_float16_values(tmp_path):
    head = tiny_model().box_head.eval()
    rois = torch.randn(3, TINY.fpn_channels, 7, 7)
    path = str(tmp_path / "head.onnx")
    export_graph(head, (rois,), path, ["rois"], ["text_embeddings", "image_embeddings", "box_deltas"],
                 {"rois": {0: "N"}})
    with pytest.raises(ValueError, match="not float16-exact"):
        store_half(path)
    round_to_half(head)
    export_graph(head, (rois,), path, ["rois"], ["text_embeddings", "image_embeddings", "box_deltas"],
                 {"rois": {0: "N"}})
    before, after = store_half(path)
    assert after < 0.6 * before
