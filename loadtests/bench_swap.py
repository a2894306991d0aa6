"""p99 during version swaps against the steady p99, and failed requests, in one run.

    python loadtests/bench_swap.py [--seconds 30] [--concurrency 32] [--swaps 3] [--window-s 2]
                                   [--transport native|grpcio]

Serves `m` (mlp 32 -> 256 -> 256 -> 8; versions 1 and 2 on disk, the version policy serving
only 1) with `traffic: {"1": 100}`, and drives it with --concurrency asyncio tritonclient calls
of 1 row for --seconds. In the middle third it swaps versions --swaps times by editing the config
file (1 -> 2 -> 1 ...): each swap loads and warms the other version while the old one serves,
publishes, then drains and closes the old one. Every request's latency is kept with its start
time; requests that start within --window-s after a swap are "during a swap", the rest of the
run after warm-up "steady". Prints both p99s, their ratio, and every failure (the target: none).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc.aio as aioclient
import yaml
from tritonclient.utils import InferenceServerException

from gateway.examples import mlp, write_config, write_version
from harness.bench import table
from harness.gateway import GatewayProcess
from harness.stats import p99


def write(path: Path, version: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump({"models": {"m": {"traffic": {version: 100}}}}))
    tmp.replace(path)


async def drive(
    url: str, args: argparse.Namespace, config: Path
) -> tuple[list[tuple[float, float]], list[float], list[str]]:
    samples: list[tuple[float, float]] = []  # (start, latency)
    failures: list[str] = []
    swaps: list[float] = []
    began = time.monotonic()
    end = began + args.seconds

    async def client() -> None:
        async with aioclient.InferenceServerClient(url) as c:
            x = aioclient.InferInput("x", [1, 32], "FP32")
            x.set_data_from_numpy(np.ones((1, 32), np.float32))
            while (start := time.monotonic()) < end:
                try:
                    await c.infer("m", [x], client_timeout=10)
                    samples.append((start, time.monotonic() - start))
                except InferenceServerException as exc:
                    failures.append(f"{start - began:.2f}s {exc.status()} {exc.message()}")

    async def swapper() -> None:
        third = args.seconds / 3
        await asyncio.sleep(third)
        for i in range(args.swaps):
            swaps.append(time.monotonic())
            await asyncio.to_thread(write, config, "2" if i % 2 == 0 else "1")
            await asyncio.sleep(third / args.swaps)

    await asyncio.gather(swapper(), *(client() for _ in range(args.concurrency)))
    return samples, swaps, failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--swaps", type=int, default=3)
    parser.add_argument("--window-s", type=float, default=2.0)
    parser.add_argument("--transport", choices=("native", "grpcio"), default="native")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "models"
        write_version(repo, "m", 1, mlp(seed=1))
        write_version(repo, "m", 2, mlp(seed=2))
        write_config(repo, "m", "max_batch_size: 8\nversion_policy: { specific { versions: [1] } }\n")
        config = Path(tmp) / "gateway.yaml"
        write(config, "1")
        flags = ["--config", str(config), "--transport", args.transport, "--log-level", "info"]
        with GatewayProcess(repo, *flags) as proc:
            samples, swaps, failures = asyncio.run(drive(proc.url, args, config))
        applied = proc.log().count("config revision")
    warm = samples[0][0] + 2.0 if samples else 0.0
    during = [lat for start, lat in samples if any(s <= start < s + args.window_s for s in swaps)]
    steady = [
        lat
        for start, lat in samples
        if start >= warm and not any(s <= start < s + args.window_s for s in swaps)
    ]
    what = f"{args.concurrency} clients, {args.seconds:.0f} s, {args.swaps} swaps ({applied} applied)"
    print(f"\n{args.transport} transport, {what}\n")
    cells = [f"{len(samples):,}", f"{p99(steady) * 1e3:.2f}", f"{p99(during) * 1e3:.2f}"]
    cells += [f"{p99(during) / p99(steady):.2f}", str(len(failures))]
    print(table(["requests", "steady p99 ms", "p99 within a swap's window ms", "ratio", "failed"], [cells]))
    for failure in failures[:20]:
        print("failed:", failure)
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
