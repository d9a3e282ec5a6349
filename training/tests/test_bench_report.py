"""make bench's report: parsing go test -bench output, counting the graphs' operations."""

import os

from vildtrain.tools import bench_report

SAMPLE = """goos: linux
BenchmarkSGEMM/threads=1-2         	      10	  20000000 ns/op	       107.4 GFLOP/s	       110.0 cpu-GFLOP/s
BenchmarkSGEMM/threads=1-2         	      10	  22000000 ns/op	        97.6 GFLOP/s	       105.0 cpu-GFLOP/s
BenchmarkSGEMM/threads=1-2         	      10	  21000000 ns/op	       102.3 GFLOP/s	       100.0 cpu-GFLOP/s
BenchmarkDefaultBundle/intra-op=1/backbone-2         	      10	 100000000 ns/op	  90000000 cpu-ns/op
BenchmarkDefaultBundle/intra-op=1/regions-2   10	 140000000 ns/op	 130000000 cpu-ns/op	 5.0 preprocess-ms	 95.0 backbone-ms	 10.0 proposals-ms	 10.0 roialign-ms	 20.0 boxhead-ms	 0 crops-ms
BenchmarkDefaultBundle/intra-op=1/regions-no-crops-2   10	 130000000 ns/op	 120000000 cpu-ns/op	 5.0 preprocess-ms	 95.0 backbone-ms	 10.0 proposals-ms	 10.0 roialign-ms	 20.0 boxhead-ms	 0 crops-ms
BenchmarkDefaultBundle/intra-op=1/score/vocabulary=703-2   10	   4000000 ns/op	   2700000 cpu-ns/op	       300.0 regions
BenchmarkDefaultBundle/intra-op=1/detect/vocabulary=703-2  10	 150000000 ns/op	 140000000 cpu-ns/op
PASS
"""


def test_parse_keeps_every_run_and_metric():
    runs = bench_report.parse(SAMPLE.splitlines())
    assert runs["BenchmarkSGEMM/threads=1"]["ns/op"] == [20e6, 22e6, 21e6]
    assert runs["BenchmarkSGEMM/threads=1"]["GFLOP/s"] == [107.4, 97.6, 102.3]
    assert runs["BenchmarkDefaultBundle/intra-op=1/score/vocabulary=703"]["regions"] == [300.0]


def test_report_ratios_and_flop_limit():
    bundle = os.path.join(bench_report.REPO, "models", "default")
    r = bench_report.report(bench_report.parse(SAMPLE.splitlines()), bundle)
    assert r["sgemm_gflops"] == {1: 102.3}  # the median run
    score = r["stages"]["intra-op=1/score/vocabulary=703"]
    assert score["ratio_to_backbone"] == 0.04
    # Scoring: 300 regions x 256 dimensions x (704 + 703) classes, 2 FLOP each.
    assert score["gflop"] == round(2 * 300 * 256 * 1407 / 1e9, 4)
    detect = r["stages"]["intra-op=1/detect/vocabulary=703"]
    f = r["flop"]
    assert detect["gflop"] == round((f["backbone"] + f["box_head"] + f["scoring_703"]) / 1e9, 4)
    assert abs(detect["flop_limit_ms"] - detect["gflop"] / 102.3 * 1e3) < 1e-3
    assert detect["cpu_ratio_to_backbone"] == round(140 / 90, 4)
    assert abs(detect["cpu_ratio_to_flop_limit"] - 140 / (detect["gflop"] / 105.0 * 1e3)) < 1e-3
    assert score["cpu_ratio_to_backbone"] == 0.03
    assert r["regions_breakdown"]["intra-op=1"]["boxhead"] == {"ms": 20.0, "share": round(20 / 140, 3)}
    # the regions without the teacher's crops, against the backbone in the same run
    assert r["stages"]["intra-op=1/regions-no-crops"]["ratio_to_backbone"] == 1.3
    assert "| `intra-op=1/detect/vocabulary=703` | 150.0 | 1.500 |" in bench_report.table(r)


def test_operation_count_through_a_dynamic_resize(tmp_path):
    """A Conv after an upsampling to a size computed from another tensor's
    shape (as the FPN's): ONNX shape inference loses its batch dimension, and
    it is still counted. Conv 3->8 3x3 on 16x16 (padded), then nearest
    upsampling of a 8x8 map to 16x16, added, Conv 8->4 1x1, Gemm 1024x10."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    f = TensorProto.FLOAT
    init = [numpy_helper.from_array(np.zeros(s, np.float32), n) for n, s in
            [("w1", (8, 3, 3, 3)), ("w2", (8, 3, 1, 1)), ("w3", (4, 8, 1, 1)), ("g", (10, 1024))]]
    init.append(numpy_helper.from_array(np.array([2, 3], np.int64), "hw_idx"))
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["x", "w2"], ["small"], strides=[2, 2]),
        helper.make_node("Shape", ["a"], ["shape"]),
        helper.make_node("Gather", ["shape", "hw_idx"], ["hw"]),
        helper.make_node("Shape", ["small"], ["sshape"]),
        helper.make_node("Slice", ["sshape", "zero", "two"], ["nc"]),
        helper.make_node("Concat", ["nc", "hw"], ["sizes"], axis=0),
        helper.make_node("Resize", ["small", "", "", "sizes"], ["up"], mode="nearest"),
        helper.make_node("Add", ["a", "up"], ["s"]),
        helper.make_node("Conv", ["s", "w3"], ["b"]),
        helper.make_node("Flatten", ["b"], ["flat"]),
        helper.make_node("Gemm", ["flat", "g"], ["y"], transB=1),
    ]
    init += [numpy_helper.from_array(np.array([0], np.int64), "zero"),
             numpy_helper.from_array(np.array([2], np.int64), "two")]
    graph = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("x", f, ["N", 3, "H", "W"])],
                              [helper.make_tensor_value_info("y", f, None)], init)
    path = tmp_path / "t.onnx"
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path.write_bytes(onnx_model.SerializeToString())
    want = 8 * 16 * 16 * 27 + 8 * 8 * 8 * 3 + 4 * 16 * 16 * 8 + 10 * 1024
    assert bench_report.graph_macs(str(path), [1, 3, 16, 16]) == want


def test_pytorch_eager_beside_go():
    bundle = os.path.join(bench_report.REPO, "models", "default")
    r = bench_report.report(bench_report.parse(SAMPLE.splitlines()), bundle)
    torch_runs = [{"threads": {"1": {"backbone_ms": b, "regions_ms": 2 * b,
                                     "vocabularies": {"703": {"score_ms": 20.0, "detect_ms": 3 * b}}}}}
                  for b in (100.0, 120.0, 400.0)]  # the median run counts
    side = bench_report.side_by_side(r, torch_runs)
    assert side["intra-op=1/backbone"]["pytorch_ms"] == 120.0
    assert side["intra-op=1/backbone"]["pytorch_over_go"] == 1.2
    assert side["intra-op=1/detect/vocabulary=703"]["pytorch_ms"] == 360.0
    assert side["intra-op=1/detect/vocabulary=703"]["pytorch_over_go"] == 2.4
    assert side["intra-op=1/score/vocabulary=703"]["pytorch_over_go"] == 5.0
    r["pytorch"] = side
    assert "| `intra-op=1/detect/vocabulary=703` | 150.0 | 360.0 |" in bench_report.table(r)
