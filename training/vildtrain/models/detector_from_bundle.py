"""Rebuild the PyTorch detector from an exported bundle: the inverse of
:mod:`vildtrain.export.export` for the detector's graphs.

A bundle keeps the detector only as ONNX graphs (``backbone.onnx``,
``box_head.onnx``) plus ``background.npy``; the training checkpoint is not kept.
This reads the graphs' weights back into a :class:`VildDetector` of the
configuration the manifest records (``training.detector``), so that the same
detector can be run in PyTorch eager (benchmarks side by side with the Go
pipeline) or trained further with its weights frozen (a second-stage head).

The export folded every BatchNorm into the convolution before it; here each
convolution gets the folded weight and its BatchNorm becomes the identity
(weight 1, running mean 0, running variance ``1 - eps``, bias the folded bias),
so the rebuilt model computes the graphs' numbers and is an ordinary checkpoint
that :func:`vildtrain.models.detector.load_checkpoint` reads.

    python3 -m vildtrain detector_from_bundle --bundle ../models/default \\
        --out runs/from-bundle/detector.pt
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch
from torch import nn

from vildtrain.models.detector import (BackboneGraph, DetectorConfig, VildDetector, backbone_output_names,
                                       build_detector, save_checkpoint)

# Where each graph's initializers live in the detector: graph -> (name prefix in the
# graph, module path prefix in VildDetector).
GRAPHS = {
    "backbone.onnx": (("backbone.", "backbone."), ("head.", "rpn.head.")),
    "box_head.onnx": (("", "box_head."),),
}
HALF_SUFFIX = "_f16"   # export.store_half's name for a weight stored as float16


def conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(convolution, BatchNorm) module paths, in the pairing export.fold_batchnorm folds."""
    pairs = []
    for path, module in model.named_modules():
        prefix = path + "." if path else ""
        if isinstance(module, nn.Sequential):
            items = list(module._modules.items())
            for (name, conv), (bn_name, bn) in zip(items, items[1:]):
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    pairs.append((prefix + name, prefix + bn_name))
        for conv_name, bn_name in (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")):
            conv, bn = getattr(module, conv_name, None), getattr(module, bn_name, None)
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                pairs.append((prefix + conv_name, prefix + bn_name))
    return pairs


def graph_weights(path: str) -> dict[str, np.ndarray]:
    """A graph's initializers as float32 arrays, by their PyTorch parameter name."""
    import onnx
    from onnx import numpy_helper
    graph = onnx.load(path).graph
    out = {}
    for init in graph.initializer:
        name = init.name[: -len(HALF_SUFFIX)] if init.name.endswith(HALF_SUFFIX) else init.name
        arr = numpy_helper.to_array(init)
        if arr.dtype.kind == "f":
            out[name] = arr.astype(np.float32)
    # The ONNX exporter keeps one copy of equal initializers and names the others
    # through Identity nodes (e.g. the zero biases of an untrained model).
    for node in graph.node:
        if node.op_type == "Identity" and node.input[0] in out:
            out[node.output[0]] = out[node.input[0]]
    return out


def detector_from_bundle(bundle: str) -> VildDetector:
    """The bundle's detector as a PyTorch model in eval mode."""
    with open(os.path.join(bundle, "manifest.json")) as f:
        man = json.load(f)
    record = (man.get("training") or {}).get("detector")
    if not record:
        raise ValueError(f"{bundle}: the manifest has no training.detector record to build the model from")
    cfg = DetectorConfig.from_dict(record)
    # scoring settings set after training (vildtrain image_temperature) live in the manifest
    cfg.image_temperature = float(man["embedding"].get("image_temperature", 0.0))
    model = build_detector(cfg).eval()
    pairs = conv_bn_pairs(model)
    bn_of = {conv + ".bias": bn for conv, bn in pairs}
    state = model.state_dict()
    loaded = {}
    for graph, prefixes in GRAPHS.items():
        for name, arr in graph_weights(os.path.join(bundle, graph)).items():
            target = next((to + name[len(frm):] for frm, to in prefixes if name.startswith(frm)), None)
            if target is None:
                raise ValueError(f"{graph}: initializer {name!r} belongs to no part of the detector")
            if target in bn_of:   # a folded BatchNorm's bias: the BatchNorm becomes an identity plus it
                bn = bn_of[target]
                eps = model.get_submodule(bn).eps
                loaded[bn + ".bias"] = torch.from_numpy(arr)
                loaded[bn + ".weight"] = torch.ones_like(loaded[bn + ".bias"])
                loaded[bn + ".running_mean"] = torch.zeros_like(loaded[bn + ".bias"])
                loaded[bn + ".running_var"] = torch.full_like(loaded[bn + ".bias"], 1.0 - eps)
                continue
            if target not in state:
                raise ValueError(f"{graph}: initializer {name!r} maps to {target!r}, which the detector lacks")
            t = torch.from_numpy(arr)
            if t.shape != state[target].shape:
                if t.dim() == 2 and t.t().shape == state[target].shape:   # MatMul stores a Linear's weight transposed
                    t = t.t().contiguous()
                else:
                    raise ValueError(f"{graph}: {name!r} is {tuple(t.shape)}, the detector's {target!r} "
                                     f"{tuple(state[target].shape)}")
            loaded[target] = t
    loaded["background"] = torch.from_numpy(np.load(os.path.join(bundle, "background.npy")).astype(np.float32))
    weights = {k for k, v in state.items() if v.is_floating_point() and not k.endswith("num_batches_tracked")}
    missing = sorted(weights - set(loaded))
    if missing:
        raise ValueError(f"{bundle}: the graphs hold no value for {len(missing)} weights, e.g. {missing[0]!r}")
    model.load_state_dict(loaded, strict=False)
    return model.eval()


@torch.no_grad()
def check_against_golden(model: VildDetector, bundle: str, case: str = "exact") -> dict[str, float]:
    """Largest absolute difference between the rebuilt model and a golden case, per output."""
    gold = os.path.join(bundle, "golden", case)
    image = torch.from_numpy(np.load(os.path.join(gold, "image.npy")))
    outs = BackboneGraph(model)(image)
    diffs = {}
    for name, t in zip(backbone_output_names(model.cfg), outs):
        diffs[name] = float((t - torch.from_numpy(np.load(os.path.join(gold, name + ".npy")))).abs().max())
    rois = torch.from_numpy(np.load(os.path.join(gold, "rois.npy")))
    text, image_emb, deltas = model.box_head(rois)
    n = rois.shape[0]
    for name, t in (("text_embeddings", text), ("image_embeddings", image_emb), ("box_deltas", deltas)):
        diffs[name] = float((t - torch.from_numpy(np.load(os.path.join(gold, name + ".npy"))[:n])).abs().max())
    return diffs


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m vildtrain detector_from_bundle",
                                 description="rebuild a bundle's detector as a PyTorch checkpoint, "
                                             "checked against the bundle's golden outputs")
    ap.add_argument("--bundle", default=os.path.join(os.path.dirname(__file__), "..", "..", "..", "models", "default"))
    ap.add_argument("--out", required=True, help="checkpoint path (detector.pt)")
    ap.add_argument("--tolerance", type=float, default=1e-3,
                    help="largest allowed absolute difference from the golden outputs")
    args = ap.parse_args(argv)
    model = detector_from_bundle(args.bundle)
    worst = 0.0
    for case in sorted(os.listdir(os.path.join(args.bundle, "golden"))):
        if not os.path.exists(os.path.join(args.bundle, "golden", case, "image.npy")):
            continue
        diffs = check_against_golden(model, args.bundle, case)
        name, diff = max(diffs.items(), key=lambda kv: kv[1])
        print(f"golden {case}: largest difference {diff:.2e} ({name})")
        worst = max(worst, diff)
    if worst > args.tolerance:
        print(f"detector_from_bundle: differs from the golden outputs by {worst:.2e} > {args.tolerance}",
              file=sys.stderr)
        return 1
    with open(os.path.join(args.bundle, "manifest.json")) as f:
        man = json.load(f)
    training = man.get("training", {})
    # the ensemble's teacher crops (embedding.crops), a scoring setting outside the
    # detector's config: evaluate reads it from the checkpoint's extras
    # with its views resolved (its own scales, absent: the image encoder's)
    crops = {}
    if man["embedding"].get("crops"):
        from vildtrain.models.infer import crop_views
        scales, mirror = crop_views(man["embedding"]["crops"], man["image_encoder"])
        crops = {"crops": man["embedding"]["crops"] | {"scales": list(scales), "mirror": mirror}}
    # the teacher the bundle was distilled from, by digest: evaluate and infer then
    # refuse any other mini-CLIP (miniclip.load_teacher)
    teacher = {"teacher": {"digest": training["miniclip_digest"]}} if training.get("miniclip_digest") else {}
    save_checkpoint(args.out, model, extra={k: v for k, v in training.items() if k != "detector"}
                    | {"from_bundle": os.path.abspath(args.bundle)} | crops | teacher)
    print(f"wrote {args.out}")
    return 0
