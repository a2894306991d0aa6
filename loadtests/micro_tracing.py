"""Tracing's CPU per request without gRPC or a shared machine's noise: the inference servicer's
ModelInfer called in process, tracing off vs on at several sampling ratios.

    python loadtests/micro_tracing.py [--calls 20000] [--concurrency 64] [--repeats 5]
                                      [--ratios 0,0.01,1] [--batching on|off] [--onnx]

For each variant a Gateway (the example repository's `mlp`) is built in this process; then
--concurrency coroutines call `InferenceServicer.ModelInfer` with a 1 x 32 FP32 request (raw
bytes, as the transport hands them over, no `traceparent`) until --calls are done, and the
process's CPU time per call is taken. Variants are interleaved, --repeats rounds, medians.
The backend answers from a prebuilt array (--onnx: ONNX Runtime runs the model), so the figures
are the gateway's Python. Spans are made and dropped (exporter `none`): the SDK's cost, not the
export's (loadtests/bench_tracing.py measures that end to end).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import uvloop

from gateway.examples import example_repository
from gateway.server import Gateway
from gateway.transport import InferenceServicer
from harness.bench import drive, table
from harness.inprocess import in_process_gateway, infer_request
from harness.stats import interleaved_async, median


class _Context:
    """What ModelInfer asks of a call's context."""

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("user-agent", "micro_tracing"),)

    def time_remaining(self) -> None:
        return None

    async def abort(self, code: Any, details: str) -> None:
        raise RuntimeError(f"{code}: {details}")


async def build(repo: Path, ratio: float | None, args: argparse.Namespace) -> Gateway:
    tracing = {"enabled": ratio is not None, "exporter": "none", "sampler_ratio": ratio or 0.0}
    return await in_process_gateway(
        repo, fake=not args.onnx, batching={"mode": args.batching}, telemetry={"tracing": tracing}
    )


async def measure(servicer: InferenceServicer, body: bytes, args: argparse.Namespace) -> float:
    """CPU µs per call over --calls calls, --concurrency at a time."""
    context = _Context()
    began = time.process_time()
    await drive(lambda _: servicer.ModelInfer(body, context), args.calls, args.concurrency)
    return (time.process_time() - began) / args.calls * 1e6


def print_medians(cpu: dict[str, list[float]], base: str, column: str, ratio: str, digits: int = 1) -> None:
    """A markdown table: each variant's median CPU µs per request, its ratio to `base`'s and
    the difference (loadtests/micro_cost.py prints its own with it)."""
    reference = median(cpu[base]) or 0.0
    rows = []
    for name, values in cpu.items():
        us = median(values) or 0.0
        rows.append([name, f"{us:.1f}", f"{us / reference:.3f}", f"{us - reference:+.{digits}f}"])
    print(table([column, "CPU µs/request", ratio, "extra µs/request"], rows))


async def run(repo: Path, args: argparse.Namespace) -> None:
    body = infer_request().SerializeToString()
    variants: list[tuple[str, float | None]] = [("off", None)] + [(f"{r:.0%}", r) for r in args.ratios]
    gateways = {name: await build(repo, ratio, args) for name, ratio in variants}
    servicers = {name: InferenceServicer(g.dataplane, tracing=g.tracing) for name, g in gateways.items()}
    for servicer in servicers.values():  # warm-up
        await measure(servicer, body, args)
    cpu = await interleaved_async(
        args.repeats, {name: lambda s=s: measure(s, body, args) for name, s in servicers.items()}
    )
    backend = "ONNX Runtime" if args.onnx else "faked backend"
    print(
        f"\nInferenceServicer.ModelInfer in process, {backend}, batching {args.batching}, "
        f"{args.concurrency} in flight, medians of {args.repeats} rounds of {args.calls} calls\n"
    )
    print_medians(cpu, "off", "tracing", "× off (CPU)")
    for gateway in gateways.values():
        await gateway.registry.close()
        await gateway.close_tracing()


def parser(doc: str) -> argparse.ArgumentParser:
    """The in-process benchmarks' common options (loadtests/micro_cost.py uses them too)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batching", choices=("on", "off"), default="on")
    return parser


def on_example(run: Callable[[Path, argparse.Namespace], Awaitable[None]], args: argparse.Namespace) -> int:
    """`run` on uvloop over the example repository, written to a temporary directory."""
    with tempfile.TemporaryDirectory() as tmp:
        uvloop.run(run(example_repository(Path(tmp)), args))
    return 0


def main() -> int:
    options = parser(__doc__)
    options.add_argument("--ratios", default="0,0.01,1", type=lambda s: [float(r) for r in s.split(",")])
    options.add_argument("--onnx", action="store_true")
    return on_example(run, options.parse_args())


if __name__ == "__main__":
    sys.exit(main())
