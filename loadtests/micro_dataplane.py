"""The gateway's own Python per request, without gRPC: DataPlane.infer called in process.

    python loadtests/micro_dataplane.py [--calls 20000] [--concurrency 64] [--batching on|off]
                                        [--fake-backend]

Loads the example repository's `mlp`, then `--concurrency` coroutines call DataPlane.infer with a
1 x 32 FP32 raw request until --calls are done. Prints CPU µs per request and rows per backend
call: the cost of lookup, decode, validation, batching, the model and encoding, with no transport.
--fake-backend answers from a prebuilt array instead of ONNX Runtime: the gateway's Python alone.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import uvloop

from gateway.examples import example_repository
from harness.bench import drive
from harness.inprocess import in_process_gateway, infer_request


async def run(repo: Path, args: argparse.Namespace) -> None:
    gateway = await in_process_gateway(repo, fake=args.fake_backend, batching={"mode": args.batching})
    request = infer_request()

    async def call(_: int) -> None:
        await gateway.dataplane.infer(request)

    await drive(call, args.calls, args.concurrency)  # warm-up round
    served = gateway.registry.get("mlp")
    executions, rows = served.metrics.execution_count, served.metrics.inference_count
    began = time.process_time()
    await drive(call, args.calls, args.concurrency)
    cpu_us = (time.process_time() - began) / args.calls * 1e6
    per_call = (served.metrics.inference_count - rows) / max(1, served.metrics.execution_count - executions)
    backend = "faked backend" if args.fake_backend else "ONNX Runtime"
    print(f"{backend}, batching {args.batching}, {args.concurrency} in flight: "
          f"{cpu_us:.1f} µs CPU per request, {per_call:.1f} rows per backend call")  # fmt: skip
    await gateway.registry.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--batching", choices=("on", "off"), default="on")
    parser.add_argument("--fake-backend", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        uvloop.run(run(example_repository(Path(tmp)), args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
