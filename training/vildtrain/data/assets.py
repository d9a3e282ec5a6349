"""Art assets: where the pinned npm packages live, and turning them into PNGs.

scripts/fetch-npm.sh fetches and integrity-checks the npm tarballs and unpacks
them under ``$VILD_CACHE/npm/<name>/``. This module does what comes after:

* rasterises the OpenMoji SVGs of the categories and distractors with
  ``rsvg-convert`` to ``$VILD_CACHE/art/openmoji/<key>.png`` (ART_SIZE px);
* decodes the Fluent 3D WebP files of the same emoji and rescales them to
  ``$VILD_CACHE/art/fluent3d/<key>.png`` (ART_SIZE px).

Noto (emoji-datasource-google) and Twemoji (emoji-datasource-twitter) PNGs are
used in place (64 px). ``python3 -m vildtrain assets`` does it all; a re-run
is a no-op (a stamp file records what was built).

``<key>`` is :func:`norm_key` of the code points: lower-case hex without
leading zeros and without FE0F variation selectors, joined by "-".
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable

from PIL import Image

ART_SIZE = 160  # px, side of the rasterised OpenMoji / Fluent 3D images

PACKAGES = {
    "noto": "emoji-datasource-google",
    "twemoji": "emoji-datasource-twitter",
    "emojibase": "emojibase-data",
    "openmoji": "openmoji",
    "fluent3d": "@lobehub/fluent-emoji-3d",
}


class MissingAssetError(RuntimeError):
    """An npm package or a derived art folder is not where it should be."""


def repo_root() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.dirname(os.path.dirname(here))


def cache_root(cache_dir: str | None = None) -> str:
    """$VILD_CACHE, default <repo>/.cache."""
    if cache_dir:
        return cache_dir
    return os.environ.get("VILD_CACHE") or os.path.join(repo_root(), ".cache")


def npm_dir(package: str, cache_dir: str | None = None, check: str | None = None) -> str:
    """Directory of an unpacked npm package; raises MissingAssetError if absent.

    ``check`` is a path inside the package that must exist too.
    """
    d = os.path.join(cache_root(cache_dir), "npm", package)
    probe = os.path.join(d, check) if check else d
    if not os.path.exists(probe):
        raise MissingAssetError(
            f"npm package {package} is missing ({probe} not found); "
            f"run scripts/fetch-npm.sh (or make setup) first"
        )
    return d


def norm_key(codepoints: str) -> str:
    """Canonical file key: '1F336-FE0F' and '1f336' both give '1f336'; '0023' gives '23'."""
    parts = [p for p in codepoints.replace("_", "-").lower().split("-") if p]
    return "-".join(format(int(p, 16), "x") for p in parts if p != "fe0f")


def art_dir(style: str, cache_dir: str | None = None) -> str:
    return os.path.join(cache_root(cache_dir), "art", style)


def _index(folder: str, suffix: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in os.listdir(folder):
        if name.endswith(suffix):
            out.setdefault(norm_key(name[: -len(suffix)]), os.path.join(folder, name))
    return out


def openmoji_sources(cache_dir: str | None = None) -> dict[str, str]:
    """norm_key -> OpenMoji colour SVG path."""
    return _index(os.path.join(npm_dir("openmoji", cache_dir, "color/svg"), "color", "svg"), ".svg")


def fluent_sources(cache_dir: str | None = None) -> dict[str, str]:
    """norm_key -> Fluent 3D WebP path."""
    return _index(os.path.join(npm_dir("@lobehub/fluent-emoji-3d", cache_dir, "assets"), "assets"), ".webp")


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
    from vildtrain.categories import load_categories, load_distractors

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


def ensure_art(cache_dir: str | None = None, styles: Iterable[str] = ("openmoji", "fluent3d"),
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
                                description="Rasterise OpenMoji SVGs and decode Fluent 3D WebPs into $VILD_CACHE/art.")
    p.add_argument("--cache", default=None, help="cache dir (default $VILD_CACHE or <repo>/.cache)")
    args = p.parse_args(argv)
    try:
        ensure_art(args.cache)
    except MissingAssetError as e:
        print(f"assets: {e}", file=sys.stderr)
        return 1
    return 0


__all__ = ["ART_SIZE", "MissingAssetError", "cache_root", "npm_dir", "norm_key", "art_dir", "build_style",
           "ensure_art", "main"]
