"""COCO detection JSON: building, RLE masks, and validation.

Segmentations are COCO *compressed RLE* (``{"size": [h, w], "counts": str}``,
column-major runs starting with background, pycocotools' string encoding), so
pycocotools and other COCO tools read them as they are.

Categories carry, besides COCO's id/name/supercategory: ``split`` ("base" |
"novel"), ``frequency`` (LVIS-style "f" | "c" | "r"), ``tier``, ``codepoints``
and ``synonyms``.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Iterable, Sequence

import numpy as np

from vildtrain.data.categories import Category

FREQUENCY_LETTER = {"frequent": "f", "common": "c", "rare": "r"}


# ---------------------------------------------------------------------------
# RLE.

def rle_counts(mask: np.ndarray) -> list[int]:
    """Uncompressed COCO run lengths of a bool HxW mask (column-major, first run is zeros)."""
    flat = np.asarray(mask, dtype=bool).ravel(order="F")
    if flat.size == 0:
        return []
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat[0]:
        runs.insert(0, 0)
    return [int(r) for r in runs]


def counts_to_string(counts: Sequence[int]) -> str:
    """pycocotools' rleToString: LEB128-like, 5 bits per char, deltas after the second run."""
    out = []
    for i, c in enumerate(counts):
        x = int(c)
        if i > 2:
            x -= int(counts[i - 2])
        more = True
        while more:
            ch = x & 0x1F
            x >>= 5
            more = (x != -1) if (ch & 0x10) else (x != 0)
            if more:
                ch |= 0x20
            out.append(chr(ch + 48))
    return "".join(out)


def string_to_counts(s: str) -> list[int]:
    """Inverse of counts_to_string (pycocotools' rleFrString)."""
    counts: list[int] = []
    p = 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            ch = ord(s[p]) - 48
            x |= (ch & 0x1F) << (5 * k)
            more = bool(ch & 0x20)
            p += 1
            k += 1
            if not more and (ch & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def rle_encode(mask: np.ndarray) -> dict[str, Any]:
    h, w = mask.shape
    return {"size": [int(h), int(w)], "counts": counts_to_string(rle_counts(mask))}


def rle_decode(rle: dict[str, Any]) -> np.ndarray:
    h, w = rle["size"]
    counts = rle["counts"]
    if isinstance(counts, str):
        counts = string_to_counts(counts)
    flat = np.zeros(h * w, dtype=bool)
    pos, val = 0, False
    for c in counts:
        if val:
            flat[pos:pos + c] = True
        pos += c
        val = not val
    return flat.reshape((w, h)).T


def rle_area(rle: dict[str, Any]) -> int:
    counts = rle["counts"]
    if isinstance(counts, str):
        counts = string_to_counts(counts)
    return int(sum(counts[1::2]))


def mask_bbox(mask: np.ndarray) -> tuple[float, float, float, float]:
    """Tight [x, y, w, h] of a bool mask's True pixels."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return (0.0, 0.0, 0.0, 0.0)
    return (float(cols[0]), float(rows[0]), float(cols[-1] - cols[0] + 1), float(rows[-1] - rows[0] + 1))


# ---------------------------------------------------------------------------
# Building a dataset.

def category_entry(c: Category) -> dict[str, Any]:
    return {"id": c.id, "name": c.name, "supercategory": c.group, "split": c.split,
            "frequency": FREQUENCY_LETTER[c.tier], "tier": c.tier, "codepoints": c.codepoints,
            "synonyms": list(c.synonyms)}


class Builder:
    """Accumulates images and annotations (objects with category_id, bbox, mask, area)."""

    def __init__(self, categories: Iterable[Category], info: dict[str, Any] | None = None):
        self.categories = [category_entry(c) for c in categories]
        self.info = dict(info or {})
        self.images: list[dict[str, Any]] = []
        self.annotations: list[dict[str, Any]] = []

    def add_image(self, file_name: str, width: int, height: int, objects: Iterable[Any]) -> int:
        image_id = len(self.images) + 1
        self.images.append({"id": image_id, "file_name": file_name, "width": int(width), "height": int(height)})
        for o in objects:
            self.annotations.append({
                "id": len(self.annotations) + 1, "image_id": image_id, "category_id": int(o.category_id),
                "bbox": [float(v) for v in o.bbox], "area": float(o.area), "iscrowd": 0,
                "segmentation": rle_encode(o.mask)})
        return image_id

    def to_dict(self) -> dict[str, Any]:
        return {"info": self.info,
                "licenses": [{"id": 1, "name": "see NOTICE: emoji art licences (Apache-2.0, CC-BY-4.0, "
                                               "CC-BY-SA-4.0, MIT)"}],
                "images": self.images, "annotations": self.annotations, "categories": self.categories}


# ---------------------------------------------------------------------------
# Validation.

def validate(data: dict[str, Any], check_masks: bool = True) -> list[str]:
    """Problems with a COCO detection dict; empty when valid.

    Checks required keys, unique ids, references, boxes inside the image with
    positive size, and (check_masks) that each RLE has the image's size, its
    area equals ``area`` and its tight extent equals ``bbox``.
    """
    errs: list[str] = []
    for k in ("images", "annotations", "categories"):
        if not isinstance(data.get(k), list):
            errs.append(f"missing or non-list key {k!r}")
    if errs:
        return errs
    cat_ids = set()
    for c in data["categories"]:
        for k in ("id", "name"):
            if k not in c:
                errs.append(f"category without {k!r}: {c}")
        if c.get("id") in cat_ids:
            errs.append(f"duplicate category id {c.get('id')}")
        cat_ids.add(c.get("id"))
    images: dict[int, dict] = {}
    for im in data["images"]:
        for k in ("id", "file_name", "width", "height"):
            if k not in im:
                errs.append(f"image without {k!r}: {im}")
        if im.get("id") in images:
            errs.append(f"duplicate image id {im.get('id')}")
        images[im.get("id")] = im
    ann_ids = set()
    for a in data["annotations"]:
        missing = [k for k in ("id", "image_id", "category_id", "bbox", "area", "iscrowd", "segmentation") if k not in a]
        if missing:
            errs.append(f"annotation {a.get('id')} without {missing}")
            continue
        if a["id"] in ann_ids:
            errs.append(f"duplicate annotation id {a['id']}")
        ann_ids.add(a["id"])
        if a["category_id"] not in cat_ids:
            errs.append(f"annotation {a['id']}: unknown category {a['category_id']}")
        im = images.get(a["image_id"])
        if im is None:
            errs.append(f"annotation {a['id']}: unknown image {a['image_id']}")
            continue
        x, y, w, h = a["bbox"]
        if not (w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= im["width"] and y + h <= im["height"]):
            errs.append(f"annotation {a['id']}: bbox {a['bbox']} outside image {im['width']}x{im['height']}")
        if a["area"] <= 0 or a["area"] > w * h:
            errs.append(f"annotation {a['id']}: area {a['area']} not in (0, bbox area]")
        if check_masks:
            seg = a["segmentation"]
            if not isinstance(seg, dict) or "counts" not in seg or "size" not in seg:
                errs.append(f"annotation {a['id']}: segmentation is not RLE")
                continue
            if list(seg["size"]) != [im["height"], im["width"]]:
                errs.append(f"annotation {a['id']}: RLE size {seg['size']} != image")
                continue
            m = rle_decode(seg)
            if int(m.sum()) != int(a["area"]):
                errs.append(f"annotation {a['id']}: RLE area {int(m.sum())} != area {a['area']}")
            if list(mask_bbox(m)) != [float(v) for v in a["bbox"]]:
                errs.append(f"annotation {a['id']}: bbox {a['bbox']} != mask extent {list(mask_bbox(m))}")
    return errs


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="vildtrain coco", description="Validate a COCO annotations file.")
    p.add_argument("annotations", help="path to annotations.json")
    p.add_argument("--no-masks", action="store_true", help="skip decoding masks")
    args = p.parse_args(argv)
    with open(args.annotations, encoding="utf-8") as f:
        data = json.load(f)
    errs = validate(data, check_masks=not args.no_masks)
    for e in errs[:50]:
        print(f"coco: {e}", file=sys.stderr)
    print(f"coco: {len(data.get('images', []))} images, {len(data.get('annotations', []))} annotations, "
          f"{len(errs)} problems")
    return 1 if errs else 0
