"""What drift monitoring costs a backend call, in process: DriftMonitor.observe alone.

    python loadtests/micro_drift.py

A profile of 32 input and 4 output features (10 bins) from 5,000 normal rows; then observe()
on calls of 1, 8 and 64 rows (x FP32 [rows, 32], y [rows, 4]), 100,000 rows each, counting
flushes included. Prints µs per call and per row (one thread; a shared machine is noisy).
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np

from gateway.drift import DriftMonitor, build_profile


def main() -> int:
    rng = np.random.default_rng(0)

    def run(batch: dict[str, Any]) -> dict[str, Any]:
        return {"y": np.repeat(batch["x"][:, :1], 4, axis=1)}

    profile = build_profile(
        "m", "1", {"x": rng.normal(size=(5000, 32)).astype(np.float32)}, run, progress=False
    )
    print("| rows per call | µs per call | µs per row |\n|---|---|---|")
    for rows in (1, 8, 64):
        monitor = DriftMonitor(profile, batched=True, label="m/1")
        x = rng.normal(size=(rows, 32)).astype(np.float32)
        y = run({"x": x})["y"]
        calls = 100_000 // rows
        began = time.perf_counter()
        for _ in range(calls):
            monitor.observe({"x": x}, {"y": y})
        took = time.perf_counter() - began
        print(f"| {rows} | {took / calls * 1e6:.2f} | {took / calls / rows * 1e6:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
