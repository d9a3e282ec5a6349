"""QDQ int8 quantisation of a vild backbone graph (exploration, training/experiments/int8).

usage: quantize_qdq.py SRC.onnx RANGES.json OUT.onnx [--float SUBSTR,...]
       [--range minmax|mean] [--act uint8|int8]

Every Conv (except those whose node name contains one of --float's
substrings) becomes DequantizeLinear(x) , DequantizeLinear(w) ,
DequantizeLinear(b) -> Conv -> QuantizeLinear -> DequantizeLinear, the
pattern ONNX Runtime fuses into QLinearConv:
  - weights: int8 initializers, per-output-channel symmetric
    (scale = max|w_c|/127, zero point 0), read from the float16 initializers
    (the Cast nodes go);
  - bias: int32, scale = x_scale * w_scale_c, zero point 0 (per channel);
  - activations (each Conv's input and output): per-tensor asymmetric
    uint8 (or int8) from the calibration ranges (RANGES.json from
    pipeline/int8_test.go's TestInt8Calib: global min/max over the calibration
    scenes, or with --range mean the mean of the per-scene min/max);
  - Conv -> Relu: the Relu is dropped and folded into the Conv output's
    quantisation (range [0, max], zero point = qmin), as ONNX Runtime's
    quantiser does.
Adds, Resizes and the MaxPool stay float between DequantizeLinear and
QuantizeLinear nodes.
"""
import argparse, json
import numpy as np
import onnx
from onnx import helper, numpy_helper, TensorProto

ap = argparse.ArgumentParser()
ap.add_argument("src"); ap.add_argument("ranges"); ap.add_argument("out")
ap.add_argument("--float", default="", help="comma-separated substrings of Conv names to keep float")
ap.add_argument("--range", default="minmax", choices=["minmax", "mean"])
ap.add_argument("--act", default="uint8", choices=["uint8", "int8"])
a = ap.parse_args()

m = onnx.load(a.src)
g = m.graph
R = json.load(open(a.ranges))
inits = {t.name: t for t in g.initializer}
producer = {o: n for n in g.node for o in n.output}
consumers = {}
for n in g.node:
    for i in n.input:
        consumers.setdefault(i, []).append(n)
graph_outputs = {o.name for o in g.output}
keep_float = [s for s in a.float.split(",") if s]

def rng(name):
    r = R[name]
    return (r["Min"], r["Max"]) if a.range == "minmax" else (r["MeanMin"], r["MeanMax"])

QT = TensorProto.UINT8 if a.act == "uint8" else TensorProto.INT8
QMIN, QMAX = (0, 255) if a.act == "uint8" else (-128, 127)
NPQ = np.uint8 if a.act == "uint8" else np.int8

def act_params(lo, hi):
    lo, hi = min(0.0, lo), max(0.0, hi)
    scale = (hi - lo) / (QMAX - QMIN) or 1.0
    zp = int(np.clip(round(QMIN - lo / scale), QMIN, QMAX))
    return float(scale), zp

new_inits, new_nodes = [], []
qparams = {}  # DQ output tensor -> (scale, zp)
counter = [0]

def add_qdq(src, dst, scale, zp, tag):
    """src -> Q -> DQ -> dst with per-tensor params."""
    s, z = f"{tag}_scale", f"{tag}_zp"
    new_inits.append(numpy_helper.from_array(np.array(scale, np.float32), s))
    new_inits.append(numpy_helper.from_array(np.array(zp, NPQ), z))
    new_nodes.append(helper.make_node("QuantizeLinear", [src, s, z], [f"{tag}_q"], name=f"{tag}/Q"))
    new_nodes.append(helper.make_node("DequantizeLinear", [f"{tag}_q", s, z], [dst], name=f"{tag}/DQ"))
    qparams[dst] = (scale, zp)

def weight_array(name):
    if name in inits:
        return numpy_helper.to_array(inits[name]).astype(np.float32), None
    p = producer[name]
    assert p.op_type == "Cast", p
    return numpy_helper.to_array(inits[p.input[0]]).astype(np.float32), p

convs = [n for n in g.node if n.op_type == "Conv" and not any(s in n.name for s in keep_float)]
removed = set()
# 1. Outputs: Conv [-> Relu] gets Q -> DQ.
for n in convs:
    t = n.output[0]
    cs = consumers.get(t, [])
    tag = n.name.strip("/").replace("/", "_") + "_out"
    if len(cs) == 1 and cs[0].op_type == "Relu" and t not in graph_outputs:
        relu = cs[0]
        removed.add(id(relu))
        lo, hi = rng(t)
        scale, zp = act_params(0.0, hi)
        add_qdq(t, relu.output[0], scale, zp, tag)
        # zero point must be qmin for the Relu to be exact
        assert zp == QMIN, (t, zp)
    else:
        n.output[0] = t + "_f"
        scale, zp = act_params(*rng(t))
        add_qdq(t + "_f", t, scale, zp, tag)
# 2. Inputs: one Q -> DQ per float tensor feeding quantised Convs.
done = {}
for n in convs:
    x = n.input[0]
    if x in qparams:
        continue
    if x not in done:
        tag = x.strip("/").replace("/", "_") + "_in"
        add_qdq(x, x + "_dq", *act_params(*rng(x)), tag)
        done[x] = x + "_dq"
    n.input[0] = done[x]
# 3. Weights and biases.
casts_used = set()
for n in convs:
    xs, _ = qparams[n.input[0]]
    w, cast = weight_array(n.input[1])
    if cast is not None:
        removed.add(id(cast))
    C = w.shape[0]
    ws = np.abs(w.reshape(C, -1)).max(axis=1) / 127.0
    ws[ws == 0] = 1.0
    wq = np.clip(np.round(w / ws.reshape(-1, *([1] * (w.ndim - 1)))), -127, 127).astype(np.int8)
    base = n.name.strip("/").replace("/", "_")
    new_inits += [numpy_helper.from_array(wq, base + "_w_q"),
                  numpy_helper.from_array(ws.astype(np.float32), base + "_w_scale"),
                  numpy_helper.from_array(np.zeros(C, np.int8), base + "_w_zp")]
    new_nodes.append(helper.make_node("DequantizeLinear", [base + "_w_q", base + "_w_scale", base + "_w_zp"],
                                      [base + "_w_dq"], name=base + "/w/DQ", axis=0))
    n.input[1] = base + "_w_dq"
    if len(n.input) > 2 and n.input[2]:
        b, bcast = weight_array(n.input[2])
        if bcast is not None:
            removed.add(id(bcast))
        bs = (xs * ws).astype(np.float32)
        bq = np.round(b / bs).astype(np.int32)
        new_inits += [numpy_helper.from_array(bq, base + "_b_q"),
                      numpy_helper.from_array(bs, base + "_b_scale"),
                      numpy_helper.from_array(np.zeros(C, np.int32), base + "_b_zp")]
        new_nodes.append(helper.make_node("DequantizeLinear", [base + "_b_q", base + "_b_scale", base + "_b_zp"],
                                          [base + "_b_dq"], name=base + "/b/DQ", axis=0))
        n.input[2] = base + "_b_dq"

nodes = [n for n in g.node if id(n) not in removed] + new_nodes
# Drop Casts whose outputs nobody reads any more (weights of quantised convs).
used = {i for n in nodes for i in n.input} | graph_outputs
nodes = [n for n in nodes if n.op_type != "Cast" or n.output[0] in used]
# Topological sort.
avail = {i.name for i in g.input} | {t.name for t in g.initializer} | {t.name for t in new_inits} | {""}
order, pending = [], list(nodes)
while pending:
    rest = []
    for n in pending:
        if all(i in avail for i in n.input):
            order.append(n); avail.update(n.output)
        else:
            rest.append(n)
    if len(rest) == len(pending):
        raise SystemExit(f"cycle/missing input: {[ (n.name, [i for i in n.input if i not in avail]) for n in rest[:3]]}")
    pending = rest
del g.node[:]
g.node.extend(order)
used = {i for n in order for i in n.input}
keep = [t for t in g.initializer if t.name in used]
del g.initializer[:]
g.initializer.extend(keep + [t for t in new_inits if t.name in used])
del g.value_info[:]
onnx.checker.check_model(m)
onnx.save(m, a.out)
import collections
print(a.out, dict(collections.Counter(n.op_type for n in order)), f"{len(convs)} convs quantised")
