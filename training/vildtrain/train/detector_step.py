"""One training step of the detector: the student, its RoI sampler and a batch's losses.

* RPN losses (torchvision) on base boxes only;
* ViLD-text: RoIs sampled as in Faster R-CNN (base boxes only; everything else,
  unlabelled novel objects included, is background), cross-entropy over
  [background + base categories] through the text head, plus class-agnostic
  box regression;
* ViLD-image: the top ``distill_top`` RPN proposals of each image (plus
  ``distill_random`` random others) are cropped from the [0,1] image at 1x and
  1.5x; the mini-CLIP's averaged, renormalised embeddings are the targets of an
  L1 loss on the image head.

Each phase is a ``record_function`` range (``step/backbone`` ...), which
``profile_step`` times.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.autograd.profiler import record_function
from torchvision.models.detection.roi_heads import RoIHeads

from vildtrain.models.detector import DetectorConfig, VildDetector, build_detector, init_body_from_miniclip
from vildtrain.models.losses import box_regression_loss, crop_embeddings, distillation_loss, vild_text_loss

PRECISIONS = ("bf16", "fp32")  # --precision: the backbone's compute type in train_step


@dataclass
class LossWeights:
    rpn: float = 1.0
    text: float = 1.0
    box: float = 1.0
    image: float = 1.0


def frozen_modules(model: VildDetector, stages: int) -> list[torch.nn.Module]:
    """The body's stem and first ``stages`` stages (none when ``stages`` is 0)."""
    if stages <= 0:
        return []
    body = model.backbone.body
    return [body.stem, *body.stages[:stages]]


# the settings that shape the weights (the others, e.g. the scene size, may change between runs)
ARCHITECTURE_FIELDS = ("embed_dim", "stem_channels", "stem_kernels", "widths", "blocks", "fpn_channels",
                       "anchor_sizes", "aspect_ratios", "roi_output_size", "head_hidden", "image_head_hidden")


def build_student(cfg: DetectorConfig, clip, init: str, freeze: int,
                  report: bool = False) -> tuple[VildDetector, list[torch.nn.Module]]:
    """The detector to train, in training mode: with ``init`` "miniclip" its body
    starts from the mini-CLIP image tower, with a path to a detector checkpoint it
    starts from all of that detector's weights, and (either way) its stem and
    first ``freeze`` stages are fixed (no gradients, BatchNorm in eval mode). Returns (model, frozen modules)."""
    model = build_detector(cfg)
    if init == "miniclip":
        copied = init_body_from_miniclip(model.backbone.body, clip.image)
        if report:
            print(f"train_detector: body initialised from the mini-CLIP image tower ({copied} tensors)",
                  file=sys.stderr, flush=True)
    elif init != "none":
        # a trained detector to continue from (e.g. `detector_from_bundle`'s): every weight
        blob = torch.load(init, map_location="cpu", weights_only=False)
        theirs, ours = DetectorConfig.from_dict(blob["config"]).to_dict(), cfg.to_dict()
        diff = [k for k in ARCHITECTURE_FIELDS if theirs.get(k) != ours.get(k)]
        if diff:
            raise ValueError(f"train_detector: --init {init} has another architecture ({', '.join(diff)})")
        model.load_state_dict(blob["state"] if "state" in blob else blob["model"])
        if report:
            print(f"train_detector: every weight from {init}", file=sys.stderr, flush=True)
    frozen = frozen_modules(model, freeze if init != "none" else 0)
    for m in frozen:
        m.requires_grad_(False)
    model.train()
    for m in frozen:
        m.eval()
    return model, frozen


def make_sampler(cfg: DetectorConfig) -> RoIHeads:
    """torchvision's Fast R-CNN RoI sampler (only ``select_training_samples`` is used)."""
    return RoIHeads(None, None, None, cfg.box_fg_iou, cfg.box_bg_iou, cfg.box_batch_per_image,
                    cfg.box_positive_fraction, tuple(cfg.box_coder_weights), cfg.score_threshold,
                    cfg.nms_iou, cfg.max_detections)


def distill_boxes(proposals: list[Tensor], top: int, rand: int, g: torch.Generator) -> list[Tensor]:
    """Per image the ``top`` best proposals (they come sorted by objectness) and
    ``rand`` drawn uniformly from the rest."""
    out = []
    for p in proposals:
        p = p.detach()
        head = p[:top]
        rest = p[top:]
        if rand > 0 and rest.shape[0] > 0:
            idx = torch.randperm(rest.shape[0], generator=g)[:rand]
            head = torch.cat([head, rest[idx]])
        out.append(head)
    return out


def train_step(model: VildDetector, clip, sampler: RoIHeads, images_u8: Tensor, targets: list[dict],
               base_text: Tensor, weights: LossWeights, distill_top: int, distill_random: int,
               g: torch.Generator, bf16_backbone: bool = False) -> tuple[Tensor, dict[str, float]]:
    """Forward one batch and return (total loss, per-loss values).

    With ``bf16_backbone`` the backbone (body + FPN) computes under bfloat16
    autocast and hands float32 features on; weights, heads, losses and the
    optimizer stay float32 (``--precision``)."""
    cfg = model.cfg
    images01 = images_u8.float().div_(255.0)
    sizes = [(int(images01.shape[-2]), int(images01.shape[-1]))] * images01.shape[0]
    with record_function("step/backbone"):
        x = model.normalize(images01)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16_backbone):
            feats = model.backbone(x)
        if bf16_backbone:
            feats = type(feats)((k, v.float()) for k, v in feats.items())
    with record_function("step/rpn"):
        proposals, rpn_losses = model.rpn(model.image_list(x, sizes), feats, targets)
    roi_feats = {n: feats[n] for n in cfg.roi_level_names}

    # ViLD-text + box regression on sampled RoIs.
    with record_function("step/text"):
        props, _, labels, reg_targets = sampler.select_training_samples([p.detach() for p in proposals], targets)
        rois = model.roi_pool(roi_feats, props, sizes)
        text_emb, deltas = model.box_head.text(rois)
        labels_t = torch.cat(labels)
        l_text = vild_text_loss(text_emb, labels_t, base_text, model.background_embedding(), cfg.temperature)
        l_box = box_regression_loss(deltas, torch.cat(reg_targets), labels_t)

    # ViLD-image: distil mini-CLIP crop embeddings into the image head.
    with record_function("step/teacher"):
        dboxes = distill_boxes(proposals, distill_top, distill_random, g)
        teacher = crop_embeddings(clip, images01, dboxes)
    with record_function("step/image"):
        image_emb = model.box_head.image(model.roi_pool(roi_feats, dboxes, sizes))
        l_image = distillation_loss(image_emb, teacher)

    total = (weights.rpn * (rpn_losses["loss_objectness"] + rpn_losses["loss_rpn_box_reg"])
             + weights.text * l_text + weights.box * l_box + weights.image * l_image)
    parts = {"rpn_objectness": float(rpn_losses["loss_objectness"]), "rpn_box": float(rpn_losses["loss_rpn_box_reg"]),
             "text": float(l_text), "box": float(l_box), "image": float(l_image)}
    return total, parts
