"""Set a bundle's image-head temperature and rewrite its golden detections.

The ensemble's image-head softmax may use its own temperature
(``embedding.image_temperature``, docs/bundle.md "scoring"; absent: the text
head's ``temperature``). It changes no graph and needs no retraining: this
writes the setting into an exported bundle's manifest and rewrites each golden
case's ``detections.json`` from that case's own golden region outputs
(``text_embeddings.npy``, ``image_embeddings.npy``, ``boxes.npy``), the
bundle's ``background.npy`` and ``category_embeddings.npy`` with the exporter's
scoring (:func:`vildtrain.models.infer.class_probabilities`) and
post-processing. With the bundle's current setting the files come out as the
exporter wrote them. A bundle with a mask head has mask goldens made on the
first detections, so its trained head is needed too (``--mask-head``): it is
added again (:func:`vildtrain.export.export_mask_head.export_mask_head`) on
the new detections. The manifest's digests are recomputed.

    cd training
    python3 -m vildtrain image_temperature --bundle ../models/default --image-temperature 0.03 \
        --mask-head checkpoints/mask_head.pt

experiments/ensemble/ measures the settings (chosen on a tuning split, then
measured once on the held-out scenes).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from types import SimpleNamespace

import numpy as np
import torch

from vildtrain.export.export import _write_manifest
from vildtrain.models.infer import Vocabulary, class_probabilities, fold_crops, label_probabilities, postprocess


def _tensor(path: str) -> torch.Tensor:
    return torch.from_numpy(np.load(path).astype(np.float32))


def golden_detections(case_dir: str, man: dict, vocab: Vocabulary, background: torch.Tensor) -> list[dict]:
    """The ensemble's detections of one golden case under the manifest's scoring
    (with ``embedding.crops``, the case's ``crop_embeddings.npy`` folded in)."""
    r = SimpleNamespace(text_embeddings=_tensor(os.path.join(case_dir, "text_embeddings.npy")),
                        image_embeddings=_tensor(os.path.join(case_dir, "image_embeddings.npy")))
    boxes = _tensor(os.path.join(case_dir, "boxes.npy"))
    emb, post = man["embedding"], man["postprocess"]
    probs = class_probabilities(r, vocab, background, "ensemble", emb["temperature"], emb["ensemble_lambda"],
                                emb.get("image_temperature", 0.0))
    if emb.get("crops"):
        # the teacher's crops of the first regions (vildtrain.export.crop_scores wrote them)
        probs = fold_crops(probs, _tensor(os.path.join(case_dir, "crop_embeddings.npy")), vocab, emb["crops"])
    probs, labels = label_probabilities(probs, vocab)
    dets = postprocess(boxes, probs, labels, post["score_threshold"], post["nms_iou"], post["max_detections"],
                       0, post.get("labels_per_box", 1))
    return [{"label": d.label, "score": d.score, "box": d.box} for d in dets]


def set_image_temperature(bundle: str, image_temperature: float | None, mask_head: str | None = None) -> dict:
    """Write ``image_temperature`` (None or 0: remove it) into the bundle at ``bundle``,
    rewrite its golden detections (and, with ``mask_head``, its mask goldens);
    returns {case: number of detections}."""
    if image_temperature is not None and not (math.isfinite(image_temperature) and image_temperature >= 0):
        raise ValueError(f"image_temperature: {image_temperature} must be a positive number (or 0 to remove it)")
    path = os.path.join(bundle, "manifest.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"image_temperature: {bundle} has no manifest.json")
    with open(path, encoding="utf-8") as f:
        man = json.load(f)
    if "mask_head" in man and not mask_head:
        raise ValueError(f"image_temperature: {bundle} has a mask head whose goldens follow the detections; "
                         f"pass its trained head (--mask-head, e.g. checkpoints/mask_head.pt)")
    if image_temperature:
        man["embedding"]["image_temperature"] = image_temperature
    else:
        man["embedding"].pop("image_temperature", None)
    cats = man.get("categories") or []
    if not cats:
        raise ValueError(f"image_temperature: {bundle} has no categories, the goldens' vocabulary")
    vocab = Vocabulary([c["name"] for c in cats], _tensor(os.path.join(bundle, "category_embeddings.npy")),
                       [c["split"] == "base" for c in cats])
    background = _tensor(os.path.join(bundle, "background.npy"))
    counts = {}
    golden = os.path.join(bundle, "golden")
    for case in sorted(os.listdir(golden)):
        case_dir = os.path.join(golden, case)
        if not os.path.exists(os.path.join(case_dir, "detections.json")):
            continue   # the text and exemplar goldens
        dets = golden_detections(case_dir, man, vocab, background)
        with open(os.path.join(case_dir, "detections.json"), "w") as f:
            json.dump(dets, f, indent=1)
        counts[case] = len(dets)
    man.pop("sha256", None)
    _write_manifest(bundle, man)
    if "mask_head" in man:
        from vildtrain.export.export_mask_head import export_mask_head
        export_mask_head(mask_head, bundle)
    return counts


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="vildtrain image_temperature", description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--image-temperature", type=float, required=True,
                    help="the image head's softmax temperature (0: the text head's, the field removed)")
    ap.add_argument("--mask-head", default=None,
                    help="the bundle's trained mask head (mask_head.pt), required when the bundle has one")
    args = ap.parse_args(argv)
    counts = set_image_temperature(args.bundle, args.image_temperature, args.mask_head)
    print(f"image_temperature: {args.bundle}: image_temperature {args.image_temperature or 'removed'}; "
          f"golden detections rewritten: " + ", ".join(f"{k} {v}" for k, v in counts.items()), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
