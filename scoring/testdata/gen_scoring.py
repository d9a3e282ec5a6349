"""Writes scoring/testdata/scoring_golden.json: random regions and a vocabulary
with synonyms, negatives, base and novel classes and per-class thresholds,
scored by an independent NumPy implementation of docs/bundle.md's scoring
rules (label-wise NMS by torchvision.ops.batched_nms).

Run from the repository root:  /usr/bin/python3 scoring/testdata/gen_scoring.py
"""
import json
import os

import numpy as np
import torch
import torchvision

rng = np.random.default_rng(0)
D, N = 32, 80
TAU, LAM = 0.01, 2.0 / 3.0


def unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


# Vocabulary: (label, text, base, negative, threshold).
classes = []
for i in range(14):
    classes.append((f"thing{i}", f"thing{i}", i % 2 == 0, False, 0.0))
classes += [("thing0", "thing0 synonym", True, False, 0.0), ("thing3", "thing3 synonym", False, False, 0.0),
            ("thing3", "thing3 other synonym", False, False, 0.0)]
classes += [("not-a-thing", "lookalike a", False, True, 0.0), ("lookalike-b", "lookalike b", False, True, 0.0)]
classes[5] = ("thing5", "thing5", False, False, 0.6)  # strict per-class threshold
classes[6] = ("thing6", "thing6", True, False, 0.01)  # lenient one
K = len(classes)
text_emb = unit(rng.normal(size=(K, D)))
background = unit(rng.normal(size=D))

# Regions near random classes (or near nothing), in clusters so NMS has work.
target = rng.integers(-1, K, size=N)
noise_t = rng.uniform(0.3, 1.5, size=(N, 1))
noise_i = rng.uniform(0.3, 1.5, size=(N, 1))
base_vec = np.where(target[:, None] >= 0, text_emb[np.clip(target, 0, None)], 0)
emb_t = unit(base_vec + noise_t * unit(rng.normal(size=(N, D))) * 0.35)
emb_i = unit(base_vec + noise_i * unit(rng.normal(size=(N, D))) * 0.35)
centres = rng.uniform(20, 300, size=(12, 2))
c = centres[rng.integers(0, 12, size=N)] + rng.normal(0, 6, size=(N, 2))
wh = rng.uniform(20, 60, size=(N, 2))
boxes = np.concatenate([c - wh / 2, c + wh / 2], 1).astype(np.float32)

# Ambiguous regions between two or three classes, so that a region's second
# and third labels have real probability (for labels_per_box); their own rng
# keeps the regions above as they were.
rng2 = np.random.default_rng(1)
A = 16
mix = np.zeros((A, K))
for a in range(A):
    picks = rng2.choice(K, size=2 + a % 2, replace=False)
    mix[a, picks] = rng2.uniform(0.8, 1.0, size=len(picks))
amb_t = unit(mix @ text_emb + 0.02 * rng2.normal(size=(A, D)))
amb_i = unit(mix @ text_emb + 0.02 * rng2.normal(size=(A, D)))
amb_c = rng2.uniform(20, 300, size=(A, 2))
amb_wh = rng2.uniform(20, 60, size=(A, 2))
emb_t = np.concatenate([emb_t, amb_t])
emb_i = np.concatenate([emb_i, amb_i])
boxes = np.concatenate([boxes, np.concatenate([amb_c - amb_wh / 2, amb_c + amb_wh / 2], 1).astype(np.float32)])
N += A


def class_probs(head):
    sim_t = emb_t.astype(np.float64) @ text_emb.T.astype(np.float64) / TAU
    bg = emb_t.astype(np.float64) @ background.astype(np.float64) / TAU
    logits = np.concatenate([bg[:, None], sim_t], 1)
    p_text = np.exp(logits - logits.max(1, keepdims=True))
    p_text = (p_text / p_text.sum(1, keepdims=True))[:, 1:]
    sim_i = emb_i.astype(np.float64) @ text_emb.T.astype(np.float64) / TAU
    p_img = np.exp(sim_i - sim_i.max(1, keepdims=True))
    p_img = p_img / p_img.sum(1, keepdims=True)
    if head == "text":
        return p_text
    if head == "image":
        return p_img
    base = np.array([cl[2] for cl in classes])[None, :]
    return np.where(base, p_text ** LAM * p_img ** (1 - LAM), p_text ** (1 - LAM) * p_img ** LAM)


def detect(head, score_threshold, nms_iou, max_det, runners_up, labels_per_box):
    probs = class_probs(head)
    labels = list(dict.fromkeys(cl[0] for cl in classes))
    li = {l: i for i, l in enumerate(labels)}
    neg = np.zeros(len(labels), bool)
    thr = np.zeros(len(labels))
    for cl in classes:
        neg[li[cl[0]]] |= cl[3]
        thr[li[cl[0]]] = max(thr[li[cl[0]]], cl[4])
    lab = np.zeros((N, len(labels)))
    for k, cl in enumerate(classes):
        lab[:, li[cl[0]]] += probs[:, k]
    kept = []
    for i in range(N):
        best = int(np.argmax(lab[i]))
        if neg[best]:
            continue
        ranked = [l for l in np.argsort(-lab[i], kind="stable") if not neg[l]]
        # the best label, then the next labels_per_box - 1 by score, each a detection of its own
        for l in [best] + [l for l in ranked if l != best][:labels_per_box - 1]:
            t = thr[l] if thr[l] > 0 else score_threshold
            if lab[i, l] < t:
                continue
            others = [o for o in ranked if o != l]
            kept.append((i, l, lab[i, l], [(labels[o], float(lab[i, o])) for o in others[:runners_up]]))
    if not kept:
        return probs, []
    keep = torchvision.ops.batched_nms(
        torch.from_numpy(boxes[[k[0] for k in kept]]), torch.tensor([k[2] for k in kept], dtype=torch.float32),
        torch.tensor([k[1] for k in kept]), nms_iou)[:max_det]
    dets = []
    for j in keep.tolist():
        i, best, score, ru = kept[j]
        dets.append({"label": labels[best], "score": float(score), "region": i,
                     "runners_up": [{"label": l, "score": s} for l, s in ru]})
    return probs, dets


cases = []
for name, head, st, iou, md, ru, lpb in [("ensemble", "ensemble", 0.05, 0.5, 100, 2, 1),
                                         ("text", "text", 0.05, 0.5, 100, 0, 1),
                                         ("image", "image", 0.05, 0.5, 100, 3, 1),
                                         ("capped", "ensemble", 0.2, 0.3, 7, 1, 1),
                                         ("labels per box", "ensemble", 0.02, 0.5, 100, 2, 3),
                                         ("labels per box, image", "image", 0.001, 0.6, 100, 1, 20)]:
    probs, dets = detect(head, st, iou, md, ru, lpb)
    cases.append({"name": name, "head": head, "score_threshold": st, "nms_iou": iou, "max_detections": md,
                  "runners_up": ru, "labels_per_box": lpb, "probabilities": [float(v) for v in probs.reshape(-1)],
                  "detections": dets})

out = {
    "temperature": TAU, "lambda": LAM,
    "classes": [{"label": l, "text": t, "base": b, "negative": n, "threshold": th,
                 "embedding": [float(v) for v in text_emb[k]]} for k, (l, t, b, n, th) in enumerate(classes)],
    "background": [float(v) for v in background],
    "boxes": [float(v) for v in boxes.reshape(-1)],
    "text_embeddings": [float(v) for v in emb_t.reshape(-1)],
    "image_embeddings": [float(v) for v in emb_i.reshape(-1)],
    "cases": cases,
}
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scoring_golden.json")
with open(path, "w") as f:
    json.dump(out, f, separators=(",", ":"))
print("wrote", path, os.path.getsize(path), "bytes;", [(c["name"], len(c["detections"])) for c in cases])
