"""Train the ViLD detector on pictogram world (Gu et al. 2022, section 3).

    python3 -m vildtrain train_detector --out training/runs/detector --time-budget 85 [--resume]
    python3 -m vildtrain train_detector --out training/runs/detector --steps 1601 --time-budget 0   # the bundle's run

Scenes are generated on the fly (in-process, or in DataLoader workers with
``--workers``): scene i of the run is ``scenes.scene_rng(seed, i)`` with
``label_novel=False``, so novel objects are in the pictures but never
annotated; a share ``--grid-scenes`` (default three in four) of them are grid scenes
(one base object per grid cell: more labelled regions per picture). Per step:

* RPN losses (torchvision) on base boxes only;
* ViLD-text: RoIs sampled as in Faster R-CNN (base boxes only; everything else,
  unlabelled novel objects included, is background), cross-entropy over
  [background + base categories] through the text head, plus class-agnostic
  box regression;
* ViLD-image: the top ``--distill-top`` RPN proposals of each image (plus
  ``--distill-random`` random others) are cropped from the [0,1] image at 1x and
  1.5x (square crops, torchvision roi_align at the mini-CLIP's input size); the
  mini-CLIP's averaged, renormalised embeddings are the targets of an L1 loss on
  the image head, weighted by ``--distill-weight``.

Work is spread over ``--procs`` data-parallel processes of ``--threads`` torch
threads each (default 2 x 1: on two cores this is much faster than one process
with two threads, whose many small tensor ops stall at OpenMP barriers whenever
another process takes a core). Gradients and BatchNorm statistics are averaged
every step, so all processes hold the same model.

The schedule (AdamW, linear warm-up, cosine decay) is fixed by the total step
count. With ``--time-budget`` (minutes) the trainer times the first
``--calibrate`` steps and, if ``--steps`` would overrun the budget, shrinks the
total to fit; every ``--refit-every`` steps it measures the rate since the last fit and
fits the total again (shrinking it if the machine has slowed down, growing it
back up to ``--steps`` once a slow spell is over), so the cosine schedule ends
inside the budget and uses it; it also stops at the budget whatever happens. The total is
stored in the checkpoint, scene i depends only on (seed, i) and every step
reseeds the RNG from (seed, step, process), so a resumed run continues the same
schedule and reaches the same weights as an uninterrupted one. Checkpoints go to
OUT/checkpoint.pt every ``--checkpoint-every`` seconds and at the end; the final
model is OUT/detector.pt (read by ``export`` and ``evaluate``).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import random
import shlex
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.autograd.profiler import record_function
from torch.utils.data import DataLoader, Dataset
from torchvision.models.detection.roi_heads import RoIHeads

from vildtrain.detector import (DetectorConfig, VildDetector, build_detector, init_body_from_miniclip,
                                save_checkpoint)
from vildtrain.losses import (box_regression_loss, crop_embeddings, distillation_loss, vild_text_loss)
from vildtrain.miniclip import teacher_record

LOSS_KEYS = ("rpn_objectness", "rpn_box", "text", "box", "image")


# ---------------------------------------------------------------- data

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
                 grid_novel: bool = False, grid_sides: tuple[int, ...] | None = None) -> None:
        from vildtrain.categories import load_categories
        from vildtrain.scenes import GRID_SIDES, TRAIN_STYLES
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

    def __len__(self) -> int:
        return self.length

    def is_grid(self, i: int) -> bool:
        """Whether item i is a grid scene: the floor of (i+1)*f steps up at i."""
        f = self.grid_fraction
        return math.floor((i + 1) * f + 1e-9) > math.floor(i * f + 1e-9)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, Tensor]:
        from vildtrain.art import ArtLibrary
        from vildtrain.scenes import generate_grid_scene, generate_scene, scene_rng
        if self._art is None:
            self._art = ArtLibrary(styles=self.styles, categories=self.categories)
        if self.is_grid(i):
            img, objs = generate_grid_scene(scene_rng(self.seed, i), self._art, self.grid_categories, self.styles,
                                            size=self.size, label_novel=False, sides=self.grid_sides)
        else:
            img, objs = generate_scene(scene_rng(self.seed, i), self._art, self.categories, self.styles,
                                       size=self.size, label_novel=False, min_objects=self.objects[0],
                                       max_objects=self.objects[1])
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


# ---------------------------------------------------------------- step

@dataclass
class LossWeights:
    rpn: float = 1.0
    text: float = 1.0
    box: float = 1.0
    image: float = 1.0


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


def lr_at(step: int, total: int, base_lr: float, warmup: int) -> float:
    if step < warmup:
        return base_lr * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base_lr * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


# ---------------------------------------------------------------- run

def base_categories(categories) -> tuple[list, dict[int, int]]:
    base = [c for c in categories if c.split == "base"]
    return base, {c.id: i + 1 for i, c in enumerate(base)}


PRECISIONS = ("bf16", "fp32")  # --precision: the backbone's compute type in train_step


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="vildtrain train_detector", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="training/runs/detector")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=6000, help="total steps (an upper bound with --time-budget)")
    ap.add_argument("--batch", type=int, default=8, help="images per step, over all processes")
    ap.add_argument("--size", type=int, default=384, help="scene size (px)")
    ap.add_argument("--lr", type=float, default=4e-3,
                    help="peak learning rate (docs/decisions/0007-recipes-explored-on-an-accelerator.md)")
    ap.add_argument("--weight-decay", type=float, default=1e-4)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--clip-grad", type=float, default=10.0)
    ap.add_argument("--distill-weight", type=float, default=0.25,
                    help="weight of the ViLD-image L1 loss (paper: 0.5; 0.25 leaves the shared backbone more to "
                         "the text head, decision 0008)")
    ap.add_argument("--min-objects", type=int, default=2, help="fewest objects pasted into a training scene")
    ap.add_argument("--max-objects", type=int, default=20,
                    help="most objects pasted into a training scene (held-out scenes have 1-12: denser "
                         "training scenes give more labelled regions per step)")
    ap.add_argument("--grid-scenes", type=float, default=0.75,
                    help="share of the training pictures that are grid scenes (one object per grid cell, "
                         "see --grid-sides: 9-144 labelled regions for the price of one picture by default); "
                         "0.75 as the committed bundle was trained; 0 = none")
    ap.add_argument("--grid-sides", type=_sides, default="3,4,6,8,12",
                    help="comma-separated cells per side a grid scene draws from, e.g. 4,6,8 "
                         "(default %(default)s: 32-128 px cells on a 384 px scene)")
    ap.add_argument("--grid-novel", action="store_true",
                    help="grid scenes draw novel categories too (unlabelled); default: base categories only")
    ap.add_argument("--distill-top", type=int, default=24, help="top proposals per image distilled")
    ap.add_argument("--distill-random", type=int, default=8, help="random other proposals per image distilled")
    ap.add_argument("--text-weight", type=float, default=1.0)
    ap.add_argument("--box-positive-fraction", type=float, default=DetectorConfig.box_positive_fraction,
                    help="largest share of the RoIs sampled per picture (--box-rois) for ViLD-text that are labelled "
                         "(base) regions (default %(default)s, decision 0010); dense grid scenes have more labelled candidates "
                         "than that")
    ap.add_argument("--box-rois", type=int, default=None,
                    help="RoIs sampled per picture for ViLD-text's loss and the box regression "
                         f"(default {DetectorConfig.box_batch_per_image}, decision 0011); --box-positive-fraction of them at most "
                         "are labelled")
    ap.add_argument("--rpn-train-proposals", type=int, default=DetectorConfig.rpn_post_nms_top_n_train,
                    help="RPN proposals per picture kept after NMS in training (default %(default)s): ViLD-text "
                         "samples its --box-rois RoIs from them plus the picture's boxes, so with the defaults it "
                         "takes every proposal; the distilled proposals come from them too")
    ap.add_argument("--roi-canonical-scale", type=int, default=DetectorConfig.roi_canonical_scale,
                    help="RoI size (sqrt of area, px) pooled from p4; a region of side s pools from level "
                         "floor(4 + log2(s / scale)), clamped to p2..p5 (torchvision's FPN rule; its default "
                         "%(default)s is sized for ImageNet-scale objects)")
    ap.add_argument("--head-hidden", type=int, default=None,
                    help="width of the box head's text tower, which gives the text embedding and the box "
                         f"deltas (default {DetectorConfig.head_hidden})")
    ap.add_argument("--image-head-hidden", type=int, default=None,
                    help="width of the box head's image tower, which gives the image embedding "
                         f"(default {DetectorConfig.image_head_hidden})")
    ap.add_argument("--init", choices=("miniclip", "none"), default="miniclip",
                    help="start the backbone body from the mini-CLIP image tower (default) or from random weights")
    ap.add_argument("--body-lr", type=float, default=1.0,
                    help="learning-rate multiplier of the backbone body's trained stages (1: the same rate as the "
                         "new layers, which a schedule this short needs; decision 0007)")
    ap.add_argument("--freeze", type=int, default=0,
                    help="with --init miniclip: keep the stem and this many body stages fixed (weights and "
                         "BatchNorm statistics), as detectors do with a pretrained backbone's first layers "
                         "(0: only the stem; bfloat16 pays for training the rest, decision 0008)")
    ap.add_argument("--precision", choices=PRECISIONS, default="bf16",
                    help="bf16: the backbone (body + FPN) computes in bfloat16 (autocast; AMX or AVX-512 BF16 "
                         "where the CPU has them), everything else in float32; fp32: all float32 (decision 0008)")
    ap.add_argument("--procs", type=int, default=2,
                    help="data-parallel processes (gradients averaged each step; one per core)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--device", default="cpu",
                    help="torch device of the model and the teacher: cpu (the bundle's runs) or cuda "
                         "(one process; for exploring recipes on an accelerator, not for the timed run)")
    ap.add_argument("--workers", type=int, default=1,
                    help="DataLoader workers per process (0: scenes in-process); a worker draws the next scenes "
                         "while its process waits for the other's gradients")
    ap.add_argument("--time-budget", type=float, default=85.0,
                    help="minutes for the whole run (0 = no budget); the step count is fitted to it (--refit-every)")
    ap.add_argument("--calibrate", type=int, default=30, help="steps timed before fitting the budget")
    ap.add_argument("--refit-every", type=int, default=100,
                    help="with --time-budget, every this many steps the rate since the last fit is measured and the "
                         "schedule fitted again: shrunk if it would overrun, grown back (up to --steps) if the "
                         "budget has room (0 = fit once after --calibrate)")
    ap.add_argument("--miniclip", default=None, help="mini-CLIP checkpoint (default: the committed one)")
    ap.add_argument("--checkpoint-every", type=float, default=300.0, help="seconds between checkpoints")
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    ap.add_argument("--max-steps-now", type=int, default=0,
                    help="stop (with a checkpoint) after this many steps in this process (0 = run to the end)")
    return ap


class _Group:
    """Gradient and buffer averaging over the data-parallel processes (a no-op alone)."""

    def __init__(self, rank: int, world: int) -> None:
        self.rank, self.world = rank, world

    def mean_(self, tensors: list[Tensor]) -> None:
        if self.world == 1 or not tensors:
            return
        import torch.distributed as dist
        flat = torch.cat([t.reshape(-1) for t in tensors])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for t in tensors:
            n = t.numel()
            t.copy_(flat[offset:offset + n].view_as(t))
            offset += n

    def from_rank0(self, values: list[float]) -> list[float]:
        if self.world == 1:
            return values
        import torch.distributed as dist
        t = torch.tensor(values, dtype=torch.float64)
        dist.broadcast(t, 0)
        return t.tolist()


def frozen_modules(model: VildDetector, stages: int) -> list[torch.nn.Module]:
    """The body's stem and first ``stages`` stages (none when ``stages`` is 0)."""
    if stages <= 0:
        return []
    body = model.backbone.body
    return [body.stem, *body.stages[:stages]]


def build_student(cfg: DetectorConfig, clip, init: str, freeze: int,
                  report: bool = False) -> tuple[VildDetector, list[torch.nn.Module]]:
    """The detector to train, in training mode: with ``init`` "miniclip" its body
    starts from the mini-CLIP image tower and its stem and first ``freeze`` stages
    are fixed (no gradients, BatchNorm in eval mode). Returns (model, frozen modules)."""
    model = build_detector(cfg)
    if init == "miniclip":
        copied = init_body_from_miniclip(model.backbone.body, clip.image)
        if report:
            print(f"train_detector: body initialised from the mini-CLIP image tower ({copied} tensors)",
                  file=sys.stderr, flush=True)
    frozen = frozen_modules(model, freeze if init == "miniclip" else 0)
    for m in frozen:
        m.requires_grad_(False)
    model.train()
    for m in frozen:
        m.eval()
    return model, frozen


def step_seed(seed: int, step: int, rank: int) -> int:
    """The RNG seed of one process at one step: resuming needs no saved RNG state."""
    return (seed * 1_000_003 + step * 64 + rank) % (2 ** 63)


def train(args: argparse.Namespace, clip=None, categories=None, argv: list[str] | None = None,
          cfg: DetectorConfig | None = None) -> dict:
    """Run (or resume) training; returns a summary dict. ``clip`` and ``categories``
    default to the committed mini-CLIP and category table, ``cfg`` to the default
    architecture (its embedding size and input size are taken from the mini-CLIP and
    ``--size``). With ``--procs`` > 1 the work is spread over that many processes."""
    if args.batch % args.procs:
        raise ValueError(f"train_detector: --batch {args.batch} is not a multiple of --procs {args.procs}")
    if not 0.0 < args.box_positive_fraction <= 1.0:
        raise ValueError(f"train_detector: --box-positive-fraction {args.box_positive_fraction}: need 0 < f <= 1")
    if args.rpn_train_proposals <= 0:
        raise ValueError(f"train_detector: --rpn-train-proposals {args.rpn_train_proposals}: need > 0")
    if args.box_rois is not None and args.box_rois <= 0:
        raise ValueError(f"train_detector: --box-rois {args.box_rois}: need > 0")
    if args.roi_canonical_scale <= 0:
        raise ValueError(f"train_detector: --roi-canonical-scale {args.roi_canonical_scale}: need > 0")
    for flag, width in (("--head-hidden", args.head_hidden), ("--image-head-hidden", args.image_head_hidden)):
        if width is not None and width <= 0:
            raise ValueError(f"train_detector: {flag} {width}: need > 0")
    if args.device != "cpu":
        if not args.device.startswith("cuda"):
            raise ValueError(f"train_detector: --device {args.device}: need cpu or cuda[:N]")
        if not torch.cuda.is_available():
            raise ValueError(f"train_detector: --device {args.device}: torch sees no CUDA device here")
        if args.procs != 1:
            raise ValueError(f"train_detector: --device {args.device} runs in one process: add --procs 1")
    t_launch = time.time()  # the time budget counts from here, setup included
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(max(args.threads, args.procs))
    if categories is None:
        from vildtrain.categories import load_categories
        categories = load_categories()
    if clip is None:
        from vildtrain.miniclip import load_miniclip
        clip = load_miniclip(args.miniclip)
    clip.eval()
    for p in clip.parameters():
        p.requires_grad_(False)
    base, _ = base_categories(categories)
    with torch.no_grad():
        base_text = clip.text_embeddings([c.name for c in base]).float()
    clip.to(args.device)
    base_text = base_text.to(args.device)
    shared = (clip, categories, base_text, t_launch)
    if args.procs == 1:
        return _train(0, 1, args, shared, argv, cfg)
    import socket
    import torch.multiprocessing as mp
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_spawned, args=(args.procs, port, args, shared, argv, cfg), nprocs=args.procs, join=True)
    with open(os.path.join(args.out, "last_run.json")) as f:
        return json.load(f)


def _spawned(rank: int, world: int, port: int, args, shared, argv, cfg) -> None:
    import torch.distributed as dist

    from vildtrain.workers import end_with_launcher
    end_with_launcher()
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        _train(rank, world, args, shared, argv, cfg)
    finally:
        dist.destroy_process_group()


def _train(rank: int, world: int, args: argparse.Namespace, shared: tuple, argv, cfg) -> dict:
    clip, categories, base_text, t_launch = shared
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    np.random.seed(args.seed)
    group = _Group(rank, world)
    lead = rank == 0
    base, base_index = base_categories(categories)

    cfg = dataclasses.replace(cfg or DetectorConfig(), embed_dim=clip.embed_dim, max_side=args.size,
                              box_positive_fraction=args.box_positive_fraction,
                              roi_canonical_scale=args.roi_canonical_scale,
                              rpn_post_nms_top_n_train=args.rpn_train_proposals)
    if args.box_rois is not None:
        cfg = dataclasses.replace(cfg, box_batch_per_image=args.box_rois)
    if args.head_hidden is not None:
        cfg = dataclasses.replace(cfg, head_hidden=args.head_hidden)
    if args.image_head_hidden is not None:
        cfg = dataclasses.replace(cfg, image_head_hidden=args.image_head_hidden)
    model, _ = build_student(cfg, clip, args.init, args.freeze, report=lead)
    model.to(args.device)
    sampler = make_sampler(cfg)
    g = torch.Generator()
    params = [p for p in model.parameters() if p.requires_grad]
    buffers = [b for n, b in model.named_buffers() if n.endswith(("running_mean", "running_var"))]
    body = {id(p) for p in model.backbone.body.parameters()}
    groups = []
    for in_body in (True, False):
        for decays in (True, False):
            ps = [p for p in params if (id(p) in body) == in_body and (p.ndim > 1) == decays]
            if ps:
                groups.append({"params": ps, "weight_decay": args.weight_decay if decays else 0.0,
                               "lr_mult": args.body_lr if in_body else 1.0})
    opt = torch.optim.AdamW(groups, lr=args.lr)
    ckpt_path = os.path.join(args.out, "checkpoint.pt")
    command = reproducing_command("python3 -m vildtrain train_detector "
                                  + " ".join(shlex.quote(a) for a in (argv or [])))
    step, total, elapsed_before = 0, args.steps, 0.0
    history: list[dict] = []
    teacher = teacher_record(clip)
    if args.resume and os.path.exists(ckpt_path):
        blob = torch.load(ckpt_path, map_location="cpu")
        if blob["settings"]["batch"] != args.batch:
            raise ValueError("train_detector: --resume needs the --batch of the interrupted run")
        if blob.get("teacher", teacher)["digest"] != teacher["digest"]:
            raise ValueError(f"train_detector: the interrupted run distils from mini-CLIP "
                             f"{blob['teacher']['digest']} ({blob['teacher'].get('path')}), this one from "
                             f"{teacher['digest']}: resume with the same --miniclip")
        model.load_state_dict(blob["model"])
        opt.load_state_dict(blob["optimizer"])
        step, total = blob["step"], blob["total"]
        elapsed_before = blob["elapsed"]
        history = blob.get("history", [])
        if lead:
            print(f"train_detector: resumed at step {step}/{total}", file=sys.stderr, flush=True)
    weights = LossWeights(text=args.text_weight, image=args.distill_weight)
    settings = dict(vars(args))
    t_start = t_launch

    def save(path: str) -> None:
        tmp = path + ".tmp"
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step, "total": total,
                    "elapsed": elapsed_before + (time.time() - t_start), "config": cfg.to_dict(),
                    "settings": settings, "history": history, "teacher": teacher}, tmp)
        os.replace(tmp, path)

    dataset = SceneStream(args.seed, 10 ** 9, base_index, size=args.size, categories=categories,
                          objects=(args.min_objects, args.max_objects), grid_fraction=args.grid_scenes,
                          grid_novel=args.grid_novel, grid_sides=args.grid_sides)

    def make_loader(start: int, stop: int) -> DataLoader:
        # Its own generator: creating a loader must not draw from the global RNG.
        return DataLoader(dataset, batch_sampler=StepBatches(start, stop, args.batch, rank, world),
                          num_workers=args.workers, collate_fn=collate, generator=torch.Generator(),
                          prefetch_factor=4 if args.workers > 0 else 2)

    t_last_ckpt = t_loop = time.time()
    ema: dict[str, float] = {}
    steps_this_run = 0
    budget_s = args.time_budget * 60.0
    calibrated = step >= args.calibrate or budget_s <= 0
    t_fit: tuple[float, int] | None = None  # (time, step) the rate is measured from
    it = iter(make_loader(step, total))
    while step < total:
        images, targets = next(it)
        if args.device != "cpu":
            images = images.to(args.device, non_blocking=True)
            targets = [{k: v.to(args.device, non_blocking=True) for k, v in t.items()} for t in targets]
        torch.manual_seed(step_seed(args.seed, step, rank))
        g.manual_seed(step_seed(args.seed + 1, step, rank))
        for group_ in opt.param_groups:
            group_["lr"] = lr_at(step, total, args.lr, args.warmup) * group_["lr_mult"]
        loss, parts = train_step(model, clip, sampler, images, targets, base_text, weights,
                                 args.distill_top, args.distill_random, g, bf16_backbone=args.precision == "bf16")
        opt.zero_grad(set_to_none=False)
        loss.backward()
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        group.mean_([p.grad for p in params])
        if args.clip_grad > 0:
            torch.nn.utils.clip_grad_norm_(params, args.clip_grad)
        opt.step()
        with torch.no_grad():
            group.mean_(buffers)
            shown = torch.tensor([parts[k] for k in LOSS_KEYS] + [float(loss)], dtype=torch.float64)
            group.mean_([shown])
        step += 1
        steps_this_run += 1
        if not math.isfinite(float(shown[-1])):
            raise FloatingPointError(f"train_detector: loss is {float(shown[-1])} at step {step}")
        for k, v in zip(LOSS_KEYS, shown.tolist()):
            ema[k] = v if k not in ema else 0.9 * ema[k] + 0.1 * v
        now = time.time()
        elapsed = elapsed_before + now - t_start
        # Rank 0 decides when to stop and whether to shrink the run; everyone follows.
        new_total, stop = total, 0.0
        if steps_this_run == 3:
            t_fit = (now, step)
        refit = not calibrated or (args.refit_every > 0 and step % args.refit_every == 0)
        if lead and budget_s > 0 and refit and t_fit is not None and step >= args.calibrate:
            # the rate since the last fit: a machine that slows down shows it at once
            rate = (step - t_fit[1]) / max(1e-6, now - t_fit[0])
            t_fit = (now, step)
            left = max(0.0, budget_s - elapsed)
            fit = min(args.steps, step + int(rate * left * 0.97))
            roomy = min(args.steps, step + int(rate * left * 0.94))  # growing keeps twice the slack
            if fit < total:
                print(f"train_detector: {total} steps would overrun the {args.time_budget:g} min budget at "
                      f"{rate * args.batch:.2f} images/s; training {fit} steps", file=sys.stderr, flush=True)
                new_total = fit
            elif roomy > total:  # a slow spell is over: take back steps the budget has room for
                print(f"train_detector: the {args.time_budget:g} min budget has room for {roomy} steps at "
                      f"{rate * args.batch:.2f} images/s; training {roomy} steps", file=sys.stderr, flush=True)
                new_total = roomy
        if lead and budget_s > 0 and elapsed >= budget_s:
            print(f"train_detector: time budget reached at step {step}/{total}", file=sys.stderr, flush=True)
            new_total = step
        if args.max_steps_now and steps_this_run >= args.max_steps_now:
            stop = 1.0
        if not calibrated and step >= args.calibrate:
            calibrated = True
        new_total, stop = (int(v) for v in group.from_rank0([float(new_total), stop]))
        if new_total != total:
            total = new_total
            it = iter(make_loader(step, total))  # the shorter run's range
        if lead and (step % args.log_every == 0 or step == total):
            rate = steps_this_run * args.batch / max(1e-6, now - t_loop)
            eta = (total - step) * args.batch / max(1e-6, rate)
            row = {"step": step, "lr": opt.param_groups[-1]["lr"], "images_per_s": round(rate, 3),
                   "elapsed_s": round(elapsed, 1), **{k: round(v, 4) for k, v in ema.items()}}
            history.append(row)
            print(f"step {step}/{total} loss {float(shown[-1]):.3f} "
                  + " ".join(f"{k} {ema[k]:.3f}" for k in LOSS_KEYS)
                  + f" | {rate:.2f} img/s elapsed {elapsed / 60:.1f} min ETA {eta / 60:.1f} min",
                  file=sys.stderr, flush=True)
        if lead and now - t_last_ckpt >= args.checkpoint_every:
            save(ckpt_path)
            t_last_ckpt = now
        if stop:
            break
    done = step >= total
    summary = {"step": step, "total": total, "done": done, "elapsed_s": elapsed_before + time.time() - t_start,
               "final": {k: round(v, 4) for k, v in ema.items()}}
    if lead:
        save(ckpt_path)
        if done:
            model.eval()
            save_checkpoint(os.path.join(args.out, "detector.pt"), model, extra={
                "command": command, "seed": args.seed, "settings": settings, "steps": step,
                "images_seen": step * args.batch, "train_seconds": summary["elapsed_s"],
                "distill_weight": args.distill_weight, "base_categories": [c.name for c in base],
                "teacher": teacher, "history": history})
            with open(os.path.join(args.out, "summary.json"), "w") as f:
                json.dump(summary, f, indent=1)
        with open(os.path.join(args.out, "last_run.json"), "w") as f:
            json.dump(summary, f, indent=1)
    return summary


def reproducing_command(command: str) -> str:
    """The command as recorded with a run's weights: without --resume and
    --max-steps-now, which only pause and continue a run (a resumed run ends
    with the same weights as an uninterrupted one)."""
    words = shlex.split(command)
    out, skip = [], False
    for w in words:
        if skip:
            skip = False
            continue
        if w == "--resume" or w.startswith("--max-steps-now="):
            continue
        if w == "--max-steps-now":
            skip = True
            continue
        out.append(w)
    return " ".join(shlex.quote(w) for w in out)


def _sides(text: str) -> tuple[int, ...]:
    """--grid-sides: '3,4,6,8' -> (3, 4, 6, 8)."""
    try:
        sides = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"grid sides {text!r}: need comma-separated whole numbers") from None
    if not sides or min(sides) < 1:
        raise argparse.ArgumentTypeError(f"grid sides {text!r}: each must be >= 1")
    return sides


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    summary = train(args, argv=argv)
    print(json.dumps(summary))
    return 0
