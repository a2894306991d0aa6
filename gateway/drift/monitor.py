"""The data plane's side of drift: count each backend call's inputs and outputs in reference bins.

A DriftMonitor wraps a version's backend call (`wrap`), so it sees every batch exactly once,
batched or not. It keeps each call's tensors (views, no copy) until FLUSH_ROWS rows wait, then
counts them with one kernel update per tensor (kernels/: no Python object per value, no GIL held
while counting), so the kernel's fixed cost is paid per few hundred rows, not per call. Its counts only grow;
a worker hands them over in its snapshot (`snapshot`), and the control plane
(gateway/drift/tracker.py) sums the workers, cuts windows and scores them. A failure here is
logged once and never reaches the request.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from kernels import NumericStats

from .profile import Profile

__all__ = ["DriftMonitor"]

log = logging.getLogger("gateway.drift")

FLUSH_ROWS = 256  # rows kept (as views of the calls' own tensors) before one kernel update

Infer = Callable[
    [Mapping[str, NDArray[Any]], Sequence[str], float | None], Awaitable[dict[str, NDArray[Any]]]
]


class DriftMonitor:
    def __init__(self, profile: Profile, batched: bool, label: str) -> None:
        self.profile = profile
        self._batched = batched
        self._label = label
        self._stats = {name: NumericStats(t.edges) for name, t in profile.tensors.items()}
        self._rows = dict.fromkeys(profile.tensors, 0)
        # values outside the reference's [min, max] (edges' first and last), per feature
        self._bounds = {name: (t.edges[:, 0], t.edges[:, -1]) for name, t in profile.tensors.items()}
        self._out = {name: np.zeros(t.n_features, np.int64) for name, t in profile.tensors.items()}
        self._pending: dict[str, list[NDArray[Any]]] = {name: [] for name in profile.tensors}
        self._pending_rows = 0
        self._lock = threading.Lock()  # snapshots are taken on another thread
        self._warned = False

    def wrap(self, infer: Infer) -> Infer:
        async def run(
            inputs: Mapping[str, NDArray[Any]], names: Sequence[str], deadline: float | None
        ) -> dict[str, NDArray[Any]]:
            outputs = await infer(inputs, names, deadline)
            self.observe(inputs, outputs)
            return outputs

        return run

    def observe(self, inputs: Mapping[str, NDArray[Any]], outputs: Mapping[str, NDArray[Any]]) -> None:
        """Keep a call's tensors (views, no copy) until FLUSH_ROWS rows wait, then count them in
        one kernel update per tensor: the kernel's fixed cost is paid per flush, not per call."""
        pending = self._pending
        with self._lock:
            for tensors in (inputs, outputs):
                for name, array in tensors.items():
                    waiting = pending.get(name)
                    if waiting is not None and array.size:
                        waiting.append(array)
            first = next(iter(inputs.values()), None)
            self._pending_rows += first.shape[0] if self._batched and first is not None and first.ndim else 1
            if self._pending_rows >= FLUSH_ROWS:
                self._flush()

    def _flush(self) -> None:
        self._pending_rows = 0
        for name, waiting in self._pending.items():
            if not waiting:
                continue
            arrays, self._pending[name] = waiting, []
            stats = self._stats[name]
            try:
                rows = [a.reshape(a.shape[0] if self._batched else 1, -1) for a in arrays]
                fitting = [r for r in rows if r.shape[1] == stats.n_features]
                if len(fitting) < len(rows):
                    self._warn(f"{len(rows) - len(fitting)} '{name}' tensor(s) of another width left out")
                if not fitting:
                    continue
                batch = fitting[0] if len(fitting) == 1 else np.concatenate(fitting)
                if batch.dtype != np.float32 and batch.dtype != np.float64:
                    batch = batch.astype(np.float64)
                stats.update(batch)
                self._rows[name] += batch.shape[0]
                low, high = self._bounds[name]
                self._out[name] += np.count_nonzero((batch < low) | (batch > high), axis=0)
            except Exception as exc:  # monitoring must never fail a request
                self._warn(f"{type(exc).__name__}: {exc}")

    def _warn(self, what: str) -> None:
        if not self._warned:  # once: the same cause repeats with every call
            self._warned = True
            log.error("drift monitor of %s: %s; it goes on counting what it can", self._label, what)

    def snapshot(self) -> dict[str, Any]:
        """Cumulative counts per monitored tensor (what waits is counted first): rows, NaNs and
        values outside the reference's range per feature, bins (flat)."""
        with self._lock:
            self._flush()
            return {
                name: {
                    "rows": self._rows[name],
                    "nan": stats.nan_count.tolist(),
                    "out": self._out[name].tolist(),
                    "bins": stats.bins.ravel().tolist(),
                }
                for name, stats in self._stats.items()
            }
