"""Medians, ratios and interleaved rounds: the one place the benchmarks summarise their runs.

On a shared 2-core machine only figures measured side by side mean anything, so every benchmark
runs its variants in interleaved rounds (each once, then each again) and reports medians over
the rounds, and ratios against a baseline measured in the same run."""

from __future__ import annotations

import statistics
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")

__all__ = ["interleaved", "interleaved_async", "median", "median_rows", "p99", "ratio"]


def median(values: Iterable[float | None]) -> float | None:
    """The median of the values that are not None; None when there are none."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def ratio(value: float | None, base: float | None) -> float | None:
    """value / base, or None when either is missing or the base is 0."""
    return value / base if value is not None and base else None


def p99(values: list[float]) -> float:
    """The 99th percentile; NaN under 100 values (too few to say)."""
    return statistics.quantiles(values, n=100)[98] if len(values) >= 100 else float("nan")


def median_rows(
    runs: list[list[dict[str, Any]]], keys: Iterable[str], digits: int | None = None
) -> list[dict[str, Any]]:
    """Rows of perf_analyzer runs (one list per round, the same rows in each) merged into one list:
    the first round's row with the median of `keys` over the rounds' rows that did not fail
    (rounded to `digits` if given), status "ok" if any did, else "failed"; `runs` counts them."""
    out = []
    for rows in zip(*runs, strict=True):
        ok = [r for r in rows if r.get("status") != "failed"]
        merged = dict(rows[0])
        for key in keys:
            value = median(r.get(key) for r in ok)
            merged[key] = round(value, digits) if value is not None and digits is not None else value
        merged["status"] = "ok" if ok else "failed"
        merged["runs"] = len(ok)
        out.append(merged)
    return out


def interleaved(rounds: int, variants: Mapping[str, Callable[[], T]]) -> dict[str, list[T]]:
    """Each variant once per round, in order, `rounds` times: its results, by name."""
    results: dict[str, list[T]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, run in variants.items():
            results[name].append(run())
    return results


async def interleaved_async(
    rounds: int, variants: Mapping[str, Callable[[], Awaitable[T]]]
) -> dict[str, list[T]]:
    """:func:`interleaved` for coroutines (in-process benchmarks on one event loop)."""
    results: dict[str, list[T]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, run in variants.items():
            results[name].append(await run())
    return results
