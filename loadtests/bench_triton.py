"""The gateway in front of a real Triton, against Triton alone and the gateway in-process.

    python loadtests/bench_triton.py [--concurrency 1,8,64] [--measurement-ms 3000] [--rounds 3]

Same model (the example `mlp`, 32 -> 256 -> 256 -> 8), same load generator (perf_analyzer,
1-row unary requests), one run, on free loopback ports:
  triton            perf_analyzer straight at Triton (Python backend running the ONNX file
                    with ONNX Runtime, dynamic batching 500 µs, max batch 64)
  bare proxy->triton  harness/bare_proxy.py in front of that Triton: a grpc.aio server that
                    forwards raw bytes with a grpc.aio client, the floor for any such hop
  gateway->triton   the gateway serving a `backend: triton` version pointing at that Triton
                    (gateway batching on, 500 µs, so one remote call carries many requests)
  gateway->triton (no batching)  the same, every request its own remote call
  gateway->triton (grpcio)  gateway->triton on the grpcio transport (the same server as the
                    proxy's: what the native front's hand-offs cost or save at this hop)
  gateway in-proc   the gateway serving the same ONNX file with ONNX Runtime (batching on)
All six are up at once and measured in turn, `--rounds` interleaved rounds (a slow moment of
this 2-core machine then lands on every path, not on one); each figure is the median over the
rounds. Reports infer/s, p50 and p99, the hop's added p50 at the lowest concurrency (per round
and its median) and the gateway's hop as a ratio of the bare proxy's (of their medians, and
the median of each round's ratio), the ratio of gateway->triton to gateway in-process at the
highest concurrency, Triton calls per client request (from Triton's own statistics), and
where a gateway's hop goes at the lowest concurrency (`where_the_hop_goes`: Triton's own time,
the gateway's remote call, the gateway's own time around it, from both servers' statistics).
Results (every round's rows) also go to loadtests/results/bench_triton.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any

import tritonclient.grpc as grpcclient

from gateway.examples import mlp, write_config, write_version
from harness.bare_proxy import BareProxy
from harness.bench import RESULTS, cell, ints, perf_rows, table, write_results
from harness.gateway import GatewayProcess
from harness.stats import interleaved, median, median_rows, ratio
from harness.triton import TritonServer, make_onnx_python_model

THROUGH = ("gateway->triton", "gateway->triton (no batching)", "gateway->triton (grpcio)")
BREAKDOWN = ("triton_own_us", "remote_call_us", "gateway_own_us")
BATCHING = "max_batch_size: 64\ndynamic_batching { max_queue_delay_microseconds: 500 }\n"


def triton_requests(url: str) -> int:
    with grpcclient.InferenceServerClient(url) as c:
        return int(c.get_inference_statistics("mlp").model_stats[0].inference_stats.success.count)


def server_times(url: str) -> tuple[int, int, int]:
    """A server's ModelStatistics for `mlp`: successful requests, their total ns, and the ns of
    their compute_infer (for a gateway serving from Triton: the remote calls' wall time)."""
    with grpcclient.InferenceServerClient(url) as c:
        s = c.get_inference_statistics("mlp").model_stats[0].inference_stats
        return int(s.success.count), int(s.success.ns), int(s.compute_infer.ns)


def where_the_hop_goes(
    before: dict[str, tuple[int, int, int]], after: dict[str, tuple[int, int, int]]
) -> dict[str, float]:
    """Per request over one perf_analyzer run through a gateway to Triton, in µs: Triton's own
    time (its success ns), the gateway's remote calls (its compute_infer, so the client's round
    trip is that minus Triton's own), and the gateway's time outside them (success minus
    compute_infer: reading, routing, queueing, answering)."""
    (n, total, remote), (tn, t_total, _) = (
        [b - a for a, b in zip(before[k], after[k], strict=True)] for k in ("gateway", "triton")
    )
    if not n or not tn:
        return {}
    return {
        "triton_own_us": t_total / tn / 1e3,
        "remote_call_us": remote / n / 1e3,
        "gateway_own_us": (total - remote) / n / 1e3,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", default="1,8,64", type=ints)
    parser.add_argument("--measurement-ms", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians")
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_triton.json")
    args = parser.parse_args()

    def measure(label: str, url: str, triton_url: str | None, through: bool) -> list[dict[str, Any]]:
        """One round of a path; `through`: a gateway in front of Triton (where its hop goes)."""
        count = (lambda: triton_requests(triton_url)) if triton_url else None
        rows = []
        for c in args.concurrency:
            before = {"gateway": server_times(url), "triton": server_times(triton_url)} if through else {}
            [row] = perf_rows(label, url, [c], count=count, measurement_ms=args.measurement_ms)
            if through and triton_url:
                after = {"gateway": server_times(url), "triton": server_times(triton_url)}
                row.update(where_the_hop_goes(before, after))
            if triton_url and row.get("request_count"):
                # perf_analyzer's request_count covers the measured windows only; its warm-up and
                # extra trials also reach Triton, so this overstates calls per request (upper bound).
                row["triton_calls_per_request_max"] = row["counted"] / row["request_count"]
            rows.append(row)
        return rows

    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        root = Path(tmp)
        onnx = root / "mlp.onnx"
        onnx.write_bytes(mlp(seed=1))
        make_onnx_python_model(root / "triton", "mlp", onnx, "x", 32, "y", 8, max_queue_delay_us=500)
        local = root / "local"
        write_config(local, "mlp", BATCHING)
        write_version(local, "mlp", 1, onnx.read_bytes())
        empty = root / "empty"
        empty.mkdir()
        triton = stack.enter_context(TritonServer(root / "triton", log_path=root / "triton.log"))
        upstream = triton.grpc_url
        paths = [("triton", upstream, upstream, False)]
        proxy = stack.enter_context(BareProxy(upstream))
        paths.append(("bare proxy->triton", proxy.address, upstream, False))
        gateways = (
            ("gateway->triton", "on", "native"),
            ("gateway->triton (no batching)", "off", "native"),
            ("gateway->triton (grpcio)", "on", "grpcio"),
        )
        for label, batching, transport in gateways:
            config = root / f"{batching}.json"
            version = {"backend": "triton", "endpoints": [upstream]}
            settings = {
                "batching": {"mode": batching, "max_queue_delay_us": 500},
                "models": {"mlp": {"versions": {"1": version}}},
            }
            config.write_text(json.dumps(settings))
            flags = ("--config", str(config), "--transport", transport)
            gateway = stack.enter_context(GatewayProcess(empty, *flags))
            paths.append((label, gateway.url, upstream, True))
        gateway = stack.enter_context(GatewayProcess(local))
        paths.append(("gateway in-proc", gateway.url, None, False))
        rounds = interleaved(
            args.rounds,
            {label: partial(measure, label, url, counted, through) for label, url, counted, through in paths},
        )
    keys = ("throughput_infer_s", "p50_ms", "p99_ms", "triton_calls_per_request_max", *BREAKDOWN)
    results = {label: median_rows(runs, keys) for label, runs in rounds.items()}

    head = ["path", "concurrency", "infer/s", "p50 ms", "p99 ms", "Triton calls / request (≤)"]
    keys = ("throughput_infer_s", "p50_ms", "p99_ms")
    print(f"\nmedians of {args.rounds} interleaved rounds")
    print("\n" + table(head, (
        [label, r["concurrency"], *(cell(r.get(k), ",.2f") for k in keys),
         "" if (calls := r.get("triton_calls_per_request_max")) is None else f"{calls:.2f}"]
        for label, rows in results.items() for r in rows
    )))  # fmt: skip

    def row(label: str, concurrency: int, runs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        return next(r for r in (runs or results[label]) if r["concurrency"] == concurrency)

    low, high = min(args.concurrency), max(args.concurrency)
    try:
        hops: dict[str, list[float]] = {}
        for label in ("bare proxy->triton", *THROUGH):
            hops[label] = [
                (row(label, low, mine)["p50_ms"] - row("triton", low, alone)["p50_ms"]) * 1000
                for mine, alone in zip(rounds[label], rounds["triton"], strict=True)
            ]
            each = ", ".join(f"{h:.0f}" for h in hops[label])
            print(
                f"\n{label}: hop added to p50 at concurrency {low}: "
                f"{median(hops[label]):.0f} µs (rounds: {each})"
            )
        for label in THROUGH:
            ratios = [ratio(g, p) for g, p in zip(hops[label], hops["bare proxy->triton"], strict=True)]
            each = ", ".join(f"{r:.2f}" for r in ratios if r is not None)
            medians = ratio(median(hops[label]), median(hops["bare proxy->triton"]))
            print(
                f"{label} hop / bare proxy hop: {medians:.2f}× the medians, "
                f"{median(ratios):.2f}× the median of each round's (rounds: {each}); target ≤ 1.1"
            )
        for label in THROUGH:
            low_row = row(label, low)
            if low_row.get("remote_call_us") is not None:
                own, remote, gateway = (low_row[k] for k in BREAKDOWN)
                print(
                    f"{label} at concurrency {low}, a request's means (medians over rounds): Triton's own "
                    f"{own:.0f} µs; the gateway's remote call {remote:.0f} µs (so the client's round trip "
                    f"adds {remote - own:.0f}); the gateway's own time around it {gateway:.0f} µs"
                )
        remote = ratio(
            row("gateway->triton", high)["throughput_infer_s"],
            row("gateway in-proc", high)["throughput_infer_s"],
        )
        print(f"gateway->triton / gateway in-process at concurrency {high}: {remote:.2f}× (target ≥ 0.8)")
    except (TypeError, KeyError, StopIteration) as exc:
        print(f"\n(ratios unavailable: {exc!r})")
    write_results(args.out, {"medians": results, "rounds": rounds})
    return 0


if __name__ == "__main__":
    sys.exit(main())
