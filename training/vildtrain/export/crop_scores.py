"""Make a bundle's ensemble consult the teacher on the best regions' crops, and
rewrite its golden detections.

ViLD's ensemble combines the detector's text and image heads; the image head
was distilled from the teacher (the mini-CLIP image tower) on cropped regions.
A bundle that carries that teacher (``image_encoder``, for exemplar
categories) can also ask it directly: the first ``regions`` regions of each
picture (proposal order, best objectness first) are cropped square at 1x and
1.5x from the resized picture, embedded by ``image_encoder.onnx`` (no modality
shift), and their probabilities join the ensemble's:
p^(1 - mu) * p_crop^mu, p_crop = softmax(crop . class / temperature)
(docs/bundle.md "scoring", docs/decisions/0031-teacher-crops-in-the-ensemble.md).

It changes no graph and needs no retraining: this writes ``embedding.crops``
into an exported bundle's manifest, each golden image case's
``crop_embeddings.npy`` (the exporter's own crops of that case's regions: the
golden ``image.npy`` de-normalised, the regions decoded from the golden
``proposals.npy`` and ``box_deltas.npy``, the encoder with the graph's int8
weights), and rewrites its ``detections.json``
(:func:`vildtrain.export.image_temperature.golden_detections`) and, with a
mask head, its mask goldens. ``--off`` removes the section (and the files).

    cd training
    python3 -m vildtrain crop_scores --bundle ../models/default --regions 100 --temperature 0.04 \\
        --lambda-base 0 --lambda-novel 0.6666666666666666 --mask-head checkpoints/mask_head.pt

experiments/crops/ measures the settings (chosen on a tuning split, then
measured once on the held-out scenes).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys

import torch
from torchvision.ops import boxes as box_ops

from vildtrain.export.export import _write_manifest, save_npy
from vildtrain.export.image_encoder import encoder_graph
from vildtrain.export.image_temperature import _tensor, set_image_temperature
from vildtrain.models.infer import teacher_crop_embeddings

GOLDEN_FILE = "crop_embeddings.npy"


def case_crop_embeddings(case_dir: str, man: dict, graph, regions: int, scales: tuple[float, ...] | None = None,
                         mirror: bool = False) -> torch.Tensor:
    """The teacher's embeddings [min(regions, N), D] of one golden case's first regions."""
    from torchvision.models.detection._utils import BoxCoder
    meta = json.load(open(os.path.join(case_dir, "meta.json")))
    h, w = meta["resized_height"], meta["resized_width"]
    image = _tensor(os.path.join(case_dir, "image.npy"))[:, :, :h, :w]
    mean = torch.tensor(man["input"]["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(man["input"]["std"]).view(1, 3, 1, 1)
    image01 = image * std + mean          # the resized picture the detector saw, as the Go pipeline recovers it
    coder = BoxCoder(tuple(man["box_head"]["box_coder_weights"]))
    proposals = _tensor(os.path.join(case_dir, "proposals.npy"))[:regions]
    deltas = _tensor(os.path.join(case_dir, "box_deltas.npy"))[:regions]
    boxes = box_ops.clip_boxes_to_image(coder.decode_single(deltas, proposals), (h, w))
    enc = man["image_encoder"]
    return teacher_crop_embeddings(graph, image01, boxes, enc["input_size"], enc["mean"], enc["std"],
                                   tuple(scales or enc["crop_scales"]), mirror)


def set_crop_scores(bundle: str, crops: dict | None, mask_head: str | None = None, miniclip: str | None = None,
                    clip=None) -> dict:
    """Write ``crops`` ({"regions", "temperature", "lambda_base", "lambda_novel"}, and
    optionally "scales" and "mirror", the views of each region; None: remove the section) into the bundle at ``bundle``, its golden crop embeddings and
    detections; returns {case: number of detections}. The mini-CLIP is ``clip``, or
    loaded from ``miniclip`` (default: the committed one)."""
    from vildtrain.models.miniclip import load_miniclip, miniclip_digest
    path = os.path.join(bundle, "manifest.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"crop_scores: {bundle} has no manifest.json")
    with open(path, encoding="utf-8") as f:
        man = json.load(f)
    golden = os.path.join(bundle, "golden")
    cases = [c for c in sorted(os.listdir(golden)) if os.path.exists(os.path.join(golden, c, "meta.json"))]
    if crops is None:
        man["embedding"].pop("crops", None)
        for c in cases:
            if os.path.exists(os.path.join(golden, c, GOLDEN_FILE)):
                os.remove(os.path.join(golden, c, GOLDEN_FILE))
    else:
        if "image_encoder" not in man:
            raise ValueError(f"crop_scores: {bundle} has no image_encoder to embed crops with "
                             f"(python3 -m vildtrain image_encoder --bundle {bundle})")
        k = crops["regions"]
        if not (isinstance(k, int) and 1 <= k <= 1000):
            raise ValueError(f"crop_scores: regions {k} must be an integer in [1, 1000]")
        if not (math.isfinite(crops["temperature"]) and crops["temperature"] > 0):
            raise ValueError(f"crop_scores: temperature {crops['temperature']} must be positive")
        for key in ("lambda_base", "lambda_novel"):
            if not 0 <= crops[key] <= 1:
                raise ValueError(f"crop_scores: {key} {crops[key]} must be in [0, 1]")
        scales = crops.get("scales")
        if scales is not None and not (1 <= len(scales) <= 4 and all(0.5 <= x <= 4 for x in scales)):
            raise ValueError(f"crop_scores: scales {scales}: 1 to 4 scales, each in [0.5, 4]")
        crops = {k: v for k, v in crops.items() if not (k == "scales" and v is None) and not (k == "mirror" and not v)}
        clip = clip if clip is not None else load_miniclip(miniclip)
        want, got = man["image_encoder"].get("miniclip_digest"), miniclip_digest(clip)
        if want and want != got:
            raise ValueError(f"crop_scores: the bundle's image encoder is mini-CLIP {want}, not {got} ({clip.source})")
        graph = encoder_graph(clip)
        for c in cases:
            save_npy(os.path.join(golden, c, GOLDEN_FILE), case_crop_embeddings(
                os.path.join(golden, c), man, graph, k, crops.get("scales"), crops.get("mirror", False)))
        man["embedding"]["crops"] = dict(crops)
    man.pop("sha256", None)
    _write_manifest(bundle, man)
    # the golden detections (and mask goldens) under the new scoring
    return set_image_temperature(bundle, man["embedding"].get("image_temperature"), mask_head)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="vildtrain crop_scores", description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", required=True)
    # defaults: the embedded bundle's setting (training/experiments/crops)
    ap.add_argument("--regions", type=int, default=100, help="regions per picture whose crops the teacher sees")
    ap.add_argument("--temperature", type=float, default=0.04, help="softmax temperature of the teacher's probabilities")
    ap.add_argument("--lambda-base", type=float, default=0.0, help="the teacher's weight for base categories")
    ap.add_argument("--lambda-novel", type=float, default=2 / 3, help="the teacher's weight for the other categories")
    ap.add_argument("--scales", type=float, nargs="+", default=None,
                    help="the square crops of each region (default: the image encoder's crop_scales, 1 1.5)")
    ap.add_argument("--mirror", action="store_true", help="also embed each crop mirrored left to right")
    ap.add_argument("--off", action="store_true", help="remove embedding.crops and its golden files")
    ap.add_argument("--mask-head", default=None,
                    help="the bundle's trained mask head (mask_head.pt), required when the bundle has one")
    ap.add_argument("--miniclip", default=None, help="the mini-CLIP checkpoint (default: the committed one)")
    args = ap.parse_args(argv)
    crops = None if args.off else {"regions": args.regions, "temperature": args.temperature,
                                   "lambda_base": args.lambda_base, "lambda_novel": args.lambda_novel}
    if crops is not None and args.scales:
        crops["scales"] = args.scales
    if crops is not None and args.mirror:
        crops["mirror"] = True
    counts = set_crop_scores(args.bundle, crops, args.mask_head, args.miniclip)
    print(f"crop_scores: {args.bundle}: crops {crops or 'removed'}; golden detections rewritten: "
          + ", ".join(f"{k} {v}" for k, v in counts.items()), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
