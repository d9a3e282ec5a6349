"""Add the mini-CLIP image encoder to an existing bundle, for exemplar categories.

An exemplar category is defined by example crops (an image and a box) instead of,
or along with, a name. Its embedding is the teacher's view of the box: the
mini-CLIP image embedding of its square crops at each of the exemplar views'
scales (RoIAlign; by default 1x and 1.5x, what the detector's image head was
distilled towards, ``losses.crop_embeddings``), with ``--mirror`` each crop also
mirrored left to right, summed and renormalised. The embedding is then moved
across the modality gap: plus the mean text embedding of the bundle's categories
minus the mean exemplar embedding, at the same views, of the objects of
generated training-style scenes (``image_encoder_shift.npy``).
This command exports the mini-CLIP image tower as ``image_encoder.onnx``, writes
the shift, a golden case (crops of ``golden/exact/input.png`` -> embeddings) and
an ``image_encoder`` section of the manifest, without retraining or re-exporting
the detector:

    cd training && python3 -m vildtrain image_encoder --bundle ../models/default

The mini-CLIP must be the one the bundle's detector was distilled from (the
manifest's ``training.miniclip_digest``); another is refused.

``--from-bundle`` changes only the exemplar views and the shift's length of a
bundle that has an image encoder: with its own ``image_encoder.onnx``
(:func:`encoder_from_bundle`, left as it is, so no mini-CLIP checkpoint is
needed) it measures the shift again at the views, rewrites the golden case and
the section's ``crop_scales``, ``mirror`` and ``gap.scale``; what is not given
keeps the bundle's value (docs/decisions/0034-exemplar-views-and-shift.md):

    python3 -m vildtrain image_encoder --bundle ../models/default --from-bundle --shift-scale 1.15
    python3 -m vildtrain image_encoder --bundle ../models/default --from-bundle --scales 1.25 --mirror

Weights are stored as int8 with one float32 scale per output channel (symmetric,
each read through ``Cast`` and ``Mul`` back to float32, which ONNX Runtime folds
when it loads the graph): 2.9 MB instead of 5.7 MB as float16, which keeps the
default bundle under its 40 MB. The PyTorch model is given the same dequantised
weights before the golden outputs are computed, so the graph and the goldens agree
to float32 rounding (docs/decisions/0023-exemplar-categories.md).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from vildtrain.export.bundle_synonyms import manifest_text
from vildtrain.export.export import OPSET, fold_batchnorm, save_npy, sha256
from vildtrain.models.losses import CROP_SCALES, crop_images

GRAPH = "image_encoder.onnx"
GOLDEN_DIR = "golden/exemplar"
GOLDEN_IMAGE = "golden/exact/input.png"
GOLDEN_CASE = "exemplars.json"  # not meta.json, which marks an image case of the detector's goldens
# Boxes of the golden case in golden/exact/input.png's pixels (384x192): one well
# inside, one whose 1.5x crop reaches past the top-left corner (reads as zeros),
# one thin and off-square.
GOLDEN_BOXES = [(150.0, 40.0, 230.0, 120.0), (2.5, 1.0, 60.0, 50.5), (300.0, 20.0, 330.0, 170.0)]
INT8_MIN_ELEMENTS = 256  # smaller float initializers (biases) stay float32
SHIFT = "image_encoder_shift.npy"
# The modality gap: exemplar embeddings are moved by the mean text embedding of
# the bundle's categories minus the mean crop embedding of the objects of
# generated training-style scenes (this many, this seed, both box sides >= 16 px).
GAP_SCENES, GAP_SEED, GAP_MIN_SIDE = 200, 4242, 16


class ImageEncoderGraph(nn.Module):
    """The mini-CLIP image tower on normalised crops [N,3,S,S] -> unit embeddings [N,D].
    Normalisation ((x - mean) / std) is the caller's, as for the backbone."""

    def __init__(self, clip) -> None:
        super().__init__()
        self.image = clip.image

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.image.blocks(self.image.stem(image))
        return F.normalize(self.image.proj(x.mean(dim=(2, 3))), dim=-1)


def quantize_weights(model: nn.Module) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Round every weight of at least INT8_MIN_ELEMENTS values to int8 with one scale
    per output channel (max |w| / 127), in place (the model keeps float32 tensors
    holding the dequantised values). Returns name -> (int8 values, float32 scales)."""
    out = {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.numel() < INT8_MIN_ELEMENTS:
                continue
            flat = p.reshape(p.shape[0], -1)
            scale = (flat.abs().amax(dim=1) / 127.0).clamp(min=1e-12)
            q = torch.round(flat / scale[:, None]).clamp(-127, 127)
            p.copy_((q * scale[:, None]).reshape(p.shape))
            out[name] = (q.to(torch.int8).reshape(p.shape).numpy(), scale.numpy().astype(np.float32))
    return out


def store_int8(path: str) -> tuple[int, int]:
    """Rewrite the graph at ``path``: each float32 initializer of at least
    INT8_MIN_ELEMENTS values becomes int8 values and per-output-channel scales, read
    through Cast and Mul back to float32. The values must already be int8 multiples
    of such scales (:func:`quantize_weights`); the rewritten initializer must equal
    the original within float32 rounding, else the export stops."""
    from onnx import helper, numpy_helper
    m = onnx.load(path)
    before = os.path.getsize(path)
    keep, nodes = [], []
    for init in m.graph.initializer:
        arr = numpy_helper.to_array(init)
        if init.data_type != onnx.TensorProto.FLOAT or arr.size < INT8_MIN_ELEMENTS:
            keep.append(init)
            continue
        flat = arr.reshape(arr.shape[0], -1)
        scale = (np.abs(flat).max(axis=1) / 127.0).astype(np.float32)
        scale[scale == 0] = 1.0
        q = np.round(flat / scale[:, None])
        back = (q.astype(np.float32) * scale[:, None]).reshape(arr.shape)
        if np.abs(q).max() > 127 or not np.allclose(back, arr, rtol=1e-6, atol=1e-12):
            raise ValueError(f"image_encoder: initializer {init.name} is not int8-exact; quantize the model first")
        shape = [arr.shape[0]] + [1] * (arr.ndim - 1)
        keep.append(numpy_helper.from_array(q.astype(np.int8).reshape(arr.shape), init.name + "_i8"))
        keep.append(numpy_helper.from_array(scale.reshape(shape), init.name + "_scale"))
        nodes.append(helper.make_node("Cast", [init.name + "_i8"], [init.name + "_f"], to=onnx.TensorProto.FLOAT,
                                      name=init.name + "_to_f32"))
        nodes.append(helper.make_node("Mul", [init.name + "_f", init.name + "_scale"], [init.name],
                                      name=init.name + "_dequant"))
    del m.graph.initializer[:]
    m.graph.initializer.extend(keep)
    all_nodes = nodes + list(m.graph.node)
    del m.graph.node[:]
    m.graph.node.extend(all_nodes)
    onnx.checker.check_model(m)
    onnx.save(m, path)
    return before, os.path.getsize(path)


def encoder_graph(clip) -> ImageEncoderGraph:
    """The image tower with BatchNorm folded and int8-rounded weights (a copy)."""
    import copy
    g = ImageEncoderGraph(copy.deepcopy(clip)).eval()
    fold_batchnorm(g)
    quantize_weights(g)
    return g


def encoder_from_bundle(bundle: str) -> ImageEncoderGraph:
    """The bundle's image encoder back as PyTorch: ``image_encoder.onnx``'s int8
    weights times their scales, loaded into a BatchNorm-folded mini-CLIP image tower
    of the manifest's configuration. It is the :func:`encoder_graph` the bundle was
    exported from, so a bundle's teacher crops need no mini-CLIP checkpoint."""
    from onnx import numpy_helper
    from vildtrain.models.miniclip import MiniClip, MiniClipConfig
    with open(os.path.join(bundle, "manifest.json")) as f:
        man = json.load(f)
    cfg = dict(man["training"]["miniclip"], widths=tuple(man["training"]["miniclip"]["widths"]))
    g = ImageEncoderGraph(MiniClip(MiniClipConfig(**cfg))).eval()
    fold_batchnorm(g)
    graph = onnx.load(os.path.join(bundle, man["image_encoder"]["file"])).graph
    arrays = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    values = {n: a.astype(np.float32) for n, a in arrays.items() if a.dtype == np.float32}
    for name, q in arrays.items():   # int8 values and per-output-channel scales (store_int8)
        if name.endswith("_i8"):
            values[name[:-3]] = q.astype(np.float32) * arrays[name[:-3] + "_scale"]
    for node in graph.node:   # the exporter names equal initializers' copies through Identity nodes
        if node.op_type == "Identity" and node.input[0] in values:
            values[node.output[0]] = values[node.input[0]]
    g.load_state_dict({name: torch.from_numpy(values[name]) for name in g.state_dict()})
    return g


def exemplar_crops(img01: torch.Tensor, boxes: list[tuple[float, float, float, float]], size: int,
                   scales=CROP_SCALES) -> torch.Tensor:
    """Crops [len(boxes) * len(scales), 3, size, size] in [0,1], box-major, scale-minor,
    cut as the teacher crops are (``losses.crop_images``: square, RoIAlign)."""
    b = torch.tensor(boxes, dtype=torch.float32)
    per_scale = [crop_images(img01[None], [b], size, s) for s in scales]
    return torch.stack(per_scale, dim=1).reshape(-1, 3, size, size)


def normalise(crops01: torch.Tensor, mean, std) -> torch.Tensor:
    return (crops01 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def exemplar_embeddings(graph: ImageEncoderGraph, img01: torch.Tensor, boxes: list[tuple[float, float, float, float]],
                        size: int, scales=CROP_SCALES, mirror: bool = False) -> torch.Tensor:
    """Unit exemplar embeddings [len(boxes), D] before the shift: each box's crops at
    ``scales`` (and, with ``mirror``, each also mirrored left to right) through
    ``graph``, summed and renormalised (``infer.teacher_crop_embeddings``, as the
    bundle's teacher crops are embedded)."""
    from vildtrain.models.infer import teacher_crop_embeddings
    from vildtrain.models.miniclip import IMAGE_MEAN, IMAGE_STD
    with torch.no_grad():
        return teacher_crop_embeddings(graph, img01[None], torch.tensor(boxes, dtype=torch.float32), size,
                                       IMAGE_MEAN, IMAGE_STD, tuple(scales), mirror)


def mean_crop_embedding(graph: ImageEncoderGraph, size: int, scenes: int = GAP_SCENES, seed: int = GAP_SEED,
                        scales=CROP_SCALES, mirror: bool = False, min_side: int = GAP_MIN_SIDE) -> torch.Tensor:
    """The mean exemplar embedding (before any shift, at the views ``scales`` and
    ``mirror``) of the objects of ``scenes`` generated training-style scenes, novel
    categories included, both box sides at least ``min_side``."""
    from vildtrain.data.art import STYLES_TRAIN, ArtLibrary
    from vildtrain.data.categories import load_categories
    from vildtrain.data.scenes import generate_scene, scene_rng
    cats = load_categories()
    art = ArtLibrary(styles=STYLES_TRAIN, categories=cats)
    total, n = None, 0
    for i in range(scenes):
        img, objs = generate_scene(scene_rng(seed, i), art, cats, STYLES_TRAIN, size=384, label_novel=True)
        boxes = [(x, y, x + w, y + h) for x, y, w, h in (o.bbox for o in objs) if w >= min_side and h >= min_side]
        if not boxes:
            continue
        x01 = torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()
        emb = exemplar_embeddings(graph, x01, boxes, size, scales, mirror)
        total = emb.sum(dim=0) if total is None else total + emb.sum(dim=0)
        n += len(boxes)
    if not n:
        raise ValueError("image_encoder: the gap scenes hold no object to embed")
    return total / n


def check_scales(scales) -> list[float]:
    """The exemplar views' scales as floats; ValueError unless 1 to 4, each in [0.5, 4]
    (the manifest's limits, docs/bundle.md)."""
    out = [float(x) for x in scales]
    if not (1 <= len(out) <= 4 and all(0.5 <= x <= 4 for x in out)):
        raise ValueError(f"image_encoder: scales {out}: 1 to 4 scales, each in [0.5, 4]")
    return out


def check_shift_scale(scale: float) -> None:
    """ValueError unless the shift's factor is in (0, 4]."""
    if not 0 < scale <= 4:
        raise ValueError(f"image_encoder: shift scale {scale} must be in (0, 4]")


def shifted(emb: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Exemplar embeddings [N,D] moved by the modality-gap shift [D], unit length again."""
    return F.normalize(emb + shift, dim=-1)


def add_image_encoder(bundle: str, miniclip: str | None = None, clip=None, gap_scenes: int = GAP_SCENES,
                      scales=CROP_SCALES, mirror: bool = False, shift_scale: float = 1.0) -> dict:
    """Export the image encoder of ``clip`` (default: loaded from ``miniclip``) into
    ``bundle``, with exemplars cut at the views ``scales`` and ``mirror`` and the
    shift times ``shift_scale``, and rewrite its manifest; returns the manifest."""
    from vildtrain.models.miniclip import IMAGE_MEAN, IMAGE_STD, load_miniclip, miniclip_digest
    check_scales(scales)
    check_shift_scale(shift_scale)
    path = os.path.join(bundle, "manifest.json")
    with open(path, encoding="utf-8") as f:
        man = json.load(f)
    clip = clip if clip is not None else load_miniclip(miniclip)
    want = man.get("training", {}).get("miniclip_digest")
    got = miniclip_digest(clip)
    if want and want != got:
        raise ValueError(f"image_encoder: the bundle's detector was distilled from mini-CLIP {want}, "
                         f"not {got} ({clip.source})")
    if clip.embed_dim != man["embedding"]["dim"]:
        raise ValueError(f"image_encoder: mini-CLIP embeds in {clip.embed_dim} dimensions, the bundle {man['embedding']['dim']}")
    graph = encoder_graph(clip)
    size = clip.image_size
    out = os.path.join(bundle, GRAPH)
    dummy = torch.zeros(2, 3, size, size)
    with torch.no_grad():
        torch.onnx.export(graph, (dummy,), out, opset_version=OPSET, input_names=["image"],
                          output_names=["image_embeddings"],
                          dynamic_axes={"image": {0: "N"}, "image_embeddings": {0: "N"}}, do_constant_folding=True)
    store_int8(out)

    section = {"file": GRAPH, "input_size": size, "mean": list(IMAGE_MEAN), "std": list(IMAGE_STD),
               "crop_scales": [], "crop": "square", "shift": SHIFT,
               "gap": {"scenes": gap_scenes, "seed": GAP_SEED, "min_side": GAP_MIN_SIDE}, "miniclip_digest": got}
    return _write_views(bundle, man, graph, section, scales, mirror, shift_scale, [GRAPH])


def set_exemplar_views(bundle: str, scales=None, mirror: bool | None = None, shift_scale: float | None = None) -> dict:
    """Cut ``bundle``'s exemplars at the views ``scales`` and ``mirror`` with its own
    image encoder (``image_encoder.onnx`` unchanged): the shift measured again at those
    views on the manifest's gap scenes (times ``shift_scale``), the golden case and
    the section rewritten; returns the manifest. What is None keeps the section's
    own value (its ``crop_scales``, ``mirror`` and ``gap.scale``)."""
    path = os.path.join(bundle, "manifest.json")
    with open(path, encoding="utf-8") as f:
        man = json.load(f)
    section = man.get("image_encoder")
    if section is None:
        raise ValueError(f"image_encoder: {bundle} has no image encoder to re-cut exemplars with "
                         f"(python3 -m vildtrain image_encoder --bundle {bundle})")
    section = dict(section)
    section["gap"] = dict(section.get("gap") or {"scenes": GAP_SCENES, "seed": GAP_SEED, "min_side": GAP_MIN_SIDE})
    scales = check_scales(section["crop_scales"] if scales is None else scales)
    mirror = bool(section.get("mirror", False)) if mirror is None else mirror
    shift_scale = float(section["gap"].get("scale", 1.0)) if shift_scale is None else shift_scale
    check_shift_scale(shift_scale)
    crops = man.get("embedding", {}).get("crops")
    if crops is not None and not crops.get("scales") and scales != [float(x) for x in section["crop_scales"]]:
        raise ValueError(f"image_encoder: {bundle}'s embedding.crops takes its views from image_encoder.crop_scales, "
                         f"so new exemplar scales would change its detections; give the crops their own first "
                         f"(python3 -m vildtrain crop_scores --bundle {bundle} --scales "
                         f"{' '.join(f'{x:g}' for x in section['crop_scales'])} ...)")
    return _write_views(bundle, man, encoder_from_bundle(bundle), section, scales, mirror, shift_scale, [])


def _write_views(bundle: str, man: dict, graph: ImageEncoderGraph, section: dict, scales, mirror: bool,
                 shift_scale: float, written: list[str]) -> dict:
    """Measure the shift of ``graph`` at the views (times ``shift_scale``), write it
    and the golden case, set the views and the scale in ``section`` and write it as
    the manifest's ``image_encoder`` (with the digests of ``written`` and of what this
    writes); returns the manifest."""
    scales = check_scales(scales)
    size = section["input_size"]
    gap = {k: v for k, v in section["gap"].items() if k != "scale"}
    if shift_scale != 1:
        gap["scale"] = float(shift_scale)
    section["gap"] = gap
    text = torch.from_numpy(np.load(os.path.join(bundle, "category_embeddings.npy")))
    gap_mean = mean_crop_embedding(graph, size, gap["scenes"], gap["seed"], scales, mirror, gap["min_side"])
    shift = (float(shift_scale) * (text.mean(dim=0) - gap_mean)).float()
    save_npy(os.path.join(bundle, SHIFT), shift)

    from vildtrain.models.miniclip import IMAGE_MEAN, IMAGE_STD
    img = Image.open(os.path.join(bundle, GOLDEN_IMAGE)).convert("RGB")
    img01 = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()
    crops = normalise(exemplar_crops(img01, GOLDEN_BOXES, size, scales), IMAGE_MEAN, IMAGE_STD)
    with torch.no_grad():
        crop_emb = graph(crops)
    emb = shifted(exemplar_embeddings(graph, img01, GOLDEN_BOXES, size, scales, mirror), shift)
    gdir = os.path.join(bundle, GOLDEN_DIR)
    shutil.rmtree(gdir, ignore_errors=True)
    os.makedirs(gdir)
    save_npy(os.path.join(gdir, "crops.npy"), crops)   # the unmirrored crops, box-major, scale-minor
    save_npy(os.path.join(gdir, "crop_embeddings.npy"), crop_emb)
    save_npy(os.path.join(gdir, "embeddings.npy"), emb)
    with open(os.path.join(gdir, GOLDEN_CASE), "w", encoding="utf-8") as f:
        json.dump({"image": GOLDEN_IMAGE, "boxes": [list(b) for b in GOLDEN_BOXES]}, f, indent=1)
        f.write("\n")

    # the views after crop_scales ("mirror" only when set), the section's other keys in their order
    out = {}
    for k, v in section.items():
        if k == "mirror":
            continue
        out[k] = scales if k == "crop_scales" else v
        if k == "crop_scales" and mirror:
            out["mirror"] = True
    new = "image_encoder" not in man
    man["image_encoder"] = out
    files = dict(man.get("sha256", {}))
    for rel in written + [SHIFT] + [f"{GOLDEN_DIR}/{n}" for n in ("crops.npy", "crop_embeddings.npy", "embeddings.npy",
                                                                 GOLDEN_CASE)]:
        files[rel] = sha256(os.path.join(bundle, rel))
    man["sha256"] = {k: files[k] for k in sorted(files)}
    # the manifest's keys keep their order; a new image_encoder goes before sha256
    order = [k for k in man if k not in ("image_encoder", "sha256")] + ["image_encoder", "sha256"]
    man = {k: man[k] for k in (order if new else [k for k in man if k != "sha256"] + ["sha256"])}
    with open(os.path.join(bundle, "manifest.json"), "w", encoding="utf-8") as f:
        f.write(manifest_text(man))
    return man


def compare_to_float(coco_dir: str, scenes: int = 40, miniclip: str | None = None) -> tuple[int, float, float]:
    """How far int8 rounding moves the teacher: cosine between the float mini-CLIP's
    crop embeddings (``losses.crop_embeddings``) and the int8 tower's, over the
    ground-truth boxes of the first ``scenes`` images of a COCO set. Returns
    (boxes, mean cosine, smallest cosine)."""
    from vildtrain.models.losses import crop_embeddings
    from vildtrain.models.miniclip import IMAGE_MEAN, IMAGE_STD, load_miniclip
    clip = load_miniclip(miniclip)
    graph = encoder_graph(clip)
    with open(os.path.join(coco_dir, "annotations.json"), encoding="utf-8") as f:
        coco = json.load(f)
    boxes_of: dict[int, list] = {}
    for a in coco["annotations"]:
        x, y, w, h = a["bbox"]
        boxes_of.setdefault(a["image_id"], []).append((x, y, x + w, y + h))
    cos = []
    for im in coco["images"][:scenes]:
        boxes = boxes_of.get(im["id"])
        if not boxes:
            continue
        img = Image.open(os.path.join(coco_dir, "images", im["file_name"])).convert("RGB")
        x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()
        want = crop_embeddings(clip, x[None], [torch.tensor(boxes)])
        with torch.no_grad():
            got = graph(normalise(exemplar_crops(x, boxes, clip.image_size), IMAGE_MEAN, IMAGE_STD))
        got = F.normalize(got.view(len(boxes), len(CROP_SCALES), -1).sum(dim=1), dim=-1)
        cos += (want * got).sum(dim=1).tolist()
    return len(cos), float(np.mean(cos)), float(np.min(cos))


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="vildtrain image_encoder", description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", required=True, help="bundle directory (e.g. ../models/default)")
    ap.add_argument("--miniclip", default=None,
                    help="mini-CLIP checkpoint (default: training/checkpoints/miniclip.pt; it must be the bundle's)")
    ap.add_argument("--scales", type=float, nargs="+", default=None,
                    help="the square crops of each exemplar, as multiples of its box's longer side "
                         "(default: 1 1.5; with --from-bundle, the bundle's)")
    ap.add_argument("--mirror", action=argparse.BooleanOptionalAction, default=None,
                    help="also embed each exemplar crop mirrored left to right (default: no; with --from-bundle, "
                         "as the bundle does)")
    ap.add_argument("--shift-scale", type=float, default=None,
                    help="multiply the modality-gap shift by this factor (default 1; with --from-bundle, the "
                         "bundle's gap.scale; docs/exemplars.md)")
    ap.add_argument("--from-bundle", action="store_true",
                    help="keep the bundle's image_encoder.onnx and change only the exemplar views and shift "
                         "(the shift and the golden case are recomputed with it; no mini-CLIP is read)")
    ap.add_argument("--compare", default=None, metavar="COCO_DIR",
                    help="instead of exporting: the cosine between the float and the int8 tower's embeddings of the "
                         "ground-truth boxes of the first 40 scenes of a COCO set (e.g. runs/heldout/seen)")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    if args.compare:
        n, mean, low = compare_to_float(args.compare, miniclip=args.miniclip)
        print(f"image_encoder: int8 against float32 weights over {n} boxes of {args.compare}: "
              f"cosine mean {mean:.5f}, min {low:.5f}")
        return 0
    if args.from_bundle and args.miniclip:
        ap.error("--from-bundle uses the bundle's own image encoder; --miniclip is for an export")
    try:
        if args.from_bundle:
            man = set_exemplar_views(args.bundle, args.scales, args.mirror, args.shift_scale)
        else:
            man = add_image_encoder(args.bundle, args.miniclip, scales=args.scales or CROP_SCALES,
                                    mirror=bool(args.mirror), shift_scale=args.shift_scale or 1.0)
    except (OSError, ValueError) as e:
        print(e, file=sys.stderr)
        return 1
    size = os.path.getsize(os.path.join(args.bundle, GRAPH)) / 1e6
    total = sum(os.path.getsize(os.path.join(args.bundle, f)) for f in man["sha256"]) / 1e6
    enc = man["image_encoder"]
    views = " ".join(f"{x:g}x" for x in enc["crop_scales"]) + (", mirrored" if enc.get("mirror") else "")
    what = "kept" if args.from_bundle else "wrote"
    print(f"image_encoder: {what} {args.bundle}/{GRAPH} ({size:.2f} MB); exemplars at {views}: wrote "
          f"{SHIFT} and {GOLDEN_DIR}; bundle {total:.1f} MB", file=sys.stderr)
    return 0
