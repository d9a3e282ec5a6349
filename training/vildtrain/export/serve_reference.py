"""Time ``vild serve`` on a bundle against the embedded default, in the same run:
``POST /v1/detect`` of one image with K category names (docs/reference.md).

    python3 -m vildtrain serve_reference --vild ../bin/vild --model runs/reference [--categories 1000] [--runs 5]

For each ONNX Runtime thread count (``--threads``, default 1 and every core)
and each bundle (the embedded default, then ``--model``) it starts the server
on a free port with an empty data directory, and records: the seconds until
``/readyz`` answers 200 (loading and the warm-up inference), the first
detection request (cold: the names' text embeddings are not cached unless the
bundle ships them precomputed), the median and spread of ``--runs`` more (warm),
and the server's own ``timings_ms`` stages of the last one. With
``--new-names N`` it then times one request whose N names are in neither
bundle's category list, so each is encoded (12 prompts through the text
encoder), and reports the cost per new name over the warm request.

The image is the bundle's ``golden/exact/input.png`` (1,024 x 512 for the
reference bundle) sent as JSON (base64 PNG); the names are the first K
categories of ``--model``'s manifest. Ratios are reference / embedded,
measured in this run. Prints a Markdown table and writes JSON with ``--json``.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

from vildtrain.export.export_reference import reference_categories


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body: dict, timeout: float) -> tuple[float, dict]:
    data = json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            out = json.loads(resp.read())
    except urllib.error.HTTPError as e:
        raise RuntimeError(f"serve_reference: {url}: HTTP {e.code}: {e.read()[:400]!r}") from None
    return time.perf_counter() - start, out


class Server:
    """``vild serve`` on a free port; ``model`` None serves the embedded default."""

    def __init__(self, vild: str, model: str | None, threads: int, timeout: float) -> None:
        self.port = free_port()
        self.data = tempfile.mkdtemp(prefix="vild-bench-")
        cmd = [vild, "serve", "--addr", f"127.0.0.1:{self.port}", "--metrics-addr", "", "--data-dir", self.data,
               "--intra-op-threads", str(threads), "--workers", "1", "--log-level", "warn",
               "--request-timeout", f"{int(timeout)}s", "--write-timeout", f"{int(timeout) + 5}s"]
        if model:
            cmd += ["--model", model]
        self.log = open(os.path.join(self.data, "server.log"), "w")
        start = time.perf_counter()
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = start + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve_reference: vild serve exited {self.proc.returncode}; "
                                   f"see {self.log.name}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=5) as r:
                    if r.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.perf_counter() > deadline:
                self.close()
                raise RuntimeError(f"serve_reference: not ready after {timeout:.0f} s")
            time.sleep(0.2)
        self.ready_s = time.perf_counter() - start

    def detect(self, body: dict, timeout: float) -> tuple[float, dict]:
        return post(f"http://127.0.0.1:{self.port}/v1/detect", body, timeout)

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def measure(vild: str, model: str | None, threads: int, body: dict, runs: int, timeout: float,
            new_names: list[str]) -> dict:
    label = os.path.basename(os.path.normpath(model)) if model else "embedded"
    srv = Server(vild, model, threads, timeout)
    try:
        print(f"serve_reference: {label}, {threads} thread(s): ready in {srv.ready_s:.1f} s", file=sys.stderr)
        cold, _ = srv.detect(body, timeout)
        print(f"serve_reference:   cold request {cold:.2f} s", file=sys.stderr)
        warm, last = [], {}
        for i in range(runs):
            t, last = srv.detect(body, timeout)
            warm.append(t)
            print(f"serve_reference:   warm {i + 1}/{runs}: {t:.2f} s", file=sys.stderr)
        out = {"bundle": label, "threads": threads, "ready_s": srv.ready_s, "cold_s": cold, "warm_s": warm,
               "warm_median_s": statistics.median(warm), "timings_ms": last.get("timings_ms", {}),
               "detections": len(last.get("detections", []))}
        if new_names:
            t, _ = srv.detect({**body, "categories": body["categories"][: len(body["categories"]) - len(new_names)]
                               + new_names}, timeout)
            out["new_names"] = len(new_names)
            out["new_names_s"] = t
            out["per_new_name_s"] = (t - out["warm_median_s"]) / len(new_names)
            print(f"serve_reference:   {len(new_names)} new names: {t:.2f} s", file=sys.stderr)
        return out
    finally:
        srv.close()


def table(results: list[dict]) -> str:
    rows = ["| bundle | threads | ready (s) | cold request (s) | warm median (s) [min–max] | warm vs embedded "
            "| backbone / proposals / roi_align / box_head / scoring (ms) | per new name (s) |",
            "|---|---|---|---|---|---|---|---|"]
    base = {r["threads"]: r["warm_median_s"] for r in results if r["bundle"] == "embedded"}
    for r in results:
        tm = r["timings_ms"]
        stages = " / ".join(f"{tm.get(k, 0):.0f}" for k in ("backbone", "proposals", "roi_align", "box_head",
                                                             "scoring"))
        ratio = r["warm_median_s"] / base[r["threads"]] if r["threads"] in base else float("nan")
        new = f"{r['per_new_name_s']:.2f}" if "per_new_name_s" in r else "–"
        rows.append(f"| {r['bundle']} | {r['threads']} | {r['ready_s']:.1f} | {r['cold_s']:.3f} | "
                    f"{r['warm_median_s']:.3f} [{min(r['warm_s']):.3f}–{max(r['warm_s']):.3f}] | {ratio:.2f}× | "
                    f"{stages} | {new} |")
    return "\n".join(rows)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="vildtrain serve_reference", description=__doc__.split("\n\n")[0])
    ap.add_argument("--vild", required=True, help="the vild binary (go build -o bin/vild ./cmd/vild)")
    ap.add_argument("--model", required=True, help="bundle directory to compare with the embedded default")
    ap.add_argument("--categories", type=int, default=1000, help="names per request (default 1000)")
    ap.add_argument("--runs", type=int, default=5, help="warm requests per server (default 5)")
    ap.add_argument("--threads", default=f"1,{os.cpu_count() or 1}",
                    help="comma-separated ONNX Runtime thread counts (default 1 and every core)")
    ap.add_argument("--new-names", type=int, default=10,
                    help="names outside both bundles' lists timed once on the --model server (default 10; 0: skip)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per request and to get ready")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    with open(os.path.join(args.model, "manifest.json"), encoding="utf-8") as f:
        man = json.load(f)
    names = [c["name"] for c in man["categories"]][: args.categories]
    if len(names) < args.categories:
        raise SystemExit(f"serve_reference: {args.model} lists {len(names)} categories, --categories {args.categories}")
    known = {c["name"] for c in man["categories"]}
    extra = [c.name for c in reference_categories() if c.name not in known][: args.new_names]
    with open(os.path.join(args.model, "golden", "exact", "input.png"), "rb") as f:
        image = base64.b64encode(f.read()).decode("ascii")
    body = {"image": image, "categories": names, "runners_up": 0}
    threads = sorted({int(t) for t in args.threads.split(",")})
    results = []
    for t in threads:
        results.append(measure(args.vild, None, t, body, args.runs, args.timeout, []))
        results.append(measure(args.vild, os.path.abspath(args.model), t, body, args.runs, args.timeout, extra))
    print(table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
