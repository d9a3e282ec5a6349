"""Multi-scale RoIAlign as one weighted gather, for training on the CPU.

torchvision's CPU ``roi_align`` walks channels with a stride of H*W and its
backward scatters one value at a time; in a training step the pair was the
largest single operator (about 540 ms of a 2.3 s step, ``profile_step --ops``).
``BagMultiScaleRoIAlign`` computes the same numbers (``aligned=False``, a fixed
``sampling_ratio``) as one ``embedding_bag``: every level's feature map is laid
out channels-last as rows of a table, and each output bin is the weighted sum
of the rows its samples' bilinear corners read. Forward and backward then move
whole 64-channel rows.

torchvision's sampling rules, kept exactly:

* box corners times the level's scale, no half-pixel shift; a box is at least
  1 px wide and high; bins are ``box / output_size``; sample positions are
  computed in the kernel's order of float32 operations, so that they round
  alike (at 100 px a float32 position is good to 8e-6 px, which is a 1e-5
  difference in a pooled value where the map is steep);
* ``sampling_ratio`` x ``sampling_ratio`` samples per bin at the centres of an
  even sub-grid, averaged (a sample outside the map still counts);
* a sample more than one pixel outside the map reads 0; otherwise its
  coordinates are clamped into the map before bilinear interpolation.

Levels and scales are ``MultiScaleRoIAlign``'s (``map_levels``, ``scales``),
which the detector fixes at construction.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.poolers import _filter_input


def _axis(coord: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """Sample positions [K, n] on an axis of ``size`` pixels -> the two corner
    indices [K, n, 2] and their bilinear weights [K, n, 2] (0 for a sample more
    than one pixel outside), as torchvision's ``bilinear_interpolate``."""
    valid = (coord >= -1.0) & (coord <= size)
    c = coord.clamp(min=0.0)
    low = c.floor().long()
    last = low >= size - 1
    low = low.clamp(max=size - 1)
    high = torch.where(last, low, low + 1)
    frac = torch.where(last, torch.zeros_like(c), c - low.to(c.dtype))
    weights = torch.stack([1.0 - frac, frac], dim=-1) * valid.unsqueeze(-1).to(c.dtype)
    return torch.stack([low, high], dim=-1), weights


def bag_roi_align(features: list[Tensor], scales: list[float], boxes: list[Tensor], images: list[Tensor],
                  output_size: int, sampling_ratio: int) -> list[Tensor]:
    """Pool boxes from feature maps, one group per level.

    ``features[l]`` is [B,C,H_l,W_l]; ``boxes[l]`` [K_l,4] (x1,y1,x2,y2 in image
    coordinates) with ``images[l]`` [K_l] their batch indices. Returns
    [K_l, C, output_size, output_size] per level."""
    if sampling_ratio < 1:
        raise ValueError(f"bag_roi_align: sampling_ratio must be at least 1, not {sampling_ratio}")
    channels = features[0].shape[1]
    table = torch.cat([f.permute(0, 2, 3, 1).reshape(-1, channels) for f in features])
    o, s = output_size, sampling_ratio
    bins = torch.arange(o, device=table.device, dtype=table.dtype).view(1, o, 1)
    halves = (torch.arange(s, device=table.device, dtype=table.dtype) + 0.5).view(1, 1, s)

    def samples(first: Tensor, side: Tensor) -> Tensor:
        """[K,1] box start and side -> [K, o*s] sample positions, rounded as
        torchvision's kernel rounds them: start + bin * size + ((i + .5) * size) / s."""
        size = (side / o).view(-1, 1, 1)
        return (first.view(-1, 1, 1) + bins * size + halves * size / s).view(-1, o * s)

    rows, weights, counts, start = [], [], [], 0
    for f, scale, bx, img in zip(features, scales, boxes, images):
        _, _, height, width = f.shape
        k = bx.shape[0]
        counts.append(k)
        if k:
            bx = bx.to(table.dtype) * scale
            w = (bx[:, 2:3] - bx[:, 0:1]).clamp(min=1.0)
            h = (bx[:, 3:4] - bx[:, 1:2]).clamp(min=1.0)
            xi, xw = _axis(samples(bx[:, 0:1], w), width)
            yi, yw = _axis(samples(bx[:, 1:2], h), height)
            yi = yi * width + (start + img * (height * width)).view(k, 1, 1)
            yi, yw = yi.view(k, o, 1, s, 1, 2, 1), yw.view(k, o, 1, s, 1, 2, 1)
            xi, xw = xi.view(k, 1, o, 1, s, 1, 2), xw.view(k, 1, o, 1, s, 1, 2)
            # [K, bin row, bin col, sample row, sample col, row corner, col corner]
            rows.append((yi + xi).reshape(-1))
            weights.append((yw * xw).reshape(-1) / (s * s))
        start += f.shape[0] * height * width
    if not rows:
        return [table.new_zeros((k, channels, o, o)) for k in counts]
    rows_t, weights_t = torch.cat(rows), torch.cat(weights)
    per_bin = 4 * s * s
    offsets = torch.arange(0, rows_t.numel(), per_bin, device=table.device)
    pooled = F.embedding_bag(rows_t, table, offsets, mode="sum", per_sample_weights=weights_t)
    return list(pooled.view(-1, o, o, channels).permute(0, 3, 1, 2).split(counts))


class BagMultiScaleRoIAlign(MultiScaleRoIAlign):
    """``MultiScaleRoIAlign`` (same levels, scales and outputs) computed by ``bag_roi_align``."""

    def forward(self, x: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]) -> Tensor:
        if self.scales is None or self.map_levels is None:
            raise ValueError("BagMultiScaleRoIAlign: scales and map_levels must be set")
        features = _filter_input(x, self.featmap_names)
        all_boxes = torch.cat(boxes)
        image_of = torch.cat([torch.full((b.shape[0],), i, dtype=torch.long, device=b.device)
                              for i, b in enumerate(boxes)])
        levels = self.map_levels(boxes)
        at = [torch.where(levels == level)[0] for level in range(len(features))]
        pooled = bag_roi_align(features, self.scales, [all_boxes[i] for i in at], [image_of[i] for i in at],
                               self.output_size[0], self.sampling_ratio)
        order = torch.cat(at)
        stacked = torch.cat(pooled)
        return torch.zeros_like(stacked).index_copy(0, order, stacked)
