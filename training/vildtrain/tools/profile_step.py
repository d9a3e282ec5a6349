"""Where a CPU training step's time goes: the phases of ``detector_step.train_step``.

    python3 -m vildtrain profile_step [--freeze 0] [--precision bf16] [--pooler bag] [--box-rois 256]
                                      [--image-head-hidden 1024] [--distill 48+16] [--scenes 4] [--steps 8]

One process with one torch thread and ``--scenes`` pictures per step (one of the
two training processes' share of a batch of 8), the committed mini-CLIP as
teacher and the default detector. Scenes are drawn before the clock starts.
The phases are the ``record_function`` ranges of ``train_step`` (backbone,
rpn, text, teacher, image) plus the backward pass and the optimizer step, read
from torch's profiler over ``--steps`` steps after ``--warmup`` untimed ones.
The step's wall time is taken first over the same steps with the profiler off
(the profiler's own bookkeeping lengthens a step by a third or more).

``--precision``, ``--pooler``, ``--box-rois``, ``--image-head-hidden`` and
``--distill`` take comma-separated lists;
every combination is profiled on the same scenes and starting weights, and each
step time is given as a ratio to the first combination's. The combinations'
profiler-off steps are interleaved (each timed step runs every combination
once, starting with the next one in turn), so that neither a drift in the
machine's speed nor the order of the runs favours one of them; timed one
after the other, as before, whichever of two variants ran second came out
about a fifth slower than in the other order. The phase tables still come
from one profiled pass per variant, one after the other (one profiler at a
time), so a drift in the machine's speed shows in them: compare variants by
the step ratio. ``--pooler torchvision`` swaps the
detector's RoI pooler (``models.roialign.BagMultiScaleRoIAlign``) for torchvision's
``MultiScaleRoIAlign`` with the same levels and scales: the pooler the trainer
used before decision 0009. ``--box-rois`` is train_detector's: the RoIs sampled
per picture for the text and box losses.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import sys
import time

import torch
from torch.autograd.profiler import record_function
from torch.profiler import ProfilerActivity, profile

POOLERS = ("bag", "torchvision")
PHASES = ("step/backbone", "step/rpn", "step/text", "step/teacher", "step/image", "step/backward",
          "step/optimizer")


def torchvision_pooler(bag):
    """torchvision's ``MultiScaleRoIAlign`` with ``bag``'s levels, output, sampling and scales."""
    from torchvision.ops import MultiScaleRoIAlign
    pool = MultiScaleRoIAlign(bag.featmap_names, bag.output_size, bag.sampling_ratio,
                              canonical_scale=bag.canonical_scale, canonical_level=bag.canonical_level)
    pool.scales, pool.map_levels = bag.scales, bag.map_levels
    return pool


def profile_variants(variants: list[dict], freeze: int, scenes: int, steps: int, warmup: int, seed: int = 0,
                     ops: int = 0) -> list[dict]:
    """Per-step milliseconds of each variant (a dict of ``precision``, ``pooler``
    and ``box_rois``, each optional) on the same scenes and starting weights:
    each phase (profiler on), the whole step with the profiler off (``step_ms``)
    and with it on (``profiled_step_ms``); with ``ops`` > 0 also ``ops_table``,
    the profiler's table of the ``ops`` operators with the most time of their own.

    The profiler-off steps of the variants are interleaved: timed step i runs
    every variant once, starting with variant i mod n, so a drift in the
    machine's speed, or a variant's place in the order, weighs on all alike."""
    from vildtrain.data.categories import load_categories
    from vildtrain.models.miniclip import load_miniclip
    from vildtrain.train.detector_data import SceneStream, base_categories, collate
    from vildtrain.train.train_detector import build_parser
    defaults = build_parser().parse_args([])  # the trainer's scenes and distillation settings
    torch.set_num_threads(1)
    categories = load_categories()
    base, base_index = base_categories(categories)
    clip = load_miniclip(None).eval()
    for p in clip.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        base_text = clip.text_embeddings([c.name for c in base]).float()
    stream = SceneStream(seed, 10 ** 9, base_index, size=defaults.size, categories=categories,
                         objects=(defaults.min_objects, defaults.max_objects), grid_fraction=defaults.grid_scenes,
                         grid_sides=defaults.grid_sides)
    batches = [collate([stream[i * scenes + j] for j in range(scenes)]) for i in range(warmup + steps)]
    runs = [_variant(defaults, clip, base_text, freeze, seed, **v) for v in variants]
    for step, _ in runs:
        for images, targets in batches[:warmup]:
            step(images, targets)
    walls = [0.0] * len(runs)
    for i, (images, targets) in enumerate(batches[warmup:]):
        for k in range(len(runs)):
            v = (i + k) % len(runs)
            t0 = time.perf_counter()
            runs[v][0](images, targets)
            walls[v] += time.perf_counter() - t0
    outs = []
    for (step, rois), wall in zip(runs, walls):
        t0 = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for images, targets in batches[warmup:]:
                step(images, targets)
        profiled = (time.perf_counter() - t0) / steps
        spent = {e.key: e.cpu_time_total / 1000.0 / steps for e in prof.key_averages() if e.key in PHASES}
        out = {"phases_ms": {k: spent.get(k, 0.0) for k in PHASES}, "step_ms": 1000.0 * wall / steps,
               "profiled_step_ms": 1000.0 * profiled, "box_rois": rois}
        if ops > 0:
            out["ops_table"] = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=ops)
        outs.append(out)
    return outs


def _variant(defaults, clip, base_text, freeze: int, seed: int, precision: str = "bf16", pooler: str = "bag",
             box_rois: int | None = None, image_head_hidden: int | None = None,
             distill: tuple[int, int] | None = None):
    """A fresh student (weights from ``seed``) and its optimizer -> (step function, RoIs sampled per picture)."""
    from vildtrain.models.detector import DetectorConfig
    from vildtrain.train.detector_step import LossWeights, build_student, make_sampler, train_step
    if pooler not in POOLERS:
        raise ValueError(f"profile_step: pooler {pooler!r}: need one of {', '.join(POOLERS)}")
    cfg = dataclasses.replace(DetectorConfig(), embed_dim=clip.embed_dim, max_side=defaults.size)
    if box_rois is not None:
        cfg = dataclasses.replace(cfg, box_batch_per_image=box_rois)
    if image_head_hidden is not None:
        cfg = dataclasses.replace(cfg, image_head_hidden=image_head_hidden)
    distill_top, distill_random = distill or (defaults.distill_top, defaults.distill_random)
    torch.manual_seed(seed)
    model, _ = build_student(cfg, clip, "miniclip", freeze)
    if pooler == "torchvision":
        model.roi_pool = torchvision_pooler(model.roi_pool)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    sampler, g = make_sampler(cfg), torch.Generator().manual_seed(seed)

    def step(images, targets) -> None:
        loss, _ = train_step(model, clip, sampler, images, targets, base_text,
                             LossWeights(text=defaults.text_weight, image=defaults.distill_weight),
                             distill_top, distill_random, g, bf16_backbone=precision == "bf16")
        opt.zero_grad()
        with record_function("step/backward"):
            loss.backward()
        with record_function("step/optimizer"):
            opt.step()

    return step, sampler.fg_bg_sampler.batch_size_per_image


def profile_steps(freeze: int, scenes: int, steps: int, warmup: int, seed: int = 0,
                  precision: str = "bf16", pooler: str = "bag", ops: int = 0, box_rois: int | None = None) -> dict:
    """``profile_variants`` of one variant."""
    return profile_variants([{"precision": precision, "pooler": pooler, "box_rois": box_rois}], freeze, scenes,
                            steps, warmup, seed, ops)[0]


def _names(text: str, allowed: tuple[str, ...]) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names or any(n not in allowed for n in names) or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"{text!r}: need {' or '.join(allowed)} or several, comma-separated, "
                                         "each once")
    return names


def _precisions(text: str) -> list[str]:
    from vildtrain.train.detector_step import PRECISIONS
    return _names(text, PRECISIONS)


def _poolers(text: str) -> list[str]:
    return _names(text, POOLERS)


def _positive_ints(text: str, what: str) -> list[int]:
    try:
        values = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1 or len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"{text!r}: need {what} >= 1, comma-separated, each once")
    return values


def _box_rois(text: str) -> list[int]:
    return _positive_ints(text, "RoI counts")


def _image_head_hidden(text: str) -> list[int]:
    return _positive_ints(text, "widths")


def _distill(text: str) -> list[tuple[int, int]]:
    try:
        pairs = [tuple(int(x) for x in t.split("+")) for t in text.split(",") if t.strip()]
    except ValueError:
        pairs = []
    if not pairs or any(len(p) != 2 or min(p) < 0 or sum(p) < 1 for p in pairs) or len(set(pairs)) != len(pairs):
        raise argparse.ArgumentTypeError(f"{text!r}: need TOP+RANDOM proposal counts, e.g. 24+8, comma-separated, "
                                         "each once")
    return pairs


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="vildtrain profile_step", description=__doc__.split("\n\n")[0])
    ap.add_argument("--freeze", type=int, default=0, help="body stages kept fixed, as train_detector --freeze")
    ap.add_argument("--precision", type=_precisions, default=["bf16"],
                    help="as train_detector --precision; fp32,bf16 profiles both on the same scenes and weights, "
                         "in that order, and gives each one's step time as a ratio to the first's")
    ap.add_argument("--pooler", type=_poolers, default=["bag"],
                    help="RoI pooler: bag (the trainer's) or torchvision (the one before it); torchvision,bag "
                         "profiles both on the same scenes and weights")
    ap.add_argument("--box-rois", type=_box_rois, default=None,
                    help="RoIs sampled per picture, as train_detector --box-rois (default: the trainer's); "
                         "256,512 profiles both on the same scenes and weights")
    ap.add_argument("--image-head-hidden", type=_image_head_hidden, default=None,
                    help="image head width, as train_detector --image-head-hidden (default: the trainer's); "
                         "256,1024 profiles both")
    ap.add_argument("--distill", type=_distill, default=None,
                    help="distilled proposals per picture as TOP+RANDOM, train_detector's --distill-top and "
                         "--distill-random (default: the trainer's); 24+8,48+16 profiles both")
    ap.add_argument("--ops", type=int, default=0,
                    help="also print the profiler's table of the N operators with the most time of their own "
                         "(totals over the timed steps)")
    ap.add_argument("--scenes", type=int, default=4, help="pictures per step")
    ap.add_argument("--steps", type=int, default=8, help="timed steps")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    args = ap.parse_args(argv)
    if args.scenes < 1 or args.steps < 1 or args.warmup < 0 or args.freeze < 0 or args.ops < 0:
        print("profile_step: need --scenes >= 1, --steps >= 1, --warmup >= 0, --freeze >= 0, --ops >= 0",
              file=sys.stderr)
        return 2
    choices = {"precision": args.precision, "pooler": args.pooler, "box_rois": args.box_rois or [None],
               "image_head_hidden": args.image_head_hidden or [None], "distill": args.distill or [None]}
    show = {"precision": str, "pooler": str, "box_rois": lambda r: f"{r} RoIs",
            "image_head_hidden": lambda w: f"image head {w}", "distill": lambda d: f"distil {d[0]}+{d[1]}"}
    runs = [dict(zip(choices, combo)) for combo in itertools.product(*choices.values())]
    varying = [k for k, v in choices.items() if len(v) > 1] or ["precision"]
    names = ["/".join(show[k](run[k]) for k in varying) for run in runs]
    outs = profile_variants(runs, args.freeze, args.scenes, args.steps, args.warmup, ops=args.ops)
    for n, o in zip(names, outs):
        if "ops_table" in o:
            print(f"{n}: operators over {args.steps} steps\n{o['ops_table']}")
    width = max(10, *(len(n) + 3 for n in names))
    print(f"{'phase':10s}" + "".join(f" {n + ' ms':>{width}s} {'share':>6s}" for n in names))
    totals = [sum(o["phases_ms"].values()) for o in outs]
    for k in PHASES:
        print(f"{k[5:]:10s}" + "".join(f" {o['phases_ms'][k]:{width}.1f} "
                                       f"{100.0 * o['phases_ms'][k] / max(t, 1e-9):5.1f}%"
                                       for o, t in zip(outs, totals)))
    print(f"{'profiled':10s}" + "".join(f" {o['profiled_step_ms']:{width}.1f} {'':6s}" for o in outs))
    print(f"{'step wall':10s}" + "".join(f" {o['step_ms']:{width}.1f} {'':6s}" for o in outs))
    for n, o in zip(names[1:], outs[1:]):
        print(f"{n} step: {o['step_ms'] / outs[0]['step_ms']:.2f} x the {names[0]} step's time")
    print(f"(one process, one thread, {args.scenes} scenes per step, {args.steps} steps after {args.warmup}, "
          f"--freeze {args.freeze}; phases and 'profiled' with the profiler on, 'step wall' and the ratios "
          f"from the same steps with it off)")
    return 0
