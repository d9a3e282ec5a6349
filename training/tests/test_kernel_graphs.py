"""The committed kernel graphs are what vildtrain.tools.kernel_graphs builds.

Their arithmetic is tested in Go, where they run: scoring's golden tests on
both kernels and TestGraphMatchesGo; ort's BenchmarkSGEMM uses matmul.onnx.
"""

import os

import pytest

from vildtrain.tools import kernel_graphs


@pytest.mark.parametrize("rel", sorted(kernel_graphs.GRAPHS))
def test_committed_graph_is_regenerated_byte_for_byte(rel):
    with open(os.path.join(kernel_graphs.REPO, rel), "rb") as fh:
        committed = fh.read()
    assert kernel_graphs.build()[rel] == committed, f"{rel}: run python3 -m vildtrain kernel_graphs"

