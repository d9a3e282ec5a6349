"""The class-agnostic mask head of a Mask R-CNN (ViLD's is class-agnostic too).

* ``mask_pooler``: a ``MultiScaleRoIAlign`` 14x14 over p2..p5 with exactly the box
  RoIAlign's levels, scales, canonical scale/level, sampling ratio and
  ``aligned=False`` (computed by ``roialign.BagMultiScaleRoIAlign``).
* ``MaskHead``: torchvision's ``MaskRCNNHeads`` (``layers`` 3x3 convs of
  ``width`` channels with ReLU on the 14x14 RoI features) and
  ``MaskRCNNPredictor`` (a stride-2 2x2 transposed conv to 28x28, ReLU, a 1x1
  conv to one class): pooled RoIs [N,C,14,14] -> mask logits [N,1,28,28].
* ``paste_masks``: torchvision's ``paste_masks_in_image`` (the mask padded by one
  pixel, the box grown to match, each box rounded to integer pixels and the
  mask resized bilinearly into it), then ``probability >= threshold``.

Inference (:func:`detection_masks`): each final detection's box, in original
image pixels, is mapped to the resized image (times the resize scale per axis),
pooled from the RoI levels, run through the head, and its sigmoid pasted into
the original image at the original box.

The default width is 64 (the FPN's), four conv layers: per RoI
:func:`flops_per_roi` counts 64.4 MFLOP (multiply-adds x 2), so ten detections
add 0.64 GFLOP to a detect request of about 13.9 GFLOP (4.6%). Width 128 would
be 228 MFLOP per RoI (16%), width 256 (Mask R-CNN's) 855 MFLOP (62%).
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.roi_heads import paste_masks_in_image
from torchvision.ops.poolers import initLevelMapper

from vildtrain.models.detector import DetectorConfig
from vildtrain.models.roialign import BagMultiScaleRoIAlign


@dataclass
class MaskConfig:
    """The mask head's architecture and the inference numbers the bundle records."""
    in_channels: int = 64      # the FPN's channels
    width: int = 64            # channels of every conv layer and of the transposed conv
    layers: int = 4            # 3x3 conv layers (MaskRCNNHeads)
    roi_output_size: int = 14  # mask RoIAlign output
    mask_size: int = 28        # predicted mask side (2 x roi_output_size)
    threshold: float = 0.5     # pasted probability >= threshold is the mask

    @classmethod
    def from_dict(cls, d: dict) -> "MaskConfig":
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)


class MaskHead(nn.Module):
    """Pooled RoI features [N,in,14,14] -> class-agnostic mask logits [N,1,28,28]."""

    def __init__(self, cfg: MaskConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or MaskConfig()
        c = self.cfg
        if c.mask_size != 2 * c.roi_output_size:
            raise ValueError(f"mask_head: mask_size {c.mask_size} must be twice roi_output_size {c.roi_output_size}")
        if c.width <= 0 or c.layers <= 0:
            raise ValueError(f"mask_head: width {c.width} and layers {c.layers} must be positive")
        self.head = MaskRCNNHeads(c.in_channels, [c.width] * c.layers, 1)
        self.predictor = MaskRCNNPredictor(c.width, c.width, 1)
        # torchvision's Kaiming init puts the first logits at +-20; start them near 0
        # (loss log 2), so a short run does not spend its first steps shrinking them.
        nn.init.normal_(self.predictor.mask_fcn_logits.weight, std=0.001)

    def forward(self, rois: Tensor) -> Tensor:
        x = self.head(rois)
        if not self.training:
            return self.predictor(x)
        # Training: the 2x2 stride-2 transposed conv as one matrix product. PyTorch's
        # CPU backward of ConvTranspose2d (slow_conv_transpose2d) took 80% of a step;
        # this computes the same numbers (test_mask_head checks) with a fast backward.
        up = self.predictor.conv5_mask
        n, _, h, w = x.shape
        y = torch.einsum("nchw,coab->nohawb", x, up.weight).reshape(n, -1, 2 * h, 2 * w)
        y = F.relu(y + up.bias.view(1, -1, 1, 1))
        return self.predictor.mask_fcn_logits(y)


def flops_per_roi(cfg: MaskConfig) -> int:
    """FLOPs (2 x multiply-adds, biases and ReLUs left out) of one RoI through the head."""
    s, m = cfg.roi_output_size, cfg.mask_size
    macs, cin = 0, cfg.in_channels
    for _ in range(cfg.layers):
        macs += s * s * cfg.width * cin * 9
        cin = cfg.width
    macs += m * m * cfg.width * cin   # 2x2 stride-2 transposed conv: each output pixel reads one input pixel
    macs += m * m * cfg.width         # 1x1 conv to one class
    return 2 * macs


def mask_pooler(det: DetectorConfig, output_size: int = 14) -> BagMultiScaleRoIAlign:
    """The mask RoIAlign: the box RoIAlign's levels, scales and mapping at ``output_size``."""
    pool = BagMultiScaleRoIAlign(det.roi_level_names, output_size, det.roi_sampling_ratio,
                                 canonical_scale=det.roi_canonical_scale, canonical_level=det.roi_canonical_level)
    strides = det.strides[: len(det.roi_level_names)]
    pool.scales = [1.0 / s for s in strides]
    pool.map_levels = initLevelMapper(int(math.log2(strides[0])), int(math.log2(strides[-1])),
                                      canonical_scale=det.roi_canonical_scale,
                                      canonical_level=det.roi_canonical_level)
    return pool


def manifest_section(cfg: MaskConfig, det: DetectorConfig) -> dict:
    """The bundle manifest's ``mask_head``: what the Go pipeline needs to run the graph."""
    return {"graph": "mask_head.onnx", "class_agnostic": True,
            "roi_align": {"output_size": cfg.roi_output_size, "sampling_ratio": det.roi_sampling_ratio,
                          "aligned": False, "canonical_scale": det.roi_canonical_scale,
                          "canonical_level": det.roi_canonical_level},
            "mask_size": cfg.mask_size, "threshold": cfg.threshold, "paste": "torchvision paste_masks_in_image",
            "width": cfg.width, "layers": cfg.layers, "flops_per_roi": flops_per_roi(cfg)}


def paste_masks(probs: Tensor, boxes: Tensor, image_size: tuple[int, int], threshold: float) -> Tensor:
    """Mask probabilities [N,1,M,M] and boxes [N,4] (image pixels) -> bool [N,H,W],
    torchvision's ``paste_masks_in_image`` (padding 1) then ``>= threshold``."""
    h, w = int(image_size[0]), int(image_size[1])
    if probs.shape[0] == 0:
        return torch.zeros((0, h, w), dtype=torch.bool)
    pasted = paste_masks_in_image(probs, boxes, (h, w), padding=1)
    return pasted[:, 0] >= threshold


@torch.no_grad()
def pasted_probabilities(head: MaskHead, pooler: BagMultiScaleRoIAlign, regions, boxes: Tensor
                         ) -> tuple[Tensor, Tensor, Tensor]:
    """(pooled RoIs [N,C,14,14], mask logits [N,1,28,28], pasted probabilities [N,H0,W0]) for
    ``boxes`` [N,4] in original-image pixels of ``regions`` (:func:`vildtrain.models.infer.regions`)."""
    prep = regions.prepared
    sy, sx = prep.scale
    resized = boxes * torch.tensor([sx, sy, sx, sy], dtype=boxes.dtype)
    names = pooler.featmap_names
    feats = {n: regions.outputs[f"feat_{n}"] for n in names}
    if boxes.shape[0] == 0:
        s, m = head.cfg.roi_output_size, head.cfg.mask_size
        c = head.cfg.in_channels
        return boxes.new_zeros((0, c, s, s)), boxes.new_zeros((0, 1, m, m)), boxes.new_zeros((0,) + prep.original)
    rois = pooler(feats, [resized], [prep.resized])
    logits = head(rois)
    pasted = paste_masks_in_image(torch.sigmoid(logits), boxes, prep.original, padding=1)[:, 0]
    return rois, logits, pasted


@torch.no_grad()
def detection_masks(head: MaskHead, pooler: BagMultiScaleRoIAlign, regions, detections) -> list:
    """Bool [H0,W0] masks (NumPy) of ``detections`` (:class:`vildtrain.models.infer.Detection`)."""
    if not detections:
        return []
    boxes = torch.tensor([d.box for d in detections], dtype=torch.float32)
    _, _, pasted = pasted_probabilities(head, pooler, regions, boxes)
    return list((pasted >= head.cfg.threshold).numpy())


def save_mask_head(path: str, head: MaskHead, extra: dict | None = None) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    torch.save({"mask_config": head.cfg.to_dict(), "state": head.state_dict(), "extra": extra or {}}, tmp)
    os.replace(tmp, path)


def load_mask_head(path: str) -> tuple[MaskHead, dict]:
    """A mask head in eval mode and its extras, from a final ``mask_head.pt`` or a
    training run's ``checkpoint.pt`` (then extras hold the step)."""
    blob = torch.load(path, map_location="cpu", weights_only=False)
    if "mask_config" not in blob:
        raise ValueError(f"mask_head: {path} is not a mask head checkpoint")
    head = MaskHead(MaskConfig.from_dict(blob["mask_config"]))
    if "state" in blob:
        head.load_state_dict(blob["state"])
        extra = blob.get("extra", {})
    else:
        head.load_state_dict(blob["head"])
        extra = {"step": blob["step"], "total": blob["total"]}
    head.eval()
    return head, extra
