"""The gateway in front of a real Triton, against Triton alone and the gateway in-process.

    python loadtests/bench_triton.py [--concurrency 1,8,64] [--measurement-ms 3000]

Same model (the example `mlp`, 32 -> 256 -> 256 -> 8), same load generator (perf_analyzer,
1-row unary requests), one run, one server set-up after the other on free loopback ports:
  triton            perf_analyzer straight at Triton (Python backend running the ONNX file
                    with ONNX Runtime, dynamic batching 500 µs, max batch 64)
  bare proxy->triton  loadtests/bare_proxy.py in front of that Triton: a grpc.aio server that
                    forwards raw bytes with a grpc.aio client, the floor for any such hop
  gateway->triton   the gateway serving a `backend: triton` version pointing at that Triton
                    (gateway batching on, 500 µs, so one remote call carries many requests)
  gateway->triton (no batching)  the same, every request its own remote call
  gateway in-proc   the gateway serving the same ONNX file with ONNX Runtime (batching on)
Reports infer/s, p50 and p99, the hop's added p50 at the lowest concurrency, the ratio of
gateway->triton to gateway in-process at the highest, and Triton calls per client request
(from Triton's own statistics). Results also go to loadtests/results/bench_triton.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "loadtests")]

import tritonclient.grpc as grpcclient  # noqa: E402
from bare_proxy import start_bare_proxy, stop_bare_proxy  # noqa: E402
from perf_analyzer import run_perf_analyzer  # noqa: E402

from gateway.examples import mlp, write_config, write_version  # noqa: E402
from tests.peers.gateway import GatewayProcess  # noqa: E402
from tests.peers.triton import TritonServer, make_onnx_python_model  # noqa: E402

BATCHING = "max_batch_size: 64\ndynamic_batching { max_queue_delay_microseconds: 500 }\n"


def triton_requests(url: str) -> int:
    with grpcclient.InferenceServerClient(url) as c:
        return int(c.get_inference_statistics("mlp").model_stats[0].inference_stats.success.count)


def measure(
    label: str, url: str, args: argparse.Namespace, triton_url: str | None = None
) -> list[dict[str, Any]]:
    rows = []
    for concurrency in args.concurrency:
        before = triton_requests(triton_url) if triton_url else 0
        [row] = run_perf_analyzer(
            url, "mlp", ["x:32"], [concurrency], measurement_ms=args.measurement_ms, label=label
        )
        if triton_url and row.get("request_count"):
            # perf_analyzer's request_count covers the measured windows only; its warm-up and
            # extra trials also reach Triton, so this overstates calls per request (upper bound).
            row["triton_calls_per_request_max"] = (triton_requests(triton_url) - before) / row[
                "request_count"
            ]
        rows.append(row)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", default="1,8,64", type=lambda s: [int(c) for c in s.split(",")])
    parser.add_argument("--measurement-ms", type=int, default=3000)
    parser.add_argument("--out", type=Path, default=ROOT / "loadtests" / "results" / "bench_triton.json")
    args = parser.parse_args()
    results: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        onnx = root / "mlp.onnx"
        onnx.write_bytes(mlp(seed=1))
        make_onnx_python_model(root / "triton", "mlp", onnx, "x", 32, "y", 8, max_queue_delay_us=500)
        local = root / "local"
        write_config(local, "mlp", BATCHING)
        write_version(local, "mlp", 1, onnx.read_bytes())
        empty = root / "empty"
        empty.mkdir()
        with TritonServer(root / "triton", log_path=root / "triton.log") as triton:
            results["triton"] = measure("triton", triton.grpc_url, args, triton.grpc_url)
            proxy, proxy_url = start_bare_proxy(triton.grpc_url)
            try:
                results["bare proxy->triton"] = measure(
                    "bare proxy->triton", proxy_url, args, triton.grpc_url
                )
            finally:
                stop_bare_proxy(proxy)
            for label, batching in (("gateway->triton", "on"), ("gateway->triton (no batching)", "off")):
                config = root / f"{batching}.json"
                version = {"backend": "triton", "endpoints": [triton.grpc_url]}
                settings = {
                    "batching": {"mode": batching, "max_queue_delay_us": 500},
                    "models": {"mlp": {"versions": {"1": version}}},
                }
                config.write_text(json.dumps(settings))
                gateway = GatewayProcess(empty, "--config", str(config)).wait_ready()
                try:
                    results[label] = measure(label, gateway.url, args, triton.grpc_url)
                finally:
                    gateway.terminate()
        gateway = GatewayProcess(local).wait_ready()
        try:
            results["gateway in-proc"] = measure("gateway in-proc", gateway.url, args)
        finally:
            gateway.terminate()

    print("\n| path | concurrency | infer/s | p50 ms | p99 ms | Triton calls / request (≤) |")
    print("|---|---|---|---|---|---|")
    for label, rows in results.items():
        for r in rows:
            calls = r.get("triton_calls_per_request_max")
            cells = [
                f"{r[k]:,.2f}" if r.get(k) is not None else "—"
                for k in ("throughput_infer_s", "p50_ms", "p99_ms")
            ]
            per = f"{calls:.2f}" if calls is not None else ""
            print(f"| {label} | {r['concurrency']} | {' | '.join(cells)} | {per} |")

    def row(label: str, concurrency: int) -> dict[str, Any]:
        return next(r for r in results[label] if r["concurrency"] == concurrency)

    low, high = min(args.concurrency), max(args.concurrency)
    try:
        for label in ("bare proxy->triton", "gateway->triton", "gateway->triton (no batching)"):
            hop = (row(label, low)["p50_ms"] - row("triton", low)["p50_ms"]) * 1000
            print(f"\n{label}: hop added to p50 at concurrency {low}: {hop:.0f} µs (target ≤ 300)")
        ratio = (
            row("gateway->triton", high)["throughput_infer_s"]
            / row("gateway in-proc", high)["throughput_infer_s"]
        )
        print(f"gateway->triton / gateway in-process at concurrency {high}: {ratio:.2f}× (target ≥ 0.8)")
    except (TypeError, KeyError, StopIteration) as exc:
        print(f"\n(ratios unavailable: {exc!r})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
