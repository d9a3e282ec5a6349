"""The ViLD detector: a small ResNet-FPN two-stage detector whose classifier is a
region embedding in the mini-CLIP's text space (Gu et al. 2022, section 3).

Built from torchvision's detection components so the exported bundle has
torchvision semantics throughout (docs/bundle.md):

* ``Backbone``: a ResNet-style body (BasicBlocks, strides 4..32) and a
  ``FeaturePyramidNetwork`` with ``LastLevelMaxPool``: levels p2..p5 (RoI and RPN)
  and p6 (RPN only), all ``fpn_channels`` wide.
* ``RegionProposalNetwork`` with an ``AnchorGenerator`` (one size per level, three
  aspect ratios) and an ``RPNHead``.
* ``MultiScaleRoIAlign`` 7x7 over p2..p5 (scales fixed, not inferred), computed by
  ``roialign.BagMultiScaleRoIAlign`` (the same numbers, a faster CPU backward).
* ``BoxHead``: two MLP towers on the pooled features. The text tower gives the
  text-head embedding (ViLD-text) and the class-agnostic box deltas; the image
  tower gives the image-head embedding (ViLD-image), trained only by distillation.
  ViLD-ensemble keeps the two heads separate in the same way.
* a learned background embedding; temperature 0.01.

The numbers that the Go pipeline needs live in ``DetectorConfig`` and are written
to the bundle manifest by :mod:`vildtrain.export`.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.models.resnet import BasicBlock
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from torchvision.ops.poolers import initLevelMapper

from vildtrain.models.roialign import BagMultiScaleRoIAlign

def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU matrix [N,M] of two sets of (x1, y1, x2, y2) boxes, bit for bit
    ``torchvision.ops.box_iou``, about twice as fast on the CPU.

    torchvision takes the corner maxima and minima on [N,M,2] views whose last
    axis has stride 2; one coordinate at a time every operand is a contiguous
    [N,M] plane. The arithmetic and its order are the same. Anchor matching
    (RPN: ground truth x every anchor) spends most of its time here.
    """
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])
    w = (torch.min(boxes1[:, None, 2], boxes2[:, 2]) - torch.max(boxes1[:, None, 0], boxes2[:, 0])).clamp(min=0)
    h = (torch.min(boxes1[:, None, 3], boxes2[:, 3]) - torch.max(boxes1[:, None, 1], boxes2[:, 1])).clamp(min=0)
    inter = w * h
    return inter / (area1[:, None] + area2 - inter)


IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)


@dataclass
class DetectorConfig:
    """Every architectural and inference number of the detector."""

    embed_dim: int = 256
    # backbone: a stem of stride-2 convs (one per kernel size in stem_kernels),
    # then stages C2..C5 at strides 4, 8, 16, 32. The default is the mini-CLIP
    # image tower's layout (5x5 stem, two blocks per stage, widths 64/128/256)
    # plus a fourth stage, so the body starts from the mini-CLIP's weights
    # (see init_body_from_miniclip).
    stem_channels: int = 32
    stem_kernels: tuple[int, ...] = (5,)
    widths: tuple[int, ...] = (64, 128, 256, 256)
    blocks: tuple[int, ...] = (2, 2, 2, 1)
    fpn_channels: int = 64
    # one anchor size per level p2..p6
    anchor_sizes: tuple[int, ...] = (16, 32, 64, 128, 256)
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    # RPN
    rpn_fg_iou: float = 0.7
    rpn_bg_iou: float = 0.3
    rpn_batch_per_image: int = 256
    rpn_positive_fraction: float = 0.5
    rpn_pre_nms_top_n_train: int = 600
    rpn_post_nms_top_n_train: int = 300
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_test: int = 300
    rpn_nms_iou: float = 0.7
    rpn_min_size: float = 1e-3
    rpn_score_threshold: float = 0.0
    rpn_box_coder_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)
    # RoI pooling and box head
    roi_output_size: int = 7
    roi_sampling_ratio: int = 2
    roi_canonical_scale: int = 224
    roi_canonical_level: int = 4
    box_fg_iou: float = 0.5
    box_bg_iou: float = 0.5
    box_batch_per_image: int = 512
    box_positive_fraction: float = 0.75
    box_coder_weights: tuple[float, ...] = (10.0, 10.0, 5.0, 5.0)
    # width of the box head's two fully connected towers: the text tower (text
    # embedding and box deltas) and the image tower (image embedding)
    head_hidden: int = 512
    image_head_hidden: int = 1024
    # scoring
    temperature: float = 0.01
    # the image head's softmax temperature at inference; 0: ``temperature``
    # (training never uses it; experiments/ensemble/ chose the bundle's)
    image_temperature: float = 0.0
    ensemble_lambda: float = 2.0 / 3.0
    # input
    max_side: int = 384
    # 64 = the coarsest stride, so every level's grid is exactly image/stride and
    # torchvision's AnchorGenerator stride (padded size // grid size) equals the
    # manifest stride on every level.
    size_divisible: int = 64
    mean: tuple[float, ...] = IMAGE_MEAN
    std: tuple[float, ...] = IMAGE_STD
    # postprocess
    score_threshold: float = 0.05
    nms_iou: float = 0.5
    max_detections: int = 100
    labels_per_box: int = 1
    extra: dict = field(default_factory=dict)

    @property
    def level_names(self) -> list[str]:
        return [f"p{i + 2}" for i in range(len(self.anchor_sizes))]

    @property
    def roi_level_names(self) -> list[str]:
        return self.level_names[: len(self.widths)]

    @property
    def strides(self) -> list[int]:
        return [2 ** (i + 2) for i in range(len(self.anchor_sizes))]

    @property
    def num_anchors(self) -> int:
        return len(self.aspect_ratios)

    @classmethod
    def from_dict(cls, d: dict) -> "DetectorConfig":
        d = dict(d)
        # checkpoints from before stem_kernels existed have the two-conv 3x3 stem
        d.setdefault("stem_kernels", (3, 3))
        for k, v in d.items():
            if isinstance(v, list):
                d[k] = tuple(v)
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)


class Body(nn.Module):
    """A small ResNet: a stem of stride-2 convs, then one stage per FPN input
    level; the first stage brings the stride to 4, each later one doubles it."""

    def __init__(self, cfg: DetectorConfig) -> None:
        super().__init__()
        s = cfg.stem_channels
        if len(cfg.stem_kernels) not in (1, 2):
            raise ValueError(f"detector: stem_kernels {cfg.stem_kernels}: one or two stride-2 convs")
        stem: list[nn.Module] = []
        cin = 3
        for k in cfg.stem_kernels:
            stem += [nn.Conv2d(cin, s, k, 2, k // 2, bias=False), nn.BatchNorm2d(s), nn.ReLU(inplace=True)]
            cin = s
        self.stem = nn.Sequential(*stem)
        first_stride = 4 // 2 ** len(cfg.stem_kernels)
        stages = []
        for i, (cout, n) in enumerate(zip(cfg.widths, cfg.blocks)):
            stride = first_stride if i == 0 else 2
            layers: list[nn.Module] = []
            for j in range(n):
                down = None
                if j == 0 and (stride != 1 or cin != cout):
                    down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                layers.append(BasicBlock(cin, cout, stride if j == 0 else 1, down))
                cin = cout
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.stem(x)
        out = []
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out


def init_body_from_miniclip(body: Body, image_encoder: nn.Module) -> int:
    """Copy the mini-CLIP image tower (stem, then residual blocks in pairs per
    stage) into the detector body wherever the layouts agree, as detectors start
    from a classification network's weights. Returns the number of tensors
    copied; raises if the stem or the first stage does not match."""
    src = image_encoder.state_dict()
    dst = body.state_dict()
    mapping = {}
    for k in src:
        if k.startswith("stem."):
            mapping[k] = k
        elif k.startswith("blocks."):
            _, idx, rest = k.split(".", 2)
            # mini-CLIP: blocks 2i, 2i+1 form stage i (its ResidualBlock.skip is BasicBlock.downsample)
            stage, block = divmod(int(idx), 2)
            mapping[k] = f"stages.{stage}.{block}." + rest.replace("skip.", "downsample.")
    copied = {}
    for k, d in mapping.items():
        if d in dst and dst[d].shape == src[k].shape:
            copied[d] = src[k]
    needed = [d for d in dst if d.startswith(("stem.", "stages.0."))]
    missing = [d for d in needed if d not in copied]
    if missing:
        raise ValueError(f"detector: the mini-CLIP image tower does not match the body's stem and first stage "
                         f"(e.g. {missing[0]})")
    body.load_state_dict(copied, strict=False)
    return len(copied)


class Backbone(nn.Module):
    """Body + FPN: normalised image -> OrderedDict p2..p6."""

    def __init__(self, cfg: DetectorConfig) -> None:
        super().__init__()
        self.body = Body(cfg)
        self.fpn = FeaturePyramidNetwork(list(cfg.widths), cfg.fpn_channels, extra_blocks=LastLevelMaxPool())
        self.names = cfg.level_names

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        feats = self.body(x)
        inner = OrderedDict((name, f) for name, f in zip(self.names, feats))
        out = self.fpn(inner)
        # LastLevelMaxPool appends its level as "pool"; name it p6.
        return OrderedDict((name, f) for name, f in zip(self.names, out.values()))


def _tower(inp: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Flatten(), nn.Linear(inp, hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, hidden), nn.ReLU(inplace=True))


class BoxHead(nn.Module):
    """Pooled RoI features -> (text embeddings, image embeddings, box deltas).

    Two towers of two fully connected layers each: the text tower feeds the
    text-head projection and the class-agnostic box regressor, the image tower the
    image-head projection. Embeddings are L2-normalised.
    """

    def __init__(self, cfg: DetectorConfig) -> None:
        super().__init__()
        inp = cfg.fpn_channels * cfg.roi_output_size ** 2
        self.text_tower = _tower(inp, cfg.head_hidden)
        self.text_proj = nn.Linear(cfg.head_hidden, cfg.embed_dim)
        self.box_pred = nn.Linear(cfg.head_hidden, 4)
        self.image_tower = _tower(inp, cfg.image_head_hidden)
        self.image_proj = nn.Linear(cfg.image_head_hidden, cfg.embed_dim)
        nn.init.normal_(self.box_pred.weight, std=0.001)
        nn.init.zeros_(self.box_pred.bias)

    def text(self, rois: Tensor) -> tuple[Tensor, Tensor]:
        h = self.text_tower(rois)
        return F.normalize(self.text_proj(h), dim=-1), self.box_pred(h)

    def image(self, rois: Tensor) -> Tensor:
        return F.normalize(self.image_proj(self.image_tower(rois)), dim=-1)

    def forward(self, rois: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        text, deltas = self.text(rois)
        return text, self.image(rois), deltas


class VildDetector(nn.Module):
    """The whole detector. Training logic lives in :mod:`vildtrain.train.detector_step`
    and :mod:`vildtrain.train.detector_run`, inference in :mod:`vildtrain.models.infer`;
    this module holds the parts."""

    def __init__(self, cfg: DetectorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = Backbone(cfg)
        anchor_gen = AnchorGenerator(
            sizes=tuple((s,) for s in cfg.anchor_sizes),
            aspect_ratios=(tuple(cfg.aspect_ratios),) * len(cfg.anchor_sizes))
        self.rpn = RegionProposalNetwork(
            anchor_gen, RPNHead(cfg.fpn_channels, cfg.num_anchors),
            fg_iou_thresh=cfg.rpn_fg_iou, bg_iou_thresh=cfg.rpn_bg_iou,
            batch_size_per_image=cfg.rpn_batch_per_image, positive_fraction=cfg.rpn_positive_fraction,
            pre_nms_top_n=dict(training=cfg.rpn_pre_nms_top_n_train, testing=cfg.rpn_pre_nms_top_n_test),
            post_nms_top_n=dict(training=cfg.rpn_post_nms_top_n_train, testing=cfg.rpn_post_nms_top_n_test),
            nms_thresh=cfg.rpn_nms_iou, score_thresh=cfg.rpn_score_threshold)
        self.rpn.min_size = cfg.rpn_min_size
        self.rpn.box_similarity = box_iou
        self.rpn.box_coder.weights = tuple(cfg.rpn_box_coder_weights)
        self.roi_pool = BagMultiScaleRoIAlign(cfg.roi_level_names, cfg.roi_output_size, cfg.roi_sampling_ratio,
                                              canonical_scale=cfg.roi_canonical_scale,
                                              canonical_level=cfg.roi_canonical_level)
        # Fix the scales instead of letting torchvision infer them from the first batch.
        strides = cfg.strides[: len(cfg.roi_level_names)]
        self.roi_pool.scales = [1.0 / s for s in strides]
        self.roi_pool.map_levels = initLevelMapper(
            int(math.log2(strides[0])), int(math.log2(strides[-1])),
            canonical_scale=cfg.roi_canonical_scale, canonical_level=cfg.roi_canonical_level)
        self.box_head = BoxHead(cfg)
        self.background = nn.Parameter(F.normalize(torch.randn(cfg.embed_dim), dim=0))
        self.register_buffer("mean", torch.tensor(cfg.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.std).view(1, 3, 1, 1), persistent=False)

    def background_embedding(self) -> Tensor:
        return F.normalize(self.background, dim=0)

    def normalize(self, images01: Tensor) -> Tensor:
        """[B,3,H,W] RGB in [0,1] -> normalised input (padding is added by the caller)."""
        return (images01 - self.mean) / self.std

    def image_list(self, images: Tensor, sizes: list[tuple[int, int]]) -> ImageList:
        return ImageList(images, [(int(h), int(w)) for h, w in sizes])


class BackboneGraph(nn.Module):
    """The ``backbone.onnx`` graph: normalised image -> per level (in manifest order)
    ``feat_L`` (RoI levels), ``rpn_logits_L`` and ``rpn_deltas_L`` (raw RPNHead outputs)."""

    def __init__(self, model: VildDetector) -> None:
        super().__init__()
        self.backbone = model.backbone
        self.head = model.rpn.head
        self.roi_levels = set(model.cfg.roi_level_names)

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        feats = self.backbone(image)
        logits, deltas = self.head(list(feats.values()))
        out: list[Tensor] = []
        for (name, f), lg, dl in zip(feats.items(), logits, deltas):
            if name in self.roi_levels:
                out.append(f)
            out += [lg, dl]
        return tuple(out)


def backbone_output_names(cfg: DetectorConfig) -> list[str]:
    names = []
    for name in cfg.level_names:
        if name in cfg.roi_level_names:
            names.append(f"feat_{name}")
        names += [f"rpn_logits_{name}", f"rpn_deltas_{name}"]
    return names


def build_detector(cfg: DetectorConfig | None = None) -> VildDetector:
    return VildDetector(cfg or DetectorConfig())


def save_checkpoint(path: str, model: VildDetector, extra: dict | None = None) -> None:
    import os
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    torch.save({"config": model.cfg.to_dict(), "state": model.state_dict(), "extra": extra or {}}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str) -> tuple[VildDetector, dict]:
    """A detector in eval mode and its extras, from a final ``detector.pt`` or from a
    training run's ``checkpoint.pt`` (then the extras are {"step": s, "total": t} and
    the mini-CLIP record "teacher"), so a run can be evaluated before it ends."""
    blob = torch.load(path, map_location="cpu", weights_only=False)
    model = VildDetector(DetectorConfig.from_dict(blob["config"]))
    if "state" in blob:
        model.load_state_dict(blob["state"])
        extra = blob.get("extra", {})
    else:
        model.load_state_dict(blob["model"])
        extra = {"step": blob["step"], "total": blob["total"]}
        if "teacher" in blob:
            extra["teacher"] = blob["teacher"]
    model.eval()
    return model, extra


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
