"""`make bench`'s report: Go benchmark results as ratios, JSON and a table.

    go test -run '^$' -bench ... ./ort ./scoring ./pipeline > bench.txt
    python3 -m vildtrain bench_report bench.txt [--bundle ../models/default] [--json out.json]

Reads the output of ``go test -bench`` (every ``-count`` run; the figure of a
benchmark is the median of its runs) and prints, for the default bundle's
stages (pipeline.BenchmarkDefaultBundle) at each intra-op thread count:

- the median time and its ratio to the backbone graph's median at the same
  thread count, measured in the same run;
- the stage's operation count (FLOP = 2 x multiply-adds of the Conv, Gemm
  and MatMul nodes of the graphs, from their shapes at the benchmark's
  384x384 input and its number of regions, plus scoring's two similarity
  matrices, 2·N·D·(2K+1)), and its FLOP limit: that count divided by the SGEMM
  rate ort.BenchmarkSGEMM measured at the same thread count in the same run;
- the time as a multiple of that limit (1.0 would be every operation at the
  SGEMM peak, nothing else costing anything);
- the same two ratios from the process's CPU time (the benchmarks'
  cpu-ns/op, and BenchmarkSGEMM's cpu-GFLOP/s for the limit), which other
  work on a shared machine disturbs less than wall time.

It also splits the regions stage into its parts (preprocess, backbone,
proposals, RoIAlign, box head: the pipeline's own timings, mean wall ms),
lists scoring's kernel benchmark (scoring.BenchmarkProbabilities,
the pure-Go loops against the ONNX Runtime graph) and the worker × thread
throughput (pipeline.BenchmarkDefaultBundleWorkers) as ratios to their first
variant. With ``--torch FILE`` (``python3 -m vildtrain bench_torch`` run in the
same ``make bench``: the same weights in PyTorch eager, same scene and thread
counts) it sets the Go pipeline, PyTorch eager and the FLOP limit side by side
per stage and vocabulary, with PyTorch ÷ Go. Standard library and the onnx
package only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
from collections import defaultdict

import onnx
import onnx.shape_inference

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
LINE = re.compile(r"^(Benchmark\S+?)(?:-\d+)?\s+\d+\s+([\d.]+) ns/op(.*)$")


def parse(lines) -> dict[str, dict[str, list[float]]]:
    """Benchmark name (without the -GOMAXPROCS suffix) → unit → values of its runs."""
    runs: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for line in lines:
        m = LINE.match(line.strip())
        if not m:
            continue
        name, ns, rest = m.groups()
        runs[name]["ns/op"].append(float(ns))
        fields = rest.split()
        for value, unit in zip(fields[::2], fields[1::2]):
            try:
                runs[name][unit].append(float(value))
            except ValueError:
                pass
    return runs


def graph_macs(path: str, shape: list[int]) -> int:
    """Multiply-adds of the Conv, Gemm and MatMul nodes of the one-input graph at
    path for an input of the given shape (shapes from ONNX shape inference; a
    batch dimension it leaves unknown is the input's)."""
    m = onnx.load(path)
    (inp,) = [i for i in m.graph.input if i.name not in {t.name for t in m.graph.initializer}]
    for d, v in zip(inp.type.tensor_type.shape.dim, shape):
        d.ClearField("dim_param")
        d.dim_value = v
    m = onnx.shape_inference.infer_shapes(m, data_prop=True)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(m.graph.value_info) + list(m.graph.output) + list(m.graph.input)}
    shapes.update({t.name: list(t.dims) for t in m.graph.initializer})
    macs = 0
    for n in m.graph.node:
        if n.op_type not in ("Conv", "Gemm", "MatMul"):
            continue
        out = shapes.get(n.output[0])
        if out and out[0] == 0:
            out = [shape[0]] + out[1:]
        if not out or 0 in out:
            raise SystemExit(f"{path}: no shape for {n.op_type} {n.name}")
        size = 1
        for v in out:
            size *= v
        if n.op_type == "Conv":
            w = shapes[n.input[1]]
            macs += size * w[1] * w[2] * w[3]
        else:
            a = shapes[n.input[0]]
            trans = any(at.name == "transA" and at.i for at in n.attribute)
            macs += size * (a[0] if trans else a[-1])
    return macs


def report(runs, bundle: str) -> dict:
    with open(os.path.join(bundle, "manifest.json")) as fh:
        manifest = json.load(fh)
    side = manifest["input"]["max_side"]
    channels, size = manifest["fpn"]["channels"], manifest["roi_align"]["output_size"]
    dim = manifest["embedding"]["dim"]
    med = {name: statistics.median(units["ns/op"]) / 1e6 for name, units in runs.items()}
    cpu = {name: statistics.median(units["cpu-ns/op"]) / 1e6 for name, units in runs.items() if units.get("cpu-ns/op")}
    out: dict = {"sgemm_gflops": {}, "sgemm_cpu_gflops": {}, "stages": {}, "kernels": {}, "workers": {}}
    for name, units in runs.items():
        m = re.fullmatch(r"BenchmarkSGEMM/threads=(\d+)", name)
        if m:
            out["sgemm_gflops"][int(m.group(1))] = statistics.median(units["GFLOP/s"])
            if units.get("cpu-GFLOP/s"):
                out["sgemm_cpu_gflops"][int(m.group(1))] = statistics.median(units["cpu-GFLOP/s"])
    regions = [v for name, u in runs.items() if name.startswith("BenchmarkDefaultBundle/") for v in u.get("regions", [])]
    n = int(statistics.median(regions)) if regions else manifest["rpn"]["post_nms_top_n"]
    backbone = 2 * graph_macs(os.path.join(bundle, "backbone.onnx"), [1, 3, side, side])
    box_head = 2 * graph_macs(os.path.join(bundle, "box_head.onnx"), [n, channels, size, size])

    def scoring(k: int) -> int:
        return 2 * n * dim * (2 * k + 1)

    out["flop"] = {"backbone": backbone, "box_head": box_head, "regions": n,
                   "scoring_703": scoring(703), "detect_703": backbone + box_head + scoring(703)}
    for name, ms in med.items():
        m = re.fullmatch(r"BenchmarkDefaultBundle/intra-op=(\d+)/([\w-]+)(?:/vocabulary=(\d+))?", name)
        if not m:
            continue
        threads, stage, k = int(m.group(1)), m.group(2), int(m.group(3) or 0)
        # (the teacher's crops, decision 0031, are not counted: "regions" of a
        # bundle with embedding.crops sits further above its limit than
        # "regions-no-crops")
        flop = {"backbone": backbone, "regions": backbone + box_head, "regions-no-crops": backbone + box_head,
                "score": scoring(k), "score-go": scoring(k), "detect": backbone + box_head + scoring(k)}.get(stage)
        if flop is None:
            continue
        base_name = f"BenchmarkDefaultBundle/intra-op={threads}/backbone"
        base = med.get(base_name)
        peak = out["sgemm_gflops"].get(threads)
        limit = flop / peak / 1e6 if peak else None
        entry = {
            "median_ms": round(ms, 3), "runs": len(runs[name]["ns/op"]),
            "ratio_to_backbone": round(ms / base, 4) if base else None,
            "gflop": round(flop / 1e9, 4),
            "flop_limit_ms": round(limit, 3) if limit else None,
            "ratio_to_flop_limit": round(ms / limit, 3) if limit else None,
        }
        if name in cpu:
            cpu_peak = out["sgemm_cpu_gflops"].get(threads)
            cpu_limit = flop / cpu_peak / 1e6 if cpu_peak else None
            entry.update({
                "cpu_ms": round(cpu[name], 3),
                "cpu_ratio_to_backbone": round(cpu[name] / cpu[base_name], 4) if base_name in cpu else None,
                "cpu_ratio_to_flop_limit": round(cpu[name] / cpu_limit, 3) if cpu_limit else None,
            })
        out["stages"][name.removeprefix("BenchmarkDefaultBundle/")] = entry
    for name, units in runs.items():
        m = re.fullmatch(r"BenchmarkDefaultBundle/intra-op=(\d+)/regions", name)
        if m:
            stages = {u.removesuffix("-ms"): round(statistics.median(v), 2) for u, v in units.items()
                      if u.endswith("-ms")}
            total = sum(stages.values())
            out.setdefault("regions_breakdown", {})[f"intra-op={m.group(1)}"] = {
                st: {"ms": ms, "share": round(ms / total, 3) if total else None} for st, ms in stages.items()}
    for prefix, key in (("BenchmarkProbabilities/", "kernels"), ("BenchmarkDefaultBundleWorkers/", "workers")):
        names = [nm for nm in runs if nm.startswith(prefix)]
        for nm in names:
            entry = {"median_ms": round(med[nm], 3), "runs": len(runs[nm]["ns/op"])}
            if key == "kernels":
                go = nm.replace("kernel=ort", "kernel=go")
                entry["ratio_to_go"] = round(med[nm] / med[go], 4) if go in med else None
            else:
                entry["ratio_to_first"] = round(med[nm] / med[names[0]], 3)
                if runs[nm].get("latency-ms"):
                    entry["latency_ms"] = round(statistics.median(runs[nm]["latency-ms"]), 1)
            out[key][nm.removeprefix(prefix)] = entry
    return out


def side_by_side(r: dict, torch_runs: list[dict]) -> dict:
    """Per thread count, stage and vocabulary: Go median ms, PyTorch eager median ms
    (the median over the bench_torch runs), the FLOP limit and PyTorch ÷ Go."""
    def torch_ms(threads: int, key: str, k: int | None) -> float | None:
        vals = []
        for run in torch_runs:
            row = run["threads"].get(str(threads))
            if row is None:
                continue
            v = row.get(key) if k is None else row["vocabularies"].get(str(k), {}).get(key)
            if v is not None:
                vals.append(v)
        return statistics.median(vals) if vals else None

    out = {}
    for name, st in r["stages"].items():
        m = re.fullmatch(r"intra-op=(\d+)/(backbone|regions|score|detect)(?:/vocabulary=(\d+))?", name)
        if not m:
            continue
        threads, stage, k = int(m.group(1)), m.group(2), int(m.group(3)) if m.group(3) else None
        pt = torch_ms(threads, f"{stage}_ms", k)
        if pt is None:
            continue
        out[name] = {"go_ms": st["median_ms"], "pytorch_ms": round(pt, 3), "flop_limit_ms": st["flop_limit_ms"],
                     "pytorch_over_go": round(pt / st["median_ms"], 3),
                     "go_over_flop_limit": st["ratio_to_flop_limit"]}
    return out


def table(r: dict) -> str:
    peaks = ", ".join(f"{t} thread{'s' if t > 1 else ''} {g:.1f} GFLOP/s" for t, g in sorted(r["sgemm_gflops"].items()))
    if r["sgemm_cpu_gflops"]:
        peaks += " (per CPU second: " + ", ".join(
            f"{g:.1f}" for _, g in sorted(r["sgemm_cpu_gflops"].items())) + ")"
    f = r["flop"]
    rows = [f"SGEMM peak (ort.BenchmarkSGEMM, 1024³): {peaks}",
            f"Model: backbone {f['backbone'] / 1e9:.2f} GFLOP, box head {f['box_head'] / 1e9:.2f} GFLOP "
            f"for {f['regions']} regions, scoring {f['scoring_703'] / 1e9:.3f} GFLOP for 703 classes", "",
            "| stage | median ms | ÷ backbone | GFLOP | FLOP limit ms | ÷ FLOP limit "
            "| CPU ms | ÷ backbone (CPU) | ÷ FLOP limit (CPU) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, s in r["stages"].items():
        fmt = lambda v, p: "—" if v is None else f"{v:.{p}f}"  # noqa: E731
        rows.append(f"| `{name}` | {s['median_ms']:.1f} | {fmt(s['ratio_to_backbone'], 3)} | {s['gflop']:.3f} | "
                    f"{fmt(s['flop_limit_ms'], 1)} | {fmt(s['ratio_to_flop_limit'], 2)} | "
                    f"{fmt(s.get('cpu_ms'), 1)} | {fmt(s.get('cpu_ratio_to_backbone'), 3)} | "
                    f"{fmt(s.get('cpu_ratio_to_flop_limit'), 2)} |")
    for threads, stages in r.get("regions_breakdown", {}).items():
        rows += ["", f"| `{threads}/regions` by stage (detector.Timings) | mean ms | share |", "|---|---:|---:|"]
        for st, v in stages.items():
            rows.append(f"| {st} | {v['ms']:.1f} | {v['share']:.2f} |")
    if r["kernels"]:
        rows += ["", "| scoring kernel (BenchmarkProbabilities) | median ms | ÷ Go |", "|---|---:|---:|"]
        for name, s in r["kernels"].items():
            ratio = "—" if s["ratio_to_go"] is None else f"{s['ratio_to_go']:.3f}"
            rows.append(f"| `{name}` | {s['median_ms']:.2f} | {ratio} |")
    if r["workers"]:
        rows += ["", "| serve setting (BenchmarkDefaultBundleWorkers) | ms per detection | ÷ first | latency ms |",
                 "|---|---:|---:|---:|"]
        for name, s in r["workers"].items():
            rows.append(f"| `{name}` | {s['median_ms']:.1f} | {s['ratio_to_first']:.3f} | {s.get('latency_ms', '—')} |")
    if r.get("pytorch"):
        rows += ["", "| stage (same weights, scene, threads) | Go ms | PyTorch eager ms | FLOP limit ms "
                 "| PyTorch ÷ Go | Go ÷ FLOP limit |", "|---|---:|---:|---:|---:|---:|"]
        for name, s in r["pytorch"].items():
            fmt = lambda v, p: "—" if v is None else f"{v:.{p}f}"  # noqa: E731
            rows.append(f"| `{name}` | {s['go_ms']:.1f} | {s['pytorch_ms']:.1f} | {fmt(s['flop_limit_ms'], 1)} "
                        f"| {s['pytorch_over_go']:.2f} | {fmt(s['go_over_flop_limit'], 2)} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="vildtrain bench_report", description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="?", help="go test -bench output (default: stdin)")
    ap.add_argument("--bundle", default=os.path.join(REPO, "models", "default"))
    ap.add_argument("--json", help="also write the JSON here")
    ap.add_argument("--torch", nargs="*", default=[],
                    help="bench_torch JSON files of the same run: the PyTorch eager column")
    args = ap.parse_args(argv)
    if args.results:
        with open(args.results) as fh:
            runs = parse(fh)
    else:
        runs = parse(sys.stdin)
    if not runs:
        raise SystemExit("no benchmark results in the input")
    r = report(runs, args.bundle)
    torch_runs = []
    for path in args.torch:
        with open(path) as fh:
            torch_runs.append(json.load(fh))
    if torch_runs:
        r["pytorch"] = side_by_side(r, torch_runs)
    text = json.dumps(r, indent=1)
    print(text)
    if args.json:
        with open(args.json, "w") as fh:
            fh.write(text + "\n")
    print()
    print(table(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
