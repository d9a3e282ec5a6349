import hashlib
import os

import numpy as np
import pytest

from vildtrain.data import coco, scenes
from vildtrain.data.art import ArtLibrary
from vildtrain.data.categories import load_categories

SEEN = ("noto", "twemoji")


@pytest.fixture(scope="module")
def cats():
    return load_categories()


@pytest.fixture(scope="module")
def art(cats):
    return ArtLibrary(categories=cats)


def _digest(img, objs):
    h = hashlib.sha256(img.tobytes())
    for o in objs:
        h.update(repr((o.category_id, o.bbox, o.area, o.labelled, o.style)).encode())
        h.update(np.packbits(o.mask).tobytes())
    return h.hexdigest()


def test_same_seed_same_scene(art, cats):
    a = [_digest(*scenes.generate_scene(scenes.scene_rng(11, i), art, cats, SEEN)) for i in range(3)]
    b = [_digest(*scenes.generate_scene(scenes.scene_rng(11, i), art, cats, SEEN)) for i in range(3)]
    c = [_digest(*scenes.generate_scene(scenes.scene_rng(12, i), art, cats, SEEN)) for i in range(3)]
    assert a == b
    assert len(set(a)) == 3 and not set(a) & set(c)


def test_boxes_are_the_extent_of_disjoint_visible_masks(art, cats):
    n = 0
    for i in range(12):
        img, objs = scenes.generate_scene(scenes.scene_rng(3, i), art, cats, SEEN, label_novel=True)
        assert img.size == (384, 384) and img.mode == "RGB"
        union = np.zeros((384, 384), np.int32)
        for o in objs:
            assert o.mask.shape == (384, 384) and o.mask.dtype == bool
            assert o.bbox == coco.mask_bbox(o.mask)
            assert o.area == o.mask.sum() > 0
            x, y, w, h = o.bbox
            assert x >= 0 and y >= 0 and x + w <= 384 and y + h <= 384
            assert min(w, h) >= scenes.MIN_BOX
            union += o.mask
            n += 1
        assert union.max() <= 1  # later objects take pixels away from earlier ones
    assert n >= 30


def test_box_matches_the_pixels_the_object_changed(art, cats):
    # One object on a flat magenta background, no effects. A pixel changed by more
    # than 255 * MASK_THRESHOLD has object alpha above the threshold, so it must be
    # in the mask and the box; the box's edge rows and columns hold changed pixels.
    flat = lambda rng, w, h: np.full((h, w, 3), (255.0, 0.0, 255.0), np.float32)
    checked = 0
    for i in range(10):
        img, objs = scenes.generate_scene(scenes.scene_rng(5, i), art, cats, SEEN, min_objects=1, max_objects=1,
                                          max_distractors=0, jpeg_p=0, effects=False, background=flat)
        if not objs:
            continue
        (o,) = objs
        diff = np.abs(np.asarray(img, np.int16) - np.array([255, 0, 255])).max(-1)
        strong = diff > 255 * scenes.MASK_THRESHOLD + 1
        assert not (strong & ~o.mask).any()
        x, y, w, h = (int(v) for v in o.bbox)
        inside = diff[y:y + h, x:x + w] > 0
        assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
        assert ((diff > 0) & o.mask).sum() >= 0.9 * o.area
        checked += 1
    assert checked >= 8


def test_occluded_part_leaves_the_mask():
    canvas = np.zeros((40, 40, 3), np.float32)
    layers = []
    square = np.ones((20, 20), np.float32)
    red = np.full((20, 20, 3), 200, np.float32)
    scenes._paste(canvas, layers, red, square, 0, 0, 1, "noto")
    scenes._paste(canvas, layers, red, square, 10, 0, 2, "noto")  # covers the right half of the first
    first = layers[0].vis > scenes.MASK_THRESHOLD
    assert first[:, :10].all() and not first[:, 10:].any()
    assert (layers[1].vis > scenes.MASK_THRESHOLD).all()


def test_novel_objects_unlabelled_in_training_scenes(art, cats):
    novel = {c.id for c in cats if c.split == "novel"}
    seen_novel = 0
    for i in range(15):
        _, objs = scenes.generate_scene(scenes.scene_rng(8, i), art, cats, SEEN)
        for o in objs:
            assert o.labelled == (o.category_id not in novel)
            seen_novel += o.category_id in novel
    assert seen_novel > 0


def test_heldout_style_only(art, cats):
    for style in ("openmoji", "fluent3d"):
        _, objs = scenes.generate_scene(scenes.scene_rng(1, 0), art, cats, (style,), min_objects=6)
        assert objs and {o.style for o in objs} == {style}


def test_background_deterministic():
    a = scenes.random_background(np.random.default_rng(4), 96, 64)
    b = scenes.random_background(np.random.default_rng(4), 96, 64)
    assert a.size == (96, 64) and a.mode == "RGB" and a.tobytes() == b.tobytes()
    kinds = {scenes.random_background(np.random.default_rng(s), 64, 64).tobytes() for s in range(10)}
    assert len(kinds) == 10


def _tree_digest(root):
    h = hashlib.sha256()
    for dirpath, _, files in sorted(os.walk(root)):
        for f in sorted(files):
            h.update(f.encode())
            with open(os.path.join(dirpath, f), "rb") as fh:
                h.update(fh.read())
    return h.hexdigest()


def test_written_sets_are_reproducible_and_valid_coco(tmp_path, art, cats):
    a = scenes.write_set(str(tmp_path / "a"), "openmoji", 6, art=art, categories=cats)
    scenes.write_set(str(tmp_path / "b"), "openmoji", 6, art=art, categories=cats)
    assert _tree_digest(tmp_path / "a") == _tree_digest(tmp_path / "b")
    assert coco.validate(a) == []
    assert len(a["images"]) == 6 and len(os.listdir(tmp_path / "a" / "images")) == 6
    assert a["info"]["seed"] == scenes.HELDOUT_SEEDS["openmoji"]
    assert len(a["categories"]) == len(cats)


def test_train_set_annotates_base_only_heldout_annotates_all(tmp_path, art, cats):
    novel = {c.id for c in cats if c.split == "novel"}
    train = scenes.write_set(str(tmp_path / "t"), "train", 10, seed=1, art=art, categories=cats)
    held = scenes.write_set(str(tmp_path / "s"), "seen", 10, art=art, categories=cats)
    assert coco.validate(train) == [] and coco.validate(held) == []
    assert train["annotations"] and not {a["category_id"] for a in train["annotations"]} & novel
    assert {a["category_id"] for a in held["annotations"]} & novel


def test_cli_writes_a_set(tmp_path):
    assert scenes.main(["--set", "fluent3d", "--count", "2", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "annotations.json").exists()
    with pytest.raises(SystemExit):
        scenes.main(["--set", "nope", "--count", "1"])


def test_grid_scene_puts_one_object_per_cell(cats, art):
    for i in range(4):
        rng = scenes.scene_rng(21, i)
        img, objs = scenes.generate_grid_scene(rng, art, cats, SEEN, sides=(4,), empty_p=0.0, distractor_p=0.0)
        assert img.size == (384, 384)
        # 16 cells, each object fits its 96 px cell: none is hidden by a neighbour.
        assert len(objs) == 16, len(objs)
        cells = set()
        for o in objs:
            x, y, w, h = o.bbox
            assert w <= 96 * 1.5 and h <= 96 * 1.5
            cells.add((int((x + w / 2) // 96), int((y + h / 2) // 96)))
            assert o.mask.sum() == o.area
        assert len(cells) == 16
    a = _digest(*scenes.generate_grid_scene(scenes.scene_rng(21, 0), art, cats, SEEN))
    b = _digest(*scenes.generate_grid_scene(scenes.scene_rng(21, 0), art, cats, SEEN))
    assert a == b
    with pytest.raises(ValueError, match="grid sides"):
        scenes.generate_grid_scene(scenes.scene_rng(21, 0), art, cats, SEEN, sides=())


def test_bench_counts_labelled_objects_of_grid_and_ordinary_scenes():
    rate, grid = scenes.benchmark(count=3, grid=True)
    _, single = scenes.benchmark(count=3, objects=(1, 1))
    assert rate > 0
    # one object per ordinary scene; a grid of at least 3 x 3 cells, 80% of them filled
    assert single <= 1 and grid >= 6, (single, grid)


def test_random_convolution_of_a_sprite_changes_its_colours_and_keeps_its_outline():
    """randconv_p=0 draws nothing more from the generator; randconv_p=1 convolves
    every sprite: the alpha is the sprite's own, the colours inside it change,
    keep the sprite's mean, and stay in 0-255."""
    import numpy as np
    from PIL import Image

    from vildtrain.data.scenes import make_sprite, randconv_sprite
    im = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    im.paste((200, 60, 60, 255), (8, 8, 32, 56))
    im.paste((40, 160, 220, 255), (32, 8, 56, 56))
    r0, r1 = np.random.default_rng(4), np.random.default_rng(4)
    a = make_sprite(r0, im, 48, randconv_p=0.0)
    b = make_sprite(r1, im, 48)
    assert np.array_equal(a[0], b[0]) and r0.random() == r1.random()
    plain, alpha = make_sprite(np.random.default_rng(4), im, 48, rotate_p=0, jitter=0, blur_p=0)
    conv, alpha2 = make_sprite(np.random.default_rng(4), im, 48, rotate_p=0, jitter=0, blur_p=0, randconv_p=1.0)
    assert np.array_equal(alpha, alpha2)
    inside = alpha > 0.99
    changed = [randconv_sprite(np.random.default_rng(seed), plain, alpha) for seed in range(8)]
    for out in changed:
        assert out.shape == plain.shape and out.dtype == np.float32
        assert out.min() >= 0 and out.max() <= 255
        assert abs(out[inside].mean() - plain[inside].mean()) < 25
    assert max(np.abs(out[inside] - plain[inside]).mean() for out in changed) > 10
    assert not np.array_equal(conv, plain)


def test_shading_is_an_opt_in_that_leaves_other_scenes_alone():
    """shade_p=0 draws nothing more from the generator (every set generated before
    the augmentation existed is unchanged); shade_p=1 lights every sprite: same
    alpha, new colours, brighter towards the light."""
    import numpy as np
    from PIL import Image

    from vildtrain.data.scenes import make_sprite, shade_sprite
    im = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    im.paste((200, 60, 60, 255), (8, 8, 56, 56))
    r0, r1 = np.random.default_rng(4), np.random.default_rng(4)
    a = make_sprite(r0, im, 48, shade_p=0.0)
    b = make_sprite(r1, im, 48)
    assert np.array_equal(a[0], b[0]) and r0.random() == r1.random()
    rgb, alpha = make_sprite(np.random.default_rng(4), im, 48, rotate_p=0, jitter=0, blur_p=0)
    lit = shade_sprite(np.random.default_rng(1), rgb, alpha)
    assert lit.shape == rgb.shape and lit.dtype == np.float32
    inside = alpha > 0.99
    assert np.abs(lit[inside] - rgb[inside]).mean() > 5
    # lit from above: the upper half of the square is brighter than the lower half
    h = alpha.shape[0]
    top, bottom = lit[: h // 2][inside[: h // 2]].mean(), lit[h // 2:][inside[h // 2:]].mean()
    assert top > bottom
