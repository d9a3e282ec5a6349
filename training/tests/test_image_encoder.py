"""`image_encoder` adds the mini-CLIP image tower and its golden case to a bundle.

The graph's numbers under ONNX Runtime are checked against the golden files by
the Go harness (go test ./exemplar), which has the runtime."""
import hashlib
import json
import os
import shutil

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from PIL import Image

from test_detector import tiny_clip
from vildtrain.export import image_encoder as ie
from vildtrain.export.bundle_synonyms import manifest_text
from vildtrain.models.losses import crop_embeddings
from vildtrain.models.miniclip import miniclip_digest
from vildtrain.paths import REPO_DIR


def _bundle(tmp_path, clip, digest=None):
    """A bundle as far as image_encoder reads one: a manifest, category embeddings
    and golden/exact/input.png."""
    man = {"format": "vild-bundle/1", "name": "t", "embedding": {"dim": clip.embed_dim},
           "training": {"miniclip_digest": digest or miniclip_digest(clip)}, "sha256": {"a.npy": "00"}}
    (tmp_path / "manifest.json").write_text(manifest_text(man), encoding="utf-8")
    os.makedirs(tmp_path / "golden" / "exact")
    text = np.random.default_rng(2).normal(size=(5, clip.embed_dim)).astype(np.float32)
    np.save(tmp_path / "category_embeddings.npy", text / np.linalg.norm(text, axis=1, keepdims=True))
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (192, 384, 3), dtype=np.uint8)).save(tmp_path / ie.GOLDEN_IMAGE)
    return man


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    clip = tiny_clip()
    out = tmp_path_factory.mktemp("bundle")
    old = _bundle(out, clip)
    man = ie.add_image_encoder(str(out), clip=clip, gap_scenes=3)
    return clip, out, old, man


def test_manifest_gains_the_section_and_keeps_the_rest(exported):
    clip, out, old, man = exported
    assert man["image_encoder"] == {"file": "image_encoder.onnx", "input_size": 32, "mean": [0.485, 0.456, 0.406],
                                    "std": [0.229, 0.224, 0.225], "crop_scales": [1.0, 1.5], "crop": "square",
                                    "shift": "image_encoder_shift.npy",
                                    "gap": {"scenes": 3, "seed": ie.GAP_SEED, "min_side": ie.GAP_MIN_SIDE},
                                    "miniclip_digest": miniclip_digest(clip)}
    assert json.loads((out / "manifest.json").read_text()) == man
    assert {k: v for k, v in man.items() if k not in ("image_encoder", "sha256")} == \
        {k: v for k, v in old.items() if k != "sha256"}
    assert man["sha256"]["a.npy"] == "00"
    for rel in ("image_encoder.onnx", "image_encoder_shift.npy", "golden/exemplar/crops.npy", "golden/exemplar/embeddings.npy"):
        assert man["sha256"][rel] == hashlib.sha256((out / rel).read_bytes()).hexdigest()


def test_graph_stores_int8_weights_equal_to_the_models(exported):
    clip, out, _, _ = exported
    m = onnx.load(str(out / "image_encoder.onnx"))
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    int8 = [n for n, a in inits.items() if a.dtype == np.int8]
    assert int8 and all(n[:-3] + "_scale" in inits for n in int8)
    assert not [n for n, a in inits.items() if a.dtype == np.float32 and a.size >= ie.INT8_MIN_ELEMENTS
                and not n.endswith("_scale")]
    # every quantised weight of the model is one of the graph's, dequantised
    graph = ie.encoder_graph(clip)
    stored = sorted(float(np.abs(inits[n].astype(np.float32) * inits[n[:-3] + "_scale"]).sum()) for n in int8)
    model = sorted(float(p.abs().sum()) for p in graph.parameters() if p.numel() >= ie.INT8_MIN_ELEMENTS)
    np.testing.assert_allclose(stored, model, rtol=1e-5)
    assert [i.name for i in m.graph.input] == ["image"] and [o.name for o in m.graph.output] == ["image_embeddings"]


def test_the_graph_rebuilds_as_the_models_encoder(exported, tmp_path):
    """encoder_from_bundle: the graph's int8 weights, back in a folded image tower of
    the manifest's configuration, compute what encoder_graph computes."""
    clip, out, _, man = exported
    shutil.copy(out / "image_encoder.onnx", tmp_path / "image_encoder.onnx")
    man = dict(man, training=dict(man["training"], miniclip=dict(clip.cfg.__dict__)))
    (tmp_path / "manifest.json").write_text(json.dumps(man), encoding="utf-8")
    x = torch.randn(6, 3, 32, 32)
    with torch.no_grad():
        got, want = ie.encoder_from_bundle(str(tmp_path))(x), ie.encoder_graph(clip)(x)
    assert torch.allclose(got, want, atol=1e-6)


def test_golden_is_the_teachers_crop_embedding_shifted(exported):
    """The golden embeddings are the teacher crops' (losses.crop_embeddings) of the
    int8-rounded tower, the normalised sum over the 1x and 1.5x crops, moved by the
    shift: the categories' mean text embedding minus the gap scenes' mean crop embedding."""
    clip, out, _, _ = exported
    meta = json.loads((out / "golden/exemplar/exemplars.json").read_text())
    crop_emb = torch.from_numpy(np.load(out / "golden/exemplar/crop_embeddings.npy"))
    emb = np.load(out / "golden/exemplar/embeddings.npy")
    assert emb.shape == (len(meta["boxes"]), clip.embed_dim) and crop_emb.shape[0] == 2 * len(meta["boxes"])
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    shift = torch.from_numpy(np.load(out / "image_encoder_shift.npy"))
    text = torch.from_numpy(np.load(out / "category_embeddings.npy"))
    raw = F.normalize(crop_emb.view(len(meta["boxes"]), 2, -1).sum(1), dim=-1)
    np.testing.assert_allclose(emb, F.normalize(raw + shift, dim=-1), atol=1e-6)
    gap_mean = ie.mean_crop_embedding(ie.encoder_graph(clip), 32, scenes=3)
    np.testing.assert_allclose(shift, text.mean(0) - gap_mean, atol=1e-6)
    # the same tower as a MiniClip module: crop_embeddings gives the same vectors
    graph = ie.encoder_graph(clip)
    rounded = tiny_clip()
    rounded.image.stem, rounded.image.blocks, rounded.image.proj = graph.image.stem, graph.image.blocks, graph.image.proj
    img = Image.open(out / meta["image"]).convert("RGB")
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255).permute(2, 0, 1).contiguous()
    teacher = crop_embeddings(rounded, x[None], [torch.tensor(meta["boxes"])])
    np.testing.assert_allclose(raw, teacher.numpy(), atol=1e-5)
    crops = np.load(out / "golden/exemplar/crops.npy")
    assert crops.shape == (2 * len(meta["boxes"]), 3, 32, 32)
    # the second box's 1.5x crop reaches past the corner: those pixels read as zeros (then normalised)
    assert np.allclose(crops[3, 0, 0, 0], -0.485 / 0.229, atol=1e-6)


def _rebuildable_copy(exported, tmp_path):
    """A copy of the exported bundle whose manifest names the mini-CLIP's
    configuration, as an exported bundle's does (encoder_from_bundle reads it)."""
    clip, out, _, man = exported
    shutil.copytree(out, tmp_path, dirs_exist_ok=True)
    man = json.loads(json.dumps(man))   # a deep copy: the fixture's manifest stays as exported
    man["training"]["miniclip"] = dict(clip.cfg.__dict__)
    (tmp_path / "manifest.json").write_text(manifest_text(man), encoding="utf-8")
    return clip, man


def test_from_bundle_recuts_the_exemplars_and_keeps_the_graph(exported, tmp_path):
    """--from-bundle --scales 1.25 --mirror: the graph stays byte for byte; the section
    names the views; the shift is measured at them; the golden embeddings are the
    sum over each crop and its mirror, shifted; the golden crops are the unmirrored ones."""
    clip, before = _rebuildable_copy(exported, tmp_path)
    graph_bytes = (tmp_path / "image_encoder.onnx").read_bytes()
    man = ie.set_exemplar_views(str(tmp_path), [1.25], True)
    assert (tmp_path / "image_encoder.onnx").read_bytes() == graph_bytes
    enc = man["image_encoder"]
    assert enc["crop_scales"] == [1.25] and enc["mirror"] is True
    assert list(enc) == ["file", "input_size", "mean", "std", "crop_scales", "mirror", "crop", "shift", "gap",
                         "miniclip_digest"]
    assert {k: v for k, v in enc.items() if k not in ("crop_scales", "mirror")} == \
        {k: v for k, v in before["image_encoder"].items() if k != "crop_scales"}
    assert json.loads((tmp_path / "manifest.json").read_text()) == man
    for rel in ("image_encoder_shift.npy", "golden/exemplar/crops.npy", "golden/exemplar/embeddings.npy"):
        assert man["sha256"][rel] == hashlib.sha256((tmp_path / rel).read_bytes()).hexdigest()
    graph = ie.encoder_graph(clip)
    meta = json.loads((tmp_path / "golden/exemplar/exemplars.json").read_text())
    crops = torch.from_numpy(np.load(tmp_path / "golden/exemplar/crops.npy"))
    assert crops.shape == (len(meta["boxes"]), 3, 32, 32)
    shift = torch.from_numpy(np.load(tmp_path / "image_encoder_shift.npy"))
    text = torch.from_numpy(np.load(tmp_path / "category_embeddings.npy"))
    gap = ie.mean_crop_embedding(graph, 32, scenes=3, scales=[1.25], mirror=True)
    np.testing.assert_allclose(shift, text.mean(0) - gap, atol=1e-6)
    with torch.no_grad():
        raw = F.normalize(graph(crops) + graph(crops.flip(-1)), dim=-1)
    np.testing.assert_allclose(np.load(tmp_path / "golden/exemplar/embeddings.npy"),
                               F.normalize(raw + shift, dim=-1), atol=1e-5)
    # mirroring changes the embedding: the golden is not the unmirrored one
    with torch.no_grad():
        plain = F.normalize(F.normalize(graph(crops), dim=-1) + shift, dim=-1)
    assert not np.allclose(np.load(tmp_path / "golden/exemplar/embeddings.npy"), plain, atol=1e-3)


def test_from_bundle_at_the_same_views_rewrites_the_same_numbers(exported, tmp_path):
    """Re-cut at the views it was exported with, the bundle's own graph gives back the
    shift and golden case the export wrote (to float32 rounding)."""
    _, out, _, _ = exported
    _rebuildable_copy(exported, tmp_path)
    ie.set_exemplar_views(str(tmp_path), [1.0, 1.5], False)
    for rel in ("image_encoder_shift.npy", "golden/exemplar/crops.npy", "golden/exemplar/crop_embeddings.npy",
                "golden/exemplar/embeddings.npy"):
        np.testing.assert_allclose(np.load(tmp_path / rel), np.load(out / rel), atol=1e-6)
    assert "mirror" not in json.loads((tmp_path / "manifest.json").read_text())["image_encoder"]


def test_shift_scale_multiplies_the_shift_and_is_recorded(exported, tmp_path):
    """--shift-scale 1.3: the shift is 1.3 times the measured one, the golden
    embeddings move by it, and gap.scale records it (absent again at 1)."""
    _, out, _, _ = exported
    _rebuildable_copy(exported, tmp_path)
    man = ie.set_exemplar_views(str(tmp_path), [1.0, 1.5], False, 1.3)
    assert man["image_encoder"]["gap"] == {"scenes": 3, "seed": ie.GAP_SEED, "min_side": ie.GAP_MIN_SIDE, "scale": 1.3}
    base = np.load(out / "image_encoder_shift.npy")
    shift = np.load(tmp_path / "image_encoder_shift.npy")
    np.testing.assert_allclose(shift, 1.3 * base, atol=1e-6)
    crop_emb = torch.from_numpy(np.load(tmp_path / "golden/exemplar/crop_embeddings.npy"))
    raw = F.normalize(crop_emb.view(3, 2, -1).sum(1), dim=-1)
    np.testing.assert_allclose(np.load(tmp_path / "golden/exemplar/embeddings.npy"),
                               F.normalize(raw + torch.from_numpy(shift), dim=-1), atol=1e-6)
    man = ie.set_exemplar_views(str(tmp_path), [1.0, 1.5], False, 1.0)
    assert "scale" not in man["image_encoder"]["gap"]
    np.testing.assert_allclose(np.load(tmp_path / "image_encoder_shift.npy"), base, atol=1e-6)
    for bad in (0.0, -1.0, 5.0):
        with pytest.raises(ValueError, match="shift scale"):
            ie.set_exemplar_views(str(tmp_path), [1.0, 1.5], False, bad)


def test_refuses_bad_views(exported, tmp_path):
    _rebuildable_copy(exported, tmp_path)
    before = (tmp_path / "manifest.json").read_text()
    for scales in ([], [1, 1, 1, 1, 1], [0.2], [5.0]):
        with pytest.raises(ValueError, match="1 to 4 scales"):
            ie.set_exemplar_views(str(tmp_path), scales, False)
    assert (tmp_path / "manifest.json").read_text() == before
    with pytest.raises(ValueError, match="1 to 4 scales"):
        ie.add_image_encoder(str(tmp_path), clip=exported[0], scales=[9.0])


def test_from_bundle_keeps_what_is_not_given(exported, tmp_path):
    """Views and shift scale left out (None) keep the bundle's own: after a re-cut at
    1.25x mirrored, x1.3, a run with nothing given writes the same numbers."""
    _rebuildable_copy(exported, tmp_path)
    man = ie.set_exemplar_views(str(tmp_path), [1.25], True, 1.3)
    shift = np.load(tmp_path / "image_encoder_shift.npy")
    again = ie.set_exemplar_views(str(tmp_path))
    assert again["image_encoder"] == man["image_encoder"]
    np.testing.assert_allclose(np.load(tmp_path / "image_encoder_shift.npy"), shift, atol=1e-7)
    only_scale = ie.set_exemplar_views(str(tmp_path), shift_scale=1.0)
    assert only_scale["image_encoder"]["crop_scales"] == [1.25] and only_scale["image_encoder"]["mirror"] is True
    assert "scale" not in only_scale["image_encoder"]["gap"]


def test_from_bundle_refuses_to_move_crops_that_follow_the_encoder(exported, tmp_path):
    """A bundle whose embedding.crops has no scales of its own takes the encoder's:
    new exemplar scales would change its detections, so they are refused; its
    mirror and shift may change."""
    _, man = _rebuildable_copy(exported, tmp_path)
    man["embedding"]["crops"] = {"regions": 10, "temperature": 0.04, "lambda_base": 0, "lambda_novel": 0.5}
    (tmp_path / "manifest.json").write_text(manifest_text(man), encoding="utf-8")
    with pytest.raises(ValueError, match="give the crops their own"):
        ie.set_exemplar_views(str(tmp_path), [1.25])
    ie.set_exemplar_views(str(tmp_path), [1.0, 1.5], True, 1.15)


def test_cli_from_bundle_refuses_a_miniclip(exported, tmp_path):
    _rebuildable_copy(exported, tmp_path)
    (tmp_path / "a.npy").write_bytes(b"")   # the fixture manifest's stand-in file, which the CLI sizes
    with pytest.raises(SystemExit):
        ie.main(["--bundle", str(tmp_path), "--from-bundle", "--miniclip", "x.pt"])
    assert ie.main(["--bundle", str(tmp_path), "--from-bundle", "--shift-scale", "1.15"]) == 0
    enc = json.loads((tmp_path / "manifest.json").read_text())["image_encoder"]
    assert enc["crop_scales"] == [1.0, 1.5] and "mirror" not in enc and enc["gap"]["scale"] == 1.15


def test_from_bundle_needs_an_image_encoder(tmp_path):
    _bundle(tmp_path, tiny_clip())
    with pytest.raises(ValueError, match="has no image encoder"):
        ie.set_exemplar_views(str(tmp_path), [1.25], True)


def test_refuses_another_mini_clip(tmp_path):
    clip = tiny_clip()
    _bundle(tmp_path, clip, digest="0123456789abcdef")
    with pytest.raises(ValueError, match="distilled from mini-CLIP 0123456789abcdef"):
        ie.add_image_encoder(str(tmp_path), clip=clip)
    assert not (tmp_path / "image_encoder.onnx").exists()


def test_committed_bundle_has_the_image_encoder():
    man = json.loads(open(os.path.join(REPO_DIR, "models", "default", "manifest.json"), encoding="utf-8").read())
    enc = man["image_encoder"]
    assert enc["miniclip_digest"] == man["training"]["miniclip_digest"]
    assert "image_encoder.onnx" in man["sha256"] and "golden/exemplar/embeddings.npy" in man["sha256"]


def test_compare_to_float_measures_the_rounding(tmp_path):
    """--compare: the int8 tower embeds ground-truth boxes almost as the float one does."""
    from vildtrain.models.miniclip import save_miniclip
    ckpt = str(tmp_path / "clip.pt")
    save_miniclip(tiny_clip(), ckpt)
    os.makedirs(tmp_path / "images")
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)).save(tmp_path / "images" / "a.png")
    coco = {"images": [{"id": 1, "file_name": "a.png", "width": 128, "height": 96}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 30]},
                            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [60, 20, 50, 60]}]}
    (tmp_path / "annotations.json").write_text(json.dumps(coco))
    n, mean, low = ie.compare_to_float(str(tmp_path), miniclip=ckpt)
    assert n == 2 and 0.99 < low <= mean <= 1.0 + 1e-6
