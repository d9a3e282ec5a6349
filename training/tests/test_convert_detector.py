"""convert_detector on a state_dict made here with torchvision's own Mask R-CNN
R50-FPN (random weights, as a checkpoint file holds it: no BatchNorm counters)
plus ViLD heads: the converted detector computes what torchvision's modules do."""
import onnx
import pytest
import torch
import torch.nn.functional as F
from torchvision.models.detection import maskrcnn_resnet50_fpn

from vildtrain.export import convert_detector
from vildtrain.export.export import fold_batchnorm
from vildtrain.models.detector import BackboneGraph

D = 512


@pytest.fixture(scope="module")
def torchvision_model():
    torch.manual_seed(0)
    tv = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None).eval()
    for m in tv.modules():
        if isinstance(m, torch.nn.BatchNorm2d):   # statistics a trained body would have
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.1, 0.3)
    return tv


@pytest.fixture(scope="module")
def checkpoint(torchvision_model):
    sd = {k: v.clone() for k, v in torchvision_model.state_dict().items() if "num_batches_tracked" not in k}
    g = torch.Generator().manual_seed(1)
    for name, shape in (("text_proj", (D, 1024)), ("image_proj", (D, 1024)), ("box_pred", (4, 1024))):
        sd[f"vild.{name}.weight"] = torch.randn(shape, generator=g) * 0.03
        sd[f"vild.{name}.bias"] = torch.zeros(shape[0])
    sd["vild.background"] = torch.randn(D, generator=g)
    return sd


@torch.no_grad()
def test_converted_detector_computes_what_torchvision_does(torchvision_model, checkpoint):
    tv = torchvision_model
    model = convert_detector.detector_from_state_dict(checkpoint)
    x = torch.randn(1, 3, 128, 192)
    feats = tv.backbone(x)
    logits, deltas = tv.rpn.head(list(feats.values()))
    want = []
    for (name, f), lg, dl in zip(feats.items(), logits, deltas):
        if name != "pool":
            want.append(f)
        want += [lg, dl]
    got = BackboneGraph(model)(x)
    assert len(got) == len(want) == 14
    assert all(torch.equal(a, b) for a, b in zip(got, want))
    fold_batchnorm(model)
    folded = BackboneGraph(model)(x)
    assert all(torch.allclose(a, b, atol=1e-4, rtol=1e-4) for a, b in zip(folded, want))

    rois = torch.randn(6, 256, 7, 7)
    h = tv.roi_heads.box_head(rois)
    text, image, box = model.box_head(rois)
    assert torch.allclose(text, F.normalize(F.linear(h, checkpoint["vild.text_proj.weight"]), dim=-1), atol=1e-6)
    assert torch.allclose(image, F.normalize(F.linear(h, checkpoint["vild.image_proj.weight"]), dim=-1), atol=1e-6)
    assert torch.allclose(box, F.linear(h, checkpoint["vild.box_pred.weight"]), atol=1e-6)
    assert torch.allclose(model.background_embedding(), F.normalize(checkpoint["vild.background"], dim=0))


def test_older_rpn_names_load(checkpoint):
    sd = dict(checkpoint)
    for part in ("weight", "bias"):
        sd[f"rpn.head.conv.{part}"] = sd.pop(f"rpn.head.conv.0.0.{part}")
    model = convert_detector.detector_from_state_dict({"model": sd})
    assert torch.equal(model.rpn.head.conv[0][0].weight, checkpoint["rpn.head.conv.0.0.weight"])


def test_refuses_a_plain_mask_rcnn_and_wrong_shapes(checkpoint):
    plain = {k: v for k, v in checkpoint.items() if not k.startswith("vild.")}
    with pytest.raises(ValueError, match="no vild.text_proj.weight"):
        convert_detector.detector_from_state_dict(plain)
    narrow = dict(checkpoint)
    narrow["roi_heads.box_head.fc7.weight"] = torch.zeros(512, 1024)
    with pytest.raises(ValueError, match="fc7.weight has shape"):
        convert_detector.detector_from_state_dict(narrow)


def test_writes_the_graphs(checkpoint, tmp_path):
    torch.save(checkpoint, tmp_path / "vild.pth")
    summary = convert_detector.convert(str(tmp_path / "vild.pth"), str(tmp_path / "out"))
    assert summary["batchnorms_folded"] == 53 and summary["embedding_dim"] == D
    box = onnx.load(str(tmp_path / "out" / "box_head.onnx"))
    assert [o.name for o in box.graph.output] == ["text_embeddings", "image_embeddings", "box_deltas"]
    backbone = onnx.load(str(tmp_path / "out" / "backbone.onnx"))
    assert [i.name for i in backbone.graph.input] == ["image"] and len(backbone.graph.output) == 14
    assert (tmp_path / "out" / "background.npy").exists()


def test_a_converted_vild_becomes_a_bundle(checkpoint, tmp_path):
    """export_reference with --detector and --clip: the converted weights, the bundle format, goldens."""
    import hashlib
    import json

    import numpy as np
    from PIL import Image

    from vildtrain.export import export_reference as ref
    from vildtrain.text import clip_tokenizer

    torch.save(checkpoint, tmp_path / "vild.pth")
    torch.manual_seed(2)
    tower = ref.ClipTextTower(vocab_size=clip_tokenizer.load().vocab_size, context_length=77, width=64, layers=1,
                              heads=1, embed_dim=D)
    torch.save(tower.state_dict(), tmp_path / "clip.pt")
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 80, 3), dtype=np.uint8))
    out = tmp_path / "bundle"
    man = ref.export_reference(str(out), num_categories=2, images={"exact": img}, detector=str(tmp_path / "vild.pth"),
                               clip_checkpoint=str(tmp_path / "clip.pt"), tokenizer_source=clip_tokenizer.data_dir())
    assert man["name"] == "r50-fpn-vild" and man["training"]["note"] == "converted weights"
    assert man["embedding"]["dim"] == D and man["text"]["context_length"] == 77
    for name, digest in man["sha256"].items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest, name
    ids = torch.from_numpy(np.load(out / "golden" / "text" / "input_ids.npy"))
    with torch.no_grad():
        want = tower.encode_text(ids).numpy()
    assert np.abs(np.load(out / "golden" / "text" / "text_embeddings.npy") - want).max() < 1e-5
    assert np.load(out / "category_embeddings.npy").shape == (2, D)
    meta = json.loads((out / "golden" / "exact" / "meta.json").read_text())
    assert (meta["resized_width"], meta["resized_height"]) == (1024, 512)
    assert np.load(out / "golden" / "exact" / "proposals.npy").shape == (1000, 4)
