"""Emoji art by category and style, as tightly cropped RGBA images (cached in memory).

Styles: "noto" and "twemoji" (64 px PNGs straight from the npm packages) are
the detector's training styles; "openmoji" and "fluent3d" (ART_SIZE px PNGs
built by ``python3 -m vildtrain assets``) are the evaluation styles. The
teacher (the mini-CLIP) sees more art than the detector's labels, as CLIP saw
the web: :data:`STYLES_TEACHER` adds OpenMoji and the Iconify sets of
:data:`~vildtrain.data.assets.ICONIFY_STYLES`. Fluent 3D stays out of every
training set.
"""
from __future__ import annotations

import os
import threading
from typing import Iterable

from PIL import Image

from vildtrain.data.assets import ICONIFY_STYLES
from vildtrain.data.cache import MissingAssetError, art_dir, cache_root, norm_key, npm_dir
from vildtrain.data.categories import Category, Distractor, load_categories, load_distractors

STYLES_TRAIN: tuple[str, ...] = ("noto", "twemoji")
STYLES_HELDOUT: tuple[str, ...] = ("openmoji", "fluent3d")
STYLES_EXTRA: tuple[str, ...] = tuple(ICONIFY_STYLES)
ALL_STYLES: tuple[str, ...] = STYLES_TRAIN + STYLES_HELDOUT + STYLES_EXTRA
# what the mini-CLIP learns from: every style but Fluent 3D, which no training ever sees
STYLES_TEACHER: tuple[str, ...] = STYLES_TRAIN + ("openmoji",) + STYLES_EXTRA


def training_styles(spec: str) -> tuple[str, ...]:
    """The styles a trainer's ``--styles`` names: "teacher" (:data:`STYLES_TEACHER`),
    "train" (:data:`STYLES_TRAIN`) or a comma-separated list. Fluent 3D is
    refused: it is held out from every training."""
    if spec == "teacher":
        return STYLES_TEACHER
    if spec == "train":
        return STYLES_TRAIN
    styles = tuple(s.strip() for s in spec.split(",") if s.strip())
    for s in styles:
        if s not in ALL_STYLES:
            raise ValueError(f"unknown style {s!r}; styles are {', '.join(ALL_STYLES)}")
    if "fluent3d" in styles:
        raise ValueError("fluent3d is held out from every training")
    if not styles:
        raise ValueError("no style given")
    return styles


def style_dir(style: str, cache_dir: str | None = None) -> str:
    """Folder holding one style's PNGs; raises MissingAssetError with the fix if absent."""
    if style == "noto":
        return os.path.join(npm_dir("emoji-datasource-google", cache_dir, "img/google/64"), "img", "google", "64")
    if style == "twemoji":
        return os.path.join(npm_dir("emoji-datasource-twitter", cache_dir, "img/twitter/64"), "img", "twitter", "64")
    if style in STYLES_HELDOUT or style in STYLES_EXTRA:
        d = art_dir(style, cache_dir)
        if not os.path.isdir(d) or not os.path.exists(os.path.join(d, ".vild-stamp")):
            raise MissingAssetError(f"{style} art not built ({d}); run: python3 -m vildtrain assets "
                                    f"(after scripts/fetch-npm.sh)")
        return d
    raise ValueError(f"art: unknown style {style!r}; styles are {', '.join(ALL_STYLES)}")


def crop_to_alpha(im: Image.Image) -> Image.Image:
    """RGBA copy cropped to the bounding box of alpha > 0."""
    im = im.convert("RGBA")
    box = im.getchannel("A").getbbox()
    if box is None:
        raise ValueError("art: image is fully transparent")
    return im.crop(box)


class ArtLibrary:
    """Loads, crops and caches emoji art. Thread-safe; cheap to copy into DataLoader workers (lazy)."""

    def __init__(self, cache_dir: str | None = None, styles: Iterable[str] = ALL_STYLES,
                 categories: list[Category] | None = None, distractors: list[Distractor] | None = None):
        self.cache_dir = cache_root(cache_dir)
        self.styles = tuple(styles)
        for s in self.styles:
            if s not in ALL_STYLES:
                raise ValueError(f"art: unknown style {s!r}; styles are {', '.join(ALL_STYLES)}")
        self.categories = categories if categories is not None else load_categories()
        self._by_id = {c.id: c for c in self.categories}
        self.distractors = distractors if distractors is not None else load_distractors()
        self._index: dict[str, dict[str, str]] = {}
        self._images: dict[tuple[str, str], Image.Image] = {}
        self._distractor_lists: dict[str, list[Image.Image]] = {}
        self._lock = threading.Lock()
        self.memo: dict = {}  # derived data other modules cache per library (e.g. eligible categories)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_lock"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _files(self, style: str) -> dict[str, str]:
        if style not in self.styles:
            raise ValueError(f"art: style {style!r} not loaded (library styles: {', '.join(self.styles)})")
        idx = self._index.get(style)
        if idx is None:
            folder = style_dir(style, self.cache_dir)
            idx = {norm_key(n[:-4]): os.path.join(folder, n) for n in os.listdir(folder) if n.endswith(".png")}
            self._index[style] = idx
        return idx

    def category(self, category_id: int) -> Category:
        return self._by_id[category_id]

    def has(self, category_id: int, style: str) -> bool:
        c = self._by_id.get(category_id)
        return c is not None and style in self.styles and c.key in self._files(style)

    def ids_with_style(self, style: str) -> list[int]:
        """Category ids that have art in ``style``."""
        files = self._files(style)
        return [c.id for c in self.categories if c.key in files]

    def _load(self, key: str, style: str) -> Image.Image:
        ck = (key, style)
        im = self._images.get(ck)
        if im is None:
            path = self._files(style).get(key)
            if path is None:
                raise KeyError(f"art: no {style} image for {key}")
            with Image.open(path) as f:
                im = crop_to_alpha(f)
            im.load()
            with self._lock:
                self._images[ck] = im
        return im

    def image(self, category_id: int, style: str) -> Image.Image:
        """RGBA art of a category, tightly cropped to alpha > 0. Shared: do not modify in place."""
        return self._load(self._by_id[category_id].key, style)

    def distractor_images(self, style: str) -> list[Image.Image]:
        """RGBA faces, hands, symbols and flags that are not categories, in ``style``."""
        out = self._distractor_lists.get(style)
        if out is None:
            files = self._files(style)
            out = [self._load(d.key, style) for d in self.distractors if d.key in files]
            self._distractor_lists[style] = out
        return out
