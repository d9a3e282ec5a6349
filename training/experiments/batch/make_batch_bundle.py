"""Copy a bundle and give its backbone graph a symbolic batch axis.

    python3 make_batch_bundle.py SRC_BUNDLE DST_BUNDLE

The shipped backbone.onnx was exported with its input `image` fixed at
[1, 3, H, W]. Nothing inside the graph depends on that 1: every Conv, Add,
Relu and MaxPool is batch-agnostic, and the FPN's three Resize nodes take
their output sizes from Shape(x)[0:2] (batch and channels) concatenated with
the target H, W, so they follow whatever batch comes in. The only places the
1 is written are the declared shapes: the input, the outputs (some say 1,
some a name per output) and any value_info. This script checks that claim
(no Reshape/Expand/Tile/ConstantOfShape; every Shape result is used only
through a Gather of index 2 or 3, or a Slice [0:2] feeding a Resize's sizes)
and then sets dim 0 of the input and of every output to "N", drops the
value_info, and runs onnx.checker and strict shape inference. Weights and
nodes are untouched, so batch 1 gives the same numbers as the original.
Every other file of the bundle is copied as is; the manifest gets the new
backbone.onnx checksum.
"""

import hashlib
import json
import shutil
import sys
from pathlib import Path

import onnx
from onnx import numpy_helper

BATCH = "N"


def producers(graph):
    return {o: n for n in graph.node for o in n.output}


def consumers(graph):
    c = {}
    for n in graph.node:
        for i in n.input:
            c.setdefault(i, []).append(n)
    return c


def const_value(node_by_out, inits, name):
    if name in inits:
        return numpy_helper.to_array(inits[name]).tolist()
    n = node_by_out.get(name)
    if n is not None and n.op_type == "Constant":
        return numpy_helper.to_array(n.attribute[0].t).tolist()
    raise ValueError(f"{name} is not a constant")


def check_batch_agnostic(graph):
    """Raise if the graph could bake batch 1 into a computed shape."""
    banned = {"Reshape", "Expand", "Tile", "ConstantOfShape", "Flatten", "Squeeze"}
    bad = sorted({n.op_type for n in graph.node if n.op_type in banned})
    if bad:
        raise SystemExit(f"graph has {bad}: check them by hand before adding a batch axis")
    prod, cons = producers(graph), consumers(graph)
    inits = {i.name: i for i in graph.initializer}
    for n in graph.node:
        if n.op_type != "Shape":
            continue
        for use in cons.get(n.output[0], []):
            if use.op_type == "Gather":
                idx = const_value(prod, inits, use.input[1])
                if idx not in (2, 3, [2], [3]):
                    raise SystemExit(f"{use.name}: gathers dim {idx} of a shape")
            elif use.op_type == "Slice":
                starts = const_value(prod, inits, use.input[1])
                ends = const_value(prod, inits, use.input[2])
                if starts != [0] or ends != [2]:
                    raise SystemExit(f"{use.name}: slices a shape {starts}:{ends}")
                # the slice must only reach a Resize's sizes through a Concat
                for c in cons.get(use.output[0], []):
                    if c.op_type != "Concat":
                        raise SystemExit(f"{c.name}: shape slice used by {c.op_type}")
                    for r in cons.get(c.output[0], []):
                        if r.op_type != "Resize" or list(r.input).index(c.output[0]) != 3:
                            raise SystemExit(f"{r.name}: shape used by {r.op_type}")
            else:
                raise SystemExit(f"{use.name}: a shape is used by {use.op_type}")


def set_batch(vi):
    d = vi.type.tensor_type.shape.dim[0]
    d.Clear()
    d.dim_param = BATCH


def main():
    src, dst = Path(sys.argv[1]), Path(sys.argv[2])
    if dst.resolve() == src.resolve():
        raise SystemExit("write to a new folder, not over the source bundle")
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    m = onnx.load(src / "backbone.onnx")
    g = m.graph
    check_batch_agnostic(g)
    for vi in list(g.input) + list(g.output):
        set_batch(vi)
    del g.value_info[:]
    onnx.checker.check_model(m, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(m, check_type=True, strict_mode=True)
    for o in inferred.graph.output:
        d0 = o.type.tensor_type.shape.dim[0]
        if d0.dim_param != BATCH:
            raise SystemExit(f"output {o.name}: dim 0 inferred as {d0}")
    onnx.save(m, dst / "backbone.onnx")
    # the manifest lists each file's sha256: replace the backbone's in place
    # (a text edit, so the rest of the manifest stays byte for byte)
    text = (dst / "manifest.json").read_text()
    old = json.loads(text)["sha256"]["backbone.onnx"]
    new = hashlib.sha256((dst / "backbone.onnx").read_bytes()).hexdigest()
    assert text.count(old) == 1
    (dst / "manifest.json").write_text(text.replace(old, new))
    dims = lambda vi: [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]
    print(f"{dst / 'backbone.onnx'}: input {dims(g.input[0])}, {len(g.output)} outputs, e.g. "
          f"{g.output[0].name} {dims(g.output[0])}")


if __name__ == "__main__":
    main()
