"""Train the class-agnostic mask head as a second stage on the frozen detector.

    python3 -m vildtrain train_mask_head --out runs/mask-head --time-budget 30 [--resume]

The detector (``--detector``, default: rebuilt from the bundle with
``detector_from_bundle`` into runs/from-bundle/detector.pt when missing) is frozen:
its backbone and RPN run under ``no_grad`` in eval mode, so its boxes and scores,
and every box AP, stay exactly as they are. Only the mask head
(:mod:`vildtrain.models.mask_head`) learns.

Each step draws ``--batch`` training scenes: scene i is
``scenes.generate_scene(scene_rng(seed, i), ...)`` in the training styles with
``label_novel=False``; step s covers scenes s*B .. s*B+B-1. ``--seed`` defaults
to 1 (the detector's run used 0; the held-out sets use their own fixed seeds,
scenes.HELDOUT_SEEDS, which are refused here). Only labelled objects, i.e. base
categories, give masks: novel objects stay in the pictures as background and
their masks are never read.

Per image the RoIs are, as Mask R-CNN trains on positive RoIs only: every
labelled object's box, one jittered copy of each (corners moved by up to
``--jitter`` of the box side), and the detector's own RPN proposals whose IoU
with a labelled box is at least 0.5; at most ``--rois`` per image (the objects'
own boxes first, the rest drawn at random). Each RoI's target is the mask of the
object it overlaps most, projected onto the RoI at 28x28 as torchvision's
``project_masks_on_boxes`` does (``roi_align`` of the 0/1 mask); the loss is
binary cross-entropy with logits, averaged over RoIs and pixels.

AdamW, linear warmup then cosine decay over the run's total steps. With
``--time-budget`` (minutes, at most 30, counted from launch) the first
``--calibrate`` steps are timed and the total is cut to what fits; every
``--refit-every`` steps the rate since the last fit is measured again and the
total shortened, or lengthened (up to ``--steps``) when the machine got faster,
as ``train_detector`` does; the run stops at the budget whatever happens. Progress every ``--log-every`` steps (loss,
images/s, elapsed, ETA); OUT/checkpoint.pt every ``--checkpoint-every`` seconds
and at the end; ``--resume`` continues it exactly: scenes depend only on (seed,
index) and every step reseeds its RNG from (seed, step). The finished head is
OUT/mask_head.pt (read by ``evaluate --mask-head`` and ``export_mask_head``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import roi_align

from vildtrain.models.detector import BackboneGraph, VildDetector, backbone_output_names, box_iou, load_checkpoint
from vildtrain.models.mask_head import MaskConfig, MaskHead, flops_per_roi, mask_pooler, save_mask_head

MAX_BUDGET_MIN = 30.0
DEFAULT_DETECTOR = "runs/from-bundle/detector.pt"


def lr_at(step: int, total: int, base_lr: float, warmup: int) -> float:
    if step < warmup:
        return base_lr * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base_lr * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def step_seed(seed: int, step: int) -> int:
    return (seed * 1_000_003 + step * 64 + 17) % (2 ** 63)


class MaskScenes:
    """Training scenes with the labelled (base) objects' boxes and masks."""

    def __init__(self, seed: int, size: int = 384, categories=None, styles=None, objects=(1, 12)) -> None:
        from vildtrain.data.categories import load_categories
        from vildtrain.data.scenes import HELDOUT_SEEDS, TRAIN_STYLES
        if seed in HELDOUT_SEEDS.values():
            raise ValueError(f"train_mask_head: seed {seed} is a held-out set's seed")
        self.seed, self.size, self.objects = seed, size, objects
        self.categories = categories if categories is not None else load_categories()
        self.styles = tuple(styles or TRAIN_STYLES)
        self._art = None

    def __call__(self, i: int) -> tuple[Tensor, Tensor, Tensor]:
        """Scene i -> (uint8 image [3,S,S], boxes [n,4] x1y1x2y2, masks bool [n,S,S])."""
        from vildtrain.data.art import ArtLibrary
        from vildtrain.data.scenes import generate_scene, scene_rng
        if self._art is None:
            self._art = ArtLibrary(styles=self.styles, categories=self.categories)
        img, objs = generate_scene(scene_rng(self.seed, i), self._art, self.categories, self.styles,
                                   size=self.size, label_novel=False, min_objects=self.objects[0],
                                   max_objects=self.objects[1])
        kept = [o for o in objs if o.labelled]   # base objects only: novel masks are never read
        boxes = [[o.bbox[0], o.bbox[1], o.bbox[0] + o.bbox[2], o.bbox[1] + o.bbox[3]] for o in kept]
        masks = np.stack([o.mask for o in kept]) if kept else np.zeros((0, self.size, self.size), bool)
        arr = torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1)
        return arr, torch.tensor(boxes, dtype=torch.float32).view(-1, 4), torch.from_numpy(masks)


@torch.no_grad()
def frozen_features(model: VildDetector, images: Tensor) -> tuple[dict[str, Tensor], list[Tensor]]:
    """uint8 [B,3,H,W] (H, W multiples of size_divisible) -> (RoI levels, RPN proposals per image)."""
    from vildtrain.models.infer import propose
    cfg = model.cfg
    x = model.normalize(images.float() / 255.0)
    outs = dict(zip(backbone_output_names(cfg), BackboneGraph(model)(x)))
    feats = {n: outs[f"feat_{n}"] for n in cfg.roi_level_names}
    size = (int(images.shape[2]), int(images.shape[3]))
    proposals = []
    for b in range(images.shape[0]):
        logits = [outs[f"rpn_logits_{n}"][b:b + 1] for n in cfg.level_names]
        deltas = [outs[f"rpn_deltas_{n}"][b:b + 1] for n in cfg.level_names]
        anchors = model.rpn.anchor_generator(model.image_list(x[b:b + 1], [size]), logits)[0]
        proposals.append(propose(model, logits, deltas, anchors, size)[0])
    return feats, proposals


def mask_rois(gt: Tensor, proposals: Tensor, max_rois: int, jitter: float, g: torch.Generator
              ) -> tuple[Tensor, Tensor]:
    """One image's training RoIs [R,4] and the index of each one's object [R]:
    the objects' boxes, one jittered copy each, proposals with IoU >= 0.5; the
    objects' boxes first, the rest in random order, at most ``max_rois``."""
    if gt.shape[0] == 0:
        return gt.new_zeros((0, 4)), torch.zeros(0, dtype=torch.long)
    n = gt.shape[0]
    wh = (gt[:, 2:] - gt[:, :2]).repeat(1, 2)
    shaken = gt + (torch.rand(gt.shape, generator=g) * 2 - 1) * jitter * wh
    shaken = torch.stack([torch.minimum(shaken[:, 0], shaken[:, 2] - 1), torch.minimum(shaken[:, 1], shaken[:, 3] - 1),
                          shaken[:, 2], shaken[:, 3]], 1)
    iou = box_iou(proposals, gt) if proposals.shape[0] else gt.new_zeros((0, n))
    best, which = iou.max(1) if proposals.shape[0] else (gt.new_zeros(0), torch.zeros(0, dtype=torch.long))
    pos = torch.where(best >= 0.5)[0]
    extra = torch.cat([shaken, proposals[pos]])
    extra_idx = torch.cat([torch.arange(n), which[pos]])
    order = torch.randperm(extra.shape[0], generator=g)[: max(0, max_rois - n)]
    rois = torch.cat([gt, extra[order]])[:max_rois]
    idx = torch.cat([torch.arange(n), extra_idx[order]])[:max_rois]
    return rois, idx


def mask_targets(masks: Tensor, rois: Tensor, idx: Tensor, size: int) -> Tensor:
    """torchvision ``project_masks_on_boxes``: roi_align of each RoI's object mask
    at size x size (spatial scale 1, default sampling, aligned False) -> [R,size,size]."""
    if rois.shape[0] == 0:
        return rois.new_zeros((0, size, size))
    boxes = torch.cat([idx.to(rois.dtype).view(-1, 1), rois], 1)
    return roi_align(masks[:, None].float(), boxes, (size, size), 1.0)[:, 0]


def mask_loss(head: MaskHead, pooler, feats: dict[str, Tensor], rois: list[Tensor], targets: Tensor,
              size: tuple[int, int]) -> Tensor:
    pooled = pooler(feats, rois, [size] * len(rois))
    logits = head(pooled)[:, 0]
    return F.binary_cross_entropy_with_logits(logits, targets)


def ensure_detector(path: str) -> str:
    """The frozen detector's checkpoint; the default one is rebuilt from the bundle if missing."""
    if os.path.exists(path):
        return path
    if path != DEFAULT_DETECTOR:
        raise FileNotFoundError(f"train_mask_head: no detector checkpoint {path}")
    from vildtrain.export import detector_from_bundle
    print(f"train_mask_head: rebuilding the bundle's detector into {path}", file=sys.stderr, flush=True)
    if detector_from_bundle.main(["--out", path]) != 0:
        raise RuntimeError("train_mask_head: detector_from_bundle failed")
    return path


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="vildtrain train_mask_head", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/mask-head")
    ap.add_argument("--detector", default=DEFAULT_DETECTOR,
                    help="frozen detector checkpoint (default: the bundle's, rebuilt when missing)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3000, help="total steps (an upper bound with --time-budget)")
    ap.add_argument("--time-budget", type=float, default=MAX_BUDGET_MIN,
                    help=f"minutes for the whole run, at most {MAX_BUDGET_MIN:g} (0 = no budget)")
    ap.add_argument("--calibrate", type=int, default=10, help="steps timed before fitting the budget")
    ap.add_argument("--refit-every", type=int, default=50, help="re-fit the total to the budget this often")
    ap.add_argument("--batch", type=int, default=4, help="scenes per step")
    ap.add_argument("--rois", type=int, default=64, help="mask RoIs per image at most")
    ap.add_argument("--jitter", type=float, default=0.1, help="jittered boxes move corners by up to this x side")
    ap.add_argument("--size", type=int, default=384)
    ap.add_argument("--width", type=int, default=MaskConfig.width)
    ap.add_argument("--layers", type=int, default=MaskConfig.layers)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--weight-decay", type=float, default=1e-4)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--checkpoint-every", type=float, default=120.0, help="seconds between checkpoints")
    ap.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    ap.add_argument("--max-steps-now", type=int, default=0, help="stop (checkpointed) after this many steps")
    return ap


def train(args: argparse.Namespace, argv: list[str] | None = None, categories=None, model: VildDetector | None = None,
          scenes=None) -> dict:
    """Run (or resume) the mask head's training; returns a summary."""
    t_launch = time.time()
    if args.time_budget < 0 or args.time_budget > MAX_BUDGET_MIN:
        raise ValueError(f"train_mask_head: --time-budget {args.time_budget:g}: 0 (none) to {MAX_BUDGET_MIN:g} min")
    if args.batch < 1 or args.rois < 1 or args.steps < 1:
        raise ValueError("train_mask_head: --batch, --rois and --steps must be at least 1")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)
    if model is None:
        model, _ = load_checkpoint(ensure_detector(args.detector))
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    d = model.cfg
    if args.size % d.size_divisible:
        raise ValueError(f"train_mask_head: --size {args.size} is not a multiple of {d.size_divisible}")
    mcfg = MaskConfig(in_channels=d.fpn_channels, width=args.width, layers=args.layers)
    head = MaskHead(mcfg)
    pooler = mask_pooler(d, mcfg.roi_output_size)
    opt = torch.optim.AdamW(head.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    scenes = scenes or MaskScenes(args.seed, args.size, categories)
    ckpt_path = os.path.join(args.out, "checkpoint.pt")
    command = "python3 -m vildtrain train_mask_head " + " ".join(
        shlex.quote(a) for a in (argv or []) if a != "--resume")
    step, total, elapsed_before, history, rois_seen = 0, args.steps, 0.0, [], 0
    if args.resume and os.path.exists(ckpt_path):
        blob = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        for k in ("batch", "rois", "seed", "width", "layers"):
            if blob["settings"][k] != getattr(args, k):
                raise ValueError(f"train_mask_head: --resume needs the --{k} of the interrupted run "
                                 f"({blob['settings'][k]})")
        head.load_state_dict(blob["head"])
        opt.load_state_dict(blob["optimizer"])
        step, total, elapsed_before = blob["step"], blob["total"], blob["elapsed"]
        history, rois_seen = blob["history"], blob["rois_seen"]
        print(f"train_mask_head: resumed at step {step}/{total}", file=sys.stderr, flush=True)
    print(f"train_mask_head: head width {mcfg.width} x {mcfg.layers} layers, "
          f"{sum(p.numel() for p in head.parameters())} parameters, {flops_per_roi(mcfg) / 1e6:.1f} MFLOP per RoI; "
          f"{args.batch} scenes x at most {args.rois} RoIs per step", file=sys.stderr, flush=True)
    settings = dict(vars(args))

    def save() -> None:
        tmp = ckpt_path + ".tmp"
        torch.save({"mask_config": mcfg.to_dict(), "head": head.state_dict(), "optimizer": opt.state_dict(),
                    "step": step, "total": total, "elapsed": elapsed_before + time.time() - t_launch,
                    "settings": settings, "history": history, "rois_seen": rois_seen}, tmp)
        os.replace(tmp, ckpt_path)

    budget_s = args.time_budget * 60.0
    t_loop = t_ckpt = time.time()
    t_fit: tuple[float, int] | None = None   # (time, step) the rate is measured from
    calibrated = False
    steps_now, ema = 0, None
    head.train()
    while step < total:
        g = torch.Generator().manual_seed(step_seed(args.seed, step))
        batch = [scenes(step * args.batch + j) for j in range(args.batch)]
        images = torch.stack([b[0] for b in batch])
        feats, proposals = frozen_features(model, images)
        rois, targets = [], []
        for (_, boxes, masks), props in zip(batch, proposals):
            r, idx = mask_rois(boxes, props, args.rois, args.jitter, g)
            rois.append(r)
            targets.append(mask_targets(masks, r, idx, mcfg.mask_size))
        n_rois = sum(r.shape[0] for r in rois)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, total, args.lr, args.warmup)
        if n_rois:
            loss = mask_loss(head, pooler, feats, rois, torch.cat(targets), (args.size, args.size))
            opt.zero_grad(set_to_none=False)
            loss.backward()
            opt.step()
            value = float(loss)
            if not math.isfinite(value):
                raise FloatingPointError(f"train_mask_head: loss is {value} at step {step + 1}")
            ema = value if ema is None else 0.9 * ema + 0.1 * value
        step += 1
        steps_now += 1
        rois_seen += n_rois
        now = time.time()
        elapsed = elapsed_before + now - t_launch
        if steps_now == 2:
            t_fit = (now, step)  # the first steps warm up; time from here
        if budget_s > 0 and t_fit is not None and step > t_fit[1] and (
                (not calibrated and step - t_fit[1] >= args.calibrate)
                or (calibrated and args.refit_every and step % args.refit_every == 0)):
            calibrated = True
            rate = (step - t_fit[1]) / max(1e-6, now - t_fit[0])
            t_fit = (now, step)   # the next fit measures the rate from here: a change of speed shows at once
            left = max(0.0, budget_s - elapsed)
            fit = min(args.steps, step + int(rate * left * 0.97))
            roomy = min(args.steps, step + int(rate * left * 0.94))   # growing keeps twice the slack
            if fit < total:
                print(f"train_mask_head: {total} steps would overrun the {args.time_budget:g} min budget at "
                      f"{rate * args.batch:.2f} images/s; training {fit} steps", file=sys.stderr, flush=True)
                total = fit
            elif roomy > total:
                print(f"train_mask_head: the {args.time_budget:g} min budget has room for {roomy} steps at "
                      f"{rate * args.batch:.2f} images/s; training {roomy} steps", file=sys.stderr, flush=True)
                total = roomy
        if budget_s > 0 and elapsed >= budget_s and step < total:
            print(f"train_mask_head: time budget reached at step {step}/{total}", file=sys.stderr, flush=True)
            total = step
        if step % args.log_every == 0 or step == total:
            rate = steps_now * args.batch / max(1e-6, now - t_loop)
            eta = (total - step) * args.batch / max(1e-6, rate)
            history.append({"step": step, "loss": round(ema or 0.0, 4), "images_per_s": round(rate, 3),
                            "elapsed_s": round(elapsed, 1)})
            print(f"step {step}/{total} loss {ema or 0.0:.4f} rois {n_rois} | {rate:.2f} img/s "
                  f"elapsed {elapsed / 60:.1f} min ETA {eta / 60:.1f} min", file=sys.stderr, flush=True)
        if now - t_ckpt >= args.checkpoint_every:
            save()
            t_ckpt = now
        if args.max_steps_now and steps_now >= args.max_steps_now:
            break
    save()
    done = step >= total
    summary = {"step": step, "total": total, "done": done, "images_seen": step * args.batch,
               "rois_seen": rois_seen, "elapsed_s": round(elapsed_before + time.time() - t_launch, 1),
               "final_loss": ema}
    if done:
        head.eval()
        save_mask_head(os.path.join(args.out, "mask_head.pt"), head, extra={
            "command": command, "seed": args.seed, "steps": step, "images_seen": step * args.batch,
            "rois_seen": rois_seen, "train_seconds": summary["elapsed_s"], "detector": args.detector,
            "settings": settings, "history": history})
        with open(os.path.join(args.out, "summary.json"), "w") as f:
            json.dump(summary, f, indent=1)
    return summary


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    summary = train(args, argv)
    print(json.dumps(summary))
    return 0
