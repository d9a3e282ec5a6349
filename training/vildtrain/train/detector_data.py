"""The detector's training data: scenes drawn on the fly, a step's share per process.

Scene i of a run is ``scenes.scene_rng(seed, i)`` with ``label_novel=False``, so
novel objects are in the pictures but never annotated (:class:`SceneStream`);
step s of a batch of B covers scenes s*B .. s*B+B-1, split evenly over the
data-parallel processes (:class:`StepBatches`). A resumed run therefore draws
exactly the scenes an uninterrupted one would have.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset


def base_categories(categories) -> tuple[list, dict[int, int]]:
    """The base categories in table order, and category id -> label (1..K_base)."""
    base = [c for c in categories if c.split == "base"]
    return base, {c.id: i + 1 for i, c in enumerate(base)}


class SceneStream(Dataset):
    """Training scenes by index: item i is scene ``scene_rng(seed, i)``.

    Returns (uint8 image [3,S,S], boxes [n,4] x1y1x2y2, labels [n] in 1..K_base)
    for the labelled (base) objects; ``base_index`` maps category id -> label.
    A share ``grid_fraction`` of the items, spread evenly over the indices, are
    grid scenes (``scenes.generate_grid_scene``: one object per cell, up to 64
    labelled regions per picture); the rest are ordinary scenes with
    ``objects`` = (fewest, most) objects. Grid scenes draw base categories only
    unless ``grid_novel``: ordinary scenes already show novel objects unlabelled,
    and a grid full of them teaches the text head to call them background.
    """

    def __init__(self, seed: int, length: int, base_index: dict[int, int], size: int = 384,
                 categories=None, styles: tuple[str, ...] | None = None,
                 objects: tuple[int, int] = (1, 12), grid_fraction: float = 0.0,
                 grid_novel: bool = False, grid_sides: tuple[int, ...] | None = None,
                 shade_p: float = 0.0, randconv_p: float = 0.0) -> None:
        from vildtrain.data.categories import load_categories
        from vildtrain.data.scenes import GRID_SIDES, TRAIN_STYLES
        if not 1 <= objects[0] <= objects[1]:
            raise ValueError(f"train_detector: objects per scene {objects}: need 1 <= min <= max")
        if not 0.0 <= grid_fraction <= 1.0:
            raise ValueError(f"train_detector: grid scene fraction {grid_fraction}: need 0 <= f <= 1")
        self.grid_fraction = grid_fraction
        self.grid_sides = tuple(GRID_SIDES if grid_sides is None else grid_sides)
        if not self.grid_sides or min(self.grid_sides) < 1:
            raise ValueError(f"train_detector: grid sides {list(self.grid_sides)}: need at least one, each >= 1")
        self.seed, self.length, self.size, self.objects = seed, length, size, objects
        self.base_index = base_index
        self.categories = categories if categories is not None else load_categories()
        self.styles = tuple(styles or TRAIN_STYLES)
        self.grid_categories = (self.categories if grid_novel
                                else [c for c in self.categories if c.id in base_index])
        self._art = None
        self.shade_p, self.randconv_p = shade_p, randconv_p

    def __len__(self) -> int:
        return self.length

    def is_grid(self, i: int) -> bool:
        """Whether item i is a grid scene: the floor of (i+1)*f steps up at i."""
        f = self.grid_fraction
        return math.floor((i + 1) * f + 1e-9) > math.floor(i * f + 1e-9)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, Tensor]:
        from vildtrain.data.art import ArtLibrary
        from vildtrain.data.scenes import generate_grid_scene, generate_scene, scene_rng
        if self._art is None:
            self._art = ArtLibrary(styles=self.styles, categories=self.categories)
        if self.is_grid(i):
            img, objs = generate_grid_scene(scene_rng(self.seed, i), self._art, self.grid_categories, self.styles,
                                            size=self.size, label_novel=False, sides=self.grid_sides,
                                            shade_p=self.shade_p, randconv_p=self.randconv_p)
        else:
            img, objs = generate_scene(scene_rng(self.seed, i), self._art, self.categories, self.styles,
                                       size=self.size, label_novel=False, min_objects=self.objects[0],
                                       max_objects=self.objects[1], shade_p=self.shade_p,
                                       randconv_p=self.randconv_p)
        boxes, labels = [], []
        for o in objs:
            if not o.labelled:
                continue
            if o.category_id not in self.base_index:
                raise ValueError(f"train_detector: labelled object of non-base category {o.category_id}")
            x, y, w, h = o.bbox
            boxes.append([x, y, x + w, y + h])
            labels.append(self.base_index[o.category_id])
        arr = torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1)
        return (arr, torch.tensor(boxes, dtype=torch.float32).view(-1, 4),
                torch.tensor(labels, dtype=torch.int64))

def collate(batch):
    images = torch.stack([b[0] for b in batch])
    targets = [{"boxes": b[1], "labels": b[2]} for b in batch]
    return images, targets


class StepBatches(torch.utils.data.Sampler):
    """Per step, this process's share of the global batch: step s covers scenes
    s*B .. s*B+B-1, and process r of w takes the r-th of w equal slices."""

    def __init__(self, start: int, stop: int, batch: int, rank: int = 0, world: int = 1) -> None:
        self.start, self.stop, self.batch, self.rank, self.world = start, stop, batch, rank, world
        self.per = batch // world

    def __iter__(self):
        for s in range(self.start, self.stop):
            first = s * self.batch + self.rank * self.per
            yield list(range(first, first + self.per))

    def __len__(self) -> int:
        return max(0, self.stop - self.start)
