"""Summarise `go test -bench BenchmarkBatchBackbone -count K` outputs:
summ.py FILE [FILE ...] prints, per threads × N, the pooled ratio (sum of
batch times ÷ sum of sequential times over the K runs), the median and range
of the per-run ratios, and the mean times; with the CPU-time ratio when the
run reported it."""
import collections
import re
import statistics as st
import sys

for f in sys.argv[1:]:
    rows = collections.defaultdict(list)
    for line in open(f):
        m = re.match(r"BenchmarkBatchBackbone/threads=(\d)/N=(\d)-\d+\s+\d+\s+\d+ ns/op(.*)", line)
        if not m:
            continue
        metrics = {u: float(v) for v, u in re.findall(r"([\d.]+) (\S+)", m[3])}
        rows[(int(m[1]), int(m[2]))].append(metrics)
    print(f)
    print("| threads | N | batch/seq pooled | median | range | batch ms | seq ms | CPU batch/seq median |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (threads, n), v in sorted(rows.items()):
        b = sum(x["batch-ms"] for x in v)
        s = sum(x["seq-ms"] for x in v)
        r = [x["batch/seq"] for x in v]
        cpu = [x["cpu-batch/seq"] for x in v if "cpu-batch/seq" in x]
        c = f"{st.median(cpu):.3f}" if cpu else "–"
        print(f"| {threads} | {n} | {b / s:.3f} | {st.median(r):.3f} | {min(r):.3f}–{max(r):.3f} "
              f"| {b / len(v):.0f} | {s / len(v):.0f} | {c} |")
