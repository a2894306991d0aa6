"""The feature-statistics kernels: NumericStats.update on the compiled loops against the NumPy
reference (kernels/_reference.py, as vectorised as NumPy allows), side by side in one run.

    python loadtests/bench_kernels.py [--seconds 0.3] [--rounds 5]

Cases: float32 batches of 64 x 32 (one small request) and 100,000 x 32 (a large batch), each
against 10 and 20 reference bins per feature; normal data, edges from quantile_edges of another
sample. Backends and cases take turns in every round; each turn repeats the update for
--seconds; medians over --rounds. One thread: the loops run on one core. Stops by itself after
about rounds x 4 cases x 2 backends x seconds (~15 s by default).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from types import ModuleType

import numpy as np

from harness.stats import interleaved, median
from kernels import NumericStats, _reference, _stats, quantile_edges

N_FEATURES = 32
CASES = [(64, 10), (64, 20), (100_000, 10), (100_000, 20)]
BACKENDS: dict[str, ModuleType] = {"compiled": _stats, "reference": _reference}
COLUMNS = (
    "batch",
    "bins",
    "compiled µs",
    "compiled Mvalues/s",
    "reference µs",
    "reference Mvalues/s",
    "× reference",
)


def seconds_per_update(stats: NumericStats, batch: np.ndarray, seconds: float) -> float:
    """Mean seconds per update over repeated calls for about `seconds` (at least 3 calls)."""
    calls, start = 0, time.perf_counter()
    while True:
        stats.update(batch)
        calls += 1
        elapsed = time.perf_counter() - start
        if calls >= 3 and elapsed >= seconds:
            return elapsed / calls


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=0.3, help="time per backend, case and round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    reference = rng.normal(size=(20_000, N_FEATURES))
    batches = {rows: rng.normal(size=(rows, N_FEATURES)).astype(np.float32) for rows in {r for r, _ in CASES}}
    states = {
        (case, name): NumericStats(quantile_edges(reference, case[1]), backend=backend)
        for case in CASES
        for name, backend in BACKENDS.items()
    }

    def turn(key: tuple[tuple[int, int], str]) -> float:
        return seconds_per_update(states[key], batches[key[0][0]], args.seconds)

    times = interleaved(args.rounds, {key: lambda key=key: turn(key) for key in states})

    print(f"# bench_kernels: {platform.machine()}, {os.cpu_count()} CPUs, one thread, float32 x {N_FEATURES}")
    print(f"# medians of {args.rounds} interleaved rounds of {args.seconds} s per backend and case")
    print()
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    for rows, bins in CASES:
        compiled = median(times[(rows, bins), "compiled"]) or 0.0
        ref = median(times[(rows, bins), "reference"]) or 0.0
        values = rows * N_FEATURES
        print(
            f"| {rows:,} x {N_FEATURES} | {bins} | {compiled * 1e6:,.1f} | {values / compiled / 1e6:,.0f} "
            f"| {ref * 1e6:,.1f} | {values / ref / 1e6:,.0f} | {ref / compiled:,.1f} |"
        )


if __name__ == "__main__":
    main()
