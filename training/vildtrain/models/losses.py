"""ViLD's losses (Gu et al. 2022, section 3.2-3.3) and the distillation targets.

* ViLD-text: cross-entropy over [background + base categories] of the cosine
  similarities between the text-head region embedding and the (fixed) text
  embeddings, divided by the temperature. The background is a learned embedding.
  Novel categories never appear: regions on unlabelled novel objects are
  background, exactly as in the paper.
* Box regression: class-agnostic smooth-L1 on positive (base) regions, with
  torchvision's Fast R-CNN normalisation (sum over positives / sampled regions).
* ViLD-image: L1 distance between the image-head region embedding and the
  teacher's image embedding of the region's crop: the mean over regions of the
  L1 norm of the difference. The teacher embedding is the mini-CLIP embedding of
  the 1x and 1.5x crops, averaged and renormalised (:func:`crop_embeddings`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import roi_align

CROP_SCALES: tuple[float, ...] = (1.0, 1.5)


def region_logits(region: Tensor, classes: Tensor, background: Tensor | None, temperature: float) -> Tensor:
    """Cosine logits [N, (1+)K]: background first when given. All inputs unit vectors."""
    logits = region @ classes.t()
    if background is not None:
        logits = torch.cat([region @ background.view(-1, 1), logits], dim=1)
    return logits / temperature


def vild_text_loss(region: Tensor, labels: Tensor, classes: Tensor, background: Tensor,
                   temperature: float) -> Tensor:
    """Cross-entropy over [background + classes]; labels 0 = background, k = classes[k-1]."""
    if region.shape[0] == 0:
        return region.sum() * 0.0
    return F.cross_entropy(region_logits(region, classes, background, temperature), labels)


def box_regression_loss(deltas: Tensor, targets: Tensor, labels: Tensor, beta: float = 1.0 / 9) -> Tensor:
    """Class-agnostic smooth-L1 over positives (labels > 0), normalised by all sampled regions."""
    pos = torch.where(labels > 0)[0]
    if labels.numel() == 0:
        return deltas.sum() * 0.0
    loss = F.smooth_l1_loss(deltas[pos], targets[pos], beta=beta, reduction="sum")
    return loss / labels.numel()


def distillation_loss(region: Tensor, teacher: Tensor) -> Tensor:
    """ViLD-image: mean over regions of ||region - teacher||_1."""
    if region.shape[0] == 0:
        return region.sum() * 0.0
    return (region - teacher).abs().sum(dim=1).mean()


def crop_boxes(boxes: Tensor, scale: float, square: bool = True) -> Tensor:
    """Boxes [N,4] (x1,y1,x2,y2) scaled by ``scale`` about their centres; with
    ``square`` the crop is a square of side max(w, h) * scale, so the teacher sees
    the region undistorted."""
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    w = (boxes[:, 2] - boxes[:, 0]).clamp(min=1.0)
    h = (boxes[:, 3] - boxes[:, 1]).clamp(min=1.0)
    if square:
        w = h = torch.maximum(w, h)
    w, h = w * scale / 2, h * scale / 2
    return torch.stack([cx - w, cy - h, cx + w, cy + h], dim=1)


def crop_images(images01: Tensor, boxes: list[Tensor], size: int, scale: float, square: bool = True) -> Tensor:
    """Crop every box of every image from [B,3,H,W] images in [0,1] at ``size`` x ``size``
    (bilinear, adaptive sampling; outside the image reads as zero)."""
    scaled = [crop_boxes(b, scale, square) for b in boxes]
    return roi_align(images01, scaled, output_size=(size, size), spatial_scale=1.0, sampling_ratio=0,
                     aligned=True)


@torch.no_grad()
def crop_embeddings(clip, images01: Tensor, boxes: list[Tensor], scales: tuple[float, ...] = CROP_SCALES,
                    square: bool = True, chunk: int = 256) -> Tensor:
    """Teacher embeddings [sum N_i, D]: the mini-CLIP image embedding of each box's
    crop at every scale, averaged, renormalised (ViLD's 1x + 1.5x ensemble)."""
    total = sum(int(b.shape[0]) for b in boxes)
    if total == 0:
        return images01.new_zeros((0, clip.embed_dim))
    acc = None
    for s in scales:
        crops = crop_images(images01, boxes, clip.image_size, s, square)
        emb = torch.cat([clip.encode_image(crops[i:i + chunk]) for i in range(0, crops.shape[0], chunk)])
        acc = emb if acc is None else acc + emb
    return F.normalize(acc, dim=-1)
