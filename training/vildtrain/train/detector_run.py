"""Running the detector's training: processes, schedule, time budget, checkpoints.

:func:`train` validates the settings, loads the teacher and the vocabulary once
and runs :func:`_train` in this process or in ``--procs`` spawned ones. Each
process seeds itself, builds the student (:mod:`vildtrain.train.detector_step`),
resumes from OUT/checkpoint.pt with ``--resume``, then loops over the steps:
its share of the step's scenes (:mod:`vildtrain.train.detector_data`), one
optimisation step with gradients and BatchNorm statistics averaged over the
processes, the schedule refitted to the time budget (:class:`_Budget`, rank 0
decides and everyone follows), progress and checkpoints. Every step reseeds
the RNG from (seed, step, process), so a resumed run reaches the same weights
as an uninterrupted one. The final model is OUT/detector.pt.
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
from torch.utils.data import DataLoader
from torchvision.models.detection.roi_heads import RoIHeads

from vildtrain.models.detector import DetectorConfig, VildDetector, save_checkpoint
from vildtrain.models.miniclip import teacher_record
from vildtrain.train.detector_data import SceneStream, StepBatches, base_categories, collate
from vildtrain.train.detector_step import LossWeights, build_student, make_sampler, train_step

LOSS_KEYS = ("rpn_objectness", "rpn_box", "text", "box", "image")


def lr_at(step: int, total: int, base_lr: float, warmup: int) -> float:
    if step < warmup:
        return base_lr * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base_lr * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def step_seed(seed: int, step: int, rank: int) -> int:
    """The RNG seed of one process at one step: resuming needs no saved RNG state."""
    return (seed * 1_000_003 + step * 64 + rank) % (2 ** 63)


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


def _check_settings(args: argparse.Namespace) -> None:
    """Refuse settings the run cannot follow (ValueError), before anything is set up."""
    if args.batch % args.procs:
        raise ValueError(f"train_detector: --batch {args.batch} is not a multiple of --procs {args.procs}")
    if not 0.0 < args.box_positive_fraction <= 1.0:
        raise ValueError(f"train_detector: --box-positive-fraction {args.box_positive_fraction}: need 0 < f <= 1")
    for flag, share in (("--shade", getattr(args, "shade", 0.0)), ("--randconv", getattr(args, "randconv", 0.0))):
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"train_detector: {flag} {share}: need a share 0 <= p <= 1")
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


def train(args: argparse.Namespace, clip=None, categories=None, argv: list[str] | None = None,
          cfg: DetectorConfig | None = None) -> dict:
    """Run (or resume) training; returns a summary dict. ``clip`` and ``categories``
    default to the committed mini-CLIP and category table, ``cfg`` to the default
    architecture (its embedding size and input size are taken from the mini-CLIP and
    ``--size``). With ``--procs`` > 1 the work is spread over that many processes."""
    _check_settings(args)
    t_launch = time.time()  # the time budget counts from here, setup included
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(max(args.threads, args.procs))
    if categories is None:
        from vildtrain.data.categories import load_categories
        categories = load_categories()
    if clip is None:
        from vildtrain.models.miniclip import load_miniclip
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

    from vildtrain.train.workers import end_with_launcher
    end_with_launcher()
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        _train(rank, world, args, shared, argv, cfg)
    finally:
        dist.destroy_process_group()


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


@dataclass
class _Progress:
    """Where a run stands, as its checkpoint records it besides the weights."""
    step: int
    total: int
    elapsed_before: float  # seconds trained by the invocations before this one
    history: list[dict]


def _student_config(args: argparse.Namespace, clip, cfg: DetectorConfig | None) -> DetectorConfig:
    """``cfg`` (default: the default architecture) with the mini-CLIP's embedding
    size and the settings that change the detector."""
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
    return cfg


def _optimizer(model: VildDetector, args: argparse.Namespace) -> tuple[torch.optim.AdamW, list[Tensor]]:
    """AdamW over the trained parameters, in groups by (in the body, decayed): the
    body's learning rate is ``--body-lr`` times the rest's, and biases and norms do
    not decay. Returns (optimizer, trained parameters)."""
    params = [p for p in model.parameters() if p.requires_grad]
    body = {id(p) for p in model.backbone.body.parameters()}
    groups = []
    for in_body in (True, False):
        for decays in (True, False):
            ps = [p for p in params if (id(p) in body) == in_body and (p.ndim > 1) == decays]
            if ps:
                groups.append({"params": ps, "weight_decay": args.weight_decay if decays else 0.0,
                               "lr_mult": args.body_lr if in_body else 1.0})
    return torch.optim.AdamW(groups, lr=args.lr), params


@dataclass
class _Student:
    """What one process trains: the detector and its optimizer, the tensors averaged
    over the processes, the RoI sampler and the generator of the distilled proposals."""
    cfg: DetectorConfig
    model: VildDetector
    opt: torch.optim.AdamW
    params: list[Tensor]  # trained: their gradients are averaged
    buffers: list[Tensor]  # BatchNorm statistics, averaged after every step
    sampler: RoIHeads
    g: torch.Generator


def _student(args: argparse.Namespace, clip, cfg: DetectorConfig | None, lead: bool) -> _Student:
    """Build the student on ``--device``, its RoI sampler and its optimizer."""
    cfg = _student_config(args, clip, cfg)
    model, _ = build_student(cfg, clip, args.init, args.freeze, report=lead)
    model.to(args.device)
    sampler = make_sampler(cfg)
    g = torch.Generator()
    opt, params = _optimizer(model, args)
    buffers = [b for n, b in model.named_buffers() if n.endswith(("running_mean", "running_var"))]
    return _Student(cfg, model, opt, params, buffers, sampler, g)


def _loader(dataset: SceneStream, args: argparse.Namespace, rank: int, world: int, start: int,
            stop: int) -> DataLoader:
    """This process's share of the scenes of steps ``start`` .. ``stop`` - 1."""
    # Its own generator: creating a loader must not draw from the global RNG.
    return DataLoader(dataset, batch_sampler=StepBatches(start, stop, args.batch, rank, world),
                      num_workers=args.workers, collate_fn=collate, generator=torch.Generator(),
                      prefetch_factor=4 if args.workers > 0 else 2)


def _resume(ckpt_path: str, args: argparse.Namespace, model: VildDetector, opt, teacher: dict,
            lead: bool) -> _Progress:
    """Load an interrupted run's weights and optimizer state; refuse one with another
    batch size or another teacher."""
    blob = torch.load(ckpt_path, map_location="cpu")
    if blob["settings"]["batch"] != args.batch:
        raise ValueError("train_detector: --resume needs the --batch of the interrupted run")
    if blob.get("teacher", teacher)["digest"] != teacher["digest"]:
        raise ValueError(f"train_detector: the interrupted run distils from mini-CLIP "
                         f"{blob['teacher']['digest']} ({blob['teacher'].get('path')}), this one from "
                         f"{teacher['digest']}: resume with the same --miniclip")
    model.load_state_dict(blob["model"])
    opt.load_state_dict(blob["optimizer"])
    progress = _Progress(blob["step"], blob["total"], blob["elapsed"], blob.get("history", []))
    if lead:
        print(f"train_detector: resumed at step {progress.step}/{progress.total}", file=sys.stderr, flush=True)
    return progress


def _optimise(args: argparse.Namespace, group: _Group, student: _Student, clip, base_text: Tensor,
              weights: LossWeights, images: Tensor, targets: list[dict], step: int, total: int) -> Tensor:
    """One optimisation step on this process's share of the batch, with gradients
    and BatchNorm statistics averaged over the processes. Returns the losses to
    show (LOSS_KEYS, then the total), averaged over the processes."""
    if args.device != "cpu":
        images = images.to(args.device, non_blocking=True)
        targets = [{k: v.to(args.device, non_blocking=True) for k, v in t.items()} for t in targets]
    model, opt, params, g = student.model, student.opt, student.params, student.g
    torch.manual_seed(step_seed(args.seed, step, group.rank))
    g.manual_seed(step_seed(args.seed + 1, step, group.rank))
    for group_ in opt.param_groups:
        group_["lr"] = lr_at(step, total, args.lr, args.warmup) * group_["lr_mult"]
    loss, parts = train_step(model, clip, student.sampler, images, targets, base_text, weights,
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
        group.mean_(student.buffers)
        shown = torch.tensor([parts[k] for k in LOSS_KEYS] + [float(loss)], dtype=torch.float64)
        group.mean_([shown])
    return shown


class _Budget:
    """``--time-budget``: rank 0 fits the run's total step count to the time left.

    It times the steps from the third of this invocation on; once ``--calibrate``
    steps are done, and then every ``--refit-every`` steps, it measures the rate
    since the last fit and shrinks the total if the run would overrun, or grows it
    back (up to ``--steps``) if the budget has room; at the budget it ends the run
    whatever the schedule says."""

    def __init__(self, args: argparse.Namespace, step: int, lead: bool) -> None:
        self.args, self.lead = args, lead
        self.seconds = args.time_budget * 60.0
        self.calibrated = step >= args.calibrate or self.seconds <= 0
        self.t_fit: tuple[float, int] | None = None  # (time, step) the rate is measured from

    def total(self, step: int, steps_this_run: int, total: int, now: float, elapsed: float) -> int:
        """The run's total step count after ``step`` (``total`` unless rank 0 refits it)."""
        args = self.args
        new_total = total
        if steps_this_run == 3:
            self.t_fit = (now, step)
        refit = not self.calibrated or (args.refit_every > 0 and step % args.refit_every == 0)
        if self.lead and self.seconds > 0 and refit and self.t_fit is not None and step >= args.calibrate:
            # the rate since the last fit: a machine that slows down shows it at once
            rate = (step - self.t_fit[1]) / max(1e-6, now - self.t_fit[0])
            self.t_fit = (now, step)
            left = max(0.0, self.seconds - elapsed)
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
        if self.lead and self.seconds > 0 and elapsed >= self.seconds:
            print(f"train_detector: time budget reached at step {step}/{total}", file=sys.stderr, flush=True)
            new_total = step
        if not self.calibrated and step >= args.calibrate:
            self.calibrated = True
        return new_total


def _report(args: argparse.Namespace, progress: _Progress, steps_this_run: int, now: float, t_loop: float,
            elapsed: float, lr: float, ema: dict[str, float], loss: float) -> None:
    """Print a progress line and add its row to the history."""
    step, total = progress.step, progress.total
    rate = steps_this_run * args.batch / max(1e-6, now - t_loop)
    eta = (total - step) * args.batch / max(1e-6, rate)
    row = {"step": step, "lr": lr, "images_per_s": round(rate, 3),
           "elapsed_s": round(elapsed, 1), **{k: round(v, 4) for k, v in ema.items()}}
    progress.history.append(row)
    print(f"step {step}/{total} loss {loss:.3f} "
          + " ".join(f"{k} {ema[k]:.3f}" for k in LOSS_KEYS)
          + f" | {rate:.2f} img/s elapsed {elapsed / 60:.1f} min ETA {eta / 60:.1f} min",
          file=sys.stderr, flush=True)


def _train(rank: int, world: int, args: argparse.Namespace, shared: tuple, argv, cfg) -> dict:
    """One process's part of the run (all of it alone): set up, resume, loop, save."""
    clip, categories, base_text, t_launch = shared
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    np.random.seed(args.seed)
    group = _Group(rank, world)
    lead = rank == 0
    base, base_index = base_categories(categories)
    student = _student(args, clip, cfg, lead)
    model, opt = student.model, student.opt
    ckpt_path = os.path.join(args.out, "checkpoint.pt")
    command = reproducing_command("python3 -m vildtrain train_detector "
                                  + " ".join(shlex.quote(a) for a in (argv or [])))
    teacher = teacher_record(clip)
    progress = _Progress(0, args.steps, 0.0, [])
    if args.resume and os.path.exists(ckpt_path):
        progress = _resume(ckpt_path, args, model, opt, teacher, lead)
    weights = LossWeights(text=args.text_weight, image=args.distill_weight)
    settings = dict(vars(args))
    t_start = t_launch

    def save(path: str) -> None:
        tmp = path + ".tmp"
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": progress.step,
                    "total": progress.total, "elapsed": progress.elapsed_before + (time.time() - t_start),
                    "config": student.cfg.to_dict(), "settings": settings, "history": progress.history,
                    "teacher": teacher}, tmp)
        os.replace(tmp, path)

    from vildtrain.data.art import training_styles
    dataset = SceneStream(args.seed, 10 ** 9, base_index, size=args.size, categories=categories,
                          styles=training_styles(getattr(args, "styles", "train")),
                          shade_p=getattr(args, "shade", 0.0), randconv_p=getattr(args, "randconv", 0.0),
                          objects=(args.min_objects, args.max_objects), grid_fraction=args.grid_scenes,
                          grid_novel=args.grid_novel, grid_sides=args.grid_sides)

    t_last_ckpt = t_loop = time.time()
    ema: dict[str, float] = {}
    steps_this_run = 0
    budget = _Budget(args, progress.step, lead)
    it = iter(_loader(dataset, args, rank, world, progress.step, progress.total))
    while progress.step < progress.total:
        images, targets = next(it)
        shown = _optimise(args, group, student, clip, base_text, weights, images, targets, progress.step,
                          progress.total)
        progress.step += 1
        steps_this_run += 1
        if not math.isfinite(float(shown[-1])):
            raise FloatingPointError(f"train_detector: loss is {float(shown[-1])} at step {progress.step}")
        for k, v in zip(LOSS_KEYS, shown.tolist()):
            ema[k] = v if k not in ema else 0.9 * ema[k] + 0.1 * v
        now = time.time()
        elapsed = progress.elapsed_before + now - t_start
        # Rank 0 decides when to stop and whether to shrink the run; everyone follows.
        new_total = budget.total(progress.step, steps_this_run, progress.total, now, elapsed)
        stop = 1.0 if args.max_steps_now and steps_this_run >= args.max_steps_now else 0.0
        new_total, stop = (int(v) for v in group.from_rank0([float(new_total), stop]))
        if new_total != progress.total:
            progress.total = new_total
            it = iter(_loader(dataset, args, rank, world, progress.step, progress.total))  # the new range
        if lead and (progress.step % args.log_every == 0 or progress.step == progress.total):
            _report(args, progress, steps_this_run, now, t_loop, elapsed, opt.param_groups[-1]["lr"], ema,
                    float(shown[-1]))
        if lead and now - t_last_ckpt >= args.checkpoint_every:
            save(ckpt_path)
            t_last_ckpt = now
        if stop:
            break
    done = progress.step >= progress.total
    summary = {"step": progress.step, "total": progress.total, "done": done,
               "elapsed_s": progress.elapsed_before + time.time() - t_start,
               "final": {k: round(v, 4) for k, v in ema.items()}}
    if lead:
        save(ckpt_path)
        if done:
            _save_model(args, model, progress, summary, command, settings, base, teacher)
        with open(os.path.join(args.out, "last_run.json"), "w") as f:
            json.dump(summary, f, indent=1)
    return summary


def _save_model(args: argparse.Namespace, model: VildDetector, progress: _Progress, summary: dict, command: str,
                settings: dict, base: list, teacher: dict) -> None:
    """The finished run's model, OUT/detector.pt, with what reproduces and describes
    it, and OUT/summary.json."""
    model.eval()
    save_checkpoint(os.path.join(args.out, "detector.pt"), model, extra={
        "command": command, "seed": args.seed, "settings": settings, "steps": progress.step,
        "images_seen": progress.step * args.batch, "train_seconds": summary["elapsed_s"],
        "distill_weight": args.distill_weight, "base_categories": [c.name for c in base],
        "teacher": teacher, "history": progress.history})
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
