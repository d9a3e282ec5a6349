"""Convert a torchvision Mask R-CNN R50-FPN ``state_dict`` with ViLD heads into a
bundle's ``backbone.onnx`` and ``box_head.onnx`` (docs/reference.md).

    python3 -m vildtrain convert_detector --checkpoint vild_r50_fpn.pth --out DIR

The checkpoint is a ``state_dict`` (or ``{"model": state_dict}``) with
torchvision's ``maskrcnn_resnet50_fpn`` names for the parts a ViLD detector
shares with Mask R-CNN:

* ``backbone.body.*`` (ResNet-50; BatchNorm or FrozenBatchNorm statistics,
  folded into the convolutions), ``backbone.fpn.*`` (256 channels);
* ``rpn.head.*`` (``conv.0.0`` or the older ``conv``; 3 anchors per place);
* ``roi_heads.box_head.fc6`` / ``fc7`` (TwoMLPHead, 1,024 wide);

and ViLD's heads, which Mask R-CNN has not, under ``vild.``:
``vild.text_proj`` and ``vild.image_proj`` (Linear 1,024 → D),
``vild.box_pred`` (Linear 1,024 → 4, class-agnostic deltas) and
``vild.background`` ([D]). The mask head and ``roi_heads.box_predictor`` are
ignored. The graphs are the reference bundle's (``export_reference``), with
the manifest numbers of ``export_reference.reference_config`` (1,024 px, 1,000
proposals) and D from the checkpoint; weights are stored as float16
(decision 0005). ``DIR/background.npy`` is written too. The text encoder and
tokenizer come from ``convert_clip``; the manifest, category embeddings and
goldens from the exporter (``export_reference``'s functions).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch
from torch import Tensor

from vildtrain.export.export import export_graph, fold_batchnorm, round_to_half, save_npy, store_half
from vildtrain.models.reference import build_detector, reference_config
from vildtrain.models.detector import BackboneGraph, VildDetector, backbone_output_names

VILD_KEYS = ("vild.text_proj.weight", "vild.text_proj.bias", "vild.image_proj.weight", "vild.image_proj.bias",
             "vild.box_pred.weight", "vild.box_pred.bias", "vild.background")


def detector_from_state_dict(sd: dict[str, Tensor]) -> VildDetector:
    """The reference detector holding the checkpoint's weights (BatchNorms not yet folded)."""
    sd = sd.get("model", sd) if isinstance(sd.get("model"), dict) else sd
    missing = [k for k in VILD_KEYS if k not in sd]
    if missing:
        raise ValueError(f"convert_detector: no {missing[0]}: the ViLD heads (vild.text_proj, vild.image_proj, "
                         "vild.box_pred, vild.background) are needed; a plain Mask R-CNN has none")
    dim = sd["vild.text_proj.weight"].shape[0]
    cfg = reference_config()
    cfg.embed_dim = dim
    model = build_detector(cfg)
    state: dict[str, Tensor] = {}
    for k, v in sd.items():
        if k.startswith("backbone."):
            state[k] = v
        elif k.startswith("rpn.head."):
            # torchvision before 0.13 named the 3x3 conv rpn.head.conv (no Conv2dNormActivation)
            state[k.replace("rpn.head.conv.weight", "rpn.head.conv.0.0.weight")
                   .replace("rpn.head.conv.bias", "rpn.head.conv.0.0.bias")] = v
        elif k.startswith("roi_heads.box_head."):
            state["box_head.box_head." + k[len("roi_heads.box_head."):]] = v
        elif k.startswith("vild.") and k != "vild.background":
            state["box_head." + k[len("vild."):]] = v
    state["background"] = sd["vild.background"]
    own = model.state_dict()
    for k in own:
        if k.endswith("num_batches_tracked") and k not in state:
            state[k] = own[k]          # FrozenBatchNorm2d has no counter
    unknown = sorted(set(state) - set(own))
    lacking = sorted(set(own) - set(state))
    if unknown or lacking:
        raise ValueError(f"convert_detector: not a torchvision R50-FPN Mask R-CNN with ViLD heads: "
                         f"{len(lacking)} tensors missing (e.g. {lacking[:1]}), {len(unknown)} unexpected "
                         f"(e.g. {unknown[:1]})")
    bad = [k for k in own if tuple(state[k].shape) != tuple(own[k].shape)]
    if bad:
        raise ValueError(f"convert_detector: {bad[0]} has shape {tuple(state[bad[0]].shape)}, the R50-FPN "
                         f"reference {tuple(own[bad[0]].shape)}")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return model.eval()


@torch.no_grad()
def convert(checkpoint: str, out: str) -> dict:
    """Write out/backbone.onnx, out/box_head.onnx and out/background.npy; returns a summary."""
    model = detector_from_state_dict(torch.load(checkpoint, map_location="cpu"))
    folded = fold_batchnorm(model)
    for part in (model.backbone, model.rpn, model.box_head):
        round_to_half(part)
    cfg = model.cfg
    os.makedirs(out, exist_ok=True)
    names = backbone_output_names(cfg)
    image = torch.randn(1, 3, cfg.size_divisible * 3, cfg.size_divisible * 4)
    export_graph(BackboneGraph(model).eval(), (image,), os.path.join(out, "backbone.onnx"), ["image"], names,
                 {"image": {2: "H", 3: "W"}, **{n: {2: f"h_{n}", 3: f"w_{n}"} for n in names}})
    s = cfg.roi_output_size
    export_graph(model.box_head.eval(), (torch.randn(5, cfg.fpn_channels, s, s),), os.path.join(out, "box_head.onnx"),
                 ["rois"], ["text_embeddings", "image_embeddings", "box_deltas"],
                 {"rois": {0: "N"}, "text_embeddings": {0: "N"}, "image_embeddings": {0: "N"}, "box_deltas": {0: "N"}})
    sizes = {g: store_half(os.path.join(out, g)) for g in ("backbone.onnx", "box_head.onnx")}
    save_npy(os.path.join(out, "background.npy"), model.background_embedding())
    return {"batchnorms_folded": folded, "embedding_dim": cfg.embed_dim,
            "bytes": {g: after for g, (_, after) in sizes.items()}}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="vildtrain convert_detector", description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True, help="torchvision Mask R-CNN R50-FPN state_dict with vild.* heads")
    ap.add_argument("--out", required=True, help="directory to write backbone.onnx, box_head.onnx, background.npy into")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    print(json.dumps(convert(args.checkpoint, args.out), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
