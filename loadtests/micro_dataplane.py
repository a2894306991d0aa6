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
import asyncio
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import uvloop  # noqa: E402

from gateway._proto import inference_pb2 as pb  # noqa: E402
from gateway.examples import example_repository  # noqa: E402
from gateway.server import Gateway  # noqa: E402
from gateway.settings import load_settings  # noqa: E402


async def run(repo: Path, args: argparse.Namespace) -> None:
    settings = load_settings(
        overrides={
            "model_repository": repo,
            "grpc_port": 0,
            "metrics_port": -1,
            "batching": {"mode": args.batching},
        }
    )
    gateway = Gateway(settings, run_dir=Path(tempfile.mkdtemp(prefix="modelgate-run-")))
    await gateway.registry.load("mlp")
    if args.fake_backend:
        served = gateway.registry.get("mlp")
        answer = np.ones((64, 8), np.float32)

        async def fake(
            inputs: dict[str, np.ndarray], outputs: object, deadline: object = None
        ) -> dict[str, np.ndarray]:
            return {"y": answer[: len(inputs["x"])]}

        served.run = fake
        if served.batcher is not None:
            served.batcher._run = fake
    request = pb.ModelInferRequest(model_name="mlp")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 32])
    request.raw_input_contents.append(np.ones((1, 32), np.float32).tobytes())
    left = args.calls

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await gateway.dataplane.infer(request)

    await asyncio.gather(*(worker() for _ in range(args.concurrency)))  # warm-up round
    served = gateway.registry.get("mlp")
    executions, rows = served.metrics.execution_count, served.metrics.inference_count
    left = args.calls
    began = time.process_time()
    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
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
