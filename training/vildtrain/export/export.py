"""Export a trained detector and the mini-CLIP text encoder as a model bundle
(docs/bundle.md, format ``vild-bundle/1``).

    python3 -m vildtrain export --checkpoint training/runs/detector/detector.pt --out DIR

Writes ``backbone.onnx``, ``box_head.onnx``, ``text_encoder.onnx`` (opset 17,
dynamic axes, each passing ``onnx.checker``; the detector graphs store their
weights as float16, see :func:`store_half`), the tokenizer files,
``background.npy``, ``category_embeddings.npy`` (prompt ensemble of every
category), ``golden/`` (PyTorch reference numbers for several images and for the
text encoder, computed by :mod:`vildtrain.models.infer`) and ``manifest.json`` with
every number, the training command and seed, and the SHA-256 of every file.

ONNX Runtime is not available to Python here; the Go test suite (``go test
./detector``) loads the bundle with ONNX Runtime and checks every graph and the
whole pipeline against ``golden/`` within the tolerances of docs/bundle.md.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import onnx
import torch
from PIL import Image
from torch import nn

from vildtrain.export.bundle_synonyms import manifest_categories, manifest_text
from vildtrain.models.detector import (BackboneGraph, DetectorConfig, VildDetector, backbone_output_names,
                                       load_checkpoint)
from vildtrain.models.infer import Vocabulary, detect, regions
from vildtrain.paths import PACKAGE_DIR
from vildtrain.text.prompts import TEMPLATES

OPSET = 17
FORMAT = "vild-bundle/1"
ROIS_SAVED = 8
TEXT_GOLDEN_NAMES = 3  # categories whose every prompt goes into golden/text

# Golden image cases: (name, scene style set, crop box in the 384 px scene or None, final size or None).
# They cover no resize, downscaling and upscaling, and non-square padding.
GOLDEN_CASES: list[tuple[str, str, tuple[int, int, int, int] | None, tuple[int, int] | None]] = [
    ("exact", "seen", (0, 96, 384, 288), None),           # 384x192: no resize
    ("downscale", "seen", (0, 0, 384, 128), (600, 200)),  # -> 384x128
    ("upscale", "openmoji", (40, 100, 190, 145), None),   # 150x45 -> 384x115, padded to 128
]
# (Small images keep the golden outputs, which ship inside the bundle, to a few MB.)


class TextEncoderGraph(nn.Module):
    def __init__(self, clip) -> None:
        super().__init__()
        self.clip = clip

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.clip.encode_text(input_ids)


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_npy(path: str, t) -> None:
    arr = t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
    arr = np.ascontiguousarray(arr.astype("<i8" if arr.dtype.kind in "iu" else "<f4"))
    np.save(path, arr)


def fold_batchnorm(model: nn.Module) -> int:
    """Fold every BatchNorm2d into the Conv2d before it (eval-mode statistics), in
    place, as the ONNX export would: afterwards the PyTorch model computes with the
    very weights the graph stores. Returns the number folded; raises if a
    BatchNorm2d is left that no convolution precedes."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval
    model.eval()
    folded = 0
    for module in model.modules():
        if isinstance(module, nn.Sequential):
            items = list(module._modules.items())
            for (name, conv), (bn_name, bn) in zip(items, items[1:]):
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    module._modules[name] = fuse_conv_bn_eval(conv, bn)
                    module._modules[bn_name] = nn.Identity()
                    folded += 1
        for conv_name, bn_name in (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")):
            conv, bn = getattr(module, conv_name, None), getattr(module, bn_name, None)
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                setattr(module, conv_name, fuse_conv_bn_eval(conv, bn))
                setattr(module, bn_name, nn.Identity())
                folded += 1
    left = [n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    if left:
        raise ValueError(f"export: no convolution to fold BatchNorm {left[0]} into")
    return folded


def round_to_half(model: nn.Module) -> None:
    """Round every floating-point weight to the nearest float16 value (kept as
    float32), in place, so the graphs can store them as float16 without loss."""
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            if t.is_floating_point():
                if not torch.isfinite(t.half()).all():
                    raise ValueError("export: a weight is outside float16's range")
                t.copy_(t.half().float())


HALF_MIN_ELEMENTS = 256  # smaller float initializers (biases, constants) stay float32


def store_half(path: str) -> tuple[int, int]:
    """Rewrite the graph at ``path`` so its large float32 initializers are stored as
    float16, each read through a Cast back to float32 (ONNX Runtime folds the casts
    when it loads the graph, so it computes in float32 as before). Every value must
    be exactly a float16 value (see :func:`round_to_half`): the graph computes the
    same numbers after the rewrite. Returns (bytes before, bytes after)."""
    from onnx import helper, numpy_helper
    m = onnx.load(path)
    before = os.path.getsize(path)
    keep, casts = [], []
    for init in m.graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT:
            keep.append(init)
            continue
        arr = numpy_helper.to_array(init)
        if arr.size < HALF_MIN_ELEMENTS:
            keep.append(init)
            continue
        half = arr.astype(np.float16)
        if not np.array_equal(half.astype(np.float32), arr):
            raise ValueError(f"export: {os.path.basename(path)} initializer {init.name} is not float16-exact; "
                             "round the model's weights first")
        keep.append(numpy_helper.from_array(half, init.name + "_f16"))
        casts.append(helper.make_node("Cast", [init.name + "_f16"], [init.name], to=onnx.TensorProto.FLOAT,
                                      name=init.name + "_to_f32"))
    del m.graph.initializer[:]
    m.graph.initializer.extend(keep)
    nodes = casts + list(m.graph.node)
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    onnx.checker.check_model(m)
    onnx.save(m, path)
    return before, os.path.getsize(path)


def export_graph(model: nn.Module, args: tuple, path: str, inputs: list[str], outputs: list[str],
                 dynamic: dict) -> None:
    with torch.no_grad():
        torch.onnx.export(model, args, path, opset_version=OPSET, input_names=inputs, output_names=outputs,
                          dynamic_axes=dynamic, do_constant_folding=True)
    onnx.checker.check_model(onnx.load(path))


def export_graphs(model: VildDetector, clip, out: str) -> None:
    cfg = model.cfg
    names = backbone_output_names(cfg)
    image = torch.randn(1, 3, cfg.size_divisible * 3, cfg.size_divisible * 4)
    export_graph(BackboneGraph(model).eval(), (image,), os.path.join(out, "backbone.onnx"), ["image"], names,
                 {"image": {2: "H", 3: "W"}, **{n: {2: f"h_{n}", 3: f"w_{n}"} for n in names}})
    s = cfg.roi_output_size
    rois = torch.randn(5, cfg.fpn_channels, s, s)
    export_graph(model.box_head.eval(), (rois,), os.path.join(out, "box_head.onnx"), ["rois"],
                 ["text_embeddings", "image_embeddings", "box_deltas"],
                 {"rois": {0: "N"}, "text_embeddings": {0: "N"}, "image_embeddings": {0: "N"},
                  "box_deltas": {0: "N"}})
    ids = torch.zeros(2, clip.context_length, dtype=torch.int64)
    ids[:, 0], ids[:, 1], ids[:, 2] = 1, 5, 2  # placeholder ids; the graph pools at the argmax
    export_graph(TextEncoderGraph(clip).eval(), (ids,), os.path.join(out, "text_encoder.onnx"), ["input_ids"],
                 ["text_embeddings"], {"input_ids": {0: "B"}, "text_embeddings": {0: "B"}})


def golden_images(cache_dir: str | None = None) -> dict[str, Image.Image]:
    """The golden cases' images, drawn from the held-out scene generators."""
    from vildtrain.data.art import ArtLibrary
    from vildtrain.data.categories import load_categories
    from vildtrain.data.scenes import HELDOUT_SETS, generate_scene, scene_rng
    cats = load_categories()
    out = {}
    for i, (name, set_name, crop, size) in enumerate(GOLDEN_CASES):
        seed, styles = HELDOUT_SETS[set_name]
        art = ArtLibrary(styles=styles, categories=cats)
        img, _ = generate_scene(scene_rng(seed + 7919, i), art, cats, styles, size=384, label_novel=True)
        if crop:
            img = img.crop(crop)
        if size:
            img = img.resize(size, Image.BILINEAR)
        out[name] = img
    return out


def write_golden_case(out: str, model: VildDetector, img: Image.Image, vocab: Vocabulary) -> int:
    """One image's reference numbers (docs/bundle.md "Golden outputs"); returns #detections."""
    os.makedirs(out, exist_ok=True)
    img.save(os.path.join(out, "input.png"))
    r = regions(model, img)
    p = r.prepared
    meta = {"width": p.original[1], "height": p.original[0], "resized_width": p.resized[1],
            "resized_height": p.resized[0], "padded_width": int(p.image.shape[3]),
            "padded_height": int(p.image.shape[2]), "scale_x": p.scale[1], "scale_y": p.scale[0]}
    with open(os.path.join(out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    save_npy(os.path.join(out, "image.npy"), p.image)
    for name, t in r.outputs.items():
        save_npy(os.path.join(out, f"{name}.npy"), t)
    for level, a in r.anchors.items():
        save_npy(os.path.join(out, f"anchors_{level}.npy"), a)
    save_npy(os.path.join(out, "proposals.npy"), r.proposals)
    save_npy(os.path.join(out, "proposal_scores.npy"), torch.sigmoid(r.proposal_logits))
    save_npy(os.path.join(out, "rois.npy"), r.rois[:ROIS_SAVED])
    save_npy(os.path.join(out, "text_embeddings.npy"), r.text_embeddings)
    save_npy(os.path.join(out, "image_embeddings.npy"), r.image_embeddings)
    save_npy(os.path.join(out, "box_deltas.npy"), r.box_deltas)
    save_npy(os.path.join(out, "boxes.npy"), r.boxes)
    dets = detect(model, r, vocab, "ensemble")
    with open(os.path.join(out, "detections.json"), "w") as f:
        json.dump([{"label": d.label, "score": d.score, "box": d.box} for d in dets], f, indent=1)
    return len(dets)


def write_text_golden(out: str, clip, tokenizer, names: list[str]) -> None:
    os.makedirs(out, exist_ok=True)
    prompts = [t.format(n) for n in names for t in TEMPLATES]
    ids = torch.from_numpy(tokenizer.encode_batch(prompts, clip.context_length))
    with torch.no_grad():
        emb = clip.encode_text(ids)
    with open(os.path.join(out, "prompts.json"), "w") as f:
        json.dump(prompts, f, indent=1, ensure_ascii=False)
    save_npy(os.path.join(out, "input_ids.npy"), ids)
    save_npy(os.path.join(out, "text_embeddings.npy"), emb)


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=PACKAGE_DIR).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def embedding_section(cfg: DetectorConfig) -> dict:
    """The manifest's scoring constants; ``image_temperature`` only when it is set."""
    out = {"dim": cfg.embed_dim, "temperature": cfg.temperature, "ensemble_lambda": cfg.ensemble_lambda}
    if cfg.image_temperature:
        out["image_temperature"] = cfg.image_temperature
    return out


def manifest(cfg: DetectorConfig, clip, categories, training: dict, name: str) -> dict:
    levels = []
    for lv, stride, size in zip(cfg.level_names, cfg.strides, cfg.anchor_sizes):
        levels.append({"name": lv, "stride": stride, "anchor_sizes": [size], "rpn": True,
                       "roi": lv in cfg.roi_level_names})
    return {
        "format": FORMAT,
        "name": name,
        "input": {"max_side": cfg.max_side, "size_divisible": cfg.size_divisible, "mean": list(cfg.mean),
                  "std": list(cfg.std), "resize": "bilinear"},
        "fpn": {"channels": cfg.fpn_channels, "levels": levels},
        "anchors": {"aspect_ratios": list(cfg.aspect_ratios)},
        "rpn": {"pre_nms_top_n": cfg.rpn_pre_nms_top_n_test, "post_nms_top_n": cfg.rpn_post_nms_top_n_test,
                "nms_iou": cfg.rpn_nms_iou, "min_size": cfg.rpn_min_size,
                "score_threshold": cfg.rpn_score_threshold, "box_coder_weights": list(cfg.rpn_box_coder_weights)},
        "roi_align": {"output_size": cfg.roi_output_size, "sampling_ratio": cfg.roi_sampling_ratio,
                      "aligned": False, "canonical_scale": cfg.roi_canonical_scale,
                      "canonical_level": cfg.roi_canonical_level},
        "box_head": {"box_coder_weights": list(cfg.box_coder_weights)},
        "embedding": embedding_section(cfg),
        "postprocess": {"score_threshold": cfg.score_threshold, "nms_iou": cfg.nms_iou,
                        "max_detections": cfg.max_detections, "labels_per_box": cfg.labels_per_box},
        "text": {"tokenizer": "clip-bpe", "context_length": clip.context_length, "templates": list(TEMPLATES)},
        "categories": manifest_categories(categories),
        "training": training,
    }


@torch.no_grad()
def export_bundle(checkpoint: str, out: str, clip=None, categories=None, tokenizer_dir: str | None = None,
                  images: dict[str, Image.Image] | None = None, name: str = "pictogram-vild-small",
                  miniclip: str | None = None) -> dict:
    """Write the bundle to ``out`` (replaced if it exists); returns the manifest. The
    mini-CLIP is ``clip``, else the checkpoint at ``miniclip`` checked against the one the
    detector records (``load_teacher``), else that recorded one."""
    from vildtrain.text import clip_tokenizer
    if categories is None:
        from vildtrain.data.categories import load_categories
        categories = load_categories()
    model, extra = load_checkpoint(checkpoint)
    # The detector's graphs store their weights as float16 (docs/bundle.md): fold the
    # BatchNorms and round the weights here, so the golden outputs below come from
    # exactly the weights the graphs hold.
    fold_batchnorm(model)
    for part in (model.backbone, model.rpn, model.box_head):
        round_to_half(part)
    from vildtrain.models.miniclip import check_teacher, load_teacher, miniclip_digest
    if clip is None:
        clip, _ = load_teacher(extra, miniclip)   # checked against the record as it loads
    else:
        check_teacher(extra, clip)
    clip.eval()
    digest = miniclip_digest(clip)
    cfg = model.cfg
    if cfg.embed_dim != clip.embed_dim:
        raise ValueError(f"export: detector embeds in {cfg.embed_dim} dims, mini-CLIP in {clip.embed_dim}")
    readme = _clear(out)
    os.makedirs(os.path.join(out, "tokenizer"))
    tok_dir = tokenizer_dir or clip_tokenizer.data_dir()
    for fname in ("vocab.json", "merges.txt"):
        shutil.copy(os.path.join(tok_dir, fname), os.path.join(out, "tokenizer", fname))
    tokenizer = clip_tokenizer.load(tok_dir)

    export_graphs(model, clip, out)
    for graph in ("backbone.onnx", "box_head.onnx"):
        store_half(os.path.join(out, graph))
    save_npy(os.path.join(out, "background.npy"), model.background_embedding())
    names = [c.name for c in categories]
    cat_emb = clip.text_embeddings(names, tokenizer=tokenizer, templates=TEMPLATES).float()
    save_npy(os.path.join(out, "category_embeddings.npy"), cat_emb)

    write_text_golden(os.path.join(out, "golden", "text"), clip, tokenizer, names[:TEXT_GOLDEN_NAMES])
    vocab = Vocabulary(names, cat_emb, [c.split == "base" for c in categories])
    images = images if images is not None else golden_images()
    counts = {case: write_golden_case(os.path.join(out, "golden", case), model, img, vocab)
              for case, img in images.items()}

    man = manifest(cfg, clip, categories, _training_record(extra, cfg, clip, digest, counts), name)
    _write_manifest(out, man)
    if readme is not None:
        with open(os.path.join(out, "README.md"), "wb") as f:
            f.write(readme)
    return man


def _clear(out: str) -> bytes | None:
    """Remove the bundle directory ``out``; returns the README.md it had, if any.

    The directory is replaced whole, except a README.md describing it (the
    committed models/default has one); it is not part of the bundle's digests."""
    readme = None
    if os.path.exists(os.path.join(out, "README.md")):
        with open(os.path.join(out, "README.md"), "rb") as f:
            readme = f.read()
    if os.path.exists(out):
        shutil.rmtree(out)
    return readme


def _training_record(extra: dict, cfg: DetectorConfig, clip, digest: str, counts: dict) -> dict:
    """The manifest's ``training``: how the detector was trained, from its checkpoint's extras."""
    from vildtrain.train.detector_run import reproducing_command
    return {"command": reproducing_command(extra.get("command", "")), "seed": extra.get("seed", 0),
            "commit": git_commit(),
            "steps": extra.get("steps", 0), "images_seen": extra.get("images_seen", 0),
            "train_seconds": round(float(extra.get("train_seconds", 0.0)), 1),
            "distill_weight": extra.get("distill_weight"),
            "detector": {k: v for k, v in cfg.to_dict().items() if k != "extra"},
            "miniclip": dict(getattr(clip, "cfg", None).__dict__) if hasattr(clip, "cfg") else {},
            "miniclip_digest": digest,
            "golden_detections": counts}


def _write_manifest(out: str, man: dict) -> None:
    """Add the SHA-256 of every other file of the bundle to ``man`` and write it.
    A README.md describing the bundle is not part of it (see :func:`_clear`)."""
    files = []
    for root, _, fnames in os.walk(out):
        for fname in fnames:
            rel = os.path.relpath(os.path.join(root, fname), out).replace(os.sep, "/")
            if rel not in ("manifest.json", "README.md"):
                files.append(rel)
    man["sha256"] = {rel: sha256(os.path.join(out, rel)) for rel in sorted(files)}
    with open(os.path.join(out, "manifest.json"), "w", encoding="utf-8") as f:
        f.write(manifest_text(man, default=_json_default))


def _json_default(o):
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"export: cannot write {type(o).__name__} to the manifest")


def main(argv: list[str]) -> int:
    from vildtrain.models.miniclip import MINICLIP_HELP
    ap = argparse.ArgumentParser(prog="vildtrain export", description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="training/runs/detector/detector.pt")
    ap.add_argument("--out", required=True)
    ap.add_argument("--miniclip", default=None, help=MINICLIP_HELP)
    ap.add_argument("--name", default="pictogram-vild-small")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    man = export_bundle(args.checkpoint, args.out, miniclip=args.miniclip, name=args.name)
    total = sum(os.path.getsize(os.path.join(args.out, f)) for f in man["sha256"]) / 1e6
    print(f"export: wrote {args.out} ({len(man['sha256']) + 1} files, {total:.1f} MB)", file=sys.stderr)
    return 0
