"""bench_torch times the bundle's detector in PyTorch eager on the Go benchmark's scene."""
import io
import os

from vildtrain.tools.bench_torch import bench, scene, vocabulary

DEFAULT = os.path.join(os.path.dirname(__file__), "..", "..", "models", "default")


def test_vocabularies_are_the_go_benchmarks():
    v = vocabulary(DEFAULT, 1203)
    assert len(v.labels) == 1203 and len(set(v.labels)) == 1203
    assert v.embeddings.shape == (1203, 256)
    assert v.labels[703] == "extra 0" and not v.base[703]
    assert abs(float(v.embeddings[1000].norm()) - 1) < 1e-5
    assert len(vocabulary(DEFAULT, 10).labels) == 10


def test_the_scene_is_the_golden_strip_twice():
    img = scene(DEFAULT)
    assert (img.width, img.height) == (384, 384)
    assert img.crop((0, 0, 384, 192)).tobytes() == img.crop((0, 192, 384, 384)).tobytes()


def test_every_stage_is_timed_per_thread_count_and_vocabulary():
    out = bench(DEFAULT, [1], vocab_sizes=(10,), min_runs=1, min_seconds=0.0, log=io.StringIO())
    row = out["threads"]["1"]
    assert row["backbone_ms"] > 0 and row["regions_ms"] >= row["backbone_ms"] * 0.5
    assert row["vocabularies"]["10"]["detect_ms"] > row["vocabularies"]["10"]["score_ms"] > 0
