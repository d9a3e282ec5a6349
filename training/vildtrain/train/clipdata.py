"""Batched, seeded crop synthesis for the mini-CLIP, in torch.

A crop looks like what a detector proposal sees: one pictogram, scaled, rotated,
flipped and shifted (sometimes cut off by the crop border), over a procedural
background, sometimes partly covered by another pictogram, with colour jitter,
blur and noise. Everything happens on whole batches with ``grid_sample``, so
the data side costs a small fraction of a training step.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

ART_SIZE = 64          # art is stored as square RGBA tiles of this size
BACKGROUND_SIZE = 96   # backgrounds are stored at this size and cropped randomly


def indices_by_label(labels: torch.Tensor) -> dict[int, list[int]]:
    """Positions of each label in ``labels``, in order."""
    out: dict[int, list[int]] = {}
    for i, label in enumerate(labels.tolist()):
        out.setdefault(label, []).append(i)
    return out


@dataclass
class ArtBank:
    """Square RGBA art tiles and the category index (0-based, in category order) of each."""

    rgba: torch.Tensor      # [M, 4, A, A] float in [0, 1], premultiplied by nothing
    labels: torch.Tensor    # [M] int64
    styles: list[str]       # [M]

    def __len__(self) -> int:
        return self.rgba.shape[0]

    def by_label(self) -> dict[int, list[int]]:
        return indices_by_label(self.labels)


def tile(image: Image.Image, size: int = ART_SIZE) -> np.ndarray:
    """Fit an RGBA image (cropped to its alpha) into a centred square tile."""
    image = image.convert("RGBA")
    box = image.getchannel("A").getbbox()
    if box:
        image = image.crop(box)
    w, h = image.size
    scale = (size - 2) / max(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    image = image.resize((nw, nh), Image.BICUBIC)
    canvas = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    canvas.paste(image, ((size - nw) // 2, (size - nh) // 2))
    return np.asarray(canvas, dtype=np.uint8)


def build_art_bank(art, categories, styles: tuple[str, ...], shade: float = 0.0, seed: int = 0) -> ArtBank:
    """Tiles of every (category, style) pair the art library has; with ``shade``
    > 0, that share of them (seeded by ``seed``) also a second time with
    pseudo-3D lighting (``scenes.shade_sprite``, style name + "+shade")."""
    from vildtrain.data.scenes import shade_sprite
    rng = np.random.default_rng(seed)
    tiles, labels, names = [], [], []
    for index, category in enumerate(categories):
        for style in styles:
            if art.has(category.id, style):
                t = tile(art.image(category.id, style))
                tiles.append(t)
                labels.append(index)
                names.append(style)
                if shade > 0 and rng.random() < shade:
                    alpha = t[..., 3].astype(np.float32) / 255
                    rgb = shade_sprite(rng, t[..., :3].astype(np.float32), alpha)
                    tiles.append(np.concatenate([np.clip(np.rint(rgb), 0, 255).astype(np.uint8), t[..., 3:]], -1))
                    labels.append(index)
                    names.append(style + "+shade")
    if not tiles:
        raise ValueError(f"clipdata: no art for styles {styles}")
    rgba = torch.from_numpy(np.stack(tiles)).permute(0, 3, 1, 2).float() / 255.0
    return ArtBank(rgba=rgba, labels=torch.tensor(labels, dtype=torch.int64), styles=names)


def build_backgrounds(count: int, seed: int, size: int = BACKGROUND_SIZE) -> torch.Tensor:
    """A bank of procedural backgrounds from the scene generator, [count, 3, size, size]."""
    from vildtrain.data.scenes import random_background

    rng = np.random.default_rng(seed)
    out = np.stack([np.asarray(random_background(rng, size, size).convert("RGB")) for _ in range(count)])
    return torch.from_numpy(out).permute(0, 3, 1, 2).float() / 255.0


@dataclass
class CropConfig:
    """Augmentation of a crop. The defaults resemble detector proposals (IoU with
    the object mostly >= 0.5); heavier settings slow learning a lot on 2 cores."""

    size: int = 32
    scale: tuple[float, float] = (0.55, 1.0)    # object side as a fraction of the crop side
    max_rotation: float = 15.0                  # degrees
    max_shift: float = 0.15                     # centre offset as a fraction of the crop side
    occluder_p: float = 0.2
    blur_p: float = 0.15
    noise: float = 0.02
    jitter: float = 0.1                         # brightness / contrast / saturation amplitude


def _affine(n: int, scale: torch.Tensor, angle: torch.Tensor, flip: torch.Tensor,
            shift: torch.Tensor) -> torch.Tensor:
    """theta mapping output crop coordinates to art coordinates ([-1,1] both)."""
    cos, sin = torch.cos(angle), torch.sin(angle)
    inv = 1.0 / scale
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = cos * inv * flip
    theta[:, 0, 1] = -sin * inv * flip
    theta[:, 1, 0] = sin * inv
    theta[:, 1, 1] = cos * inv
    # output point p maps to art point R/s (p - shift)
    theta[:, 0, 2] = -(theta[:, 0, 0] * shift[:, 0] + theta[:, 0, 1] * shift[:, 1])
    theta[:, 1, 2] = -(theta[:, 1, 0] * shift[:, 0] + theta[:, 1, 1] * shift[:, 1])
    return theta


def _place(art: torch.Tensor, g: torch.Generator, size: int, scale_range: tuple[float, float],
           max_rotation: float, max_shift: float) -> torch.Tensor:
    n = art.shape[0]
    u = lambda: torch.rand(n, generator=g)  # noqa: E731
    scale = scale_range[0] + (scale_range[1] - scale_range[0]) * u()
    angle = (u() * 2 - 1) * math.radians(max_rotation)
    flip = torch.where(u() < 0.5, -1.0, 1.0)
    shift = (torch.rand(n, 2, generator=g) * 2 - 1) * 2 * max_shift
    theta = _affine(n, scale, angle, flip, shift)
    grid = F.affine_grid(theta, [n, 4, size, size], align_corners=False)
    return F.grid_sample(art, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def synthesize(bank: ArtBank, indices: torch.Tensor, backgrounds: torch.Tensor, g: torch.Generator,
               cfg: CropConfig = CropConfig()) -> torch.Tensor:
    """Crops [N, 3, S, S] in [0, 1] of the art tiles ``indices``."""
    n, s = indices.shape[0], cfg.size
    # background: random crop + flip of a bank entry, resized to S
    bg_idx = torch.randint(0, backgrounds.shape[0], (n,), generator=g)
    bs = backgrounds.shape[-1]
    c = int(torch.randint(s // 2, bs + 1, (1,), generator=g))
    ox = int(torch.randint(0, bs - c + 1, (1,), generator=g))
    oy = int(torch.randint(0, bs - c + 1, (1,), generator=g))
    bg = backgrounds[bg_idx, :, oy:oy + c, ox:ox + c]
    if c != s:
        bg = F.interpolate(bg, size=(s, s), mode="bilinear", align_corners=False)
    if bool(torch.rand(1, generator=g) < 0.5):
        bg = bg.flip(-1)

    obj = _place(bank.rgba[indices], g, s, cfg.scale, cfg.max_rotation, cfg.max_shift)
    alpha = obj[:, 3:4]
    out = bg * (1 - alpha) + obj[:, :3] * alpha

    # occluders: another pictogram, smaller, anywhere
    occ = torch.rand(n, generator=g) < cfg.occluder_p
    if bool(occ.any()):
        k = int(occ.sum())
        other = torch.randint(0, len(bank), (k,), generator=g)
        o = _place(bank.rgba[other], g, s, (0.25, 0.6), 45.0, 0.55)
        oa = o[:, 3:4]
        out[occ] = out[occ] * (1 - oa) + o[:, :3] * oa

    # colour jitter: brightness, contrast, saturation
    j = cfg.jitter
    bright = 1 + (torch.rand(n, 1, 1, 1, generator=g) * 2 - 1) * j
    contrast = 1 + (torch.rand(n, 1, 1, 1, generator=g) * 2 - 1) * j
    sat = 1 + (torch.rand(n, 1, 1, 1, generator=g) * 2 - 1) * j
    gray = out.mean(dim=1, keepdim=True)
    out = gray + (out - gray) * sat
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = (out - mean) * contrast + mean
    out = out * bright

    blur = torch.rand(n, generator=g) < cfg.blur_p
    if bool(blur.any()):
        out[blur] = F.avg_pool2d(out[blur], 3, 1, 1, count_include_pad=False)
    out = out + torch.randn(out.shape, generator=g) * cfg.noise
    return out.clamp_(0, 1)


def coarsen(crops: torch.Tensor, p: float, g: torch.Generator, sides: tuple[int, int] = (6, 16)) -> torch.Tensor:
    """Each crop, with probability ``p``, shrunk to a side drawn from ``sides`` (area
    average) and enlarged back (bilinear): only its coarse shape and colours are
    left, the cues that carry across art styles, not one style's outlines."""
    n, s = crops.shape[0], crops.shape[-1]
    pick = torch.rand(n, generator=g) < p
    sizes = torch.randint(sides[0], sides[1] + 1, (n,), generator=g)
    out = crops.clone()
    for k in torch.nonzero(pick).flatten().tolist():
        r = int(sizes[k])
        small = F.interpolate(crops[k:k + 1], size=(r, r), mode="area")
        out[k:k + 1] = F.interpolate(small, size=(s, s), mode="bilinear", align_corners=False)
    return out


def randconv(crops: torch.Tensor, p: float, g: torch.Generator, kernels: tuple[int, ...] = (1, 3, 5, 7)) -> torch.Tensor:
    """Each crop, with probability ``p``, filtered by a random 3-to-3 convolution
    (random convolutions, Xu et al. 2021): a kernel side drawn from ``kernels``,
    weights drawn from N(0, 1/(3 k^2)), the result given the crop's mean and
    spread and blended with the crop by a weight drawn from [0, 1]. Local
    texture and colour are randomised, shapes kept: one style's surfaces stop
    being a cue."""
    n = crops.shape[0]
    pick = torch.rand(n, generator=g) < p
    out = crops.clone()
    for k in torch.nonzero(pick).flatten().tolist():
        side = kernels[int(torch.randint(0, len(kernels), (1,), generator=g))]
        w = torch.randn(3, 3, side, side, generator=g) / math.sqrt(3 * side * side)
        x = crops[k:k + 1]
        y = F.conv2d(x, w, padding=side // 2)
        y = (y - y.mean()) / (y.std() + 1e-6) * x.std() + x.mean()
        a = float(torch.rand(1, generator=g))
        out[k:k + 1] = (a * x + (1 - a) * y).clamp(0, 1)
    return out


# ---------------------------------------------------------------------------
# Crops cut from generated scenes.

SCENE_BANK_SEED = 20261126   # scene_rng(SCENE_BANK_SEED + run seed, i): apart from training and held-out sets
SCENE_EVAL_SEED = 20261127   # the in-context evaluation scenes


@dataclass
class SceneCropBank:
    """Crops cut around the objects of generated scenes, the way the detector's
    teacher sees proposals: the neighbours, the scene's background and its
    effects are in the crop. ``crops`` uint8 [N, 3, S, S]; ``labels`` [N] the
    category index (0-based, in category order)."""

    crops: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return self.crops.shape[0]

    def by_label(self) -> dict[int, list[int]]:
        return indices_by_label(self.labels)

    def images(self, indices: torch.Tensor) -> torch.Tensor:
        """Crops ``indices`` as float [n, 3, S, S] in [0, 1]."""
        return self.crops[indices].float().div_(255.0)


def jittered_square_boxes(boxes: torch.Tensor, rng: np.random.Generator, jitter: float,
                          scales: tuple[float, float]) -> torch.Tensor:
    """Boxes [N,4] (x1,y1,x2,y2) with each edge moved by up to ``jitter`` of the
    box's side (a proposal near the object), then squared about the centre at
    side max(w, h) * s, s drawn uniformly from ``scales`` per box (the teacher's
    crops are squares at 1x and 1.5x, ``losses.crop_boxes``)."""
    n = boxes.shape[0]
    w = (boxes[:, 2] - boxes[:, 0]).clamp(min=1.0)
    h = (boxes[:, 3] - boxes[:, 1]).clamp(min=1.0)
    move = torch.from_numpy(rng.uniform(-jitter, jitter, (n, 4))).float()
    x1 = boxes[:, 0] + move[:, 0] * w
    y1 = boxes[:, 1] + move[:, 1] * h
    x2 = torch.maximum(boxes[:, 2] + move[:, 2] * w, x1 + 1.0)
    y2 = torch.maximum(boxes[:, 3] + move[:, 3] * h, y1 + 1.0)
    s = torch.from_numpy(rng.uniform(scales[0], scales[1], n)).float()
    half = torch.maximum(x2 - x1, y2 - y1) * s / 2
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    return torch.stack([cx - half, cy - half, cx + half, cy + half], dim=1)


def build_scene_bank(art, categories, styles: tuple[str, ...], scenes: int, seed: int, size: int = 32,
                     jitter: float = 0.1, scales: tuple[float, float] = (1.0, 1.5), scene_size: int = 384,
                     progress=None, shade_p: float = 0.0) -> SceneCropBank:
    """Every visible object of ``scenes`` generated scenes (``scenes.generate_scene``,
    1-12 objects as in the held-out sets, novel ones included) cropped at
    ``size`` x ``size`` with :func:`jittered_square_boxes` and RoIAlign, as
    ``losses.crop_images`` cuts the teacher's crops. ``progress(done, total)``
    is called every 500 scenes. ``shade_p`` is the share of objects given
    pseudo-3D lighting (``scenes.shade_sprite``; 0: none, the scenes unchanged)."""
    from torchvision.ops import roi_align

    from vildtrain.data.scenes import generate_scene, scene_rng

    if scenes < 1:
        raise ValueError(f"clipdata: scene bank of {scenes} scenes: need at least 1")
    index = {c.id: i for i, c in enumerate(categories)}
    crops, labels = [], []
    for i in range(scenes):
        rng = scene_rng(seed, i)
        img, objs = generate_scene(rng, art, categories, styles, size=scene_size, label_novel=True, shade_p=shade_p)
        if objs:
            boxes = torch.tensor([[o.bbox[0], o.bbox[1], o.bbox[0] + o.bbox[2], o.bbox[1] + o.bbox[3]]
                                  for o in objs], dtype=torch.float32)
            boxes = jittered_square_boxes(boxes, rng, jitter, scales)
            img01 = torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)
            cut = roi_align(img01[None], [boxes], output_size=(size, size), spatial_scale=1.0, sampling_ratio=0,
                            aligned=True)
            crops.append(cut.mul_(255.0).round_().clamp_(0, 255).to(torch.uint8))
            labels.extend(index[o.category_id] for o in objs)
        if progress is not None and ((i + 1) % 500 == 0 or i + 1 == scenes):
            progress(i + 1, scenes)
    if not labels:
        raise ValueError(f"clipdata: {scenes} scenes gave no objects")
    return SceneCropBank(crops=torch.cat(crops), labels=torch.tensor(labels, dtype=torch.int64))
