"""Where a trained detector loses AP: localisation or classification.

    python3 -m vildtrain diagnose --checkpoint runs/detector/detector.pt --data runs/heldout/seen --count 60

On the first ``--count`` scenes of a held-out set (COCO annotations with every
object labelled, as ``scenes`` writes them) it reports

* RPN recall: the share of ground-truth boxes that one of the 300 proposals
  covers at IoU >= 0.5;
* classification of the ground-truth boxes themselves, top-1 over the whole
  vocabulary, for the text head, the image head and the mini-CLIP on the box's
  crop (1x and 1.5x, as its teacher targets are made), split into base and novel
  categories;
* where each head's wrong answers on base boxes go (another base category or a
  novel one) and its most frequent (true, answered) pairs.

Given the boxes, the heads' top-1 is an upper bound on what the classifier adds
to AP; the mini-CLIP's is the teacher's own accuracy in scene context.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch
from PIL import Image
from torchvision.ops import box_iou

HEADS = ("text", "image", "miniclip")
SIZE_BINS = ((0, 32), (32, 64), (64, 128), (128, 10 ** 9))


def size_bin(side: float) -> str:
    """The size bucket name of a box side (sqrt of its area, px)."""
    for lo, hi in SIZE_BINS:
        if lo <= side < hi:
            return f"{lo}-{hi}" if hi < 10 ** 9 else f"{lo}+"
    raise ValueError(f"diagnose: box side {side}")


def diagnose(model, clip, categories, data_dir: str, count: int, iou: float = 0.5) -> dict:
    """Recall and per-head top-1 on the first ``count`` images of ``data_dir``."""
    from vildtrain.models.infer import regions
    from vildtrain.models.losses import crop_embeddings
    index = {c.id: i for i, c in enumerate(categories)}
    novel = torch.tensor([c.split == "novel" for c in categories])
    with torch.no_grad():
        text = clip.text_embeddings([c.name for c in categories]).float()
    with open(os.path.join(data_dir, "annotations.json")) as f:
        data = json.load(f)
    by_image: dict[int, list[dict]] = {}
    for a in data["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    found = total = 0
    hits = {h: {"base": [0, 0], "novel": [0, 0]} for h in HEADS}
    hits5 = {h: {"base": [0, 0], "novel": [0, 0]} for h in HEADS}
    bins = [size_bin(lo) for lo, _ in SIZE_BINS]
    by_size = {h: {b: [0, 0] for b in bins} for h in HEADS}
    # wrong top-1 answers on base boxes: (true, answered) category index pairs
    wrong: dict[str, dict[tuple[int, int], int]] = {h: {} for h in HEADS}
    images = data["images"][:count]
    with torch.no_grad():
        for im in images:
            anns = by_image.get(im["id"], [])
            if not anns:
                continue
            img = Image.open(os.path.join(data_dir, "images", im["file_name"])).convert("RGB")
            r = regions(model, img)
            sy, sx = r.prepared.scale
            boxes = torch.tensor([[a["bbox"][0] * sx, a["bbox"][1] * sy, (a["bbox"][0] + a["bbox"][2]) * sx,
                                   (a["bbox"][1] + a["bbox"][3]) * sy] for a in anns])
            labels = torch.tensor([index[a["category_id"]] for a in anns])
            found += int((box_iou(boxes, r.proposals).max(1).values >= iou).sum())
            total += len(anns)
            feats = {k: r.outputs[f"feat_{k}"] for k in model.cfg.roi_level_names}
            text_emb, image_emb, _ = model.box_head(model.roi_pool(feats, [boxes], [r.prepared.resized]))
            crops = crop_embeddings(clip, r.prepared.image01, [boxes])
            is_novel = novel[labels]
            sizes = [size_bin((a["bbox"][2] * a["bbox"][3]) ** 0.5) for a in anns]
            for head, emb in zip(HEADS, (text_emb, image_emb, crops)):
                best5 = (emb @ text.T).topk(min(5, text.shape[0]), dim=1).indices
                ok = best5[:, 0] == labels
                ok5 = (best5 == labels.view(-1, 1)).any(1)
                for split, mask in (("base", ~is_novel), ("novel", is_novel)):
                    for table, hit in ((hits, ok), (hits5, ok5)):
                        table[head][split][0] += int(hit[mask].sum())
                        table[head][split][1] += int(mask.sum())
                for b, hit in zip(sizes, ok.tolist()):
                    by_size[head][b][0] += int(hit)
                    by_size[head][b][1] += 1
                for t, a in zip(labels[~ok & ~is_novel].tolist(), best5[~ok & ~is_novel, 0].tolist()):
                    wrong[head][(t, a)] = wrong[head].get((t, a), 0) + 1
    top1 = {h: {s: (v[0] / v[1] if v[1] else None) for s, v in d.items()} for h, d in hits.items()}
    top5 = {h: {s: (v[0] / v[1] if v[1] else None) for s, v in d.items()} for h, d in hits5.items()}
    top1_by_size = {h: {b: (v[0] / v[1] if v[1] else None) for b, v in d.items()} for h, d in by_size.items()}
    base_errors = {}
    for h, pairs in wrong.items():
        n = sum(pairs.values())
        to_novel = sum(k for (_, a), k in pairs.items() if bool(novel[a]))
        top = sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
        base_errors[h] = {"errors": n, "to_novel": to_novel,
                          "pairs": [[categories[t].name, categories[a].name, k] for (t, a), k in top]}
    return {"images": len(images), "boxes": total, "rpn_recall": found / total if total else None,
            "iou": iou, "top1": top1, "top5": top5, "top1_by_size": top1_by_size, "base_errors": base_errors,
            "boxes_by_split": {s: hits["text"][s][1] for s in ("base", "novel")},
            "boxes_by_size": {b: by_size["text"][b][1] for b in bins}}


def main(argv: list[str]) -> int:
    from vildtrain.models.miniclip import MINICLIP_HELP
    ap = argparse.ArgumentParser(prog="vildtrain diagnose", description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="runs/detector/detector.pt",
                    help="a final detector.pt, or a run's checkpoint.pt")
    ap.add_argument("--data", default="runs/heldout/seen", help="a held-out set written by `scenes`")
    ap.add_argument("--count", type=int, default=60, help="scenes to look at")
    ap.add_argument("--miniclip", default=None, help=MINICLIP_HELP)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    from vildtrain.data.categories import load_categories
    from vildtrain.models.detector import load_checkpoint
    from vildtrain.models.miniclip import load_teacher
    torch.set_num_threads(args.threads)
    if not os.path.exists(os.path.join(args.data, "annotations.json")):
        print(f"diagnose: {args.data} has no annotations.json; write it with "
              f"`python3 -m vildtrain scenes --set seen --count 500 --out {args.data}`", file=sys.stderr)
        return 2
    model, extra = load_checkpoint(args.checkpoint)
    clip, _ = load_teacher(extra, args.miniclip)
    categories = load_categories()
    result = diagnose(model, clip, categories, args.data, args.count)
    print(f"RPN recall@300 (IoU >= {result['iou']}): {result['rpn_recall']:.3f} over {result['boxes']} boxes "
          f"in {result['images']} scenes")
    for head, d in result["top1"].items():
        parts = "  ".join(f"{s} {v:.3f}" if v is not None else f"{s} -" for s, v in d.items())
        print(f"{head:9s} ground-truth box top-1 over {len(categories)}: {parts}")
    for head, d in result["top5"].items():
        parts = "  ".join(f"{s} {v:.3f}" if v is not None else f"{s} -" for s, v in d.items())
        print(f"{head:9s} ground-truth box top-5 over {len(categories)}: {parts}")
    for head, d in result["top1_by_size"].items():
        parts = "  ".join(f"{b} px {v:.3f} ({result['boxes_by_size'][b]})" if v is not None else f"{b} px -"
                          for b, v in d.items())
        print(f"{head:9s} top-1 by object size: {parts}")
    for head, e in result["base_errors"].items():
        pairs = ", ".join(f"{t} -> {a} ({k})" for t, a, k in e["pairs"][:5])
        print(f"{head:9s} base-box errors: {e['errors']}, {e['to_novel']} to a novel category; most frequent: {pairs}")
    print(json.dumps(result))
    return 0
