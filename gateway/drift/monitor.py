"""The data plane's side of drift: count each backend call's inputs and outputs in reference bins.

A DriftMonitor wraps a version's backend call (`wrap`), so it sees every batch exactly once,
batched or not. It keeps each call's tensors (views, no copy) until FLUSH_ROWS rows wait, then
counts them with one kernel update per tensor (kernels/: no Python object per value, no GIL held
while counting), so the kernel's fixed cost is paid per few hundred rows, not per call. Numeric
features count in the profile's bins (NumericStats), categorical ones per code (CategoricalStats).
Its counts only grow; a worker hands them over in its snapshot (`snapshot`), and the control
plane (gateway/drift/tracker.py) sums the workers, cuts windows and scores them.

With a live reference (gateway/drift/live.py) a monitor starts without a profile: it counts
nothing until the control plane has learned one (`use`), and the baseline's monitor keeps its
most recent rows in a bounded ring (`LiveRows`) meanwhile. A failure here is logged once and
never reaches the request.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from kernels import CategoricalStats, NumericStats

from .profile import Profile, TensorProfile, category_codes

__all__ = ["DriftMonitor", "LiveRows"]

log = logging.getLogger("gateway.drift")

FLUSH_ROWS = 256  # rows kept (as views of the calls' own tensors) before one kernel update

Infer = Callable[
    [Mapping[str, NDArray[Any]], Sequence[str], float | None], Awaitable[dict[str, NDArray[Any]]]
]
Role = Literal["input", "output"]


class LiveRows:
    """The most recent `capacity` rows of each tensor, in a ring per tensor allocated at its
    first rows (capacity x features values of the tensor's dtype), for a live reference."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._rings: dict[str, tuple[Role, NDArray[Any]]] = {}
        self._next: dict[str, int] = {}
        self.seen = 0  # rows added (of the first tensor), ever

    def add(self, name: str, role: Role, rows: NDArray[Any]) -> None:
        found = self._rings.get(name)
        if found is None:
            found = self._rings[name] = (role, np.zeros((self.capacity, rows.shape[1]), rows.dtype))
            self._next[name] = 0
        ring = found[1]
        if rows.shape[1] != ring.shape[1]:
            return
        added = rows.shape[0]
        rows = rows[-self.capacity :]
        at, n = self._next[name] % self.capacity, rows.shape[0]
        first = min(n, self.capacity - at)
        ring[at : at + first] = rows[:first]
        ring[: n - first] = rows[first:]
        self._next[name] += n
        if name == next(iter(self._rings)):
            self.seen += added

    @property
    def rows(self) -> int:
        """Rows held: up to the capacity."""
        return min(self.seen, self.capacity)

    def arrays(self) -> dict[str, tuple[Role, NDArray[Any]]]:
        """Copies of the rows held, oldest first, per tensor."""
        out = {}
        for name, (role, ring) in self._rings.items():
            n = min(self._next[name], self.capacity)
            at = self._next[name] % self.capacity
            rows = np.concatenate([ring[at:], ring[:at]]) if n == self.capacity else ring[:n].copy()
            out[name] = (role, rows)
        return out

    @property
    def nbytes(self) -> int:
        return sum(ring.nbytes for _, ring in self._rings.values())


class _Counter:
    """One tensor's counts against its profile: numeric features in bins, categorical per code."""

    def __init__(self, tensor: TensorProfile) -> None:
        self.tensor = tensor
        self.numeric = np.asarray(tensor.numeric, np.intp)
        self.categorical = np.asarray(tensor.categorical, np.intp)
        self.stats = NumericStats(tensor.edges) if self.numeric.size else None
        self.codes = CategoricalStats(tensor.n_categories) if self.categorical.size else None
        self.rows = 0
        # values outside the reference's [min, max] (edges' first and last), per numeric feature
        self.low, self.high = tensor.edges[:, 0], tensor.edges[:, -1]
        self.out = np.zeros(self.numeric.size, np.int64)

    def update(self, batch: NDArray[Any]) -> None:
        if self.stats is not None:
            part = batch if self.codes is None else batch[:, self.numeric]
            if part.dtype != np.float32 and part.dtype != np.float64:
                part = part.astype(np.float64)
            self.stats.update(part)
            self.out += np.count_nonzero((part < self.low) | (part > self.high), axis=0)
        if self.codes is not None:
            part = batch if self.stats is None else batch[:, self.categorical]
            self.codes.update(category_codes(part))
        self.rows += batch.shape[0]

    def snapshot(self) -> dict[str, Any]:
        """rows; NaNs and values outside the reference (a categorical feature's "other") per
        feature; the flat counts: numeric bins, then categorical counts (TensorProfile.split)."""
        nan = np.zeros(self.tensor.n_features, np.int64)
        out = np.zeros(self.tensor.n_features, np.int64)
        flat = []
        if self.stats is not None:
            nan[self.numeric], out[self.numeric] = self.stats.nan_count, self.out
            flat.append(self.stats.bins.ravel())
        if self.codes is not None:
            out[self.categorical] = self.codes.other
            flat.append(self.codes.counts.ravel())
        return {
            "rows": self.rows,
            "nan": nan.tolist(),
            "out": out.tolist(),
            "bins": np.concatenate(flat).tolist(),
        }


class DriftMonitor:
    def __init__(
        self, profile: Profile | None, batched: bool, label: str, live: LiveRows | None = None
    ) -> None:
        self._batched = batched
        self._label = label
        self.live = live  # the baseline's recent rows, while a live reference is being learned
        self._roles: dict[str, Role] = {}
        self._pending: dict[str, list[NDArray[Any]]] = {}
        self._pending_rows = 0
        self._lock = threading.Lock()  # snapshots are taken on another thread
        self._warned = False
        self.profile: Profile | None = None
        self._counters: dict[str, _Counter] = {}
        if profile is not None:
            self.use(profile)

    def use(self, profile: Profile) -> None:
        """Count against `profile` from now on (a live reference, once learned); the ring goes."""
        with self._lock:
            self._flush()
            self.profile = profile
            self._counters = {name: _Counter(t) for name, t in profile.tensors.items()}
            self._pending = {name: [] for name in profile.tensors}
            self.live = None

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
        if self.profile is None and self.live is None:
            return  # a live reference not learned yet, and not this version's to learn
        sides: tuple[tuple[Role, Mapping[str, NDArray[Any]]], ...] = (("input", inputs), ("output", outputs))
        with self._lock:
            pending = self._pending
            for role, tensors in sides:
                for name, array in tensors.items():
                    waiting = pending.get(name)
                    if waiting is None and (self.live is None or array.dtype.kind not in "fiu"):
                        continue
                    if waiting is None:
                        waiting = pending[name] = []
                        self._roles[name] = role
                    if array.size:
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
            counter = self._counters.get(name)
            try:
                rows = [a.reshape(a.shape[0] if self._batched else 1, -1) for a in arrays]
                width = counter.tensor.n_features if counter is not None else rows[0].shape[1]
                fitting = [r for r in rows if r.shape[1] == width]
                if len(fitting) < len(rows):
                    self._warn(f"{len(rows) - len(fitting)} '{name}' tensor(s) of another width left out")
                if not fitting:
                    continue
                batch = fitting[0] if len(fitting) == 1 else np.concatenate(fitting)
                if self.live is not None:
                    self.live.add(name, self._roles.get(name, "input"), batch)
                if counter is not None:
                    counter.update(batch)
            except Exception as exc:  # monitoring must never fail a request
                self._warn(f"{type(exc).__name__}: {exc}")

    def _warn(self, what: str) -> None:
        if not self._warned:  # once: the same cause repeats with every call
            self._warned = True
            log.error("drift monitor of %s: %s; it goes on counting what it can", self._label, what)

    def live_rows(self) -> tuple[int, dict[str, tuple[Role, NDArray[Any]]]] | None:
        """(rows held, copies of them) while this monitor learns a live reference; else None."""
        with self._lock:
            self._flush()
            if self.live is None:
                return None
            return self.live.rows, self.live.arrays()

    def snapshot(self) -> dict[str, Any]:
        """Cumulative counts per monitored tensor (what waits is counted first): rows, NaNs and
        values outside the reference's range per feature, flat counts (TensorProfile.split)."""
        with self._lock:
            self._flush()
            return {name: counter.snapshot() for name, counter in self._counters.items()}
