"""How the two heads are combined: a sweep of the ensemble's settings.

ViLD's ensemble multiplies the text head's and the image head's class
probabilities, p_text^lam * p_image^(1-lam) for base categories and
p_text^(1-lam) * p_image^lam for the others (lam = 2/3 in the paper and in the
bundle). This measures, with the evaluation's own post-processing and COCO AP
(vildtrain.evaluate), what other settings give:

- lam for base and for novel categories, separately;
- each head's softmax temperature (ViLD has one temperature for both).

Settings are chosen on a tuning split of generated scenes with another seed and
then measured once on the held-out scenes; the held-out scenes never choose.
The rule: among settings whose base AP stays within 0.005 of ViLD's (lam
2/3, one temperature), those within --tie (0.002) of the best novel AP tie;
of those, the one that changes the fewest of lam base, lam novel and the
text temperature.

    cd training
    python3 -m vildtrain scenes --set seen --seed 2929 --count 300 --out /tmp/tune-seen-2929
    python3 experiments/ensemble/sweep.py --bundle ../models/default \\
        --tune /tmp/tune-seen-2929 --eval runs/heldout/seen runs/heldout/fluent3d runs/heldout/openmoji \\
        --lam-base 0.6666666666666666 --lam 0.6666666666666666 0.75 0.85 --t-img-scale 1 2 3 4 6 \\
        --t-text-scale 1 1.5 2 --cache /tmp/calib-cache --out experiments/ensemble/results

Region embeddings come from the PyTorch detector rebuilt from the bundle and
are cached per set in --cache (the cache of experiments/calibration/explore.py).
Temperatures are multiples of the manifest's ``temperature`` (0.01); the
"one temperature" rows are ViLD's rule, both heads at that temperature, as
the bundle scored before ``image_temperature`` (0.03 since).
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

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(HERE, "..", "calibration"))

from explore import load_regions  # noqa: E402  (the shared region cache)

from vildtrain.evaluate.cocoeval import evaluate_detections, summarize  # noqa: E402
from vildtrain.evaluate.evaluate import EVAL_LABELS_PER_BOX  # noqa: E402
from vildtrain.models.infer import postprocess  # noqa: E402


class Set:
    """Cached regions of one scene folder plus its ground truth in manifest category order."""

    def __init__(self, bundle: str, folder: str, count: int, cache: str):
        man = json.load(open(os.path.join(bundle, "manifest.json")))
        self.cats = man["categories"]
        self.T = man["embedding"]["temperature"]
        self.post = man["postprocess"]
        self.emb = torch.from_numpy(np.load(os.path.join(bundle, "category_embeddings.npy")).astype(np.float32))
        self.bg = torch.from_numpy(np.load(os.path.join(bundle, "background.npy")).astype(np.float32))
        self.base = torch.tensor([c["split"] == "base" for c in self.cats])
        R, ann, imgs = load_regions(bundle, folder, count, cache)
        index = {c["name"]: i for i, c in enumerate(self.cats)}
        names = {c["id"]: c["name"] for c in ann["categories"]}
        keep = {im["id"] for im in imgs}
        self.gts: dict[int, list] = {im["id"]: [] for im in imgs}
        for a in ann["annotations"]:
            if a["image_id"] in keep:
                self.gts[a["image_id"]].append((index[names[a["category_id"]]], list(a["bbox"])))
        self.ids = [im["id"] for im in imgs]
        # similarities once: text vs background and categories, image vs categories
        self.regions = []
        for te, ie, boxes in R:
            self.regions.append((te @ self.bg, te @ self.emb.t(), ie @ self.emb.t(), boxes))
        self.groups = {"novel": [i for i, c in enumerate(self.cats) if c["split"] != "base"],
                       "base": [i for i, c in enumerate(self.cats) if c["split"] == "base"],
                       "all": list(range(len(self.cats)))}


def probabilities(s: Set, sb, St, Si, head: str, lam_base: float, lam_novel: float, t_img: float,
                  t_text: float | None = None) -> torch.Tensor:
    p_text = torch.softmax(torch.cat([sb.view(-1, 1), St], 1) / (t_text or s.T), 1)[:, 1:]
    if head == "text":
        return p_text
    p_img = torch.softmax(Si / t_img, 1)
    if head == "image":
        return p_img
    b = s.base.view(1, -1)
    return torch.where(b, p_text.pow(lam_base) * p_img.pow(1 - lam_base),
                       p_text.pow(1 - lam_novel) * p_img.pow(lam_novel))


def measure(s: Set, head: str, lam_base: float, lam_novel: float, t_img: float, t_text: float | None = None) -> dict:
    labels = [str(i) for i in range(len(s.cats))]
    dts = {}
    for im_id, (sb, St, Si, boxes) in zip(s.ids, s.regions):
        p = probabilities(s, sb, St, Si, head, lam_base, lam_novel, t_img, t_text)
        dets = postprocess(boxes, p, labels, s.post["score_threshold"], s.post["nms_iou"],
                           s.post["max_detections"], 0, EVAL_LABELS_PER_BOX)
        dts[im_id] = [(int(d.label), [d.box[0], d.box[1], d.box[2] - d.box[0], d.box[3] - d.box[1]], d.score)
                      for d in dets]
    return summarize(evaluate_detections(s.gts, dts, list(range(len(s.cats)))), s.groups)


def row(name: str, r: dict) -> str:
    return f"| {name} | " + " | ".join(f"{r[g][k]:.3f}" for g in ("novel", "base", "all") for k in ("AP", "AP50")) + " |"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default="../models/default")
    ap.add_argument("--tune", required=True, help="tuning split (COCO folder), never the held-out scenes")
    ap.add_argument("--tune-count", type=int, default=300)
    ap.add_argument("--eval", nargs="*", default=["runs/heldout/seen"])
    ap.add_argument("--eval-count", type=int, default=500)
    ap.add_argument("--cache", default="/tmp/calib-cache")
    ap.add_argument("--lam-base", type=float, nargs="*", default=None, help="default: --lam")
    ap.add_argument("--lam", type=float, nargs="*", default=[0.5, 2 / 3, 0.75, 0.85])
    ap.add_argument("--t-img-scale", type=float, nargs="*", default=[0.5, 1.0, 1.5, 2.0],
                    help="image-head temperature as a multiple of the manifest's temperature")
    ap.add_argument("--t-text-scale", type=float, nargs="*", default=[1.0],
                    help="text-head temperature as a multiple of the manifest's temperature")
    ap.add_argument("--tie", type=float, default=0.002,
                    help="novel AP differences on the tuning split below this count as ties")
    ap.add_argument("--out", default=None, help="folder for results.json and results.md")
    args = ap.parse_args()
    torch.set_num_threads(1)

    t0 = time.time()
    tune = Set(args.bundle, args.tune, args.tune_count, args.cache)
    base_lam = 2 / 3
    grid = []
    lam_base = args.lam_base or args.lam
    for lb, ln, ts, tt in itertools.product(lam_base, args.lam, args.t_img_scale, args.t_text_scale):
        r = measure(tune, "ensemble", lb, ln, tune.T * ts, tune.T * tt)
        grid.append({"lam_base": lb, "lam_novel": ln, "t_img_scale": ts, "t_text_scale": tt, **r})
        print(f"tune: lam base {lb:.3f} novel {ln:.3f} t_img x{ts} t_text x{tt}: novel AP {r['novel']['AP']:.4f} "
              f"base AP {r['base']['AP']:.4f} all AP {r['all']['AP']:.4f} ({time.time() - t0:.0f} s)",
              file=sys.stderr, flush=True)
    text = measure(tune, "text", 0, 0, tune.T)
    # Chosen on the tuning split: among settings whose base AP stays within 0.005 of
    # ViLD's, those within --tie of the best novel AP; of those, the one that changes the
    # fewest of ViLD's settings (lam base, lam novel, text temperature), then the
    # best novel AP.
    ref = measure(tune, "ensemble", base_lam, base_lam, tune.T)
    ok = [g for g in grid if g["base"]["AP"] >= ref["base"]["AP"] - 0.005]
    top = max(g["novel"]["AP"] for g in ok)

    def changes(g: dict) -> int:
        return (abs(g["lam_base"] - base_lam) > 1e-6) + (abs(g["lam_novel"] - base_lam) > 1e-6) + \
            (g["t_text_scale"] != 1.0)
    best = min((g for g in ok if g["novel"]["AP"] >= top - args.tie), key=lambda g: (changes(g), -g["novel"]["AP"]))
    print(f"tune: text novel AP {text['novel']['AP']:.4f}; lam 2/3 and one temperature: novel AP {ref['novel']['AP']:.4f} "
          f"({ref['novel']['AP'] / text['novel']['AP']:.3f}x); chosen lam base {best['lam_base']:.3f} "
          f"novel {best['lam_novel']:.3f} t_img x{best['t_img_scale']} t_text x{best['t_text_scale']}: novel AP {best['novel']['AP']:.4f} "
          f"({best['novel']['AP'] / text['novel']['AP']:.3f}x)", file=sys.stderr, flush=True)

    held = {}
    lines = []
    for folder in args.eval:
        s = Set(args.bundle, folder, args.eval_count, args.cache)
        res = {"ViLD-text": measure(s, "text", 0, 0, s.T),
               "ViLD-image": measure(s, "image", 0, 0, s.T),
               "ViLD-ensemble (lam 2/3, one temperature)": measure(s, "ensemble", base_lam, base_lam, s.T),
               "ViLD-ensemble (chosen on the tuning split)": measure(s, "ensemble", best["lam_base"],
                                                                     best["lam_novel"], s.T * best["t_img_scale"],
                                                                     s.T * best["t_text_scale"])}
        held[folder] = res
        n = res["ViLD-text"]["novel"]["AP"]
        lines += [f"{folder}, {len(s.ids)} scenes (AP = AP@[.5:.95]):", "",
                  "| method | novel AP | novel AP50 | base AP | base AP50 | all AP | all AP50 |",
                  "|---|---:|---:|---:|---:|---:|---:|", *[row(k, v) for k, v in res.items()], "",
                  "ensemble novel AP / ViLD-text novel AP: " + ", ".join(
                      f"{k.split('(')[1].rstrip(')')} {v['novel']['AP'] / n:.3f}x"
                      for k, v in res.items() if k.startswith("ViLD-ensemble")), ""]
    md = "\n".join([f"Chosen on {args.tune} ({len(tune.ids)} scenes): lam base {best['lam_base']:.3f}, "
                    f"lam novel {best['lam_novel']:.3f}, image temperature x{best['t_img_scale']}, text temperature "
                    f"x{best['t_text_scale']} (of the manifest's temperature {tune.T}).", "", *lines])
    print(md)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        json.dump({"tune": {"folder": args.tune, "text": text, "lam_two_thirds_one_temperature": ref, "grid": grid, "chosen": best},
                   "held_out": held}, open(os.path.join(args.out, "results.json"), "w"), indent=1)
        open(os.path.join(args.out, "results.md"), "w").write(md + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
