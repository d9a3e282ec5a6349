"""The reference-size architectures, random-weight stand-ins for what users of
real ViLD models bring (docs/reference.md): torchvision's ResNet-50-FPN Mask
R-CNN body with ViLD's 512-d text and image heads, and CLIP ViT-B/32's text
transformer, both with the state_dict key names and shapes of the public
checkpoints, so the converters (:mod:`vildtrain.export.convert_detector`,
:mod:`vildtrain.export.convert_clip`) load real weights into them and
:mod:`vildtrain.export.export_reference` exports them as a bundle.
"""
from __future__ import annotations

import math

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import resnet50
from torchvision.models.resnet import Bottleneck
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.detection.faster_rcnn import TwoMLPHead
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from vildtrain.models.detector import DetectorConfig, VildDetector
from vildtrain.text import clip_tokenizer

RESIDUAL_BN_SCALE = 0.2

# CLIP ViT-B/32's text tower (OpenAI's ModifiedResNet/ViT configs share it).
CLIP_B32_TEXT = {"vocab_size": 49408, "context_length": 77, "width": 512, "layers": 12, "heads": 8, "embed_dim": 512}


def reference_config() -> DetectorConfig:
    """The manifest numbers of torchvision's Mask R-CNN R50-FPN (test time), ViLD's 512-d heads."""
    return DetectorConfig(
        embed_dim=512, widths=(256, 512, 1024, 2048), blocks=(3, 4, 6, 3), fpn_channels=256,
        anchor_sizes=(32, 64, 128, 256, 512), aspect_ratios=(0.5, 1.0, 2.0),
        rpn_pre_nms_top_n_test=1000, rpn_post_nms_top_n_test=1000, rpn_nms_iou=0.7,
        head_hidden=1024, image_head_hidden=1024, max_side=1024, size_divisible=64,
        extra={"arch": "r50-fpn-clip-b32"})


# ---------------------------------------------------------------- detector parts

class R50FPN(nn.Module):
    """torchvision's ``resnet_fpn_backbone("resnet50")`` (state_dict keys ``body.*``,
    ``fpn.*`` as in ``maskrcnn_resnet50_fpn``'s ``backbone.*``), with plain
    BatchNorm2d (folded on export) and levels named p2..p6."""

    def __init__(self, cfg: DetectorConfig) -> None:
        super().__init__()
        net = resnet50(weights=None, norm_layer=nn.BatchNorm2d)
        self.body = IntermediateLayerGetter(net, {f"layer{i + 1}": f"p{i + 2}" for i in range(4)})
        self.fpn = FeaturePyramidNetwork(list(cfg.widths), cfg.fpn_channels, extra_blocks=LastLevelMaxPool())
        self.names = cfg.level_names

    def forward(self, x: Tensor) -> "OrderedDict[str, Tensor]":
        out = self.fpn(self.body(x))
        return OrderedDict((name, f) for name, f in zip(self.names, out.values()))


class ReferenceBoxHead(nn.Module):
    """Pooled RoIs -> (text embeddings, image embeddings, box deltas): torchvision's
    ``TwoMLPHead`` (fc6, fc7) shared by ViLD's text and image projections and a
    class-agnostic box regressor."""

    def __init__(self, cfg: DetectorConfig) -> None:
        super().__init__()
        self.box_head = TwoMLPHead(cfg.fpn_channels * cfg.roi_output_size ** 2, cfg.head_hidden)
        self.text_proj = nn.Linear(cfg.head_hidden, cfg.embed_dim)
        self.image_proj = nn.Linear(cfg.head_hidden, cfg.embed_dim)
        self.box_pred = nn.Linear(cfg.head_hidden, 4)
        nn.init.normal_(self.box_pred.weight, std=0.001)   # torchvision's FastRCNNPredictor bbox_pred
        nn.init.zeros_(self.box_pred.bias)

    def forward(self, rois: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        h = self.box_head(rois)
        return F.normalize(self.text_proj(h), dim=-1), F.normalize(self.image_proj(h), dim=-1), self.box_pred(h)


def build_detector(cfg: DetectorConfig) -> VildDetector:
    """A VildDetector (torchvision's RPN, anchors and RoIAlign, the same inference
    code and exporter as the trained detector) with the R50-FPN body and box head."""
    model = VildDetector(DetectorConfig(**{**cfg.to_dict(), "widths": (8, 8, 8, 8), "blocks": (1, 1, 1, 1),
                                           "fpn_channels": cfg.fpn_channels}))
    model.cfg = cfg
    model.backbone = R50FPN(cfg)
    model.box_head = ReferenceBoxHead(cfg)
    # The last BatchNorm of each Bottleneck at scale 0.2 instead of 1 (trained
    # ResNets have small ones; torchvision's zero_init_residual starts them at 0):
    # at 1 the residual stream grows block by block and float32 rounding with it
    # (PyTorch float32 vs float64 on a golden image: 5e-4 at 1, 2e-5 at 0.2).
    for m in model.backbone.body.modules():
        if isinstance(m, Bottleneck):
            nn.init.constant_(m.bn3.weight, RESIDUAL_BN_SCALE)
    # The RPN objectness layer at 0.1 instead of torchvision's 0.01, so the random
    # logits spread and the goldens' top-n and NMS orders are not near-ties.
    nn.init.normal_(model.rpn.head.cls_logits.weight, std=0.1)
    return model.eval()


@torch.no_grad()
def calibrate_batchnorm(model: VildDetector, images: list[Tensor]) -> None:
    """Set every body BatchNorm's statistics to the mean and variance of its input
    over ``images`` (train-mode passes with a cumulative average)."""
    bns = [m for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.backbone.train()
    for x in images:
        model.backbone.body(x)
    model.backbone.eval()
    for bn in bns:
        bn.momentum = 0.1


# ---------------------------------------------------------------- CLIP text tower

class QuickGELU(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


class Attention(nn.Module):
    """``nn.MultiheadAttention``'s parameters (in_proj_weight/bias, out_proj), written out."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        b, length, width = x.shape
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        split = lambda t: t.reshape(b, length, self.heads, -1).transpose(1, 2)  # noqa: E731
        q, k, v = split(q), split(k), split(v)
        att = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1]) + mask
        y = (att.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, length, width)
        return self.out_proj(y)


ACTIVATIONS = {"quick_gelu": QuickGELU, "gelu": nn.GELU}


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int, activation: str = "quick_gelu") -> None:
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = Attention(width, heads)
        self.mlp = nn.Sequential(OrderedDict([("c_fc", nn.Linear(width, 4 * width)),
                                              ("gelu", ACTIVATIONS[activation]()),
                                              ("c_proj", nn.Linear(4 * width, width))]))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x), mask)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, activation: str = "quick_gelu") -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads, activation) for _ in range(layers))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        for block in self.resblocks:
            x = block(x, mask)
        return x


class ClipTextTower(nn.Module):
    """CLIP's text encoder with OpenAI's state_dict keys (``token_embedding``,
    ``positional_embedding``, ``transformer.resblocks.N.*``, ``ln_final``,
    ``text_projection``) and initialisation (``CLIP.initialize_parameters``).

    ``encode_text(ids)``: int64 [B, L] CLIP layout -> [B, D], L2-normalised,
    pooled at the end token (the largest id: ArgMax in the graph)."""

    def __init__(self, vocab_size: int, context_length: int, width: int, layers: int, heads: int,
                 embed_dim: int, activation: str = "quick_gelu") -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"export_reference: activation {activation!r}; known: {', '.join(ACTIVATIONS)}")
        self.cfg = {"vocab_size": vocab_size, "context_length": context_length, "width": width,
                    "layers": layers, "heads": heads, "embed_dim": embed_dim, "activation": activation}
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, width))
        self.transformer = Transformer(width, layers, heads, activation)
        self.ln_final = nn.LayerNorm(width)
        self.text_projection = nn.Parameter(torch.empty(width, embed_dim))
        self.register_buffer("attn_mask", torch.full((context_length, context_length), float("-inf")).triu(1),
                             persistent=False)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        proj_std = width ** -0.5 * (2 * layers) ** -0.5
        for block in self.transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=width ** -0.5)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.zeros_(block.attn.out_proj.bias)
            nn.init.normal_(block.mlp.c_fc.weight, std=(2 * width) ** -0.5)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
        nn.init.normal_(self.text_projection, std=width ** -0.5)

    @property
    def context_length(self) -> int:
        return self.cfg["context_length"]

    @property
    def embed_dim(self) -> int:
        return self.cfg["embed_dim"]

    def encode_text(self, ids: Tensor) -> Tensor:
        length = ids.shape[1]
        x = self.token_embedding(ids) + self.positional_embedding[:length]
        x = self.ln_final(self.transformer(x, self.attn_mask[:length, :length]))
        x = x[torch.arange(x.shape[0]), ids.argmax(dim=-1)] @ self.text_projection
        return F.normalize(x, dim=-1)

    @torch.no_grad()
    def encode_trimmed(self, ids: Tensor) -> Tensor:
        """``encode_text`` on the ids cut after the batch's last end token. The same
        numbers: with the causal mask no position attends to a later one, so the
        padding after the end token never reaches the pooled position (checked
        against ``encode_text`` by the exporter and tests/test_reference.py)."""
        return self.encode_text(ids[:, : int(ids.argmax(dim=-1).max()) + 1])

    @torch.no_grad()
    def text_embeddings(self, names: list[str], tokenizer, templates: list[str] | None = None,
                        batch: int = 240, progress=None) -> Tensor:
        """Prompt-ensemble embeddings [K, D] (mean of the unit prompt embeddings, renormalised)."""
        templates = templates or TEMPLATES
        per = max(1, batch // len(templates))
        out = []
        for start in range(0, len(names), per):
            chunk = names[start:start + per]
            ids = torch.from_numpy(tokenizer.encode_batch([t.format(n) for n in chunk for t in templates],
                                                          self.context_length))
            emb = self.encode_trimmed(ids).view(len(chunk), len(templates), -1).mean(dim=1)
            out.append(F.normalize(emb, dim=-1))
            if progress:
                progress(start + len(chunk), len(names))
        return torch.cat(out)
