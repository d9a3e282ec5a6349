"""Scoring modes explored for docs/decisions/0027-stable-scores.md.

Fits every fitted mode on a calibration split of generated scenes (never on
the evaluated ones) and measures each mode on the held-out scenes with the
protocol of `vild calibration` (docs/evaluation.md "Calibration"): each
image's ground-truth names plus seeded random others at 10, 100 and all 703
names, one label per region, score threshold 0.05, per-label NMS 0.5, greedy
matching at IoU 0.5; median score on true boxes, recall at 0.3, ECE (15 bins)
and a pooled AP50 (all detections ranked together, a quick proxy: the Go
command's AP50 is per category). Last, one isotonic map of the stable score
per vocabulary size, fitted on the split: calibrated at each size by
construction, as ECE <= 0.03 at every size asks, so its drift between sizes
is the price of that. The bundle's image_temperature is honoured.

    cd training
    python3 -m vildtrain scenes --set seen --seed 2929 --count 300 --out /tmp/calib-seen-2929
    python3 experiments/calibration/explore.py --bundle ../models/default \\
        --fit /tmp/calib-seen-2929 --eval runs/heldout/seen --cache /tmp/calib-cache

Region embeddings are cached per set in --cache (the PyTorch detector rebuilt
from the bundle, vildtrain.models.detector_from_bundle).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys

import numpy as np
import torch
from PIL import Image
from torchvision.ops import batched_nms

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", ".."))


def load_regions(bundle: str, folder: str, count: int, cache: str):
    """[(text [N,D], image [N,D], boxes [N,4])] of the first count images, and the images."""
    ann = json.load(open(os.path.join(folder, "annotations.json")))
    imgs = ann["images"][:count]
    path = os.path.join(cache, os.path.basename(os.path.normpath(folder)) + f"_{count}.pt")
    if os.path.exists(path):
        return torch.load(path), ann, imgs
    from vildtrain.models.detector_from_bundle import detector_from_bundle
    from vildtrain.models.infer import regions
    model = detector_from_bundle(bundle)
    out = []
    with torch.no_grad():
        for i, im in enumerate(imgs):
            r = regions(model, Image.open(os.path.join(folder, "images", im["file_name"])).convert("RGB"))
            out.append((r.text_embeddings, r.image_embeddings, r.boxes))
            if (i + 1) % 50 == 0:
                print(f"regions: {folder} {i + 1}/{len(imgs)}", file=sys.stderr)
    os.makedirs(cache, exist_ok=True)
    torch.save(out, path)
    return out, ann, imgs


class Data:
    """Per image: similarities to all categories, background, boxes, IoU to the ground truth."""

    def __init__(self, bundle: str, folder: str, count: int, cache: str):
        man = json.load(open(os.path.join(bundle, "manifest.json")))
        self.cats = man["categories"]
        self.T = man["embedding"]["temperature"]
        # the image head's own temperature (docs/decisions/0030), absent: the text head's
        self.Ti = man["embedding"].get("image_temperature") or self.T
        self.lam = man["embedding"]["ensemble_lambda"]
        emb = np.load(os.path.join(bundle, "category_embeddings.npy")).astype(np.float32)
        bg = np.load(os.path.join(bundle, "background.npy")).astype(np.float32)
        self.base = np.array([c["split"] == "base" for c in self.cats])
        index = {c["name"]: i for i, c in enumerate(self.cats)}
        R, ann, imgs = load_regions(bundle, folder, count, cache)
        names = {c["id"]: c["name"] for c in ann["categories"]}
        gts: dict[int, list] = {}
        for a in ann["annotations"]:
            b = a["bbox"]
            gts.setdefault(a["image_id"], []).append((index[names[a["category_id"]]], [b[0], b[1], b[0] + b[2], b[1] + b[3]]))
        self.images = []
        for im, (te, ie, boxes) in zip(imgs, R):
            te, ie, bx = te.numpy(), ie.numpy(), boxes.numpy()
            g = gts.get(im["id"], [])
            gb = np.array([b for _, b in g], np.float32).reshape(-1, 4)
            gl = np.array([k for k, _ in g], int)
            x1 = np.maximum(bx[:, None, 0], gb[None, :, 0])
            y1 = np.maximum(bx[:, None, 1], gb[None, :, 1])
            x2 = np.minimum(bx[:, None, 2], gb[None, :, 2])
            y2 = np.minimum(bx[:, None, 3], gb[None, :, 3])
            inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
            a1 = (bx[:, 2] - bx[:, 0]) * (bx[:, 3] - bx[:, 1])
            a2 = (gb[:, 2] - gb[:, 0]) * (gb[:, 3] - gb[:, 1])
            iou = inter / (a1[:, None] + a2[None, :] - inter)
            self.images.append(dict(St=te @ emb.T, Si=ie @ emb.T, sb=te @ bg, boxes=bx, gl=gl, iou=iou))

    def vocab(self, i: int, size: int, seed: int = 0) -> np.ndarray:
        rng = random.Random(seed * 100003 + i)
        names = sorted(set(self.images[i]["gl"].tolist()))
        others = [k for k in range(len(self.cats)) if k not in names]
        rng.shuffle(others)
        return np.array(names + others[:max(0, size - len(names))])


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(1, keepdims=True)
    return x - np.log(np.exp(x).sum(1, keepdims=True))


def softmax_mode(D: Data):
    def f(d, V):
        lt = log_softmax(np.concatenate([d["sb"][:, None], d["St"][:, V]], 1) / D.T)[:, 1:]
        li = log_softmax(d["Si"][:, V] / D.Ti)
        b = D.base[V][None, :]
        return np.exp(np.where(b, D.lam * lt + (1 - D.lam) * li, (1 - D.lam) * lt + D.lam * li))
    return f


def stable_mode(D: Data):
    every = np.arange(len(D.cats))
    soft = softmax_mode(D)
    return lambda d, V: soft(d, every)[:, V]


def detections(D: Data, mode, size: int, seed: int = 0):
    """Every region's best label (score ≥ 0.01), NMS, greedy matching: scores, correct, gt index, gt count."""
    Z, C, G, ngt = [], [], [], 0
    for i, d in enumerate(D.images):
        V = D.vocab(i, size, seed)
        P = mode(d, V)
        lab = P.argmax(1)
        sc = P[np.arange(len(P)), lab]
        reg = np.arange(len(P))
        k = sc >= 0.01
        reg, lab, sc = reg[k], lab[k], sc[k]
        keep = batched_nms(torch.from_numpy(d["boxes"][reg]), torch.from_numpy(sc.astype(np.float32)),
                           torch.from_numpy(lab), 0.5).numpy()[:100]
        gl = d["gl"]
        used = np.zeros(len(gl), bool)
        for j in keep:
            ious = np.where((gl == V[lab[j]]) & ~used, d["iou"][reg[j]], -1)
            ok = len(ious) > 0 and ious.max() >= 0.5
            m = int(ious.argmax()) if ok else -1
            if ok:
                used[m] = True
            Z.append(sc[j])
            C.append(ok)
            G.append(ngt + m if ok else -1)
        ngt += len(gl)
    return np.array(Z), np.array(C, float), np.array(G), ngt


def metrics(Z, C, G, ngt, f=lambda z: z, thr=0.05):
    s = f(Z)
    k = s >= thr
    s, c, g = s[k], C[k], G[k]
    bins = np.minimum((s * 15).astype(int), 14)
    ece = sum((bins == b).sum() / len(s) * abs(c[bins == b].mean() - s[bins == b].mean()) for b in range(15) if (bins == b).any())
    best = np.zeros(ngt)
    best[g[g >= 0]] = s[g >= 0]
    o = np.argsort(-s)
    cum = np.cumsum(c[o])
    prec, rec = cum / np.arange(1, len(o) + 1), cum / ngt
    ap = np.sum(np.diff(np.concatenate([[0], rec])) * np.maximum.accumulate(prec[::-1])[::-1])
    return dict(median=float(np.median(best[best > 0])), recall03=float((best >= 0.3).mean()), ece=float(ece), ap50=float(ap), n=int(len(s)))


def fit_logistic(X, Y, l2=1e-4):
    Xt, Yt = torch.from_numpy(X).double(), torch.from_numpy(Y).double()
    w = torch.zeros(X.shape[1] + 1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=300, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(Xt @ w[:-1] + w[-1], Yt) + l2 * (w[:-1] ** 2).sum()
        loss.backward()
        return loss
    opt.step(closure)
    return w.detach().numpy()


def features(D: Data, d, V, margins: bool):
    """Per (region, class): text logit minus background, image logit, base × both, base;
    with margins also each head's logit minus the best other name's (depends on V)."""
    t = (d["St"][:, V] - d["sb"][:, None]) / D.T
    im = d["Si"][:, V] / D.T
    b = np.broadcast_to(D.base[V][None, :], t.shape).astype(np.float32)
    cols = [t, im, b * t, b * im, b]
    if margins:
        for S in (d["St"][:, V] / D.T, d["Si"][:, V] / D.T):
            if S.shape[1] == 1:
                m = np.full_like(S, 10.0)
            else:
                o = np.sort(S, 1)
                other = np.where(S >= o[:, -1:], o[:, -2:-1], o[:, -1:])
                m = np.minimum(S - other, 10.0)
            cols += [m, b * m]
    return np.stack(cols, -1)


def logistic_mode(D: Data, w, margins: bool):
    return lambda d, V: 1 / (1 + np.exp(-(features(D, d, V, margins) @ w[:-1] + w[-1])))


def fit_per_name(F: Data, margins: bool, sizes=(10, 100, 703)):
    """Detection-level logistic fit pooled over the sizes, twice: regions labelled by
    softmax first, then by the first fit."""
    select = softmax_mode(F)
    w = None
    for _ in range(2):
        X, Y = [], []
        for s in sizes:
            for i, d in enumerate(F.images):
                V = F.vocab(i, s)
                P = select(d, V)
                Fe = features(F, d, V, margins)
                lab = P.argmax(1)
                sc = P[np.arange(len(P)), lab]
                reg = np.where(sc >= 0.01)[0]
                lab = lab[reg]
                keep = batched_nms(torch.from_numpy(d["boxes"][reg]), torch.from_numpy(sc[reg].astype(np.float32)),
                                   torch.from_numpy(lab), 0.5).numpy()
                used = np.zeros(len(d["gl"]), bool)
                for j in keep:
                    ious = np.where((d["gl"] == V[lab[j]]) & ~used, d["iou"][reg[j]], -1)
                    ok = len(ious) > 0 and ious.max() >= 0.5
                    if ok:
                        used[int(ious.argmax())] = True
                    X.append(Fe[reg[j], lab[j]])
                    Y.append(ok)
        w = fit_logistic(np.array(X), np.array(Y, float))
        select = logistic_mode(F, w, margins)
    return w


def pav(x, y, w):
    """Weighted isotonic regression (pool adjacent violators): knots and values."""
    o = np.argsort(x)
    blocks: list[list] = []
    for xi, yi, wi in zip(x[o], y[o], w[o]):
        blocks.append([yi * wi, wi, [xi]])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            a, b = blocks[-2], blocks.pop()
            a[0] += b[0]
            a[1] += b[1]
            a[2] += b[2]
    return np.array([np.mean(b[2]) for b in blocks]), np.array([b[0] / b[1] for b in blocks])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default="../models/default")
    ap.add_argument("--fit", required=True, help="calibration split (COCO folder), never the evaluated scenes")
    ap.add_argument("--fit-count", type=int, default=300)
    ap.add_argument("--eval", default="runs/heldout/seen")
    ap.add_argument("--eval-count", type=int, default=60)
    ap.add_argument("--cache", default="/tmp/calib-cache")
    args = ap.parse_args()
    torch.set_num_threads(1)
    F = Data(args.bundle, args.fit, args.fit_count, args.cache)
    E = Data(args.bundle, args.eval, args.eval_count, args.cache)
    sizes = (10, 100, len(E.cats))
    modes = {"softmax": (softmax_mode(E), None), "stable": (stable_mode(E), None)}
    for margins in (False, True):
        w = fit_per_name(F, margins)
        print(("per-name+margins" if margins else "per-name"), "weights", np.round(w, 3).tolist())
        modes["per-name logistic" + (" + margins" if margins else "")] = (logistic_mode(E, w, margins), None)
    # monotone maps of the stable score, fitted on the split pooled over sizes
    fitdets = {s: detections(F, stable_mode(F), s) for s in sizes}
    Z = np.concatenate([fitdets[s][0] for s in sizes])
    C = np.concatenate([fitdets[s][1] for s in sizes])
    W = np.concatenate([np.full(len(fitdets[s][0]), 1 / len(fitdets[s][0])) for s in sizes])
    logit = lambda p: np.log(np.clip(p, 1e-12, 1)) - np.log1p(-np.clip(p, 0, 1 - 1e-7))
    a = fit_logistic(logit(Z)[:, None], C)
    print("Platt on the stable logit", np.round(a, 3).tolist())
    modes["stable + Platt"] = (stable_mode(E), lambda z: 1 / (1 + np.exp(-(a[0] * logit(z) + a[1]))))
    kx, kv = pav(Z, C, W)
    modes["stable + isotonic"] = (stable_mode(E), lambda z: np.interp(z, kx, kv))
    # one isotonic map per vocabulary size: calibrated at each size by construction
    # (what ECE <= 0.03 at every size asks), so its drift is the price of that
    per_size = {s: pav(fitdets[s][0], fitdets[s][1], np.ones(len(fitdets[s][0]))) for s in sizes}
    print("| mode | names | median true-box score | recall at ≥ 0.3 | ECE | pooled AP50 |\n|---|---|---|---|---|---|")
    for name, (mode, f) in modes.items():
        for s in sizes:
            m = metrics(*detections(E, mode, s), **({"f": f} if f else {}))
            print(f"| {name} | {s} | {m['median']:.3f} | {m['recall03']:.3f} | {m['ece']:.3f} | {m['ap50']:.3f} |")
    for s in sizes:
        kx, kv = per_size[s]
        m = metrics(*detections(E, stable_mode(E), s), f=lambda z: np.interp(z, kx, kv))
        print(f"| stable + isotonic per size | {s} | {m['median']:.3f} | {m['recall03']:.3f} | {m['ece']:.3f} "
              f"| {m['ap50']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
