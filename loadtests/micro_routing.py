"""What routing costs per request, in process: the decision alone, and DataPlane.infer with and
without a traffic policy, side by side in one run.

    python loadtests/micro_routing.py [--decisions 200000] [--calls 20000] [--rounds 5]
                                      [--concurrency 64] [--backend fake|ort]

1. One routing decision (`Router.choose`), in a tight loop: the default route (no policy), a
   weighted draw over two versions, a sticky key over two versions, a pin. Then the other
   pieces a request gained: a shadow comparison, the route response parameters, parsing the
   request body in the servicer rather than in the transport.
2. DataPlane.infer on the example repository's `mlp` (1 x 32 FP32, batching off), in
   interleaved rounds of --calls requests each, medians over --rounds, for the variants
       none       no traffic section: today's default route
       split      traffic 90/10 with a sticky metadata key, half the requests carrying a key
       shadow10   traffic 100% to v1, 10% of requests mirrored to v2 and compared
   CPU µs per request of the whole process (shadow copies included) and the ratio to `none`.
   --backend fake answers from a prebuilt array (the gateway's Python alone); ort runs the model.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import uvloop

from gateway._proto import inference_pb2 as pb
from gateway.examples import example_repository
from gateway.routing import NO_POLICY, Router, TrafficPolicy
from gateway.server import Gateway
from harness.bench import drive, table
from harness.inprocess import in_process_gateway, infer_request
from harness.stats import interleaved_async, median

VARIANTS: dict[str, dict[str, Any]] = {
    "none": {},
    "split": {"traffic": {"1": 90, "2": 10}, "sticky": {"key": "x-user-id"}},
    "shadow10": {"traffic": {"1": 100}, "shadow": {"2": 0.1}},
}


def decisions(n: int) -> None:
    served = {"1": "v1", "2": "v2"}
    cases = {
        "default (no policy)": (Router(NO_POLICY, served, default="2"), None),
        "weighted, 2 versions": (Router(TrafficPolicy(weights={"1": 90, "2": 10}), served), None),
        "sticky, 2 versions": (
            Router(TrafficPolicy(weights={"1": 90, "2": 10}, sticky_metadata="k"), served),
            "user-123456",
        ),
    }
    print(f"\nOne routing decision, {n:,} in a tight loop\n")
    print("| decision | ns |")
    print("|---|---|")
    for label, (router, key) in cases.items():
        choose = router.choose
        began = time.perf_counter_ns()
        for _ in range(n):
            choose(key)
        print(f"| {label} | {(time.perf_counter_ns() - began) / n:,.0f} |")
    router = cases["weighted, 2 versions"][0]
    began = time.perf_counter_ns()
    for _ in range(n):
        router.pinned("2")
    print(f"| pinned | {(time.perf_counter_ns() - began) / n:,.0f} |")


def pieces(n: int) -> None:
    """The per-request pieces routing and shadows added, each alone."""
    from gateway.routing import compare
    from gateway.tensors import Signature, TensorSpec, raw_parts
    from gateway.wire import input_parts, parse_request, read_request

    a = {"y": np.random.default_rng(1).random((1, 8), np.float32)}
    b = {"y": np.random.default_rng(2).random((1, 8), np.float32)}
    body = infer_request().SerializeToString()
    signature = Signature((TensorSpec("x", "FP32", (-1, 32)),), (TensorSpec("y", "FP32", (-1, 8)),), 64)

    def response(params: bool) -> None:
        r = pb.ModelInferResponse(model_name="mlp", model_version="1", id="")
        if params:
            r.parameters["route"].string_param = "weighted"
            r.parameters["policy_revision"].int64_param = 3

    cases = {
        "shadow comparison, 1 x 8 FP32 output, disagreeing": lambda: compare(a, b, ["y"], 1e-4, 1e-3),
        "response without route parameters": lambda: response(False),
        "response with route and policy_revision": lambda: response(True),
        "request parse: the transport's FromString": lambda: pb.ModelInferRequest.FromString(body),
        "request parse: parse_request (raw bytes, INVALID_ARGUMENT on garbage)": lambda: parse_request(body),
        "batch path, before: parse_request, then raw_parts": lambda: raw_parts(
            *input_parts(parse_request(body)), signature
        ),
        "batch path: read_request (off the wire), then raw_parts": lambda: raw_parts(
            *input_parts(read_request(body)), signature
        ),
    }
    print(f"\nPieces, {n:,} each in a tight loop\n")
    print("| piece | ns |")
    print("|---|---|")
    for label, call in cases.items():
        began = time.perf_counter_ns()
        for _ in range(n):
            call()
        print(f"| {label} | {(time.perf_counter_ns() - began) / n:,.0f} |")


async def build(repo: Path, variant: str, backend: str) -> Gateway:
    models = {"mlp": VARIANTS[variant]} if VARIANTS[variant] else {}
    return await in_process_gateway(repo, fake=backend == "fake", batching={"mode": "off"}, models=models)


async def one_round(gateway: Gateway, variant: str, calls: int, concurrency: int) -> float:
    request = infer_request()
    keyed = [{"x-user-id": f"user-{i}"} if variant == "split" and i % 2 else None for i in range(1024)]
    began = time.process_time()
    await drive(lambda left: gateway.dataplane.infer(request, None, keyed[left % 1024]), calls, concurrency)
    await gateway.dataplane.mirror.settle()  # the last shadow copies count in the measurement
    return (time.process_time() - began) / calls * 1e6


async def dataplane(repo: Path, args: argparse.Namespace) -> None:
    gateways = {v: await build(repo, v, args.backend) for v in VARIANTS}
    for variant, gateway in gateways.items():  # warm-up
        await one_round(gateway, variant, args.calls // 4, args.concurrency)
    cpu = await interleaved_async(args.rounds, {
        v: lambda v=v, g=g: one_round(g, v, args.calls, args.concurrency) for v, g in gateways.items()
    })  # fmt: skip
    base = median(cpu["none"]) or 0.0
    print(
        f"\nDataPlane.infer, mlp 1 x 32, batching off, {args.backend} backend, {args.concurrency} in flight, "
        f"medians of {args.rounds} interleaved rounds of {args.calls:,} calls\n"
    )
    rows = []
    for variant, values in cpu.items():
        m = median(values) or 0.0
        rows.append([variant, f"{m:.1f}", f"{m / base:.3f}", f"{m - base:+.1f}"])
    print(table(["variant", "CPU µs/request", "× none", "+ µs"], rows))
    for gateway in gateways.values():
        await gateway.dataplane.close()
        await gateway.registry.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=200_000)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--backend", choices=("fake", "ort"), default="fake")
    args = parser.parse_args()
    decisions(args.decisions)
    pieces(args.decisions // 4)
    with tempfile.TemporaryDirectory() as tmp:
        uvloop.run(dataplane(example_repository(Path(tmp)), args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
