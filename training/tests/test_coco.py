import numpy as np
import pytest

from vildtrain.data import coco
from vildtrain.data.categories import load_categories
from vildtrain.data.scenes import SceneObject


def test_rle_string_known_values():
    # 2x2 mask [[0,1],[1,1]]: column-major 0,1,1,1 -> runs [1, 3] -> "13"
    m = np.array([[0, 1], [1, 1]], bool)
    assert coco.rle_counts(m) == [1, 3]
    assert coco.rle_encode(m) == {"size": [2, 2], "counts": "13"}
    # first pixel set: leading zero-length background run
    assert coco.rle_counts(np.array([[1, 0]], bool)) == [0, 1, 1]
    # deltas after the second run can be negative (pycocotools' scheme)
    assert coco.string_to_counts(coco.counts_to_string([5, 10, 20, 3])) == [5, 10, 20, 3]
    # 40 = 8 + 1*32: low group 8 with the continuation bit (8|32 -> "X"), then 1 -> "1"
    assert coco.counts_to_string([40]) == "X1"


@pytest.mark.parametrize("shape,p", [((1, 1), 0.5), ((7, 13), 0.3), ((64, 48), 0.05), ((32, 32), 0.97)])
def test_rle_round_trip(shape, p):
    rng = np.random.default_rng(1)
    for _ in range(5):
        m = rng.random(shape) < p
        r = coco.rle_encode(m)
        assert np.array_equal(coco.rle_decode(r), m)
        assert coco.rle_area(r) == int(m.sum())
    for m in (np.zeros(shape, bool), np.ones(shape, bool)):
        assert np.array_equal(coco.rle_decode(coco.rle_encode(m)), m)


def _dataset():
    cats = load_categories()
    b = coco.Builder(cats[:3], info={"set": "test"})
    m = np.zeros((20, 30), bool)
    m[2:6, 3:10] = True
    b.add_image("a.jpg", 30, 20, [SceneObject(1, (3.0, 2.0, 7.0, 4.0), m, float(m.sum()), True)])
    b.add_image("b.jpg", 30, 20, [])
    return b.to_dict()


def test_builder_output_is_valid():
    d = _dataset()
    assert coco.validate(d) == []
    cat = d["categories"][0]
    assert {"id", "name", "split", "frequency", "codepoints", "synonyms", "supercategory"} <= set(cat)
    a = d["annotations"][0]
    assert a["iscrowd"] == 0 and a["area"] == 28 and a["bbox"] == [3.0, 2.0, 7.0, 4.0]


@pytest.mark.parametrize("breakage,needle", [
    (lambda d: d["annotations"].append(dict(d["annotations"][0])), "duplicate annotation id"),
    (lambda d: d["images"].append(dict(d["images"][0])), "duplicate image id"),
    (lambda d: d["annotations"][0].update(category_id=999), "unknown category"),
    (lambda d: d["annotations"][0].update(image_id=42), "unknown image"),
    (lambda d: d["annotations"][0].update(bbox=[25.0, 2.0, 7.0, 4.0]), "outside image"),
    (lambda d: d["annotations"][0].update(bbox=[3.0, 2.0, 8.0, 4.0]), "mask extent"),
    (lambda d: d["annotations"][0].update(area=20.0), "area"),
    (lambda d: d["annotations"][0].pop("segmentation"), "without"),
    (lambda d: d.pop("categories"), "categories"),
])
def test_validate_catches(breakage, needle):
    d = _dataset()
    breakage(d)
    errs = coco.validate(d)
    assert errs and any(needle in e for e in errs), errs
