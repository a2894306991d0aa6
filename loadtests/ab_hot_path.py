"""Where a unary request's time goes: the same gateway with parts of its hot path replaced.

    python loadtests/ab_hot_path.py [--concurrency 32] [--calls 8000] [--repeats 2]
        [--variants canned,no-ort,real,batched]

Serves the `mlp` of the example repository in variants, one after the other on a free loopback
port, each driven by the same grpc.aio load generator (modelgate's stubs, uvloop, 1 x 32 FP32
raw requests, --concurrency in flight). `bare` always runs first; the others are:
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
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "loadtests")]

from bare_server import start_bare_server_subprocess, stop_bare_server  # noqa: E402
from procfs import thread_cpu_s  # noqa: E402

VARIANT = r"""
import asyncio, json, sys, time
from pathlib import Path
import numpy as np
from gateway._proto import inference_pb2 as pb
from gateway.server import Gateway, _loop_factory
from gateway.settings import load_settings
from tests.peers.stopping import until_stopped

mode, repo = sys.argv[1], Path(sys.argv[2])
extra = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
CANNED = b""

if mode == "canned-raw":  # register ModelInfer without a response serializer, as bare does
    import grpc
    from gateway.transport import inference as servicer_module
    _handler = grpc.unary_unary_rpc_method_handler
    def unary(behavior, request_deserializer=None, response_serializer=None):
        if behavior.__name__ == "ModelInfer":
            response_serializer = None
        return _handler(behavior, request_deserializer=request_deserializer,
                        response_serializer=response_serializer)
    grpc.unary_unary_rpc_method_handler = unary
    async def ModelInfer(self, request, context):
        return CANNED
    servicer_module.InferenceServicer.ModelInfer = ModelInfer

async def main():
    global CANNED
    batching = "on" if mode.startswith("batched") else "off"
    overrides = {"model_repository": repo, "grpc_port": 0, "metrics_port": -1,
                 "batching": {"mode": batching}, **extra}
    run_dir = Path(tempfile.mkdtemp(prefix="modelgate-run-"))
    gateway = Gateway(load_settings(overrides=overrides), run_dir=run_dir)
    await gateway.start()
    await gateway.load()
    served = gateway.registry.get("mlp")
    request = pb.ModelInferRequest(model_name="mlp")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 32])
    request.raw_input_contents.append(np.ones((1, 32), np.float32).tobytes())
    ort_cpu = [0, 0]
    if mode == "canned-raw":
        CANNED = (await gateway.dataplane.infer(request)).SerializeToString()
    elif mode == "canned":
        canned = await gateway.dataplane.infer(request)
        async def infer(r, deadline=None):
            return canned
        gateway.dataplane.infer = infer
    elif mode == "real":
        session = served.backend._session
        class Timed:  # thread CPU of each ONNX Runtime call, inside the loaded server
            def run(self, names, feed):
                began = time.thread_time_ns()
                try:
                    return session.run(names, feed)
                finally:
                    ort_cpu[0] += time.thread_time_ns() - began
                    ort_cpu[1] += 1
        served.backend._session = Timed()
    elif mode != "batched":
        import hashlib
        blob = bytes(6000)  # sha256 of 6 kB: about 27 µs here, without the GIL
        async def fake(inputs, outputs, deadline=None):
            if mode == "fake-hold-gil":
                end = time.perf_counter() + 27e-6
                while time.perf_counter() < end:
                    pass
            elif mode == "fake-free-gil":
                hashlib.sha256(blob).digest()
            return {"y": np.ones((len(inputs["x"]), 8), np.float32)}
        served.run = fake
        if served.batcher is not None:
            served.batcher._run = fake
    print(f"port {gateway.port}", flush=True)
    await until_stopped(300)  # the parent stops it sooner
    if ort_cpu[1]:
        print(f"ort_us {ort_cpu[0] / ort_cpu[1] / 1e3:.1f}", flush=True)
    await gateway.close(0)

with asyncio.Runner(loop_factory=_loop_factory()) as runner:
    runner.run(main())
"""


async def drive(url: str, concurrency: int, calls: int) -> float:
    import grpc
    import numpy as np

    from gateway._proto import inference_pb2 as pb
    from gateway._proto import inference_pb2_grpc as pb_grpc

    async with grpc.aio.insecure_channel(url) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        request = pb.ModelInferRequest(model_name="mlp")
        request.inputs.add(name="x", datatype="FP32", shape=[1, 32])
        request.raw_input_contents.append(np.ones((1, 32), np.float32).tobytes())
        for _ in range(200):
            await stub.ModelInfer(request)
        left = calls

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await stub.ModelInfer(request)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return calls / (time.perf_counter() - began)


def rows_per_call(url: str) -> float | None:
    import grpc

    from gateway._proto import inference_pb2 as pb
    from gateway._proto import inference_pb2_grpc as pb_grpc

    with grpc.insecure_channel(url) as channel:
        stats = pb_grpc.GRPCInferenceServiceStub(channel).ModelStatistics(
            pb.ModelStatisticsRequest(name="mlp"), timeout=10
        )
    served = [m for m in stats.model_stats if m.execution_count]
    return served[0].inference_count / served[0].execution_count if served else None


def measure(url: str, pid: int, args: argparse.Namespace) -> dict[str, float | None]:
    """requests/s and the server's CPU µs per request (event-loop thread, other threads)."""
    import uvloop

    before = thread_cpu_s(pid)
    rate = uvloop.run(drive(url, args.concurrency, args.calls))
    spent = {tid: cpu - before.get(tid, 0.0) for tid, cpu in thread_cpu_s(pid).items()}
    calls = args.calls + 200  # the warm-up calls count too
    loop_thread = spent.pop(str(pid), 0.0)  # the main thread runs the event loop
    return {
        "rate": rate,
        "loop_us": loop_thread * 1e6 / calls,
        "other_us": sum(spent.values()) * 1e6 / calls,
    }


def run_variant(spec: str, repo: Path, args: argparse.Namespace) -> dict[str, float | None]:
    mode, _, overrides = spec.partition("+")
    child = subprocess.Popen(
        [sys.executable, "-c", VARIANT, mode, str(repo), *([overrides] if overrides else [])],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    try:
        port = int(child.stdout.readline().split()[1])
        url = f"127.0.0.1:{port}"
        result = measure(url, child.pid, args)
        result["rows_per_call"] = None if mode.startswith("canned") else rows_per_call(url)
        child.terminate()
        tail = child.stdout.read()
        result["ort_us"] = float(tail.split()[1]) if tail.startswith("ort_us") else None
        return result
    finally:
        child.terminate()
        child.wait(10)
        child.stdout.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--calls", type=int, default=8000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--variants", default="canned-raw,canned,no-ort,real,batched-no-ort,batched")
    args = parser.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    results: dict[str, list[dict[str, float | None]]] = {name: [] for name in ("bare", *variants)}
    with tempfile.TemporaryDirectory() as tmp:
        from gateway.examples import example_repository

        repo = example_repository(Path(tmp))
        for _ in range(args.repeats):
            proc, port = start_bare_server_subprocess()
            try:
                row = measure(f"127.0.0.1:{port}", proc.pid, args)
                row["rows_per_call"] = row["ort_us"] = None
                results["bare"].append(row)
            finally:
                stop_bare_server(proc)
            for spec in variants:
                results[spec].append(run_variant(spec, repo, args))

    def median(name: str, key: str) -> float | None:
        values = [r[key] for r in results[name] if r[key] is not None]
        return statistics.median(values) if values else None

    bare, bare_loop = median("bare", "rate"), median("bare", "loop_us")
    assert bare and bare_loop
    print(f"\nmlp, 1-row unary, {args.concurrency} in flight, medians of {args.repeats}\n")
    print(
        "| variant | requests/s | × bare | loop thread µs/request | × bare | other threads µs/request "
        "| rows/call | ORT CPU µs/call |\n|---|---|---|---|---|---|---|---|"
    )
    for name in results:
        rate, loop, other = median(name, "rate"), median(name, "loop_us"), median(name, "other_us")
        rows, ort = median(name, "rows_per_call"), median(name, "ort_us")
        assert rate and loop and other is not None
        print(
            f"| {name} | {rate:,.0f} | {rate / bare:.2f} | {loop:.0f} | {loop / bare_loop:.2f} | {other:.0f} "
            f"| {'' if rows is None else f'{rows:.1f}'} | {'' if ort is None else f'{ort:.0f}'} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
