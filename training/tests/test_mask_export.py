"""export_mask_head adds mask_head.onnx, the manifest's mask_head section and the
mask goldens to an exported bundle. (The graph's numbers under ONNX Runtime are
for the Go harness to check against the goldens; this checks the goldens against
PyTorch and the graph's interface.)"""
import hashlib
import json
import os
import shutil

import numpy as np
import onnx
import pytest
import torch

from test_detector import TINY
from test_export import bundle  # noqa: F401  (the tiny exported bundle fixture)
from vildtrain.export.export_mask_head import export_mask_head
from vildtrain.export.export import round_to_half
from vildtrain.models.mask_head import MaskConfig, MaskHead, mask_pooler, paste_masks_in_image, save_mask_head


@pytest.fixture(scope="module")
def with_masks(bundle, tmp_path_factory):  # noqa: F811
    src, _, _, _ = bundle
    tmp = tmp_path_factory.mktemp("masks")
    out = str(tmp / "bundle")
    shutil.copytree(src, out)
    torch.manual_seed(3)
    head = MaskHead(MaskConfig(in_channels=TINY.fpn_channels, width=8, layers=2))
    with torch.no_grad():
        head.predictor.mask_fcn_logits.weight.normal_(std=0.5)
    ckpt = str(tmp / "mask_head.pt")
    save_mask_head(ckpt, head.eval(), extra={"command": "python3 -m vildtrain train_mask_head --steps 2", "steps": 2})
    man = export_mask_head(ckpt, out)
    return out, man, head


def test_manifest_section_and_digests(with_masks):
    out, man, head = with_masks
    sec = man["mask_head"]
    assert sec["graph"] == "mask_head.onnx" and sec["class_agnostic"] is True
    assert sec["roi_align"] == {"output_size": 14, "sampling_ratio": TINY.roi_sampling_ratio, "aligned": False,
                                "canonical_scale": TINY.roi_canonical_scale,
                                "canonical_level": TINY.roi_canonical_level}
    assert sec["mask_size"] == 28 and sec["threshold"] == 0.5
    assert sec["training"]["steps"] == 2
    with open(os.path.join(out, "manifest.json")) as f:
        on_disk = json.load(f)
    assert on_disk["mask_head"] == sec
    for rel, digest in on_disk["sha256"].items():
        with open(os.path.join(out, rel), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == digest, rel
    assert "mask_head.onnx" in on_disk["sha256"]
    assert sec["golden"]["detections"], "no golden case had detections"
    for case in sec["golden"]["detections"]:
        for name in sec["golden"]["files"]:
            assert f"golden/{case}/{name}" in on_disk["sha256"]


def test_graph_interface_and_half_weights(with_masks):
    out, _, _ = with_masks
    m = onnx.load(os.path.join(out, "mask_head.onnx"))
    assert [i.name for i in m.graph.input] == ["rois"] and [o.name for o in m.graph.output] == ["mask_logits"]
    dims = [d.dim_param or d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["N", TINY.fpn_channels, 14, 14]
    assert "ConvTranspose" in {n.op_type for n in m.graph.node}
    halves = [i for i in m.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16]
    assert halves and all(i.name.endswith("_f16") for i in halves)


def test_goldens_are_the_half_rounded_head_on_the_cases_features(with_masks):
    out, man, head = with_masks
    rounded = MaskHead(head.cfg)
    rounded.load_state_dict(head.state_dict())
    rounded.eval()
    round_to_half(rounded)
    pool = mask_pooler(TINY)
    for case, n in man["mask_head"]["golden"]["detections"].items():
        d = os.path.join(out, "golden", case)
        meta = json.load(open(os.path.join(d, "meta.json")))
        dets = json.load(open(os.path.join(d, "detections.json")))
        boxes = np.load(os.path.join(d, "mask_boxes.npy"))
        assert boxes.shape == (n, 4)
        np.testing.assert_array_equal(boxes, np.array([x["box"] for x in dets[:n]], np.float32))
        feats = {k: torch.from_numpy(np.load(os.path.join(d, f"feat_{k}.npy"))) for k in TINY.roi_level_names}
        scale = torch.tensor([meta["scale_x"], meta["scale_y"], meta["scale_x"], meta["scale_y"]])
        rois = pool(feats, [torch.from_numpy(boxes) * scale], [(meta["resized_height"], meta["resized_width"])])
        with torch.no_grad():
            logits = rounded(rois)
        np.testing.assert_allclose(np.load(os.path.join(d, "mask_logits.npy")), logits.numpy(), atol=1e-5)
        prob = paste_masks_in_image(torch.sigmoid(logits), torch.from_numpy(boxes),
                                    (meta["height"], meta["width"]), padding=1)[:, 0]
        bits = np.load(os.path.join(d, "masks_bits.npy"))
        assert bits.dtype == np.uint8 and bits.ndim == 1
        got = np.unpackbits(bits, count=n * meta["height"] * meta["width"]).reshape(prob.shape)
        np.testing.assert_array_equal(got, (prob >= 0.5).numpy().astype(np.uint8))
        assert prob.max() > 0 and prob[:, 0, 0].max() == 0   # pasted inside their boxes, zero elsewhere


def test_refuses_a_directory_without_a_bundle(tmp_path, with_masks):
    _, _, head = with_masks
    ckpt = str(tmp_path / "m.pt")
    save_mask_head(ckpt, head)
    with pytest.raises(FileNotFoundError, match="manifest"):
        export_mask_head(ckpt, str(tmp_path))
