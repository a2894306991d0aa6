"""Cost accounting's price on the hot path, in process: its pieces one by one, then the
inference servicer's ModelInfer with ONNX Runtime, the backend calls measured or not.

    python loadtests/micro_cost.py [--calls 20000] [--concurrency 64] [--repeats 5]
                                   [--batching on|off]

Part 1 times each piece the hot path adds per backend call (timeit, ns per operation): the two
clock reads on each side of `session.run`, the `CallCost` and its context variable, the
counters' additions. Part 2 builds one Gateway (the example repository's `mlp`, ONNX Runtime
running it) and calls `InferenceServicer.ModelInfer` with a 1 x 32 FP32 request, --concurrency
at a time, until --calls are done, taking the process's CPU time per call, for three variants
interleaved over --repeats rounds (medians):

- `unmeasured`: the backend's measured run swapped for a plain `session.run` (no clock reads);
- `measured`: as shipped (every backend call measured, nobody asks);
- `asked`: as shipped, every request asking for its share (`cost: true`).
"""

from __future__ import annotations

import argparse
import sys
import time
import timeit
from pathlib import Path
from typing import Any

import numpy as np
from micro_tracing import build, measure, on_example, parser, print_medians

from gateway._proto import inference_pb2 as pb
from gateway.telemetry import VersionMetrics
from gateway.telemetry.cost import COST, CallCost
from gateway.transport import InferenceServicer


def pieces(number: int = 200_000) -> list[tuple[str, float]]:
    """ns per operation of what a backend call pays for its cost."""
    metrics = VersionMetrics("m", "1")
    cost = CallCost(cpu_ns=1, wall_ns=1)

    def context() -> None:
        COST.reset(COST.set(CallCost()))

    def executed_with() -> None:
        metrics.executed(4, 1000, cost)

    def executed_without() -> None:
        metrics.executed(4, 1000)

    def reads() -> None:
        time.thread_time_ns()
        time.perf_counter_ns()

    out = []
    for name, fn in (
        ("thread_time_ns + perf_counter_ns (a call reads each twice)", reads),
        ("CallCost() + COST.set/reset (per call)", context),
        ("executed(rows, ns, cost) (per call)", executed_with),
        ("executed(rows, ns), before (per call)", executed_without),
    ):
        best = min(timeit.repeat(fn, number=number, repeat=5))
        out.append((name, best / number * 1e9))
    return out


def request(asked: bool) -> bytes:
    r = pb.ModelInferRequest(model_name="mlp", model_version="1")
    r.inputs.add(name="x", datatype="FP32", shape=[1, 32])
    r.raw_input_contents.append(np.ones((1, 32), np.float32).tobytes())
    if asked:
        r.parameters["cost"].bool_param = True
    return r.SerializeToString()


async def run(repo: Path, args: argparse.Namespace) -> None:
    # tracing off, ONNX Runtime running the model: micro_tracing's gateway
    gateway = await build(repo, None, argparse.Namespace(**vars(args), onnx=True))
    backend: Any = gateway.registry.get("mlp", "1").backend
    measured = backend._run
    session = backend._session

    def plain(cost: CallCost, names: list[str], feed: Any) -> Any:
        return session.run(names, feed)

    servicer = InferenceServicer(gateway.dataplane, tracing=None)
    variants = {"unmeasured": (plain, False), "measured": (measured, False), "asked": (measured, True)}
    bodies = {True: request(True), False: request(False)}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    for round_ in range(args.repeats + 1):  # the first round warms up
        for name, (runner, asked) in variants.items():
            backend._run = runner
            us = await measure(servicer, bodies[asked], args)
            if round_:
                cpu[name].append(us)
    backend._run = measured
    print("\nPer backend call (timeit, best of 5):\n")
    print("| piece | ns |")
    print("|---|---|")
    for name, ns in pieces():
        print(f"| {name} | {ns:.0f} |")
    print(
        f"\nInferenceServicer.ModelInfer in process, ONNX Runtime, batching {args.batching}, "
        f"{args.concurrency} in flight, medians of {args.repeats} rounds of {args.calls} calls\n"
    )
    print_medians(cpu, "unmeasured", "variant", "× unmeasured", digits=2)
    await gateway.registry.close()


def main() -> int:
    return on_example(run, parser(__doc__).parse_args())


if __name__ == "__main__":
    sys.exit(main())
