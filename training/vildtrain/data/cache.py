"""Where vild's art comes from: the asset cache and the npm packages in it.

scripts/fetch-npm.sh fetches and integrity-checks the npm tarballs and unpacks
them under ``$VILD_CACHE/npm/<name>/`` (default ``<repo>/.cache``);
``python3 -m vildtrain assets`` (:mod:`vildtrain.data.assets`) builds the
held-out styles' PNGs under ``$VILD_CACHE/art/<style>/``. Everything that reads
them finds them here, and files of one emoji are named by :func:`norm_key`.
"""
from __future__ import annotations

import os

from vildtrain.paths import REPO_DIR

PACKAGES = {
    "noto": "emoji-datasource-google",
    "twemoji": "emoji-datasource-twitter",
    "emojibase": "emojibase-data",
    "openmoji": "openmoji",
    "fluent3d": "@lobehub/fluent-emoji-3d",
}


class MissingAssetError(RuntimeError):
    """An npm package or a derived art folder is not where it should be."""


def cache_root(cache_dir: str | None = None) -> str:
    """$VILD_CACHE, default <repo>/.cache."""
    if cache_dir:
        return cache_dir
    return os.environ.get("VILD_CACHE") or os.path.join(REPO_DIR, ".cache")


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


__all__ = ["PACKAGES", "MissingAssetError", "cache_root", "npm_dir", "norm_key", "art_dir", "openmoji_sources",
           "fluent_sources"]
