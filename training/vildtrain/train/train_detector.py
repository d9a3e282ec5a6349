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

This module is the command line; :mod:`vildtrain.train.detector_data` draws the
scenes, :mod:`vildtrain.train.detector_step` computes a step's losses and
:mod:`vildtrain.train.detector_run` runs the processes, the schedule and the
checkpoints.
"""
from __future__ import annotations

import argparse
import json
import os

from vildtrain.models.detector import DetectorConfig
from vildtrain.train.detector_run import train
from vildtrain.train.detector_step import PRECISIONS


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="vildtrain train_detector", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="training/runs/detector")
    _add_recipe_arguments(ap)
    _add_run_arguments(ap)
    return ap


def _add_recipe_arguments(ap: argparse.ArgumentParser) -> None:
    """What is trained: the schedule, the scenes, the losses and the student."""
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
    ap.add_argument("--init", type=_init, default="miniclip",
                    help="start the backbone body from the mini-CLIP image tower (default), from random weights "
                         "('none'), or every weight from a detector checkpoint (a path, e.g. the one "
                         "`detector_from_bundle` writes) to train it further")
    ap.add_argument("--shade", type=float, default=0.0,
                    help="share of pasted objects given pseudo-3D lighting (scenes.shade_sprite), an "
                         "augmentation towards rendered styles; 0 = none")
    ap.add_argument("--randconv", type=float, default=0.0,
                    help="share of pasted objects filtered by a random convolution (scenes.randconv_sprite, the "
                         "counterpart of train_clip --randconv): surfaces and colours randomised, outlines kept; "
                         "0 = none")
    ap.add_argument("--styles", type=_styles, default="train",
                    help="art of the training scenes: 'train' (Noto and Twemoji), 'teacher' (every style but "
                         "Fluent 3D: also OpenMoji and the Iconify sets) or a comma-separated list (a style named twice "
                         "is drawn twice as often)")
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


def _init(value: str) -> str:
    if value in ("miniclip", "none") or os.path.isfile(value):
        return value
    raise argparse.ArgumentTypeError(f"{value!r} is neither 'miniclip', 'none' nor a detector checkpoint file")


def _add_run_arguments(ap: argparse.ArgumentParser) -> None:
    """How the run is carried out: processes, device, time budget, teacher, progress,
    checkpoints and resuming."""
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


def _styles(text: str) -> str:
    """--styles: checked here, turned into styles where the scenes are made."""
    from vildtrain.data.art import training_styles
    try:
        training_styles(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


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
