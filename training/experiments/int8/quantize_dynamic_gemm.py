"""Dynamic int8 quantisation of a vild box-head graph's Gemms (exploration):
quantize_dynamic_gemm.py SRC.onnx OUT.onnx [--skip SUBSTR,...]

Each Gemm (alpha = beta = 1, transB = 1) y = x W^T + b becomes
  DynamicQuantizeLinear(x) -> (xq uint8, xs, xzp)   (per-tensor, per run)
  MatMulInteger(xq, Wq^T int8 [K,N], xzp, zeros[N] int8) -> Cast float
  -> Mul(xs * ws[N]) -> Add(b)
with W quantised per output channel, symmetric (ws = max|w_n|/127), what
ONNX Runtime's quantize_dynamic writes and fuses into DynamicQuantizeMatMul
(MatMulIntegerToFloat). No calibration needed."""
import argparse, collections
import numpy as np
import onnx
from onnx import helper, numpy_helper, TensorProto

ap = argparse.ArgumentParser()
ap.add_argument("src"); ap.add_argument("out")
ap.add_argument("--skip", default="")
a = ap.parse_args()
skip = [s for s in a.skip.split(",") if s]
m = onnx.load(a.src); g = m.graph
inits = {t.name: t for t in g.initializer}
producer = {o: n for n in g.node for o in n.output}

def arr(name):
    if name in inits:
        return numpy_helper.to_array(inits[name]).astype(np.float32)
    p = producer[name]
    if p.op_type == "Cast":
        return numpy_helper.to_array(inits[p.input[0]]).astype(np.float32)
    assert p.op_type == "Constant", p
    return numpy_helper.to_array(p.attribute[0].t).astype(np.float32)

nodes, new_inits, count = [], [], 0
for n in g.node:
    attrs = {x.name: helper.get_attribute_value(x) for x in n.attribute}
    if n.op_type != "Gemm" or any(s in n.name for s in skip) or attrs.get("transB", 0) != 1 \
            or attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
        nodes.append(n); continue
    count += 1
    base = n.name.strip("/").replace("/", "_")
    w = arr(n.input[1])                      # [N, K]
    N = w.shape[0]
    ws = np.abs(w).max(axis=1) / 127.0
    ws[ws == 0] = 1.0
    wq = np.clip(np.round(w / ws[:, None]), -127, 127).astype(np.int8).T.copy()  # [K, N]
    new_inits += [numpy_helper.from_array(wq, base + "_w_q"),
                  numpy_helper.from_array(ws.astype(np.float32), base + "_w_scale"),
                  numpy_helper.from_array(np.zeros(N, np.int8), base + "_w_zp")]
    x = n.input[0]
    nodes += [
        helper.make_node("DynamicQuantizeLinear", [x], [base + "_xq", base + "_xs", base + "_xzp"], name=base + "/DQL"),
        helper.make_node("MatMulInteger", [base + "_xq", base + "_w_q", base + "_xzp", base + "_w_zp"], [base + "_mmi"], name=base + "/MatMulInteger"),
        helper.make_node("Cast", [base + "_mmi"], [base + "_mmf"], name=base + "/Cast", to=TensorProto.FLOAT),
        helper.make_node("Mul", [base + "_xs", base + "_w_scale"], [base + "_s"], name=base + "/ScaleMul"),
        helper.make_node("Mul", [base + "_mmf", base + "_s"], [base + "_mul"], name=base + "/Mul"),
    ]
    if len(n.input) > 2 and n.input[2]:
        new_inits.append(numpy_helper.from_array(arr(n.input[2]), base + "_bias"))
        nodes.append(helper.make_node("Add", [base + "_mul", base + "_bias"], [n.output[0]], name=base + "/Add"))
    else:
        nodes.append(helper.make_node("Identity", [base + "_mul"], [n.output[0]], name=base + "/Id"))
used = {i for x in nodes for i in x.input} | {o.name for o in g.output}
nodes = [x for x in nodes if not (x.op_type in ("Cast", "Constant") and x.output[0] not in used)]
used = {i for x in nodes for i in x.input}
del g.node[:]; g.node.extend(nodes)
keep = [t for t in g.initializer if t.name in used]
del g.initializer[:]; g.initializer.extend(keep + new_inits)
del g.value_info[:]
onnx.checker.check_model(m)
onnx.save(m, a.out)
print(a.out, dict(collections.Counter(x.op_type for x in nodes)), f"{count} Gemms quantised")
