"""The mini-CLIP: a small CNN image encoder and a small transformer text encoder
sharing one embedding space, trained contrastively (see ``train_clip``).

It stands in for CLIP: its text encoder turns any category name into an
embedding (exported to the bundle as ``text_encoder.onnx``), and its image
encoder is the teacher the detector's image head distils from (ViLD-image).

Interface used by the detector trainer:
    load_miniclip(path=None) -> MiniClip in eval mode
    miniclip_digest(model) -> str, names the weights (recorded with every detector)
    load_teacher(extra, path=None) -> (MiniClip, path): the mini-CLIP a detector was distilled from
    check_teacher(extra, model): refuses a mini-CLIP other than the recorded one
    MiniClip.encode_image(x)   x: [N,3,S,S] RGB in [0,1], S = image_size -> [N,D], L2-normalised
    MiniClip.encode_text(ids)  ids: int64 [B,L] CLIP layout (SOT ... EOT, 0 pad) -> [B,D], L2-normalised
    MiniClip.text_embeddings(names, tokenizer=None) -> [K,D] prompt-ensemble embeddings
"""
from __future__ import annotations

import hashlib
import math
import os
import sys
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from vildtrain.paths import REPO_DIR
from vildtrain.text.prompts import TEMPLATES

REPO = REPO_DIR
DEFAULT_CHECKPOINT = os.path.join(REPO, "training", "checkpoints", "miniclip.pt")

# ImageNet statistics: the image encoder normalises its [0,1] input with them.
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)


@dataclass
class MiniClipConfig:
    image_size: int = 64
    embed_dim: int = 256
    widths: tuple[int, ...] = (48, 96, 192, 320)   # stem, then three stages of two residual blocks
    vocab_size: int = 8192
    context_length: int = 32
    text_width: int = 256
    text_layers: int = 4
    text_heads: int = 4
    extra: dict = field(default_factory=dict)


class ResidualBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.skip(x), inplace=True)


class MixStyle(nn.Module):
    """MixStyle (Zhou et al., "Domain Generalization with MixStyle", ICLR 2021):
    while training, with probability ``p`` per batch, each sample's per-channel
    feature mean and standard deviation are mixed with another sample's (weight
    ~ Beta(alpha, alpha)), so the layers above see the same object in new
    "styles". No parameters; the identity in eval mode and while ``p`` is 0 (the
    default), so a saved or exported encoder is unchanged by it."""

    def __init__(self, p: float = 0.0, alpha: float = 0.1, eps: float = 1e-6) -> None:
        super().__init__()
        self.p, self.alpha, self.eps = p, alpha, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p <= 0 or x.shape[0] < 2 or float(torch.rand(1)) >= self.p:
            return x
        n = x.shape[0]
        mu = x.mean(dim=(2, 3), keepdim=True).detach()
        sig = (x.var(dim=(2, 3), keepdim=True) + self.eps).sqrt().detach()
        lam = torch.distributions.Beta(self.alpha, self.alpha).sample((n, 1, 1, 1)).to(x.dtype)
        perm = torch.randperm(n)
        mu_mix = mu * lam + mu[perm] * (1 - lam)
        sig_mix = sig * lam + sig[perm] * (1 - lam)
        return (x - mu) / sig * sig_mix + mu_mix


class ImageEncoder(nn.Module):
    """A small ResNet: stride-2 stem, three stages (stride 2 each), attention-free pooling.
    ``mixstyle.p`` > 0 mixes feature statistics after the stem and the first stage
    while training (:class:`MixStyle`)."""

    def __init__(self, cfg: MiniClipConfig) -> None:
        super().__init__()
        w = cfg.widths
        self.stem = nn.Sequential(
            nn.Conv2d(3, w[0], 5, 2, 2, bias=False), nn.BatchNorm2d(w[0]), nn.ReLU(inplace=True))
        blocks: list[nn.Module] = []
        cin = w[0]
        for cout in w[1:]:
            blocks += [ResidualBlock(cin, cout, 2), ResidualBlock(cout, cout, 1)]
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.proj = nn.Linear(cin, cfg.embed_dim)
        self.mixstyle = MixStyle()
        self.register_buffer("mean", torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGE_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        x = self.mixstyle(self.stem(x))
        x = self.blocks[2:](self.mixstyle(self.blocks[:2](x)))
        x = x.mean(dim=(2, 3))
        return self.proj(x)


class TextEncoder(nn.Module):
    """A small pre-norm transformer with causal attention, pooled at the end token
    (the largest id in the sequence, found by argmax, as CLIP does)."""

    def __init__(self, cfg: MiniClipConfig) -> None:
        super().__init__()
        self.token = nn.Embedding(cfg.vocab_size, cfg.text_width)
        self.position = nn.Parameter(torch.randn(cfg.context_length, cfg.text_width) * 0.01)
        layer = nn.TransformerEncoderLayer(
            cfg.text_width, cfg.text_heads, cfg.text_width * 4, dropout=0.0,
            activation="gelu", batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, cfg.text_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.text_width)
        self.proj = nn.Linear(cfg.text_width, cfg.embed_dim, bias=False)
        mask = torch.full((cfg.context_length, cfg.context_length), float("-inf")).triu(1)
        self.register_buffer("causal_mask", mask, persistent=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        length = ids.shape[1]
        x = self.token(ids) + self.position[:length]
        x = self.transformer(x, mask=self.causal_mask[:length, :length])
        x = self.norm(x)
        eot = ids.argmax(dim=-1)
        x = x[torch.arange(x.shape[0]), eot]
        return self.proj(x)


class MiniClip(nn.Module):
    def __init__(self, cfg: MiniClipConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.image = ImageEncoder(cfg)
        self.text = TextEncoder(cfg)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.source: str | None = None   # the checkpoint it was loaded from, if any

    @property
    def image_size(self) -> int:
        return self.cfg.image_size

    @property
    def embed_dim(self) -> int:
        return self.cfg.embed_dim

    @property
    def context_length(self) -> int:
        return self.cfg.context_length

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.cfg.image_size or x.shape[-2] != self.cfg.image_size:
            x = F.interpolate(x, size=(self.cfg.image_size, self.cfg.image_size), mode="bilinear",
                              align_corners=False, antialias=True)
        return F.normalize(self.image(x), dim=-1)

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text(ids), dim=-1)

    @torch.no_grad()
    def text_embeddings(self, names: list[str], tokenizer=None, templates: list[str] | None = None,
                        batch: int = 512) -> torch.Tensor:
        """Prompt-ensemble embeddings: mean of per-template unit embeddings, renormalised."""
        tok = tokenizer or default_tokenizer()
        templates = templates or TEMPLATES
        out = []
        for start in range(0, len(names), max(1, batch // len(templates))):
            chunk = names[start:start + max(1, batch // len(templates))]
            texts = [t.format(n) for n in chunk for t in templates]
            ids = torch.from_numpy(tok.encode_batch(texts, self.cfg.context_length))
            emb = self.encode_text(ids).view(len(chunk), len(templates), -1).mean(dim=1)
            out.append(F.normalize(emb, dim=-1))
        return torch.cat(out)


def default_tokenizer():
    from vildtrain.text import clip_tokenizer
    return clip_tokenizer.load()


def save_miniclip(model: MiniClip, path: str, extra: dict | None = None, half: bool = True) -> None:
    """Save weights (fp16 by default, to keep the committed checkpoint small) and config."""
    state = {k: (v.half() if half and v.is_floating_point() else v) for k, v in model.state_dict().items()}
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    torch.save({"config": asdict(model.cfg), "state": state, "extra": extra or {}}, tmp)
    os.replace(tmp, path)


def load_miniclip(path: str | None = None) -> MiniClip:
    path = path or DEFAULT_CHECKPOINT
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"miniclip: no checkpoint at {path}; train one with `python3 -m vildtrain train_clip`")
    blob = torch.load(path, map_location="cpu")
    cfg_dict = dict(blob["config"])
    cfg_dict["widths"] = tuple(cfg_dict["widths"])
    model = MiniClip(MiniClipConfig(**cfg_dict))
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in blob["state"].items()})
    model.eval()
    model.source = os.path.abspath(path)
    return model


def miniclip_digest(model: MiniClip) -> str:
    """The first 16 hex digits of a SHA-256 over the weights as they are saved (fp16),
    names in order: the same for a model in memory, its saved checkpoint and that
    checkpoint loaded again, whatever the file is called."""
    h = hashlib.sha256()
    for name, v in sorted(model.state_dict().items()):
        v = v.detach().cpu()
        v = v.half() if v.is_floating_point() else v
        h.update(name.encode())
        h.update(str(tuple(v.shape)).encode())
        h.update(v.reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def teacher_record(model: MiniClip) -> dict:
    """What a detector checkpoint records about the mini-CLIP it is distilled from:
    the digest of its weights and, when it was loaded from a file, that file's path
    relative to the repository."""
    rec = {"digest": miniclip_digest(model)}
    if model.source:
        rec["path"] = os.path.relpath(model.source, REPO)
    return rec


MINICLIP_HELP = ("mini-CLIP checkpoint (default: the one the detector records it was distilled from; "
                 "a different one is refused)")


def check_teacher(extra: dict, clip: MiniClip) -> None:
    """Refuse a mini-CLIP other than the one the detector records (if it records one)."""
    rec = extra.get("teacher")
    if not rec:
        return
    got = miniclip_digest(clip)
    if got != rec["digest"]:
        raise ValueError(f"miniclip: this detector was distilled from mini-CLIP {rec['digest']} "
                         f"({rec.get('path', 'in memory')}), not {got}")


def load_teacher(extra: dict, path: str | None = None, log=None) -> tuple[MiniClip, str]:
    """The mini-CLIP a detector was distilled from, checked against the digest its
    checkpoint records (``extra["teacher"]``). With ``path`` that checkpoint is loaded
    and a different one is refused; without, the committed default is used if it is
    the recorded one, else the recorded path. A detector that records no teacher
    (written before the record existed) gets ``path`` or the default, unchecked."""
    rec = extra.get("teacher")
    if not rec:
        chosen = path or DEFAULT_CHECKPOINT
        return load_miniclip(chosen), chosen
    want = rec["digest"]
    recorded = os.path.normpath(os.path.join(REPO, rec["path"])) if rec.get("path") else None
    tried = [path] if path else list(dict.fromkeys([DEFAULT_CHECKPOINT] + ([recorded] if recorded else [])))
    seen = []
    for candidate in tried:
        if candidate is None or not os.path.exists(candidate):
            seen.append(f"{candidate} (missing)")
            continue
        clip = load_miniclip(candidate)
        got = miniclip_digest(clip)
        if got == want:
            if not path and candidate != DEFAULT_CHECKPOINT:
                print(f"miniclip: using {candidate}, the mini-CLIP this detector was distilled from "
                      f"(the default {DEFAULT_CHECKPOINT} is another one)", file=log or sys.stderr)
            return clip, candidate
        seen.append(f"{candidate} (digest {got})")
    raise ValueError(
        f"miniclip: this detector was distilled from mini-CLIP {want} ({rec.get('path')}); "
        f"{', '.join(seen)} {'is' if len(seen) == 1 else 'are'} not it. A detector scores with the text "
        f"encoder and teacher it was trained against: pass --miniclip with that checkpoint")
