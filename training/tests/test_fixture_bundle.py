import hashlib
import json
import os

import onnx

from vildtrain.export import fixture_bundle


def test_fixture_bundle_follows_the_contract(tmp_path):
    out = str(tmp_path / "bundle")
    fixture_bundle.build(out)
    with open(os.path.join(out, "manifest.json")) as f:
        manifest = json.load(f)
    assert manifest["format"] == "vild-bundle/1"
    for name, digest in manifest["sha256"].items():
        with open(os.path.join(out, name), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == digest, name
    for graph, inputs, outputs in [
        ("backbone.onnx", ["image"], fixture_bundle.backbone_output_names()),
        ("box_head.onnx", ["rois"], ["text_embeddings", "image_embeddings", "box_deltas"]),
        ("text_encoder.onnx", ["input_ids"], ["text_embeddings"]),
    ]:
        model = onnx.load(os.path.join(out, graph))
        assert [i.name for i in model.graph.input] == inputs
        assert [o.name for o in model.graph.output] == outputs
        assert model.opset_import[0].version == 17
    for case in fixture_bundle.CASES:
        with open(os.path.join(out, "golden", case, "detections.json")) as f:
            dets = json.load(f)
        assert dets, f"{case}: no detections to compare against"
        assert all(d["score"] >= manifest["postprocess"]["score_threshold"] for d in dets)
