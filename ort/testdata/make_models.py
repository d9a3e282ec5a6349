"""Writes the tiny ONNX graphs of ort's tests with the onnx helper API.

Run from this directory: /usr/bin/python3 make_models.py

mlp.onnx:  x float32 [N, 8] -> y = tanh(x @ W1 + b1) @ W2, float32 [N, 4];
           n = Shape(x)[0] as int64 [1] (exercises an int64 output).
mlp_x.npy, mlp_y.npy: an input of mlp.onnx and its output computed by NumPy.
ids.onnx:  ids int64 [B, 5] -> pos float32 [B] = ArgMax(Cast(ids, float)), as
           the text encoder pools at the end token.
slow.onnx: x float32 [256, 256] -> 300 chained MatMul + Tanh nodes, seconds of
           work, so a test can cancel it mid-run.
"""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

rng = np.random.default_rng(0)


def save(graph, name):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="vild-ort-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, name)


w1 = numpy_helper.from_array(rng.standard_normal((8, 16)).astype(np.float32), "W1")
b1 = numpy_helper.from_array(rng.standard_normal(16).astype(np.float32), "b1")
w2 = numpy_helper.from_array(rng.standard_normal((16, 4)).astype(np.float32), "W2")
save(helper.make_graph(
    [helper.make_node("MatMul", ["x", "W1"], ["h0"]), helper.make_node("Add", ["h0", "b1"], ["h1"]),
     helper.make_node("Tanh", ["h1"], ["h2"]), helper.make_node("MatMul", ["h2", "W2"], ["y"]),
     helper.make_node("Shape", ["x"], ["shape"]),
     helper.make_node("Slice", ["shape", "zero", "one"], ["n"])],
    "mlp",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4]),
     helper.make_tensor_value_info("n", TensorProto.INT64, [1])],
    [w1, b1, w2, numpy_helper.from_array(np.array([0], np.int64), "zero"),
     numpy_helper.from_array(np.array([1], np.int64), "one")]), "mlp.onnx")

save(helper.make_graph(
    [helper.make_node("Cast", ["ids"], ["f"], to=TensorProto.FLOAT),
     helper.make_node("ArgMax", ["f"], ["p"], axis=1, keepdims=0),
     helper.make_node("Cast", ["p"], ["pos"], to=TensorProto.FLOAT)],
    "ids",
    [helper.make_tensor_value_info("ids", TensorProto.INT64, ["B", 5])],
    [helper.make_tensor_value_info("pos", TensorProto.FLOAT, ["B"])]), "ids.onnx")

x = rng.standard_normal((3, 8)).astype(np.float32)
np.save("mlp_x.npy", x)
np.save("mlp_y.npy", (np.tanh(x @ numpy_helper.to_array(w1) + numpy_helper.to_array(b1)) @ numpy_helper.to_array(w2)).astype(np.float32))

nodes, prev = [], "x"
w = numpy_helper.from_array((rng.standard_normal((256, 256)) / 16).astype(np.float32), "W")
for i in range(300):
    nodes.append(helper.make_node("MatMul", [prev, "W"], [f"m{i}"]))
    nodes.append(helper.make_node("Tanh", [f"m{i}"], [f"t{i}"]))
    prev = f"t{i}"
nodes.append(helper.make_node("Identity", [prev], ["y"]))
save(helper.make_graph(
    nodes, "slow",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [256, 256])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, [256, 256])], [w]), "slow.onnx")
