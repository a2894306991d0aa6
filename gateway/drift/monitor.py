"""The data plane's side of drift: count each backend call's inputs and outputs in reference bins.

A DriftMonitor wraps a version's backend call (`wrap`), so it sees every batch exactly once,
batched or not, at the cost of one kernel update per monitored tensor per call (kernels/:
no allocation, no Python object per value, no GIL held while counting). Its counts only grow;
a worker hands them over in its snapshot (`snapshot`), and the control plane
(gateway/drift/tracker.py) sums the workers, cuts windows and scores them. A failure here is
logged once and never reaches the request.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from kernels import NumericStats

from .profile import Profile

__all__ = ["DriftMonitor"]

log = logging.getLogger("gateway.drift")

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
        try:
            for tensors in (inputs, outputs):
                for name, array in tensors.items():
                    stats = self._stats.get(name)
                    if stats is None or array.size == 0:
                        continue
                    rows = array.reshape(array.shape[0] if self._batched else 1, -1)
                    if rows.dtype != np.float32 and rows.dtype != np.float64:
                        rows = rows.astype(np.float64)
                    stats.update(rows)
                    self._rows[name] += rows.shape[0]
        except Exception:  # monitoring must never fail a request
            if not self._warned:
                self._warned = True
                log.exception("drift monitor of %s failed; it goes on counting what it can", self._label)

    def snapshot(self) -> dict[str, Any]:
        """Cumulative counts per monitored tensor: rows, NaNs per feature, bins (flat)."""
        return {
            name: {
                "rows": self._rows[name],
                "nan": stats.nan_count.tolist(),
                "bins": stats.bins.ravel().tolist(),
            }
            for name, stats in self._stats.items()
        }
