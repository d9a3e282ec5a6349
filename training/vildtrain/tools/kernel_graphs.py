"""The two small ONNX graphs the Go side runs on ONNX Runtime's kernels.

    python3 -m vildtrain kernel_graphs            # writes both (from training/)
    python3 -m vildtrain kernel_graphs --check    # exit 1 when a committed file differs

- ``scoring/probabilities.onnx``: ViLD's scoring as matrix products
  (docs/bundle.md, "scoring"; docs/decisions/0024). Inputs: ``text``,
  ``image`` [N, D] region embeddings already divided by each head's
  temperature (τ, and the image head's own when the bundle sets one;
  the caller copies them anyway, and [N, D] is smaller than the two
  [N, K] products), ``classes`` [K, D] the vocabulary, ``background``
  [1, D], ``text_weight`` and ``image_weight`` [K] (the ensemble's exponent
  of each head per class). Output ``probabilities`` [N, K]:
  exp(text_weight·log softmax([bg, classes]·text)[1:] +
  image_weight·log softmax(classes·image)).
- ``ort/testdata/matmul.onnx``: one MatMul [M, K]·[K, N], for the SGEMM peak
  that ``make bench`` measures beside the model (ort.BenchmarkSGEMM).

Both are built from ``onnx.helper`` alone, opset 17, so the bytes depend only
on this file and the onnx package's serialisation: the test
training/tests/test_kernel_graphs.py rebuilds them and compares the bytes.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
PROBABILITIES = os.path.join("scoring", "probabilities.onnx")
MATMUL = os.path.join("ort", "testdata", "matmul.onnx")


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                          producer_name="vildtrain.tools.kernel_graphs")
    m.ir_version = IR_VERSION
    onnx.checker.check_model(m)
    return m


def probabilities_graph() -> onnx.ModelProto:
    f = TensorProto.FLOAT
    inputs = [
        helper.make_tensor_value_info("text", f, ["N", "D"]),
        helper.make_tensor_value_info("image", f, ["N", "D"]),
        helper.make_tensor_value_info("classes", f, ["K", "D"]),
        helper.make_tensor_value_info("background", f, [1, "D"]),
        helper.make_tensor_value_info("text_weight", f, ["K"]),
        helper.make_tensor_value_info("image_weight", f, ["K"]),
    ]
    outputs = [helper.make_tensor_value_info("probabilities", f, ["N", "K"])]
    consts = [
        numpy_helper.from_array(np.array([1], np.int64), "one"),
        numpy_helper.from_array(np.array([np.iinfo(np.int64).max], np.int64), "end"),
    ]
    nodes = [
        # Text head: the background is column 0 of the softmax, then dropped.
        helper.make_node("Concat", ["background", "classes"], ["text_classes"], axis=0),
        helper.make_node("Gemm", ["text", "text_classes"], ["text_logits"], transB=1),
        helper.make_node("LogSoftmax", ["text_logits"], ["text_logp_bg"], axis=1),
        helper.make_node("Slice", ["text_logp_bg", "one", "end", "one"], ["text_logp"]),
        # Image head: a softmax over the vocabulary alone.
        helper.make_node("Gemm", ["image", "classes"], ["image_logits"], transB=1),
        helper.make_node("LogSoftmax", ["image_logits"], ["image_logp"], axis=1),
        # Ensemble: a weighted geometric mean is a weighted sum of logs.
        helper.make_node("Mul", ["text_logp", "text_weight"], ["text_part"]),
        helper.make_node("Mul", ["image_logp", "image_weight"], ["image_part"]),
        helper.make_node("Add", ["text_part", "image_part"], ["logp"]),
        helper.make_node("Exp", ["logp"], ["probabilities"]),
    ]
    return _model(helper.make_graph(nodes, "vild_scoring_probabilities", inputs, outputs, consts))


def matmul_graph() -> onnx.ModelProto:
    f = TensorProto.FLOAT
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])], "sgemm",
        [helper.make_tensor_value_info("a", f, ["M", "K"]), helper.make_tensor_value_info("b", f, ["K", "N"])],
        [helper.make_tensor_value_info("c", f, ["M", "N"])])
    return _model(graph)


GRAPHS = {PROBABILITIES: probabilities_graph, MATMUL: matmul_graph}


def build() -> dict[str, bytes]:
    """Each graph's path relative to the repository root and its bytes."""
    return {path: make().SerializeToString() for path, make in GRAPHS.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="vildtrain kernel_graphs", description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default=REPO, help="repository root (default: this checkout)")
    ap.add_argument("--check", action="store_true", help="compare with the files instead of writing them")
    args = ap.parse_args(argv)
    status = 0
    for rel, data in build().items():
        path = os.path.join(args.root, rel)
        if args.check:
            with open(path, "rb") as fh:
                same = fh.read() == data
            print(f"{rel}: {'same' if same else 'DIFFERS'}")
            status |= not same
            continue
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(data)
        print(f"wrote {rel} ({len(data)} bytes)")
    return status


if __name__ == "__main__":
    sys.exit(main())
