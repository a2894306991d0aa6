"""Where a unary request's time goes: the same gateway with parts of its hot path replaced.

    python loadtests/ab_hot_path.py [--concurrency 32] [--calls 8000] [--repeats 2]
        [--variants canned,no-ort,real,batched]

Serves the `mlp` of the example repository in variants (harness/variants.py), one after the
other on a free loopback port, each driven by the same grpc.aio load generator (modelgate's
stubs, uvloop, 1 x 32 FP32 raw requests, --concurrency in flight). `bare` always runs first; the others are:
  canned-raw      the gateway's gRPC server, ModelInfer answering prebuilt bytes (as bare does)
  canned          the gateway's server and servicer; DataPlane.infer returns a prebuilt message
  no-ort          the whole data plane (lookup, decode, validate, encode, counters), backend faked
  fake-hold-gil   no-ort, the fake spending 27 µs (ORT's 1-row time alone) holding the GIL
  fake-free-gil   the same 27 µs in a call that releases the GIL (as ONNX Runtime does)
  real            the gateway with ONNX Runtime inline, batching off; also reports the thread
                  CPU each session.run took inside the server
  batched-no-ort  batching on as the example config says (500 µs), backend faked
  batched         batching on, real ONNX Runtime
A variant may carry settings overrides as JSON after a '+', e.g.
  'batched+{"models": {"mlp": {"batching": {"max_queue_delay_us": 5000}}}}'
Prints, per variant (medians over --repeats): requests/s and its ratio to bare; the server's CPU
per request (user + system from /proc), split into the event-loop thread and all other threads;
rows per backend call. The load generator shares the two cores, so CPU per request is the
steadier figure, and the event-loop thread's share is what limits throughput.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import grpc
import uvloop

from gateway._proto import inference_pb2 as pb
from gateway._proto import inference_pb2_grpc as pb_grpc
from gateway.examples import example_repository
from harness._child import ChildServer
from harness.bare_server import BareServer
from harness.bench import drive, table
from harness.inprocess import infer_request
from harness.procfs import thread_cpu_s
from harness.stats import interleaved, median

WARM_UP = 200


async def load(url: str, concurrency: int, calls: int) -> float:
    """requests/s of `calls` ModelInfer calls after WARM_UP, `concurrency` in flight."""
    async with grpc.aio.insecure_channel(url) as channel:
        stub, request = pb_grpc.GRPCInferenceServiceStub(channel), infer_request()
        for _ in range(WARM_UP):
            await stub.ModelInfer(request)
        return calls / await drive(lambda _: stub.ModelInfer(request), calls, concurrency)


def rows_per_call(url: str) -> float | None:
    with grpc.insecure_channel(url) as channel:
        stats = pb_grpc.GRPCInferenceServiceStub(channel).ModelStatistics(
            pb.ModelStatisticsRequest(name="mlp"), timeout=10
        )
    served = [m for m in stats.model_stats if m.execution_count]
    return served[0].inference_count / served[0].execution_count if served else None


def measure(server: ChildServer, args: argparse.Namespace) -> dict[str, float | None]:
    """requests/s and the server's CPU µs per request (event-loop thread, other threads)."""
    before = thread_cpu_s(server.pid)
    rate = uvloop.run(load(server.address, args.concurrency, args.calls))
    spent = {tid: cpu - before.get(tid, 0.0) for tid, cpu in thread_cpu_s(server.pid).items()}
    calls = args.calls + WARM_UP  # the warm-up calls count too
    loop_thread = spent.pop(str(server.pid), 0.0)  # the main thread runs the event loop
    return {"rate": rate, "loop_us": loop_thread * 1e6 / calls, "other_us": sum(spent.values()) * 1e6 / calls}


def run_bare(args: argparse.Namespace) -> dict[str, float | None]:
    with BareServer() as bare:
        return {**measure(bare, args), "rows_per_call": None, "ort_us": None}


def run_variant(spec: str, repo: Path, args: argparse.Namespace) -> dict[str, float | None]:
    mode, _, overrides = spec.partition("+")
    with ChildServer("harness.variants", mode, str(repo), *([overrides] if overrides else [])) as server:
        result = measure(server, args)
        result["rows_per_call"] = None if mode.startswith("canned") else rows_per_call(server.address)
        server.stop()
    tail = [line.split()[1] for line in server.lines if line.startswith("ort_us")]
    return {**result, "ort_us": float(tail[0]) if tail else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--calls", type=int, default=8000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--variants", default="canned-raw,canned,no-ort,real,batched-no-ort,batched")
    args = parser.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    with tempfile.TemporaryDirectory() as tmp:
        repo = example_repository(Path(tmp))
        runs = {"bare": lambda: run_bare(args)}
        runs |= {spec: lambda spec=spec: run_variant(spec, repo, args) for spec in variants}
        results = interleaved(args.repeats, runs)

    def m(name: str, key: str) -> float | None:
        return median(r[key] for r in results[name])

    bare, bare_loop = m("bare", "rate"), m("bare", "loop_us")
    assert bare and bare_loop
    print(f"\nmlp, 1-row unary, {args.concurrency} in flight, medians of {args.repeats}\n")
    head = ["variant", "requests/s", "× bare", "loop thread µs/request", "× bare", "other threads µs/request"]
    rows = []
    for name in results:
        rate, loop, other = m(name, "rate"), m(name, "loop_us"), m(name, "other_us")
        calls, ort = m(name, "rows_per_call"), m(name, "ort_us")
        assert rate and loop and other is not None
        cells = [
            f"{rate:,.0f}",
            f"{rate / bare:.2f}",
            f"{loop:.0f}",
            f"{loop / bare_loop:.2f}",
            f"{other:.0f}",
        ]
        cells += ["" if calls is None else f"{calls:.1f}", "" if ort is None else f"{ort:.0f}"]
        rows.append([name, *cells])
    print(table([*head, "rows/call", "ORT CPU µs/call"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
