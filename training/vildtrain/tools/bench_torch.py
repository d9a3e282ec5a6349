"""The bundle's detector in PyTorch eager: the column a Python user would run,
timed stage by stage like the Go pipeline's BenchmarkDefaultBundle
(pipeline/bench_default_test.go), on the same scene and vocabularies.

The detector is rebuilt from the bundle's graphs (``detector_from_bundle``), so
both sides run the same weights. Stages, per thread count and vocabulary size:

* ``backbone``: the backbone graph (body, FPN, RPN head) on the preprocessed tensor;
* ``regions``: preprocessing, backbone, proposals, RoIAlign, box head;
* ``score``: the regions scored against the vocabulary (ensemble), labels, NMS;
* ``detect``: regions and score.

Each figure is the median of timed runs after warm-up, under ``torch.no_grad()``
with ``torch.set_num_threads(threads)`` (intra-op threads, as the Go side sets
ONNX Runtime's). Vocabularies, as the Go benchmark builds them: the first 10
categories, all 703, and 1,203 (the LVIS size: the 703 categories then 500
random unit vectors, "extra 0".."extra 499", base False).

    python3 -m vildtrain bench_torch --out runs/bench-torch.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import torch
from PIL import Image

DEFAULT_BUNDLE = os.path.join(os.path.dirname(__file__), "..", "..", "..", "models", "default")
VOCAB_SIZES = (10, 703, 1203)


def scene(bundle: str) -> Image.Image:
    """The golden "exact" strip twice, one above the other (BenchmarkDefaultBundle's scene)."""
    strip = Image.open(os.path.join(bundle, "golden", "exact", "input.png")).convert("RGB")
    out = Image.new("RGB", (strip.width, 2 * strip.height))
    out.paste(strip, (0, 0))
    out.paste(strip, (0, strip.height))
    return out


def vocabulary(bundle: str, size: int, seed: int = 1203):
    """The first ``size`` categories; past the bundle's, random unit vectors ("extra N")."""
    from vildtrain.models.infer import Vocabulary
    with open(os.path.join(bundle, "manifest.json")) as f:
        cats = json.load(f)["categories"]
    emb = torch.from_numpy(np.load(os.path.join(bundle, "category_embeddings.npy")).astype(np.float32))
    n = min(size, len(cats))
    labels = [c["name"] for c in cats[:n]]
    base = [c["split"] == "base" for c in cats[:n]]
    vectors = [emb[:n]]
    if size > n:
        extra = torch.randn(size - n, emb.shape[1], generator=torch.Generator().manual_seed(seed))
        vectors.append(extra / extra.norm(dim=1, keepdim=True))
        labels += [f"extra {i}" for i in range(size - n)]
        base += [False] * (size - n)
    return Vocabulary(labels, torch.cat(vectors), base)


def timed(fn, min_runs: int, min_seconds: float) -> float:
    """Median milliseconds of ``fn()`` over at least ``min_runs`` runs and ``min_seconds``."""
    fn()
    fn()
    times = []
    start = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


@torch.no_grad()
def bench(bundle: str, threads: list[int], vocab_sizes=VOCAB_SIZES, min_runs: int = 5,
          min_seconds: float = 2.0, log=sys.stderr) -> dict:
    from vildtrain.models.detector_from_bundle import detector_from_bundle
    from vildtrain.models.detector import BackboneGraph
    from vildtrain.models.infer import detect, preprocess, regions
    model = detector_from_bundle(bundle)
    img = scene(bundle)
    graph = BackboneGraph(model).eval()
    prep = preprocess(img, model.cfg)
    out = {"bundle": os.path.basename(os.path.abspath(bundle)), "image": [img.width, img.height],
           "torch": torch.__version__, "threads": {}}
    for n in threads:
        torch.set_num_threads(n)
        row = {"backbone_ms": timed(lambda: graph(prep.image), min_runs, min_seconds),
               "regions_ms": timed(lambda: regions(model, img), min_runs, min_seconds), "vocabularies": {}}
        r = regions(model, img)
        for size in vocab_sizes:
            vocab = vocabulary(bundle, size)
            row["vocabularies"][str(size)] = {
                "score_ms": timed(lambda: detect(model, r, vocab, "ensemble"), min_runs, min_seconds),
                "detect_ms": timed(lambda: detect(model, regions(model, img), vocab, "ensemble"),
                                   min_runs, min_seconds)}
        out["threads"][str(n)] = row
        print(f"bench_torch: {n} thread(s): backbone {row['backbone_ms']:.1f} ms, regions "
              f"{row['regions_ms']:.1f} ms, detect (703) {row['vocabularies'].get('703', {}).get('detect_ms', 0):.1f} ms",
              file=log)
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m vildtrain bench_torch",
                                 description="time the bundle's detector in PyTorch eager, stage by stage")
    ap.add_argument("--bundle", default=DEFAULT_BUNDLE)
    ap.add_argument("--threads", default=f"1,{os.cpu_count()}",
                    help="comma-separated intra-op thread counts (default: 1 and every core)")
    ap.add_argument("--min-runs", type=int, default=5)
    ap.add_argument("--min-seconds", type=float, default=2.0, help="least time spent timing each figure")
    ap.add_argument("--out", help="write the JSON here (default: stdout)")
    args = ap.parse_args(argv)
    threads = sorted({int(t) for t in args.threads.split(",") if t.strip()})
    if not threads or min(threads) < 1:
        ap.error("--threads: positive counts, e.g. 1,2")
    result = bench(args.bundle, threads, min_runs=args.min_runs, min_seconds=args.min_seconds)
    text = json.dumps(result, indent=1)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(text + "\n")
    else:
        print(text)
    return 0
