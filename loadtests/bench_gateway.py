"""The gateway against the transport's ceiling, side by side in one run.

    python loadtests/bench_gateway.py [--concurrency 1,8,32,64] [--measurement-ms 3000]
                                      [--repeats 1] [--streaming] [--workers 1]
                                      [--batching auto[,off,on]] [--settings JSON]

Starts, one after the other on free loopback ports: (d) the bare grpc.aio server that answers
ModelInfer with a precomputed response (loadtests/bare_server.py), and the gateway serving the
example repository's `mlp` (32 -> 256 -> 256 -> 8, 1-row requests), once per --batching mode
(`auto`: as the example's config.pbtxt says, i.e. on with a 500 µs delay). perf_analyzer drives
them all with the same settings; the table gives throughput and latency per concurrency and the
ratio to bare. --settings passes gateway settings (a JSON object, written to a --config file),
e.g. '{"models": {"mlp": {"batching": {"max_queue_delay_us": 8000}}}}'. Medians over --repeats.
Results also go to loadtests/results/bench_gateway.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "loadtests")]

from bare_server import start_bare_server_subprocess, stop_bare_server  # noqa: E402
from perf_analyzer import run_perf_analyzer  # noqa: E402

from gateway.examples import example_repository  # noqa: E402
from tests.peers.gateway import GatewayProcess  # noqa: E402


def _median_rows(runs: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    out = []
    for rows in zip(*runs, strict=True):
        ok = [r for r in rows if r["status"] != "failed"]
        merged = dict(rows[0])
        for key in ("throughput_infer_s", "p50_ms", "p99_ms"):
            values = [r[key] for r in ok if r[key] is not None]
            merged[key] = statistics.median(values) if values else None
        merged["status"] = "ok" if ok else "failed"
        out.append(merged)
    return out


def measure(label: str, url: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    runs = [
        run_perf_analyzer(
            url,
            "mlp",
            ["x:32"],
            args.concurrency,
            measurement_ms=args.measurement_ms,
            streaming=args.streaming,
            label=label,
        )
        for _ in range(args.repeats)
    ]
    return _median_rows(runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", default="1,8,32,64",
                        type=lambda s: [int(c) for c in s.split(",")])  # fmt: skip
    parser.add_argument("--measurement-ms", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--streaming", action="store_true")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--batching", default="auto", type=lambda s: s.split(","))
    parser.add_argument("--settings", default="{}", type=json.loads)
    parser.add_argument("--out", type=Path, default=ROOT / "loadtests" / "results" / "bench_gateway.json")
    args = parser.parse_args()

    results: dict[str, list[dict[str, Any]]] = {}
    proc, port = start_bare_server_subprocess()
    try:
        results["bare grpc.aio (d)"] = measure("bare", f"127.0.0.1:{port}", args)
    finally:
        stop_bare_server(proc)
    with tempfile.TemporaryDirectory() as tmp:
        repo = example_repository(Path(tmp) / "models")
        config = Path(tmp) / "gateway.json"  # JSON is YAML
        config.write_text(json.dumps(args.settings))
        for batching in args.batching:
            label = "gateway" if batching == "auto" else f"gateway, batching {batching}"
            gateway = GatewayProcess(repo, "--workers", str(args.workers), "--batching", batching).wait_ready(
                lines=args.workers
            )
            try:
                results[label] = measure(label, gateway.url, args)
            finally:
                gateway.terminate()

    mode = "streaming" if args.streaming else "unary"
    print(f"\nmlp, 1-row {mode} requests, perf_analyzer, medians of {args.repeats} run(s)\n")
    print("| server | concurrency | infer/s | p50 ms | p99 ms | × bare |")
    print("|---|---|---|---|---|---|")
    bare = {r["concurrency"]: r for r in results["bare grpc.aio (d)"]}
    for name, rows in results.items():
        for r in rows:
            base = bare[r["concurrency"]]["throughput_infer_s"]
            ratio = r["throughput_infer_s"] / base if r["throughput_infer_s"] and base else None
            cells = [
                f"{r[k]:,.1f}" if r[k] is not None else "—"
                for k in ("throughput_infer_s", "p50_ms", "p99_ms")
            ]
            print(
                f"| {name} | {r['concurrency']} | {' | '.join(cells)} | {f'{ratio:.2f}' if ratio else '—'} |"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
