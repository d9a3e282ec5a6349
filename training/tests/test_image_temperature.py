"""vildtrain image_temperature: the image head's own temperature written into an
exported bundle, its golden detections rescored from the goldens' own region
outputs, its digests recomputed."""
import hashlib
import json
import os
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from test_export import bundle  # noqa: F401  (the tiny exported bundle fixture)
from vildtrain.export.image_temperature import set_image_temperature
from vildtrain.models.infer import Vocabulary, class_probabilities


def detections(out, case):
    with open(os.path.join(out, "golden", case, "detections.json")) as f:
        return json.load(f)


def cases(out):
    return [c for c in sorted(os.listdir(os.path.join(out, "golden")))
            if os.path.exists(os.path.join(out, "golden", c, "detections.json"))]


@pytest.fixture()
def copy(bundle, tmp_path):  # noqa: F811
    out = str(tmp_path / "bundle")
    shutil.copytree(bundle[0], out)
    return out


def test_the_exporters_setting_gives_the_exporters_goldens(bundle, copy):  # noqa: F811
    set_image_temperature(copy, 0)
    assert cases(copy), "the bundle has no golden image cases"
    for case in cases(copy):
        want, got = detections(bundle[0], case), detections(copy, case)
        assert [d["label"] for d in got] == [d["label"] for d in want]
        for g, w in zip(got, want):
            np.testing.assert_allclose(g["box"], w["box"], rtol=0, atol=1e-4)
            assert abs(g["score"] - w["score"]) <= 1e-5 * max(1.0, w["score"])


def test_a_temperature_is_written_and_rescores(bundle, copy):  # noqa: F811
    set_image_temperature(copy, 0.03)
    with open(os.path.join(copy, "manifest.json")) as f:
        man = json.load(f)
    assert man["embedding"]["image_temperature"] == 0.03
    for rel, digest in man["sha256"].items():
        with open(os.path.join(copy, rel), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == digest, rel
    changed = any(detections(copy, c) != detections(bundle[0], c) for c in cases(copy))
    assert changed, "a three times warmer image head changed no golden detection"
    set_image_temperature(copy, 0)   # and back: the field goes, the goldens return
    with open(os.path.join(copy, "manifest.json")) as f:
        assert "image_temperature" not in json.load(f)["embedding"]


def test_refusals(copy, tmp_path):
    with pytest.raises(ValueError, match="positive"):
        set_image_temperature(copy, -1.0)
    with pytest.raises(FileNotFoundError):
        set_image_temperature(str(tmp_path), 0.03)
    with open(os.path.join(copy, "manifest.json")) as f:
        man = json.load(f)
    man["mask_head"] = {"graph": "mask_head.onnx"}
    with open(os.path.join(copy, "manifest.json"), "w") as f:
        json.dump(man, f)
    with pytest.raises(ValueError, match="mask head"):
        set_image_temperature(copy, 0.03)


def test_class_probabilities_image_temperature():
    torch.manual_seed(0)
    d, n, k = 8, 5, 6
    unit = lambda x: x / x.norm(dim=1, keepdim=True)  # noqa: E731
    r = SimpleNamespace(text_embeddings=unit(torch.randn(n, d)), image_embeddings=unit(torch.randn(n, d)))
    vocab = Vocabulary([str(i) for i in range(k)], unit(torch.randn(k, d)), [i % 2 == 0 for i in range(k)])
    bg = unit(torch.randn(1, d))[0]
    tau, lam = 0.05, 2 / 3
    p_img = class_probabilities(r, vocab, bg, "image", tau, lam, image_temperature=0.15)
    torch.testing.assert_close(p_img, class_probabilities(r, vocab, bg, "image", 0.15, lam))
    p_text = class_probabilities(r, vocab, bg, "text", tau, lam, image_temperature=0.15)
    torch.testing.assert_close(p_text, class_probabilities(r, vocab, bg, "text", tau, lam))
    ens = class_probabilities(r, vocab, bg, "ensemble", tau, lam, image_temperature=0.15)
    base = torch.tensor(vocab.base).view(1, -1)
    want = torch.where(base, p_text.pow(lam) * p_img.pow(1 - lam), p_text.pow(1 - lam) * p_img.pow(lam))
    torch.testing.assert_close(ens, want)


def test_the_rebuilt_detector_scores_with_the_bundles_setting(copy):
    from vildtrain.models.detector_from_bundle import detector_from_bundle
    assert detector_from_bundle(copy).cfg.image_temperature == 0.0
    set_image_temperature(copy, 0.03)
    assert detector_from_bundle(copy).cfg.image_temperature == 0.03
