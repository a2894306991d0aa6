"""Shared runners for the benchmarks in loadtests/: perf_analyzer per concurrency with the
server's CPU per request, the in-process drivers, markdown tables and results files.

A benchmark is a thin scenario over these: which servers, which settings, what to print."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from harness.perf_analyzer import infer_stats, run_perf_analyzer
from harness.procfs import group_cpu_s

__all__ = ["RESULTS", "cell", "drive", "floats", "ints", "perf_rows", "table", "write_results"]

RESULTS = Path(__file__).resolve().parents[1] / "loadtests" / "results"


def ints(text: str) -> list[int]:
    """A comma-separated list of integers (an argparse type): "1,8,64"."""
    return [int(v) for v in text.split(",") if v]


def floats(text: str) -> list[float]:
    """A comma-separated list of numbers (an argparse type): "0,0.01,1"."""
    return [float(v) for v in text.split(",") if v]


def cell(value: Any, spec: str = ",.1f") -> str:
    """A table cell: the number formatted, "—" when missing."""
    return "—" if value is None or value == "" else format(value, spec)


def table(head: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))


def perf_rows(
    label: str,
    url: str,
    concurrencies: Iterable[int],
    *,
    model: str = "mlp",
    shapes: Sequence[str] = ("x:32",),
    pgid: int | None = None,
    count: Callable[[], int] | None = None,
    **perf_analyzer: Any,
) -> list[dict[str, Any]]:
    """One perf_analyzer run per concurrency (keyword arguments go to run_perf_analyzer).

    With the server's process group `pgid`, each row also has `cpu_us_per_request`: the group's
    CPU over the run divided by the requests the server's ModelStatistics counted (warm-up
    trials included). With `count` (a counter read before and after), `counted` is its growth."""
    rows = []
    for c in concurrencies:
        before = infer_stats(url, model) if pgid else None
        cpu0 = group_cpu_s(pgid) if pgid else 0.0
        counted0 = count() if count else 0
        [row] = run_perf_analyzer(url, model, shapes, [c], label=label, **perf_analyzer)
        after = infer_stats(url, model) if pgid else None
        if pgid:
            row["cpu_us_per_request"] = (
                (group_cpu_s(pgid) - cpu0) / (after[0] - before[0]) * 1e6
                if before and after and after[0] > before[0]
                else None
            )
        if count:
            row["counted"] = count() - counted0
        rows.append(row)
    return rows


async def drive(call: Callable[[int], Awaitable[object]], calls: int, concurrency: int) -> float:
    """`calls` awaits of `call(i)` (i counts down), `concurrency` at a time; the wall seconds."""
    left = calls

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await call(left)

    began = time.perf_counter()  # not loop.time(): uvloop's is in whole milliseconds, cached
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - began
