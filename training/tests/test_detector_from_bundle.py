"""detector_from_bundle rebuilds the PyTorch detector a bundle's graphs hold."""
import json
import os

import pytest
import torch

from test_detector import tiny_clip, tiny_model
from test_export import as_exported
from vildtrain.export.export import export_bundle
from vildtrain.models.detector_from_bundle import check_against_golden, conv_bn_pairs, detector_from_bundle, main
from vildtrain.models.detector import load_checkpoint, save_checkpoint
from vildtrain.models.miniclip import teacher_record

DEFAULT = os.path.join(os.path.dirname(__file__), "..", "..", "models", "default")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from vildtrain.data.categories import load_categories
    tmp = tmp_path_factory.mktemp("from_bundle")
    model = tiny_model()
    ckpt = str(tmp / "detector.pt")
    save_checkpoint(ckpt, model, extra={"command": "test", "seed": 1, "steps": 1, "distill_weight": 1.0,
                                        "teacher": teacher_record(tiny_clip())})
    out = str(tmp / "bundle")
    export_bundle(ckpt, out, clip=tiny_clip(), categories=load_categories()[:20], name="tiny")
    return model, out


def test_rebuilt_weights_are_the_exported_ones(exported):
    model, out = exported
    rebuilt = detector_from_bundle(out)
    want = as_exported(model)
    x = torch.rand(1, 3, 128, 192)
    with torch.no_grad():
        a = rebuilt.backbone(x)
        b = want.backbone(x)
        for level in a:
            assert torch.allclose(a[level], b[level], atol=1e-5), level
        rois = torch.randn(6, rebuilt.cfg.fpn_channels, rebuilt.cfg.roi_output_size, rebuilt.cfg.roi_output_size)
        for p, q in zip(rebuilt.box_head(rois), want.box_head(rois)):
            assert torch.allclose(p, q, atol=1e-5)
    assert torch.allclose(rebuilt.background_embedding(), want.background_embedding(), atol=1e-6)
    # the rebuilt model keeps its BatchNorms (as identities), so it is an ordinary checkpoint
    assert conv_bn_pairs(rebuilt)


def test_the_committed_bundle_rebuilds_within_the_stated_tolerance(tmp_path):
    out = str(tmp_path / "detector.pt")
    assert main(["--bundle", DEFAULT, "--out", out]) == 0
    model, extra = load_checkpoint(out)
    assert extra["from_bundle"].endswith("default")
    with open(os.path.join(DEFAULT, "manifest.json")) as f:
        assert extra["teacher"] == {"digest": json.load(f)["training"]["miniclip_digest"]}
    diffs = check_against_golden(model, DEFAULT, "exact")
    assert max(diffs.values()) < 1e-3, diffs
    assert set(diffs) >= {"feat_p2", "rpn_logits_p6", "text_embeddings", "image_embeddings", "box_deltas"}
    # the bundle's ensemble asks the teacher about the best regions' crops
    # (embedding.crops): the checkpoint keeps the setting for evaluate, and the
    # evaluation's crops of the rebuilt detector's regions from input.png are
    # the golden ones
    import numpy as np
    from PIL import Image

    from vildtrain.export.image_encoder import encoder_from_bundle
    from vildtrain.models.infer import regions, region_crop_embeddings
    with open(os.path.join(DEFAULT, "manifest.json")) as f:
        man = json.load(f)
    crops = man["embedding"]["crops"]
    # the section with its views resolved: its own scales, else the image encoder's
    assert extra["crops"] == crops | {"scales": crops.get("scales", man["image_encoder"]["crop_scales"]),
                                      "mirror": crops.get("mirror", False)}
    graph = encoder_from_bundle(DEFAULT)   # the teacher as the bundle carries it
    for case in ("exact", "upscale"):
        gold = os.path.join(DEFAULT, "golden", case)
        r = regions(model, Image.open(os.path.join(gold, "input.png")).convert("RGB"))
        got = region_crop_embeddings(model, r, graph, man["image_encoder"]["input_size"], crops["regions"],
                                     tuple(extra["crops"]["scales"]), extra["crops"]["mirror"]).numpy()
        want = np.load(os.path.join(gold, "crop_embeddings.npy"))
        assert got.shape == want.shape == (crops["regions"], 256)
        # the rebuilt detector's boxes and picture differ from the golden ones by float rounding
        assert np.abs(got - want).max() < 1e-4, case   # measured: 2.9e-6


def test_a_graph_without_a_weight_is_refused(exported, tmp_path):
    import shutil

    import onnx
    _, out = exported
    broken = str(tmp_path / "broken")
    shutil.copytree(out, broken)
    path = os.path.join(broken, "box_head.onnx")
    m = onnx.load(path)
    kept = [i for i in m.graph.initializer if not i.name.startswith("image_proj.weight")]
    del m.graph.initializer[:]
    m.graph.initializer.extend(kept)
    onnx.save(m, path)
    with pytest.raises(ValueError, match="no value for"):
        detector_from_bundle(broken)
