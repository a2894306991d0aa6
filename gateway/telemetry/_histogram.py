"""Fixed-bucket histograms: one bisect and two additions per observation."""

from __future__ import annotations

import bisect
from typing import Any

__all__ = ["BATCH_BOUNDS", "LATENCY_BOUNDS", "Histogram", "buckets", "merge_counts"]

LATENCY_BOUNDS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
)  # fmt: skip
BATCH_BOUNDS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0)  # rows per backend call


class Histogram:
    """Fixed buckets (upper bounds in seconds); `counts[i]` holds observations in bucket i, the
    last one those above every bound."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BOUNDS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, seconds: float, times: int = 1) -> None:
        """Count `seconds` (`times` observations of it)."""
        self.counts[bisect.bisect_left(self.bounds, seconds)] += times
        self.total += seconds * times


def buckets(bounds: tuple[float, ...], counts: list[int]) -> list[tuple[str, int]]:
    """Prometheus' cumulative (le, count) pairs of a histogram's counts."""
    cumulative, out = 0, []
    for bound, n in zip((*bounds, float("inf")), counts, strict=True):
        cumulative += n
        out.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
    return out


def merge_counts(into: list[Any] | None, value: list[Any]) -> list[Any]:
    """Add one snapshot's [counts, total] to a running sum (None: the first)."""
    if into is None:
        return [list(value[0]), value[1]]
    into[0] = [a + b for a, b in zip(into[0], value[0], strict=True)]
    into[1] += value[1]
    return into
