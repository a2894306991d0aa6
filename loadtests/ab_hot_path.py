"""Where a unary request's time goes: the same gateway with parts of its hot path replaced.

    python loadtests/ab_hot_path.py [--concurrency 32] [--calls 8000] [--repeats 2]

Serves the `mlp` of the example repository in five variants, one after the other on a free
loopback port, each driven by the same grpc.aio load generator (modelgate's stubs, uvloop,
1 x 32 FP32 raw requests, --concurrency in flight):
  bare      loadtests/bare_server.py: precomputed response bytes, the transport's ceiling
  canned    the gateway's server and servicer, but DataPlane.infer returns a prebuilt response
  no-ort    the whole data plane (lookup, decode, validate, encode, counters), backend faked
  real      the gateway with ONNX Runtime inline, batching off
  batched   the gateway as the example config serves it (batching on, 500 us delay)
Prints requests/s per variant (median over --repeats) and each one's ratio to bare.
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

VARIANT = r"""
import asyncio, sys
from pathlib import Path
import numpy as np
from gateway._proto import inference_pb2 as pb
from gateway.server import Gateway, _loop_factory
from gateway.settings import load_settings

mode, repo = sys.argv[1], Path(sys.argv[2])

async def main():
    batching = "on" if mode == "batched" else "off"
    settings = load_settings(overrides={"model_repository": repo, "grpc_port": 0, "metrics_port": -1,
                                        "batching": {"mode": batching}})
    gateway = Gateway(settings)
    await gateway.start()
    await gateway.load()
    request = pb.ModelInferRequest(model_name="mlp")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 32])
    request.raw_input_contents.append(np.ones((1, 32), np.float32).tobytes())
    if mode == "canned":
        canned = await gateway.dataplane.infer(request)
        async def infer(r, deadline=None):
            return canned
        gateway.dataplane.infer = infer
    elif mode == "no-ort":
        served = gateway.registry.get("mlp")
        out = {"y": np.ones((1, 8), np.float32)}
        async def fake(inputs, outputs, deadline=None):
            return out
        served.backend.infer = fake
    print(f"port {gateway.port}", flush=True)
    await asyncio.sleep(120)  # bounded: the parent stops it sooner
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


def measure(url: str, args: argparse.Namespace) -> float:
    import uvloop

    return uvloop.run(drive(url, args.concurrency, args.calls))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--calls", type=int, default=8000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    results: dict[str, list[float]] = {name: [] for name in ("bare", "canned", "no-ort", "real", "batched")}
    with tempfile.TemporaryDirectory() as tmp:
        from gateway.examples import example_repository

        repo = example_repository(Path(tmp))
        for _ in range(args.repeats):
            proc, port = start_bare_server_subprocess()
            try:
                results["bare"].append(measure(f"127.0.0.1:{port}", args))
            finally:
                stop_bare_server(proc)
            for mode in ("canned", "no-ort", "real", "batched"):
                child = subprocess.Popen(
                    [sys.executable, "-c", VARIANT, mode, str(repo)],
                    cwd=ROOT,
                    stdout=subprocess.PIPE,
                    text=True,
                )
                try:
                    assert child.stdout is not None
                    line = child.stdout.readline()
                    results[mode].append(measure(f"127.0.0.1:{int(line.split()[1])}", args))
                finally:
                    child.terminate()
                    child.wait(10)
                    if child.stdout is not None:
                        child.stdout.close()
    bare = statistics.median(results["bare"])
    print(f"\nmlp, 1-row unary, {args.concurrency} in flight, medians of {args.repeats}\n")
    print("| variant | requests/s | × bare |\n|---|---|---|")
    for name, values in results.items():
        value = statistics.median(values)
        print(f"| {name} | {value:,.0f} | {value / bare:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
