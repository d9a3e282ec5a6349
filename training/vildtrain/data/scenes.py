"""Seeded detection scenes: emoji objects pasted on procedural backgrounds.

``generate_scene`` composes 1-12 objects (16-160 px, flips, rotation, colour
jitter, blur) and a few unlabelled distractors (faces, hands, symbols, flags)
over a random background, then applies scene-level blur, noise, colour jitter
and JPEG artefacts. Later layers cover earlier ones; each object's *visible*
alpha is its own alpha times (1 - alpha) of every layer pasted over it, and
zero where a later layer's own mask lies. The instance mask is ``visible alpha
> MASK_THRESHOLD`` (so masks of different objects never overlap, and every
pixel the object changed by more than a quarter of the contrast is in it) and
the box is the tight extent of that mask. An object is not
returned when less than MIN_VISIBLE of its own mask survives occlusion and the
image border, or when its box is smaller than MIN_BOX px on a side.

``generate_grid_scene`` is a denser training variant: one object per cell of an
n x n grid, with the same backgrounds, transforms, occlusion rule and effects.

``python3 -m vildtrain scenes --set {seen,openmoji,fluent3d,train} --count N
--out DIR`` writes DIR/images/*.jpg and DIR/annotations.json (COCO). The held-out
sets label every object; ``train`` labels only base categories, novel objects
stay in the pictures unannotated (as in ViLD). Scene i of a set is drawn from
``numpy.random.default_rng([seed, i])``, so any scene can be regenerated alone
(DataLoader workers) and the fixed sets are reproducible byte for byte with
HELDOUT_SEEDS.
"""
from __future__ import annotations

import argparse
import io
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from vildtrain.data.art import STYLES_TRAIN, ArtLibrary
from vildtrain.data.cache import MissingAssetError
from vildtrain.data.categories import Category, load_categories

MIN_VISIBLE = 0.35   # fraction of an object's own mask that must stay visible for it to be labelled
MIN_BOX = 4          # px, smallest box side kept
MASK_THRESHOLD = 0.25  # visible alpha above this is part of the instance mask

# Fixed held-out sets: name -> (seed, styles). Regenerated, never committed.
HELDOUT_SETS: dict[str, tuple[int, tuple[str, ...]]] = {
    "seen": (20220401, ("noto", "twemoji")),
    "openmoji": (20220402, ("openmoji",)),
    "fluent3d": (20220403, ("fluent3d",)),
}
HELDOUT_SEEDS = {k: v[0] for k, v in HELDOUT_SETS.items()}
TRAIN_STYLES = STYLES_TRAIN


@dataclass
class SceneObject:
    category_id: int
    bbox: tuple[float, float, float, float]  # x, y, w, h in pixels: tight extent of ``mask``
    mask: np.ndarray                          # bool HxW over the full image (visible pixels)
    area: float                               # mask pixel count
    labelled: bool                            # False for novel objects in training scenes
    style: str = ""


def scene_rng(seed: int, index: int) -> np.random.Generator:
    """The generator for scene ``index`` of a set with ``seed``."""
    return np.random.default_rng([int(seed), int(index)])


# ---------------------------------------------------------------------------
# Backgrounds.

def _rand_color(rng: np.random.Generator) -> np.ndarray:
    c = rng.uniform(0, 255, 3)
    if rng.random() < 0.3:  # muted colours are common in real backgrounds
        g = c.mean()
        c = g + (c - g) * rng.uniform(0.1, 0.5)
    return c.astype(np.float32)


def _coords(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A coordinate along a random direction, in pixels."""
    a = rng.uniform(0, math.pi)
    x = np.arange(w, dtype=np.float32)[None, :]
    y = np.arange(h, dtype=np.float32)[:, None]
    return x * math.cos(a) + y * math.sin(a)


def _lut(colors: list[np.ndarray]) -> np.ndarray:
    """256x3 float32 table: a piecewise-linear palette through ``colors``."""
    n = len(colors) - 1
    t = np.linspace(0, n, 256, dtype=np.float32)
    i = np.minimum(t.astype(np.int32), n - 1)
    f = (t - i)[:, None]
    cs = np.stack(colors).astype(np.float32)
    return cs[i] * (1 - f) + cs[i + 1] * f


def _palette(t: np.ndarray, colors: list[np.ndarray]) -> np.ndarray:
    """Map t in [0, 1] through a piecewise-linear palette (via a 256-entry table)."""
    idx = (np.clip(t, 0, 1) * 255 + 0.5).astype(np.uint8)
    return _lut(colors)[idx]


def _lerp(t: np.ndarray, c0: np.ndarray, c1: np.ndarray) -> np.ndarray:
    return _palette(t, [c0, c1])


_NOISE_SIDE = 640
_noise_table: np.ndarray | None = None


def _noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Gaussian pixel noise, grey (broadcast) or colour: a random crop of a fixed table (fast)."""
    global _noise_table
    h, w = shape[:2]
    ch = 3 if rng.random() < 0.3 else 1
    if h > _NOISE_SIDE or w > _NOISE_SIDE:
        return rng.standard_normal((h, w, ch), dtype=np.float32) * np.float32(sigma)
    if _noise_table is None:
        _noise_table = np.random.default_rng(20220401).standard_normal((_NOISE_SIDE, _NOISE_SIDE, 3), np.float32)
    y = int(rng.integers(0, _NOISE_SIDE - h + 1))
    x = int(rng.integers(0, _NOISE_SIDE - w + 1))
    return _noise_table[y:y + h, x:x + w, :ch] * np.float32(sigma)


def _clip_u8(a: np.ndarray, inplace: bool = False) -> np.ndarray:
    """Round and clamp float pixels to uint8 (``inplace`` reuses ``a`` as scratch)."""
    if inplace:
        a += np.float32(0.5)
    else:
        a = a + np.float32(0.5)
    np.maximum(a, 0, out=a)
    np.minimum(a, 255, out=a)
    return a.astype(np.uint8)


def _value_noise(rng: np.random.Generator, w: int, h: int, octaves: int | None = None) -> np.ndarray:
    """Fractal value noise in [0, 1] from upsampled random grids."""
    octaves = octaves or int(rng.integers(2, 6))
    base = int(rng.integers(2, 7))
    out = np.zeros((h, w), np.float32)
    amp, total = 1.0, 0.0
    for o in range(octaves):
        g = base * 2 ** o
        grid = rng.random((g + 1, g + 1)).astype(np.float32)
        up = Image.fromarray(grid, "F").resize((w, h), Image.BICUBIC)
        out += amp * np.asarray(up)
        total += amp
        amp *= rng.uniform(0.4, 0.65)
    out /= total
    lo, hi = out.min(), out.max()
    return (out - lo) / max(hi - lo, 1e-6)


def _bg_solid(rng, w, h):
    return np.broadcast_to(_rand_color(rng), (h, w, 3)).copy()


def _bg_gradient(rng, w, h):
    if rng.random() < 0.6:
        t = _coords(rng, w, h)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    else:
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        x = np.arange(w, dtype=np.float32)[None, :] - cx
        y = np.arange(h, dtype=np.float32)[:, None] - cy
        t = np.sqrt(x * x + y * y) / rng.uniform(0.5, 1.5) / max(w, h)
    return _palette(t, [_rand_color(rng) for _ in range(int(rng.integers(2, 4)))])


def _bg_noise(rng, w, h):
    if rng.random() < 0.3:
        return np.stack([_value_noise(rng, w, h) for _ in range(3)], -1) * 255
    t = _value_noise(rng, w, h)
    return _palette(t, [_rand_color(rng) for _ in range(int(rng.integers(2, 5)))])


def _bg_stripes(rng, w, h):
    period = rng.uniform(6, 80)
    v = np.sin(_coords(rng, w, h) * (2 * math.pi / period))
    t = (v > rng.uniform(-0.5, 0.5)).astype(np.float32) if rng.random() < 0.6 else (v + 1) / 2
    return _lerp(t, _rand_color(rng), _rand_color(rng))


def _bg_checker(rng, w, h):
    s = rng.uniform(8, 64)
    a = rng.uniform(0, math.pi / 2)
    x = np.arange(w, dtype=np.float32)[None, :]
    y = np.arange(h, dtype=np.float32)[:, None]
    u = (x * math.cos(a) + y * math.sin(a)) / s
    v = (-x * math.sin(a) + y * math.cos(a)) / s
    t = ((np.floor(u) + np.floor(v)) % 2).astype(np.float32)
    return _lerp(t, _rand_color(rng), _rand_color(rng))


def _bg_dots(rng, w, h):
    s = rng.uniform(10, 48)
    r = rng.uniform(0.15, 0.45) * s
    x = (np.arange(w, dtype=np.float32)[None, :] + rng.uniform(0, s)) % s - s / 2
    y = (np.arange(h, dtype=np.float32)[:, None] + rng.uniform(0, s)) % s - s / 2
    t = (x * x + y * y < r * r).astype(np.float32)
    return _lerp(t, _rand_color(rng), _rand_color(rng))


def _bg_grid(rng, w, h):
    s = rng.uniform(10, 60)
    lw = rng.uniform(1, 4)
    x = np.arange(w, dtype=np.float32)[None, :] % s
    y = np.arange(h, dtype=np.float32)[:, None] % s
    t = ((x < lw) | (y < lw)).astype(np.float32)
    return _lerp(t, _rand_color(rng), _rand_color(rng))


def _draw_clutter(rng: np.random.Generator, im: Image.Image) -> None:
    """Random ellipses, rectangles, polygons and lines drawn over ``im`` in place."""
    w, h = im.size
    draw = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(6, 36))):
        col = tuple(int(v) for v in _rand_color(rng))
        x0, y0 = rng.uniform(-0.1, 1.0) * w, rng.uniform(-0.1, 1.0) * h
        sw, sh = rng.uniform(4, 0.4 * w), rng.uniform(4, 0.4 * h)
        kind = int(rng.integers(0, 4))
        if kind == 0:
            draw.ellipse([x0, y0, x0 + sw, y0 + sh], fill=col)
        elif kind == 1:
            draw.rectangle([x0, y0, x0 + sw, y0 + sh], fill=col)
        elif kind == 2:
            n = int(rng.integers(3, 6))
            pts = [(float(x0 + rng.uniform(0, sw)), float(y0 + rng.uniform(0, sh))) for _ in range(n)]
            draw.polygon(pts, fill=col)
        else:
            draw.line([x0, y0, x0 + sw, y0 + sh], fill=col, width=int(rng.integers(1, 6)))


# Base patterns are computed at half resolution and upscaled (4x less work).
_PATTERNS: list[Callable[[np.random.Generator, int, int], np.ndarray]] = [
    _bg_solid, _bg_gradient, _bg_noise, _bg_stripes, _bg_checker, _bg_dots, _bg_grid,
]
_PATTERN_P = np.array([0.1, 0.24, 0.3, 0.11, 0.09, 0.09, 0.06])
_PATTERN_P = _PATTERN_P / _PATTERN_P.sum()
CLUTTER_P = 0.35


def _background_image(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    hw, hh = max(1, (width + 1) // 2), max(1, (height + 1) // 2)
    bg = _PATTERNS[int(rng.choice(len(_PATTERNS), p=_PATTERN_P))](rng, hw, hh)
    if rng.random() < 0.25:  # blend a second pattern through a smooth mask
        other = _PATTERNS[int(rng.integers(0, len(_PATTERNS)))](rng, hw, hh)
        m = _value_noise(rng, hw, hh, 2)[..., None]
        bg = bg * m + other * (1 - m)
    im = Image.fromarray(_clip_u8(bg), "RGB")
    if rng.random() < 0.2:  # box blurs: one pass, a third of a Gaussian's cost
        im = im.filter(ImageFilter.BoxBlur(float(rng.uniform(0.5, 2.0))))
    im = im.resize((width, height), Image.BILINEAR)
    if rng.random() < CLUTTER_P:
        _draw_clutter(rng, im)
        if rng.random() < 0.4:
            im = im.filter(ImageFilter.BoxBlur(float(rng.uniform(0.5, 2.5))))
    return im


def _background_array(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    a = np.asarray(_background_image(rng, width, height), dtype=np.float32)
    if rng.random() < 0.4:
        a = a + _noise(rng, a.shape, rng.uniform(2, 14))
    return a


def random_background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A random RGB background (gradients, noise, stripes, checks, dots, grids, clutter, blends)."""
    im = _background_image(rng, width, height)
    if rng.random() < 0.4:
        a = np.asarray(im, dtype=np.float32) + _noise(rng, (height, width), rng.uniform(2, 14))
        im = Image.fromarray(_clip_u8(a), "RGB")
    return im


# ---------------------------------------------------------------------------
# Sprites and composition.

def _jitter_affine(rng: np.random.Generator, strength: float) -> tuple[np.ndarray, np.ndarray]:
    """Brightness, contrast, saturation and channel-gain jitter as one affine map (M 3x3, offset 3).

    out = b*g * (c * (gray + s*(rgb - gray) - 128) + 128) with gray = mean(rgb).
    """
    b = 1 + rng.uniform(-0.35, 0.35) * strength
    c = 1 + rng.uniform(-0.35, 0.35) * strength
    s = 1 + rng.uniform(-0.5, 0.5) * strength
    gains = (1 + rng.uniform(-0.08, 0.08, 3) * strength) * b
    m = np.full((3, 3), (1 - s) / 3) + np.eye(3) * s        # saturation, rows = output channel
    m = m * (c * gains)[:, None]
    off = 128 * (1 - c) * gains
    return m.astype(np.float32), off.astype(np.float32)


def _jitter_rgb(rng: np.random.Generator, rgb: np.ndarray, strength: float) -> np.ndarray:
    m, off = _jitter_affine(rng, strength)
    return rgb @ m.T + off


def _jitter_image(rng: np.random.Generator, im: Image.Image, strength: float) -> Image.Image:
    """The same jitter on a uint8 RGB image, in C (PIL's matrix convert)."""
    m, off = _jitter_affine(rng, strength)
    matrix = tuple(float(v) for row in np.concatenate([m, off[:, None]], 1) for v in row)
    return im.convert("RGB", matrix)


def shade_sprite(rng: np.random.Generator, rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Pseudo-3D lighting of flat art: a dome-shaped height map from the blurred
    alpha, lit from a random direction above (diffuse plus a specular highlight),
    with outlines softened, so that flat emoji look rendered; a training
    augmentation towards 3D styles that never shows one. Returns the new rgb."""
    h, w = alpha.shape
    side = max(h, w)
    a8 = Image.fromarray(_clip_u8(alpha * 255))
    dome = np.asarray(a8.filter(ImageFilter.GaussianBlur(max(1.0, side * rng.uniform(0.08, 0.2)))),
                      dtype=np.float32) * (1 / 255)
    gy, gx = np.gradient(dome * side * rng.uniform(0.25, 0.6))
    norm = 1 / np.sqrt(gx * gx + gy * gy + 1)
    nx, ny, nz = -gx * norm, -gy * norm, norm
    az = rng.uniform(-math.pi * 0.9, -math.pi * 0.1)  # light from above (y grows downwards)
    el = rng.uniform(0.5, 1.2)
    lx, ly, lz = math.cos(az) * math.cos(el), math.sin(az) * math.cos(el), math.sin(el)
    ndl = nx * lx + ny * ly + nz * lz
    ambient = rng.uniform(0.45, 0.7)
    shade = ambient + (1 - ambient) * np.clip(ndl, 0, 1) / max(lz, 1e-3)
    rz = 2 * ndl * nz - lz  # the reflected light towards the viewer
    spec = np.clip(rz, 0, 1) ** rng.uniform(8, 30) * rng.uniform(40, 140)
    soft = Image.fromarray(_clip_u8(rgb)).filter(ImageFilter.GaussianBlur(max(0.5, side * rng.uniform(0.005, 0.02))))
    out = np.asarray(soft, dtype=np.float32) * shade[..., None] + spec[..., None]
    return out.astype(np.float32)


def randconv_sprite(rng: np.random.Generator, rgb: np.ndarray, alpha: np.ndarray,
                    kernels: tuple[int, ...] = (1, 3, 5, 7)) -> np.ndarray:
    """A random 3-to-3 convolution of a sprite's colours (random convolutions, Xu
    et al. 2021; the pasted-object counterpart of ``clipdata.randconv``, which
    the teacher's crops get): a kernel side drawn from ``kernels``, weights from
    N(0, 1/(3 k^2)), the result given the sprite's own mean and spread (over its
    alpha) and blended with it by a weight drawn from [0, 1]. Surfaces and
    colours change, the outline (alpha) stays. Returns the new rgb (0-255)."""
    side = int(kernels[int(rng.integers(0, len(kernels)))])
    w = rng.standard_normal((3, 3, side, side)).astype(np.float32) / math.sqrt(3 * side * side)
    h, wd = alpha.shape
    r = side // 2
    pad = np.pad(rgb.astype(np.float32), ((r, r), (r, r), (0, 0)))
    y = np.zeros_like(rgb, dtype=np.float32)
    for dy in range(side):
        for dx in range(side):
            y += pad[dy:dy + h, dx:dx + wd] @ w[:, :, dy, dx].T
    m = alpha > 0.5
    if not m.any():
        return rgb
    x_mean, x_std = rgb[m].mean(), rgb[m].std()
    y = (y - y[m].mean()) / (y[m].std() + 1e-6) * x_std + x_mean
    a = float(rng.random())
    return np.clip(a * rgb + (1 - a) * y, 0, 255).astype(np.float32)


def make_sprite(rng: np.random.Generator, im: Image.Image, target: float,
                rotate_p: float = 0.5, max_angle: float = 30, blur_p: float = 0.1,
                jitter: float = 1.0, shade_p: float = 0.0, randconv_p: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Scale (longer side = target px), flip, rotate, blur, shade (with ``shade_p``
    > 0: :func:`shade_sprite` on that share), convolve (with ``randconv_p`` > 0:
    :func:`randconv_sprite` on that share) and colour-jitter an RGBA image. A
    share of 0 draws nothing more from ``rng``, so scenes made without it are
    unchanged.

    Returns (rgb float32 HxWx3, alpha float32 HxW in [0, 1]).
    """
    w, h = im.size
    s = target / max(w, h)
    ar = math.exp(rng.uniform(-0.12, 0.12))
    nw, nh = max(1, round(w * s * ar)), max(1, round(h * s / ar))
    im = im.resize((nw, nh), Image.BILINEAR)
    if rng.random() < 0.5:
        im = im.transpose(Image.FLIP_LEFT_RIGHT)
    if rng.random() < rotate_p:
        im = im.rotate(float(rng.uniform(-max_angle, max_angle)), resample=Image.BILINEAR, expand=True)
    if rng.random() < blur_p:
        im = im.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.4, 1.5))))
    a = np.asarray(im, dtype=np.float32)
    rgb, alpha = a[..., :3], a[..., 3] * (1 / 255)
    if shade_p > 0 and rng.random() < shade_p:
        rgb = shade_sprite(rng, rgb, alpha)
    if randconv_p > 0 and rng.random() < randconv_p:
        rgb = randconv_sprite(rng, rgb, alpha)
    if jitter > 0 and rng.random() < 0.8:
        rgb = _jitter_rgb(rng, rgb, jitter)
    return rgb, alpha


@dataclass
class _Layer:
    category_id: int      # 0 for distractors
    style: str
    x0: int
    y0: int
    vis: np.ndarray       # visible alpha inside [y0:y0+h, x0:x0+w] (clipped to the image)
    own: float            # pixel count of the sprite's own mask (before clipping and occlusion)


def _paste(canvas: np.ndarray, layers: list[_Layer], rgb: np.ndarray, alpha: np.ndarray,
           x: int, y: int, category_id: int, style: str) -> None:
    H, W = canvas.shape[:2]
    h, w = alpha.shape
    own = float((alpha > MASK_THRESHOLD).sum())
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
    if x1 <= x0 or y1 <= y0:
        return
    a = alpha[y0 - y:y1 - y, x0 - x:x1 - x]
    c = rgb[y0 - y:y1 - y, x0 - x:x1 - x]
    region = canvas[y0:y1, x0:x1]
    region += (c - region) * a[..., None]
    # Occlusion: earlier layers keep (1 - a) of their alpha, and lose outright the
    # pixels this layer claims for its own mask, so masks never overlap.
    inv = np.where(a > MASK_THRESHOLD, np.float32(0), 1 - a)
    for L in layers:
        lh, lw = L.vis.shape
        ix0, iy0 = max(x0, L.x0), max(y0, L.y0)
        ix1, iy1 = min(x1, L.x0 + lw), min(y1, L.y0 + lh)
        if ix1 > ix0 and iy1 > iy0:
            L.vis[iy0 - L.y0:iy1 - L.y0, ix0 - L.x0:ix1 - L.x0] *= inv[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0]
    layers.append(_Layer(category_id, style, x0, y0, a.copy(), own))


def _finish(rng: np.random.Generator, canvas: np.ndarray, jpeg_p: float, effects: bool) -> Image.Image:
    if effects and rng.random() < 0.3:
        canvas = canvas + _noise(rng, canvas.shape, rng.uniform(2, 10))
    im = Image.fromarray(_clip_u8(canvas, inplace=True), "RGB")
    if effects and rng.random() < 0.5:
        im = _jitter_image(rng, im, 0.5)
    if effects and rng.random() < 0.25:
        im = im.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.3))))
    if rng.random() < jpeg_p:
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=int(rng.integers(25, 90)))
        buf.seek(0)
        im = Image.open(buf)
        im.load()
        im = im.convert("RGB")
    return im


def _eligible(art: ArtLibrary, categories: Sequence[Category], styles: Sequence[str]) -> list[tuple[int, list[str]]]:
    key = (tuple(c.id for c in categories), tuple(styles))
    cache = art.memo
    key = ("scene-eligible",) + key
    out = cache.get(key)
    if out is None:
        out = []
        for c in categories:
            ss = [s for s in styles if art.has(c.id, s)]
            if ss:
                out.append((c.id, ss))
        cache[key] = out
    return out


def _visible_objects(layers: list[_Layer], size: int, by_id: dict[int, Category],
                     label_novel: bool) -> list[SceneObject]:
    """The pasted objects (not distractors) that stay visible enough to be annotated."""
    objects: list[SceneObject] = []
    for L in layers:
        if L.category_id == 0:
            continue
        local = L.vis > MASK_THRESHOLD
        area = int(local.sum())
        if area == 0 or area < MIN_VISIBLE * L.own:
            continue
        rows = np.flatnonzero(local.any(axis=1))
        cols = np.flatnonzero(local.any(axis=0))
        bw, bh = int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)
        if bw < MIN_BOX or bh < MIN_BOX:
            continue
        mask = np.zeros((size, size), bool)
        lh, lw = local.shape
        mask[L.y0:L.y0 + lh, L.x0:L.x0 + lw] = local
        novel = by_id[L.category_id].split == "novel"
        objects.append(SceneObject(
            category_id=L.category_id,
            bbox=(float(L.x0 + cols[0]), float(L.y0 + rows[0]), float(bw), float(bh)),
            mask=mask, area=float(area), labelled=label_novel or not novel, style=L.style))
    return objects


def generate_scene(rng: np.random.Generator, art: ArtLibrary, categories: list[Category], styles: Sequence[str],
                   size: int = 384, label_novel: bool = False, *,
                   min_objects: int = 1, max_objects: int = 12, min_px: float = 16, max_px: float = 160,
                   max_distractors: int = 3, tier_weights: dict[str, float] | None = None,
                   jpeg_p: float = 0.5, effects: bool = True, shade_p: float = 0.0, randconv_p: float = 0.0,
                   background: Callable[[np.random.Generator, int, int], np.ndarray] | None = None,
                   ) -> tuple[Image.Image, list[SceneObject]]:
    """One scene: (RGB image size x size, visible objects in paste order).

    ``categories`` is the vocabulary to draw from (only those with art in one of
    ``styles`` are used). Novel objects are returned with ``labelled=False``
    unless ``label_novel``. ``tier_weights`` (e.g. {"frequent": 4, "common": 2,
    "rare": 1}) makes frequent categories more common; default uniform.
    ``effects=False`` (no colour jitter, blur or noise) and ``jpeg_p=0`` switch off the effects;
    ``shade_p`` is the share of sprites given pseudo-3D lighting (:func:`shade_sprite`),
    ``randconv_p`` the share given a random convolution (:func:`randconv_sprite`);
    ``background`` overrides the background generator (returns float HxWx3).
    """
    pool = _eligible(art, categories, styles)
    if not pool:
        raise ValueError(f"scenes: no category has art in styles {list(styles)}")
    by_id = {c.id: c for c in categories}
    p = None
    if tier_weights:
        p = np.array([tier_weights.get(by_id[cid].tier, 1.0) for cid, _ in pool], np.float64)
        p /= p.sum()
    canvas = np.array((background or _background_array)(rng, size, size), dtype=np.float32)

    n_obj = int(rng.integers(min_objects, max_objects + 1))
    n_dis = int(rng.integers(0, max_distractors + 1)) if max_distractors > 0 else 0
    order = rng.permutation(np.array([1] * n_obj + [0] * n_dis, dtype=np.int8)) if n_obj + n_dis else []
    chosen = rng.choice(len(pool), size=n_obj, replace=True, p=p)
    layers: list[_Layer] = []
    k = 0
    lo, hi = math.log(min_px), math.log(max_px)
    for is_obj in order:
        target = math.exp(rng.uniform(lo, hi))
        if is_obj:
            cid, ss = pool[int(chosen[k])]
            k += 1
            style = ss[int(rng.integers(0, len(ss)))]
            im = art.image(cid, style)
        else:
            style = styles[int(rng.integers(0, len(styles)))]
            dl = art.distractor_images(style)
            if not dl:
                continue
            cid, im = 0, dl[int(rng.integers(0, len(dl)))]
        rgb, alpha = make_sprite(rng, im, target, blur_p=0.1 if effects else 0.0, jitter=1.0 if effects else 0.0,
                                     shade_p=shade_p, randconv_p=randconv_p)
        h, w = alpha.shape
        x = int(rng.integers(-w // 4, max(size - w + w // 4, -w // 4 + 1)))
        y = int(rng.integers(-h // 4, max(size - h + h // 4, -h // 4 + 1)))
        _paste(canvas, layers, rgb, alpha, x, y, cid, style)

    objects = _visible_objects(layers, size, by_id, label_novel)
    return _finish(rng, canvas, jpeg_p, effects), objects


GRID_SIDES = (3, 4, 6, 8, 12)  # cells per side of a grid scene (32-128 px cells on a 384 canvas)


def generate_grid_scene(rng: np.random.Generator, art: ArtLibrary, categories: list[Category],
                        styles: Sequence[str], size: int = 384, label_novel: bool = False, *,
                        sides: Sequence[int] = GRID_SIDES, fill: tuple[float, float] = (0.5, 0.95),
                        empty_p: float = 0.1, distractor_p: float = 0.1, jpeg_p: float = 0.5,
                        effects: bool = True, shade_p: float = 0.0,
                        randconv_p: float = 0.0) -> tuple[Image.Image, list[SceneObject]]:
    """A dense training scene: one object per cell of an n x n grid (n drawn from
    ``sides``), each ``fill`` of its cell's side and placed at random inside it,
    over the same backgrounds and with the same sprite and image effects as
    :func:`generate_scene`. It annotates up to n*n objects at the cost of one
    picture (a 384 px scene of 12 x 12 cells holds 144), so a detector sees far more
    labelled regions per step; cells are left empty with ``empty_p`` and hold a
    distractor with ``distractor_p``.
    """
    pool = _eligible(art, categories, styles)
    if not pool:
        raise ValueError(f"scenes: no category has art in styles {list(styles)}")
    if not sides or min(sides) < 1:
        raise ValueError(f"scenes: grid sides {list(sides)}: need at least one side >= 1")
    by_id = {c.id: c for c in categories}
    canvas = np.array(_background_array(rng, size, size), dtype=np.float32)
    n = int(sides[int(rng.integers(0, len(sides)))])
    cell = size / n
    layers: list[_Layer] = []
    for r in range(n):
        for c in range(n):
            u = rng.random()
            if u < empty_p:
                continue
            target = cell * rng.uniform(*fill)
            if u < empty_p + distractor_p:
                style = styles[int(rng.integers(0, len(styles)))]
                dl = art.distractor_images(style)
                if not dl:
                    continue
                cid, im = 0, dl[int(rng.integers(0, len(dl)))]
            else:
                cid, ss = pool[int(rng.integers(0, len(pool)))]
                style = ss[int(rng.integers(0, len(ss)))]
                im = art.image(cid, style)
            rgb, alpha = make_sprite(rng, im, target, blur_p=0.1 if effects else 0.0, jitter=1.0 if effects else 0.0,
                                     shade_p=shade_p, randconv_p=randconv_p)
            h, w = alpha.shape
            x = int(c * cell + rng.uniform(0, max(0.0, cell - w)))
            y = int(r * cell + rng.uniform(0, max(0.0, cell - h)))
            _paste(canvas, layers, rgb, alpha, x, y, cid, style)
    objects = _visible_objects(layers, size, by_id, label_novel)
    return _finish(rng, canvas, jpeg_p, effects), objects


# ---------------------------------------------------------------------------
# Fixed sets on disk.

def set_config(name: str, seed: int | None) -> tuple[int, tuple[str, ...], bool]:
    """(seed, styles, label_novel) of a named set."""
    if name == "train":
        return (0 if seed is None else seed), TRAIN_STYLES, False
    if name not in HELDOUT_SETS:
        raise ValueError(f"scenes: unknown set {name!r}; sets: {', '.join([*HELDOUT_SETS, 'train'])}")
    s, styles = HELDOUT_SETS[name]
    return (s if seed is None else seed), styles, True


def write_set(out_dir: str, name: str, count: int, seed: int | None = None, size: int = 384,
              art: ArtLibrary | None = None, categories: list[Category] | None = None,
              image_format: str = "png", quality: int = 90, progress: bool = False) -> dict:
    """Write DIR/images/NNNNNN.png (or .jpg with ``image_format="jpeg"``, at
    ``quality``) and DIR/annotations.json; returns the COCO dict.

    PNG is the default: the scene's own JPEG artefacts are already in its pixels,
    and every decoder (PIL, Go's image/png) then reads exactly the same pixels,
    so evaluations in different languages see the same input."""
    if image_format not in ("png", "jpeg"):
        raise ValueError(f"scenes: image format {image_format!r}: png or jpeg")
    from vildtrain.data import coco

    seed, styles, label_novel = set_config(name, seed)
    categories = categories if categories is not None else load_categories()
    art = art or ArtLibrary(styles=styles, categories=categories)
    os.makedirs(os.path.join(out_dir, "images"), exist_ok=True)
    builder = coco.Builder(categories, info={
        "description": f"vild pictogram world, set {name}", "set": name, "seed": seed,
        "styles": list(styles), "size": size, "generator": "python3 -m vildtrain scenes",
        "labels": "all categories" if label_novel else "base categories only (novel objects unannotated)"})
    t0 = time.time()
    for i in range(count):
        img, objs = generate_scene(scene_rng(seed, i), art, categories, styles, size=size, label_novel=label_novel)
        if image_format == "png":
            fname = f"{i:06d}.png"
            img.save(os.path.join(out_dir, "images", fname), "PNG", compress_level=1)
        else:
            fname = f"{i:06d}.jpg"
            img.save(os.path.join(out_dir, "images", fname), "JPEG", quality=quality)
        builder.add_image(fname, size, size, [o for o in objs if o.labelled])
        if progress and (i + 1) % 100 == 0:
            rate = (i + 1) / (time.time() - t0)
            print(f"scenes: {name} {i + 1}/{count} ({rate:.1f}/s)", file=sys.stderr)
    data = builder.to_dict()
    with open(os.path.join(out_dir, "annotations.json"), "w", encoding="utf-8") as f:
        json.dump(data, f, separators=(",", ":"), ensure_ascii=False)
    return data


def benchmark(count: int = 100, size: int = 384, styles: Sequence[str] = TRAIN_STYLES, seed: int = 7,
              grid: bool = False, objects: tuple[int, int] = (1, 12)) -> tuple[float, float]:
    """(scenes per CPU-second of this process, labelled objects per scene), one
    core, art cache warmed first. Objects are labelled as in training scenes
    (base only). ``grid``: grid scenes of base categories, as ``train_detector
    --grid-scenes`` draws them; otherwise ordinary scenes of ``objects`` objects."""
    cats = load_categories()
    art = ArtLibrary(styles=styles, categories=cats)
    for c in cats:
        for s in styles:
            if art.has(c.id, s):
                art.image(c.id, s)
    for s in styles:
        art.distractor_images(s)
    base = [c for c in cats if c.split == "base"]
    labelled = 0
    t0 = time.process_time()
    for i in range(count):
        if grid:
            _, objs = generate_grid_scene(scene_rng(seed, i), art, base, styles, size=size)
        else:
            _, objs = generate_scene(scene_rng(seed, i), art, cats, styles, size=size,
                                     min_objects=objects[0], max_objects=objects[1])
        labelled += sum(o.labelled for o in objs)
    return count / (time.process_time() - t0), labelled / max(1, count)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="vildtrain scenes", description="Write a COCO scene set, or time the generator.")
    p.add_argument("--set", default="seen", help="seen | openmoji | fluent3d (held out, all labelled) | train")
    p.add_argument("--count", type=int, default=500)
    p.add_argument("--seed", type=int, default=None, help="default: the set's fixed seed (train: 0)")
    p.add_argument("--size", type=int, default=384)
    p.add_argument("--out", default=None, help="output folder (required unless --bench)")
    p.add_argument("--format", choices=("png", "jpeg"), default="png",
                   help="image files: lossless PNG (default) or JPEG at quality 90")
    p.add_argument("--bench", action="store_true", help="print scenes/s for --count scenes instead of writing")
    p.add_argument("--grid", action="store_true", help="with --bench: time grid scenes (base categories)")
    p.add_argument("--objects", type=int, nargs=2, default=(1, 12), metavar=("MIN", "MAX"),
                   help="with --bench: objects per ordinary scene (training uses 2 20)")
    args = p.parse_args(argv)
    if args.bench:
        _, styles, _ = set_config(args.set, args.seed)
        rate, labelled = benchmark(args.count, args.size, styles, grid=args.grid, objects=tuple(args.objects))
        kind = "grid scenes" if args.grid else f"scenes of {args.objects[0]}-{args.objects[1]} objects"
        print(f"scenes: {rate:.1f} {kind}/s at {args.size}x{args.size} ({args.set}, one process), "
              f"{labelled:.1f} labelled base objects per scene")
        return 0
    if not args.out:
        p.error("--out is required")
    t0 = time.time()
    try:
        data = write_set(args.out, args.set, args.count, args.seed, args.size, image_format=args.format,
                         progress=True)
    except MissingAssetError as e:
        print(f"scenes: {e}", file=sys.stderr)
        return 1
    print(f"scenes: wrote {len(data['images'])} images, {len(data['annotations'])} boxes to {args.out} "
          f"in {time.time() - t0:.1f}s", file=sys.stderr)
    return 0
