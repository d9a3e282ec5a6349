"""Art assets: turning the held-out styles' npm packages into PNGs.

scripts/fetch-npm.sh fetches and integrity-checks the npm tarballs and unpacks
them under ``$VILD_CACHE/npm/<name>/`` (:mod:`vildtrain.data.cache` says where).
This module does what comes after:

* rasterises the OpenMoji SVGs of the categories and distractors with
  ``rsvg-convert`` to ``$VILD_CACHE/art/openmoji/<key>.png`` (ART_SIZE px);
* decodes the Fluent 3D WebP files of the same emoji and rescales them to
  ``$VILD_CACHE/art/fluent3d/<key>.png`` (ART_SIZE px).

* rasterises the teacher styles (:data:`ICONIFY_STYLES`: EmojiOne 2, EmojiOne 1,
  FxEmoji, Noto 1 and Streamline, from the ``@iconify-json`` packages, whose
  icons are named rather than keyed by code point) to
  ``$VILD_CACHE/art/<style>/<key>.png`` (ART_SIZE px). An icon is matched to
  an emoji by its name: first the emoji's CLDR label, then its shortcodes
  (emojibase, GitHub, JoyPixels, ...), a shortcode only when it is no other
  emoji's label; names compare lower-case with everything but letters and
  digits removed.

Noto (emoji-datasource-google) and Twemoji (emoji-datasource-twitter) PNGs are
used in place (64 px). ``python3 -m vildtrain assets`` does it all; a re-run
is a no-op (a stamp file records what was built).

``<key>`` is :func:`~vildtrain.data.cache.norm_key` of the code points: lower-case hex without
leading zeros and without FE0F variation selectors, joined by "-".
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import json
import re
import tempfile
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable

from PIL import Image

from vildtrain.data.cache import MissingAssetError, art_dir, fluent_sources, norm_key, npm_dir, openmoji_sources
from vildtrain.data.categories import load_categories, load_distractors

ART_SIZE = 160  # px, side of the rasterised OpenMoji / Fluent 3D / teacher-style images

# Teacher styles from Iconify's JSON packages: style -> npm package.
ICONIFY_STYLES: dict[str, str] = {
    "emojione": "@iconify-json/emojione",
    "emojione1": "@iconify-json/emojione-v1",
    "fxemoji": "@iconify-json/fxemoji",
    "notov1": "@iconify-json/noto-v1",
    "streamline": "@iconify-json/streamline-emojis",
}


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _emoji_names(cache_dir: str | None) -> tuple[dict[str, str], dict[str, list[str]]]:
    """(label slug -> norm_key, norm_key -> shortcode slugs) from emojibase-data."""
    base = os.path.join(npm_dir("emojibase-data", cache_dir, "en/data.json"), "en")
    labels: dict[str, str] = {}
    for e in json.load(open(os.path.join(base, "data.json"), encoding="utf-8")):
        labels.setdefault(_slug(e["label"]), norm_key(e["hexcode"]))
    shortcodes: dict[str, list[str]] = {}
    for f in sorted(glob.glob(os.path.join(base, "shortcodes", "*.json"))):
        for hexcode, v in json.load(open(f, encoding="utf-8")).items():
            for sc in [v] if isinstance(v, str) else v:
                shortcodes.setdefault(norm_key(hexcode), []).append(_slug(sc))
    return labels, shortcodes


def iconify_sources(style: str, keys: Iterable[str], cache_dir: str | None = None) -> dict[str, str]:
    """norm_key -> standalone SVG text of one Iconify teacher style, for the ``keys`` it has."""
    pkg = npm_dir(ICONIFY_STYLES[style], cache_dir, "icons.json")
    data = json.load(open(os.path.join(pkg, "icons.json"), encoding="utf-8"))
    icons: dict[str, dict] = data["icons"]
    by_slug: dict[str, str] = {}
    for name in icons:
        by_slug.setdefault(_slug(name), name)
    for name, alias in (data.get("aliases") or {}).items():
        # plain aliases only: a rotated or flipped alias is not the same picture
        if alias.get("parent") in icons and set(alias) <= {"parent"}:
            by_slug.setdefault(_slug(name), alias["parent"])
    labels, shortcodes = _emoji_names(cache_dir)
    label_of = {k: s for s, k in labels.items()}
    out: dict[str, str] = {}
    for key in keys:
        names = [label_of[key]] if key in label_of else []
        names += [s for s in shortcodes.get(key, []) if labels.get(s, key) == key]
        icon = next((by_slug[n] for n in names if n in by_slug), None)
        if icon is None:
            continue
        ic = icons[icon]
        left, top = ic.get("left", data.get("left", 0)), ic.get("top", data.get("top", 0))
        w, h = ic.get("width", data.get("width", 16)), ic.get("height", data.get("height", 16))
        out[key] = (f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
                    f'viewBox="{left} {top} {w} {h}">{ic["body"]}</svg>')
    return out


def _rasterise_svg_text(svg: str, dst: str, size: int) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".svg", dir=os.path.dirname(dst), delete=False,
                                     encoding="utf-8") as f:
        f.write(svg)
    try:
        _rasterise_svg(f.name, dst, size)
    finally:
        os.unlink(f.name)


def _rasterise_svg(src: str, dst: str, size: int) -> None:
    exe = shutil.which("rsvg-convert")
    if exe is None:
        raise MissingAssetError("rsvg-convert not found; install librsvg2-bin (scripts/setup.sh does)")
    tmp = dst + ".tmp.png"
    subprocess.run([exe, "-w", str(size), "-h", str(size), "-a", "-f", "png", "-o", tmp, src],
                   check=True, capture_output=True)
    os.replace(tmp, dst)


def _decode_webp(src: str, dst: str, size: int) -> None:
    with Image.open(src) as im:
        im = im.convert("RGBA")
        if im.size != (size, size):
            im = im.resize((size, size), Image.LANCZOS)
        tmp = dst + ".tmp.png"
        im.save(tmp, optimize=False)
    os.replace(tmp, dst)


def wanted_keys() -> list[str]:
    """norm_keys of every category and distractor (the art that scenes use)."""
    keys = {norm_key(c.codepoints) for c in load_categories()}
    keys |= {norm_key(d.codepoints) for d in load_distractors()}
    return sorted(keys)


def _stamp(keys: Iterable[str], size: int) -> str:
    h = hashlib.sha256(f"size={size}\n".encode())
    for k in keys:
        h.update(k.encode() + b"\n")
    return h.hexdigest()


def build_style(style: str, keys: list[str], cache_dir: str | None = None, size: int = ART_SIZE,
                workers: int = 2) -> tuple[int, int]:
    """Rasterise/decode one held-out style. Returns (written, available).

    Idempotent: files already present are kept; once the whole set is built a
    stamp file makes the next call return without touching anything.
    """
    if style == "openmoji":
        sources, convert = openmoji_sources(cache_dir), _rasterise_svg
    elif style == "fluent3d":
        sources, convert = fluent_sources(cache_dir), _decode_webp
    elif style in ICONIFY_STYLES:
        sources, convert = iconify_sources(style, keys, cache_dir), _rasterise_svg_text
    else:
        raise ValueError(f"assets: no build step for style {style!r}")
    out = art_dir(style, cache_dir)
    present = [k for k in keys if k in sources]
    stamp_path = os.path.join(out, ".vild-stamp")
    stamp = _stamp(present, size)
    if os.path.exists(stamp_path) and open(stamp_path).read().strip() == stamp:
        return 0, len(present)
    os.makedirs(out, exist_ok=True)
    missing = [k for k in present if not os.path.exists(os.path.join(out, k + ".png"))]

    def one(k: str) -> None:
        convert(sources[k], os.path.join(out, k + ".png"), size)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(one, missing))
    with open(stamp_path, "w") as f:
        f.write(stamp + "\n")
    return len(missing), len(present)


def ensure_art(cache_dir: str | None = None, styles: Iterable[str] = ("openmoji", "fluent3d", *ICONIFY_STYLES),
               keys: list[str] | None = None, quiet: bool = False) -> None:
    """Check the npm packages and build the derived held-out art (idempotent)."""
    for pkg, check in (("emoji-datasource-google", "img/google/64"),
                       ("emoji-datasource-twitter", "img/twitter/64"),
                       ("emojibase-data", "en/data.json")):
        npm_dir(pkg, cache_dir, check)
    keys = wanted_keys() if keys is None else keys
    for style in styles:
        written, avail = build_style(style, keys, cache_dir)
        if not quiet:
            print(f"assets: {style}: {avail} images available, {written} written -> {art_dir(style, cache_dir)}",
                  file=sys.stderr)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="vildtrain assets",
                                description="Rasterise OpenMoji and the teacher styles' SVGs and decode Fluent 3D "
                                            "WebPs into $VILD_CACHE/art.")
    p.add_argument("--cache", default=None, help="cache dir (default $VILD_CACHE or <repo>/.cache)")
    args = p.parse_args(argv)
    try:
        ensure_art(args.cache)
    except MissingAssetError as e:
        print(f"assets: {e}", file=sys.stderr)
        return 1
    return 0


__all__ = ["ART_SIZE", "ICONIFY_STYLES", "iconify_sources", "wanted_keys", "build_style", "ensure_art", "main"]
