"""Does the teacher on cropped regions add to ViLD's ensemble? (issue 29)

ViLD's ensemble combines the detector's two heads; the paper's table also has
"ViLD-text + CLIP", the teacher itself classifying cropped regions, which beat
ViLD on rare categories at the price of one teacher pass per region. Here the
teacher is the bundle's mini-CLIP image tower (32 px, the exemplar encoder),
so a pass is cheap. This measures a three-way product on the cached regions of
explore.py in experiments/calibration:

    p = p_ens^(1 - mu) * p_crop^mu        (mu per split: base, novel)
    p_crop = softmax(crop embedding . categories / t_crop)

on the first --k regions of each picture by objectness (the proposals come
sorted; the crops of the first --top are cached); the other regions keep
p_ens scaled by --rest. Chosen on the tuning split by a rule fixed beforehand
(base AP within 0.005 of the bundle's ensemble, then the best novel AP, ties
within --tie going to the fewest regions, then the smallest weights),
measured once held out, with the evaluation's own post-processing and COCO
AP. The crops are the bundle's (1x and 1.5x squares of the refined boxes cut
from the resized picture); the teacher is the committed mini-CLIP in float32,
where the bundle's image_encoder.onnx has int8 weights (the shipped figures
come from `vild eval` on the bundle; training/experiments/crops/README.md).

    cd training
    python3 -m vildtrain scenes --set seen --seed 2929 --count 300 --out /tmp/tune-seen-2929
    # the first grid (300 regions), every held-out set
    python3 experiments/crops/explore.py --tune /tmp/tune-seen-2929 \\
        --eval runs/heldout/seen runs/heldout/fluent3d runs/heldout/openmoji --cache /tmp/calib-cache
    # the second grid, around the first's best, with fewer regions
    python3 experiments/crops/explore.py --tune /tmp/tune-seen-2929 --eval runs/heldout/seen \\
        --cache /tmp/calib-cache --mu-base 0 0.2 --mu-novel 0.5 0.6666666666666666 --t-crop-scale 3 4 6 \\
        --k 50 100 300
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time

import numpy as np
import torch
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(HERE, "..", "ensemble"))

from sweep import Set, probabilities  # noqa: E402

from vildtrain.evaluate.cocoeval import evaluate_detections, summarize  # noqa: E402
from vildtrain.evaluate.evaluate import EVAL_LABELS_PER_BOX  # noqa: E402
from vildtrain.models.infer import postprocess  # noqa: E402


def crop_cache(bundle: str, folder: str, count: int, cache: str, regions, top: int,
               teacher: str = "") -> list[torch.Tensor]:
    """Teacher embeddings [min(top, N), D] of each picture's first regions (1x + 1.5x square crops);
    the teacher is the committed mini-CLIP, or the checkpoint ``teacher`` (cached by its digest)."""
    suffix = ""
    if teacher:
        import hashlib
        suffix = "_" + hashlib.sha256(open(teacher, "rb").read()).hexdigest()[:12]
    path = os.path.join(cache, os.path.basename(os.path.normpath(folder)) + f"_{count}_crops{top}{suffix}.pt")
    if os.path.exists(path):
        return torch.load(path)
    from vildtrain.models.detector import DetectorConfig
    from vildtrain.models.infer import preprocess
    from vildtrain.models.losses import crop_embeddings
    from vildtrain.models.miniclip import load_miniclip, DEFAULT_CHECKPOINT
    clip = load_miniclip(teacher or DEFAULT_CHECKPOINT).eval()
    cfg = DetectorConfig()
    ann = json.load(open(os.path.join(folder, "annotations.json")))
    out = []
    t0 = time.time()
    with torch.no_grad():
        for i, (im, reg) in enumerate(zip(ann["images"][:count], regions)):
            boxes = reg[3][:top]
            prep = preprocess(Image.open(os.path.join(folder, "images", im["file_name"])).convert("RGB"), cfg)
            sy, sx = prep.scale
            rb = boxes * torch.tensor([sx, sy, sx, sy], dtype=boxes.dtype)
            out.append(crop_embeddings(clip, prep.image01, [rb]).half())
            if (i + 1) % 100 == 0:
                print(f"crops: {folder} {i + 1}/{count} ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    torch.save(out, path)
    return out


def measure(s: Set, crops, mode: str, mu_base: float, mu_novel: float, t_crop: float, rest: float,
            k_max: int = 1 << 30) -> dict:
    labels = [str(i) for i in range(len(s.cats))]
    dts = {}
    b = s.base.view(1, -1)
    for im_id, (sb, St, Si, boxes), ce in zip(s.ids, s.regions, crops):
        p = probabilities(s, sb, St, Si, "text" if mode == "text" else "ensemble", 2 / 3, 2 / 3, s.Ti)
        if mode in ("fused", "crop"):
            ce = ce[:k_max]
            k = ce.shape[0]
            pc = torch.softmax(ce.float() @ s.emb.t() / t_crop, 1)
            head = p[:k]
            if mode == "crop":
                fused = pc
            else:
                mu = torch.where(b, torch.tensor(mu_base), torch.tensor(mu_novel))
                fused = head.pow(1 - mu) * pc.pow(mu)
            p = torch.cat([fused, p[k:] * rest])
            if mode == "crop":
                p, boxes = p[:k], boxes[:k]
        dets = postprocess(boxes, p, labels, s.post["score_threshold"], s.post["nms_iou"],
                           s.post["max_detections"], 0, EVAL_LABELS_PER_BOX)
        dts[im_id] = [(int(d.label), [d.box[0], d.box[1], d.box[2] - d.box[0], d.box[3] - d.box[1]], d.score)
                      for d in dets]
    return summarize(evaluate_detections(s.gts, dts, list(range(len(s.cats)))), s.groups)


def load(bundle, folder, count, cache, top):
    s = Set(bundle, folder, count, cache)
    man = json.load(open(os.path.join(bundle, "manifest.json")))
    s.Ti = man["embedding"].get("image_temperature") or s.T
    return s, crop_cache(bundle, folder, count, cache, s.regions, top)


def row(name: str, r: dict) -> str:
    return f"| {name} | " + " | ".join(f"{r[g][k]:.3f}" for g in ("novel", "base", "all") for k in ("AP", "AP50")) + " |"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default="../models/default")
    ap.add_argument("--tune", required=True)
    ap.add_argument("--tune-count", type=int, default=300)
    ap.add_argument("--eval", nargs="*", default=["runs/heldout/seen"])
    ap.add_argument("--eval-count", type=int, default=500)
    ap.add_argument("--cache", default="/tmp/calib-cache")
    ap.add_argument("--top", type=int, default=300)
    ap.add_argument("--mu-base", type=float, nargs="*", default=[0.0, 0.2, 1 / 3])
    ap.add_argument("--mu-novel", type=float, nargs="*", default=[0.2, 1 / 3, 0.5])
    ap.add_argument("--t-crop-scale", type=float, nargs="*", default=[1.0, 2.0, 3.0])
    ap.add_argument("--rest", type=float, nargs="*", default=[1.0])
    ap.add_argument("--k", type=int, nargs="*", default=[300],
                    help="regions re-scored per picture (the first k by objectness, at most --top)")
    ap.add_argument("--tie", type=float, default=0.002)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.time()
    tune, tc = load(args.bundle, args.tune, args.tune_count, args.cache, args.top)
    ref = measure(tune, tc, "ensemble", 0, 0, 0, 1)
    text = measure(tune, tc, "text", 0, 0, 0, 1)
    print(f"tune: text novel AP {text['novel']['AP']:.4f}, ensemble {ref['novel']['AP']:.4f} "
          f"base {ref['base']['AP']:.4f}", file=sys.stderr, flush=True)
    grid = []
    for mb, mn, ts, rs, k in itertools.product(args.mu_base, args.mu_novel, args.t_crop_scale, args.rest, args.k):
        r = measure(tune, tc, "fused", mb, mn, tune.T * ts, rs, k)
        grid.append({"mu_base": mb, "mu_novel": mn, "t_crop_scale": ts, "rest": rs, "k": k, **r})
        print(f"tune: mu base {mb:.3f} novel {mn:.3f} t_crop x{ts} rest {rs} k {k}: novel AP {r['novel']['AP']:.4f} "
              f"base AP {r['base']['AP']:.4f} ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    ok = [g for g in grid if g["base"]["AP"] >= ref["base"]["AP"] - 0.005]
    top = max(g["novel"]["AP"] for g in ok)
    best = min((g for g in ok if g["novel"]["AP"] >= top - args.tie),
               key=lambda g: (g["k"], g["mu_base"] + g["mu_novel"], -g["novel"]["AP"]))
    print(f"tune: chosen {best}", file=sys.stderr, flush=True)
    lines, held = [], {}
    for folder in args.eval:
        s, c = load(args.bundle, folder, args.eval_count, args.cache, args.top)
        res = {"ViLD-text": measure(s, c, "text", 0, 0, 0, 1),
               "ViLD-ensemble (bundle)": measure(s, c, "ensemble", 0, 0, 0, 1),
               f"mini-CLIP on the top {best['k']} regions": measure(s, c, "crop", 0, 1, s.T * best["t_crop_scale"], 0, best["k"]),
               "ensemble x crops (chosen on the tuning split)": measure(s, c, "fused", best["mu_base"], best["mu_novel"],
                                                                       s.T * best["t_crop_scale"], best["rest"], best["k"])}
        held[folder] = res
        n = res["ViLD-text"]["novel"]["AP"]
        lines += [f"{folder}, {len(s.ids)} scenes:", "",
                  "| method | novel AP | novel AP50 | base AP | base AP50 | all AP | all AP50 |",
                  "|---|---:|---:|---:|---:|---:|---:|", *[row(k, v) for k, v in res.items()], "",
                  "novel AP / ViLD-text's: " + ", ".join(f"{k} {v['novel']['AP'] / n:.3f}x" for k, v in res.items()), ""]
        print("\n".join(lines[-8:]), file=sys.stderr, flush=True)
    md = "\n".join([f"Chosen on {args.tune}: {json.dumps({k: best[k] for k in ('mu_base', 'mu_novel', 't_crop_scale', 'rest', 'k')})}",
                    "", *lines])
    print(md)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        json.dump({"grid": grid, "chosen": best, "held_out": held}, open(os.path.join(args.out, "results.json"), "w"), indent=1)
        open(os.path.join(args.out, "results.md"), "w").write(md + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
