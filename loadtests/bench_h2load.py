"""Unary ModelInfer throughput under a light load generator: h2load (nghttp2's HTTP/2 benchmark,
written in C) against the gateway's transports and a real Triton, side by side in one run.

    python loadtests/bench_h2load.py [--requests 20000] [--connections 4] [--streams 16]
                                     [--rounds 3] [--models small,wide] [--servers a,p,g,c]

perf_analyzer (bench_batching.py) spends about as much CPU per request as the servers it drives,
and on a 2-core machine it shares with them that compresses every ratio. h2load spends a few µs
a request, so the servers' own costs decide. It sends one prepared gRPC message (a 1-row `x` of
the model, length-prefixed) on `--connections` connections with `--streams` calls in flight on
each (64 in flight by default), to each server in turn, `--rounds` interleaved rounds; medians.

h2load counts an HTTP 200 as success, and gRPC carries its errors in trailers of a 200 response,
so each run is checked: before the load, one answer from each server is compared with ONNX
Runtime on the same input; after it, the server's ModelStatistics must have counted exactly as
many successful inferences as h2load completed requests (else the row says how many failed).

Servers (as in bench_batching.py, which starts them):
  (a) the gateway, native transport, the batch path; batching on (max batch 64, 500 µs)
  (p) the same with `native_batch: false`: the drop-in server's one task per call
  (g) the gateway on the grpcio transport
  (z) (a) with max_queue_delay_us 0 (batches of what has arrived)
  (r) (a) at an earlier commit, --baseline REV (a before/after A/B in one run)
  (q) (p) at that earlier commit
  (h) (g) at that earlier commit
  (c) Triton 2.51 (Python backend running the same ONNX file with ONNX Runtime, dynamic batching
      max 64, 500 µs)
  (y) (c) with no queue delay (max_queue_delay_microseconds 0, as (z))
and the floors of the native front (harness/bare_native.py, no gateway):
  (n) a bare NativeGrpcFront loop answering precomputed bytes
  (o) a bare loop running each recv_batch's rows in one ONNX Runtime call
Per row also the server's CPU per request (its process group's CPU time over the run).
Writes loadtests/results/bench_h2load.json.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import tritonclient.grpc as grpcclient
from bench_batching import MODELS, SERVERS, start_server

from gateway._proto import inference_pb2 as pb
from gateway.examples import mlp
from harness.bare_native import BareNative
from harness.baseline import checkout
from harness.procfs import group_cpu_s

ROOT = Path(__file__).resolve().parent.parent

METHOD = "/inference.GRPCInferenceService/ModelInfer"
FLOORS = {
    "n": "bare native front, canned answers (n)",
    "o": "bare native front, one ORT call per recv_batch (o)",
}
LABELS = {**SERVERS, **FLOORS}


class _Floor:
    def __init__(self, bare: BareNative) -> None:
        self.url = bare.address
        self.pgid = bare.pid


@contextmanager
def start(key: str, name: str, onnx_file: Path, tmp: Path, args: argparse.Namespace) -> Iterator[Any]:
    """A server of bench_batching.py, or one of the floors (harness/bare_native.py)."""
    if key not in FLOORS:
        with start_server(key, name, MODELS[name], onnx_file, tmp, args) as (server, _triton):
            yield server
        return
    dims = MODELS[name]
    mode = "canned" if key == "n" else "ort"
    with BareNative(mode, str(onnx_file), name, dims[0], dims[-1]) as bare:
        yield _Floor(bare)


RESULTS = ROOT / "loadtests" / "results"


def log(message: str) -> None:
    print(f"bench_h2load: {message}", file=sys.stderr, flush=True)


def body(name: str, x: np.ndarray) -> bytes:
    """The gRPC message h2load sends: uncompressed flag, big-endian length, ModelInferRequest."""
    request = pb.ModelInferRequest(model_name=name)
    request.inputs.add(name="x", datatype="FP32", shape=list(x.shape))
    request.raw_input_contents.append(x.tobytes())
    data = request.SerializeToString()
    return b"\0" + struct.pack(">I", len(data)) + data


def successes(url: str, name: str) -> int:
    with grpcclient.InferenceServerClient(url) as client:
        stats = client.get_inference_statistics(name, as_json=True)
    return sum(int(s["inference_stats"]["success"].get("count", 0)) for s in stats.get("model_stats", []))


def check_answer(url: str, name: str, x: np.ndarray, session: ort.InferenceSession) -> None:
    with grpcclient.InferenceServerClient(url) as client:
        given = grpcclient.InferInput("x", list(x.shape), "FP32")
        given.set_data_from_numpy(x)
        got = client.infer(name, [given]).as_numpy("y")
    expected = session.run(None, {"x": x})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def h2load(url: str, payload: Path, args: argparse.Namespace) -> dict[str, float]:
    cmd = [
        "h2load",
        "-n", str(args.requests),
        "-c", str(args.connections),
        "-m", str(args.streams),
        "-t", "1",
        "-d", str(payload),
        "-H", "content-type: application/grpc",
        "-H", "te: trailers",
        f"http://{url}{METHOD}",
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True).stdout
    finished = re.search(r"finished in ([\d.]+)(ms|s), ([\d.]+) req/s", out)
    done = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded", out)
    mean = re.search(r"time for request:\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)", out)
    if not (finished and done and mean):
        raise RuntimeError(f"unexpected h2load output:\n{out}")
    unit = {"us": 1e-3, "ms": 1.0, "s": 1e3}[mean.group(2)]
    return {
        "seconds": float(finished.group(1)) / (1e3 if finished.group(2) == "ms" else 1),
        "req_s": float(finished.group(3)),
        "succeeded": int(done.group(1)),
        "mean_ms": float(mean.group(1)) * unit,
    }


def run_model(name: str, tmp: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    dims = MODELS[name]
    onnx_file = tmp / f"{name}.onnx"
    onnx_file.write_bytes(mlp(dims=dims, seed=1))
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(7).standard_normal((1, dims[0])).astype(np.float32)
    payload = tmp / f"{name}.grpc"
    payload.write_bytes(body(name, x))
    rows: list[dict[str, Any]] = []
    with ExitStack() as stack:
        servers = {}
        for key in args.servers:
            log(f"{name}: starting {LABELS[key]}")
            server = stack.enter_context(start(key, name, onnx_file, tmp / name, args))
            if key != "n":  # canned answers are zeros
                check_answer(server.url, name, x, session)
            h2load(server.url, payload, argparse.Namespace(**{**vars(args), "requests": 2000}))  # warm-up
            servers[key] = server
        for round_ in range(args.rounds):
            for key, server in servers.items():
                before, cpu0 = successes(server.url, name), group_cpu_s(server.pgid)
                result = h2load(server.url, payload, args)
                cpu = group_cpu_s(server.pgid) - cpu0
                counted = successes(server.url, name) - before
                row = {"model": name, "server": key, "round": round_, **result, "counted": counted}
                row["cpu_us_per_request"] = cpu / max(counted, 1) * 1e6
                row["ok"] = counted == result["succeeded"] == args.requests
                rows.append(row)
                log(
                    f"{name} {key} round {round_}: {result['req_s']:,.0f} req/s, "
                    f"{row['cpu_us_per_request']:.0f} µs CPU/request"
                    + ("" if row["ok"] else f", NOT OK: {counted} counted of {args.requests}")
                )
    return rows


def summary(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    out = []
    for name in args.models:
        mine = [r for r in rows if r["model"] == name]
        med = {
            key: {
                field: statistics.median(r[field] for r in mine if r["server"] == key)
                for field in ("req_s", "mean_ms", "cpu_us_per_request")
            }
            for key in args.servers
        }
        bad = sum(1 for r in mine if not r["ok"])
        out += [
            f"\n{name} {'x'.join(map(str, MODELS[name]))}, 1-row unary ModelInfer, h2load "
            f"{args.connections} connections x {args.streams} streams "
            f"({args.connections * args.streams} in flight), {args.requests:,} requests a run, "
            f"medians of {args.rounds} interleaved rounds; runs failing the count check: {bad}\n",
            "| server | req/s | × Triton | mean ms | server CPU µs/request | × Triton CPU |",
            "|---|---|---|---|---|---|",
        ]
        triton = med.get("c")
        for key, m in med.items():
            ratio = f"{m['req_s'] / triton['req_s']:.2f}" if triton else "—"
            cpu_ratio = f"{m['cpu_us_per_request'] / triton['cpu_us_per_request']:.2f}" if triton else "—"
            out.append(
                f"| {LABELS[key]} | {m['req_s']:,.0f} | {ratio} | {m['mean_ms']:.2f} | "
                f"{m['cpu_us_per_request']:.0f} | {cpu_ratio} |"
            )
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--streams", type=int, default=16, help="calls in flight per connection")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", type=lambda s: s.split(","), default=["small"])
    parser.add_argument("--servers", type=lambda s: s.split(","), default=["a", "p", "g", "c"])
    parser.add_argument("--triton-venv", default=None)
    parser.add_argument("--baseline", metavar="REV", default=None, help="what servers (r) and (q) run")
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_h2load.json")
    args = parser.parse_args()
    args.gateway_intra_op_threads = None  # what start_server reads
    args.time_budget_s = 1800
    if shutil.which("h2load") is None:
        print("bench_h2load: needs h2load (apt-get install nghttp2-client)", file=sys.stderr)
        return 2
    rows: list[dict[str, Any]] = []
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench_h2load_") as tmp, ExitStack() as stack:
        args.baseline_tree = stack.enter_context(checkout(args.baseline)) if args.baseline else None
        for name in args.models:
            rows += run_model(name, Path(tmp), args)
    text = summary(rows, args)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows, "seconds": time.monotonic() - began}, indent=1))
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
