"""vildtrain crop_scores: the teacher's view of the first regions' crops folded
into a bundle's ensemble; golden crop embeddings and detections rewritten, and
removed again with --off."""
import hashlib
import json
import os
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from test_detector import tiny_clip
from test_export import bundle  # noqa: F401  (the tiny exported bundle fixture)
from test_image_temperature import cases, copy, detections  # noqa: F401  (copy: a fixture)
from vildtrain.export import image_encoder as ie
from vildtrain.export.crop_scores import set_crop_scores
from vildtrain.models.infer import Vocabulary, fold_crops
from vildtrain.models.losses import crop_embeddings

CROPS = {"regions": 10, "temperature": 0.04, "lambda_base": 0.0, "lambda_novel": 2 / 3}


@pytest.fixture()
def with_encoder(copy):  # noqa: F811
    ie.add_image_encoder(copy, clip=tiny_clip(), gap_scenes=3)
    return copy


def test_crops_are_written_and_rescore(with_encoder):
    before = {c: detections(with_encoder, c) for c in cases(with_encoder)}
    counts = set_crop_scores(with_encoder, CROPS, clip=tiny_clip())
    assert set(counts) == set(before) and before
    with open(os.path.join(with_encoder, "manifest.json")) as f:
        man = json.load(f)
    assert man["embedding"]["crops"] == CROPS
    for rel, digest in man["sha256"].items():
        with open(os.path.join(with_encoder, rel), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == digest, rel
    # the golden crops of the exact case (no resize) are the teacher's crop
    # embeddings of its refined boxes, cut from input.png: another path to the
    # same numbers than the exporter's (image.npy de-normalised, boxes decoded)
    graph = ie.encoder_graph(tiny_clip())
    enc = man["image_encoder"]
    teacher = SimpleNamespace(image_size=enc["input_size"], embed_dim=man["embedding"]["dim"],
                              encode_image=lambda x: graph(ie.normalise(x, enc["mean"], enc["std"])))
    case = os.path.join(with_encoder, "golden", "exact")
    img = Image.open(os.path.join(case, "input.png")).convert("RGB")
    img01 = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    boxes = torch.from_numpy(np.load(os.path.join(case, "boxes.npy")))
    want = crop_embeddings(teacher, img01, [boxes[:CROPS["regions"]]]).numpy()
    got = np.load(os.path.join(case, "crop_embeddings.npy"))
    assert got.shape == (min(CROPS["regions"], len(boxes)), man["embedding"]["dim"])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    # the teacher alone, sharp, on the first regions: their best class is
    # nearly certain, so the detections change
    set_crop_scores(with_encoder, {**CROPS, "temperature": 0.001, "lambda_base": 1.0, "lambda_novel": 1.0},
                    clip=tiny_clip())
    assert any(detections(with_encoder, c) != before[c] for c in before), "the crops changed no golden detection"
    assert any(d["score"] > 0.9 for c in before for d in detections(with_encoder, c))
    # and off again: the section and the files go, the detections come back
    set_crop_scores(with_encoder, None)
    with open(os.path.join(with_encoder, "manifest.json")) as f:
        assert "crops" not in json.load(f)["embedding"]
    for c in before:
        assert not os.path.exists(os.path.join(with_encoder, "golden", c, "crop_embeddings.npy"))
        got = detections(with_encoder, c)
        assert [d["label"] for d in got] == [d["label"] for d in before[c]]
        for g, w in zip(got, before[c]):
            assert abs(g["score"] - w["score"]) <= 1e-5 * max(1.0, w["score"])


def test_views_are_written(with_encoder):
    """--scales and --mirror: the manifest names the views and the golden crops
    are the teacher's embeddings of exactly those views, each crop also mirrored."""
    views = {**CROPS, "scales": [1.25], "mirror": True}
    set_crop_scores(with_encoder, views, clip=tiny_clip())
    with open(os.path.join(with_encoder, "manifest.json")) as f:
        man = json.load(f)
    assert man["embedding"]["crops"] == views
    graph = ie.encoder_graph(tiny_clip())
    enc = man["image_encoder"]
    case = os.path.join(with_encoder, "golden", "exact")
    img = Image.open(os.path.join(case, "input.png")).convert("RGB")
    img01 = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    boxes = torch.from_numpy(np.load(os.path.join(case, "boxes.npy")))[:CROPS["regions"]]
    one = SimpleNamespace(image_size=enc["input_size"], embed_dim=man["embedding"]["dim"],
                          encode_image=lambda x: graph(ie.normalise(x, enc["mean"], enc["std"])))
    mirrored = SimpleNamespace(image_size=enc["input_size"], embed_dim=man["embedding"]["dim"],
                               encode_image=lambda x: graph(ie.normalise(x.flip(-1), enc["mean"], enc["std"])))
    want = torch.nn.functional.normalize(crop_embeddings(one, img01, [boxes], scales=(1.25,))
                                         + crop_embeddings(mirrored, img01, [boxes], scales=(1.25,)), dim=-1)
    got = np.load(os.path.join(case, "crop_embeddings.npy"))
    np.testing.assert_allclose(got, want.numpy(), rtol=0, atol=1e-5)
    # the bundle's own two views give other crops
    set_crop_scores(with_encoder, CROPS, clip=tiny_clip())
    assert np.abs(np.load(os.path.join(case, "crop_embeddings.npy")) - got).max() > 1e-3
    with open(os.path.join(with_encoder, "manifest.json")) as f:
        assert json.load(f)["embedding"]["crops"] == CROPS


def test_refusals(bundle, with_encoder, tmp_path):  # noqa: F811
    plain = str(tmp_path / "plain")
    shutil.copytree(bundle[0], plain)
    with pytest.raises(ValueError, match="no image_encoder"):
        set_crop_scores(plain, CROPS, clip=tiny_clip())
    for bad, match in [({"regions": 0}, "regions"), ({"temperature": 0.0}, "temperature"),
                       ({"lambda_novel": 1.5}, "lambda_novel"), ({"scales": []}, "scales"),
                       ({"scales": [1, 1.5, 2, 3, 4]}, "scales"), ({"scales": [0.25]}, "scales")]:
        with pytest.raises(ValueError, match=match):
            set_crop_scores(with_encoder, {**CROPS, **bad}, clip=tiny_clip())
    with pytest.raises(FileNotFoundError):
        set_crop_scores(str(tmp_path / "none"), CROPS, clip=tiny_clip())


def test_fold_crops():
    torch.manual_seed(0)
    n, k, d = 6, 5, 8
    unit = lambda x: x / x.norm(dim=1, keepdim=True)  # noqa: E731
    vocab = Vocabulary([f"c{i}" for i in range(k)], unit(torch.randn(k, d)), [i % 2 == 0 for i in range(k)])
    probs = torch.softmax(torch.randn(n, k), dim=1)
    crops = unit(torch.randn(3, d))
    out = fold_crops(probs, crops, vocab, CROPS)
    pc = torch.softmax(crops @ vocab.embeddings.t() / CROPS["temperature"], dim=1)
    for i in range(n):
        for j in range(k):
            mu = CROPS["lambda_base"] if vocab.base[j] else CROPS["lambda_novel"]
            want = probs[i, j] if i >= 3 else probs[i, j] ** (1 - mu) * pc[i, j] ** mu
            assert abs(float(out[i, j]) - float(want)) < 1e-6
    assert torch.equal(fold_crops(probs, crops[:0], vocab, CROPS), probs)
