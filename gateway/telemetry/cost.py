"""What each backend call costs, measured where it runs, and the gateway's own CPU beside it.

The batcher (or the data plane, unbatched) makes one `CallCost` per backend call and sets it in
`COST` for the call's duration; the backend fills it in where the work happens: ONNX Runtime
reads the CPU time of the thread that runs `session.run` (`time.thread_time_ns`, about 0.3 µs a
read), a remote backend only the wall time (its CPU is someone else's). The version's counters
add it up (`VersionMetrics.executed`), and every request of the batch gets the same object, so
its share (its rows over the batch's) is computed only when the request asks for it: the hot
path pays two clock reads, a context variable and a few integer additions per batch, nothing
per request.

What is an estimate: ONNX Runtime's intra-op pool threads (more than one intra-op thread) are
not the calling thread, so their CPU is not in the backend's figure but in the gateway's
overhead (`Overhead`: the process's CPU less every backend call's); GPU time is the wall time
of a call run by the CUDA provider (an upper bound: the device is busy at most that long).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import CounterMetricFamily

__all__ = ["COST", "CallCost", "Overhead", "cost_families"]


@dataclass(slots=True)
class CallCost:
    """One backend call's cost, in nanoseconds. `cpu_measured` False: the CPU ran elsewhere (a
    remote backend), `cpu_ns` stays 0."""

    cpu_ns: int = 0
    gpu_ns: int = 0
    wall_ns: int = 0
    cpu_measured: bool = True

    def share(self, rows: int, batch_rows: int) -> tuple[float, float, float]:
        """A request's part of the call by its share of the rows: (CPU, wall, GPU) in µs,
        unrounded, so that the parts of a batch add up to the whole."""
        part = rows / (batch_rows * 1000.0) if batch_rows else 0.0
        return self.cpu_ns * part, self.wall_ns * part, self.gpu_ns * part


COST: ContextVar[CallCost | None] = ContextVar("modelgate_cost", default=None)
"""The cost of the backend call running in this context, for the backend to fill in."""


class Overhead:
    """The serving process's CPU outside backend calls: process CPU time since `start()` less
    the CPU every backend call measured. Read when a snapshot is taken, not per request.

    It never goes backwards (Prometheus would read a dip as a counter reset): a call in flight
    has spent CPU the process already counts but its backend figure arrives only when it ends,
    so the difference can dip for a moment. Snapshots are taken on several threads (the
    publisher's, a scrape's), hence the lock; the request path never takes it."""

    def __init__(self) -> None:
        self._base_ns: int | None = None
        self._last_ns = 0
        self._lock = threading.Lock()

    def start(self) -> None:
        """Count from now (once the models are loaded and warmed: loading is not serving)."""
        if self._base_ns is None:
            self._base_ns = time.process_time_ns()

    def read(self, backend_cpu_ns: int) -> int:
        """The overhead so far, in ns, given the backend calls' CPU since start."""
        if self._base_ns is None:
            return 0
        with self._lock:
            now = time.process_time_ns() - self._base_ns - backend_cpu_ns
            if now > self._last_ns:
                self._last_ns = now
            return self._last_ns


def cost_families(cost: Mapping[tuple[str, str], Mapping[str, Any]], overhead_ns: int) -> Iterator[Any]:
    """The cost counters on /metrics: per version (model, version) its backend calls' CPU, GPU
    and wall seconds, and the serving processes' own CPU (summed over workers by the caller)."""
    for name, key, help_text in (
        ("cpu", "cpu_ns", "CPU time of backend calls, where they ran (0 for remote backends)."),
        ("gpu", "gpu_ns", "GPU time of backend calls (the wall time of calls the CUDA provider ran)."),
        ("wall", "wall_ns", "Wall time of backend calls."),
    ):
        family = CounterMetricFamily(
            f"modelgate_backend_{name}_seconds", help_text, labels=("model", "version")
        )
        for labels, figures in sorted(cost.items()):
            family.add_metric(labels, figures.get(key, 0) / 1e9)
        yield family
    yield CounterMetricFamily(
        "modelgate_gateway_overhead_cpu_seconds",
        "CPU time of the serving processes outside backend calls (decoding, routing, batching, "
        "encoding, the transport).",
        overhead_ns / 1e9,
    )
