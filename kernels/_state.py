"""Streaming per-feature statistics of request batches: the state a drift detector keeps.

A state is a few small NumPy arrays, allocated once. `update(batch)` adds a (rows x features)
batch to them in place through a Backend: the compiled loops allocate nothing per batch, make no
Python object per value and release the GIL while they count (the NumPy reference allocates
batch-sized temporaries). A batch must have the state's dtype family and feature count; a
read-only one (a request tensor is an `np.frombuffer` view) is read as it is, a non-contiguous
or misaligned one is copied first (the one allocation, proportional to the batch).
`merge(other)` adds another state over the same edges (batches, windows, worker processes):
counts, bins, min and max exactly, mean and M2 by Chan et al.'s formula (to rounding), so any
split of the same rows gives the same statistics. `to_arrays()` / `from_arrays()` carry a state
between processes as a dict of arrays. A state is not thread-safe: one per thread, then merge.

NumericStats (float32, float64). Per feature: `count` (values), `nan_count`, `posinf_count`,
`neginf_count`; over the finite values only: `min`, `max` (+inf and -inf while there is none),
`mean`, `m2` (0 while there is none), `variance()`. Reference bins from edges (F, B + 1), sorted
per feature: only the inner edges e_1 .. e_{B-1} decide. A value x counts in bin number
#{j in 1..B-1 : e_j <= x}:

    bin 0        (-inf, e_1)        below the first edge e_0 too; -inf
    bin b        [e_b, e_{b+1})
    bin B - 1    [e_{B-1}, +inf)    above the last edge e_B too; +inf

NaN counts in no bin, so each feature's bins add up to count - nan_count.

CategoricalStats (int64 codes). Feature f has n_categories[f] categories: code c counts in
column c when 0 <= c < n_categories[f], else in the last column, "other" (negative codes, such
as -1 for missing, and codes never seen in the reference). `counts` has max(n_categories) + 1
columns; those between a feature's own n_categories and the last stay 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._backend import BACKEND, Backend
from ._reference import merge_moments

__all__ = ["CategoricalStats", "NumericStats"]

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_CODES = (np.dtype(np.int64),)


def _readonly(array: NDArray[Any]) -> NDArray[Any]:
    view = array.view()
    view.flags.writeable = False
    return view


def _checked_batch(batch: object, n_features: int, dtypes: tuple[np.dtype[Any], ...]) -> NDArray[Any]:
    """The batch as the loops take it (C-contiguous, aligned), or an error that says what is wrong."""
    if not isinstance(batch, np.ndarray):
        raise TypeError(f"batch must be a numpy.ndarray, got {type(batch).__name__}")
    if batch.dtype not in dtypes:
        expected = " or ".join(str(d) for d in dtypes)
        raise TypeError(f"batch dtype is {batch.dtype}, expected {expected} (native byte order)")
    if batch.ndim != 2:
        raise ValueError(f"batch must be 2-D (rows x features), got shape {batch.shape}")
    if batch.shape[1] != n_features:
        raise ValueError(
            f"batch has {batch.shape[1]} features (shape {batch.shape}), the stats have {n_features}"
        )
    if not (batch.flags.c_contiguous and batch.flags.aligned):
        batch = np.array(batch, order="C")
    return batch


def _load(arrays: Mapping[str, ArrayLike], name: str, target: NDArray[Any]) -> None:
    if name not in arrays:
        raise ValueError(f"from_arrays: {name!r} is missing")
    value = np.asarray(arrays[name])
    if value.shape != target.shape or value.dtype != target.dtype:
        raise ValueError(
            f"from_arrays: {name!r} must be {target.dtype} of shape {target.shape}, "
            f"got {value.dtype} of shape {value.shape}"
        )
    target[...] = value


def _finite(counts: NDArray[np.int64]) -> NDArray[np.int64]:
    finite: NDArray[np.int64] = counts[0] - counts[1:].sum(axis=0)
    return finite


def _float32_at_or_above(values: NDArray[np.float64]) -> NDArray[np.float32]:
    """The least float32 >= each value: for any float32 x, x >= it exactly when x >= the value."""
    with np.errstate(over="ignore"):
        rounded = values.astype(np.float32)
    below = rounded < values
    rounded[below] = np.nextafter(rounded[below], np.float32(np.inf))
    return rounded


class NumericStats:
    """Per-feature counts, extrema, mean, variance and reference-bin counts of float batches."""

    def __init__(self, edges: ArrayLike, *, backend: Backend = BACKEND) -> None:
        edges = np.array(edges, dtype=np.float64, order="C")
        if edges.ndim != 2 or edges.shape[0] < 1 or edges.shape[1] < 2:
            raise ValueError(f"edges must be (features, bins + 1) with bins >= 1, got shape {edges.shape}")
        if not np.isfinite(edges).all():
            raise ValueError("edges must be finite")
        if (np.diff(edges, axis=1) < 0).any():
            raise ValueError("each feature's edges must be sorted (non-decreasing)")
        n_features, n_bins = edges.shape[0], edges.shape[1] - 1
        self._backend = backend
        self.edges = _readonly(edges)
        self._counts = np.zeros((4, n_features), np.int64)
        self._moments = np.zeros((4, n_features), np.float64)
        self._moments[0], self._moments[1] = np.inf, -np.inf
        self._bins = np.zeros((n_features, n_bins), np.int64)
        self._scratch = np.zeros((4, n_features), np.float64)
        self._cuts64 = np.ascontiguousarray(edges[:, 1:-1].T)
        self._cuts32 = _float32_at_or_above(self._cuts64)
        self._index64 = np.zeros(n_features, np.float64)
        self._index32 = np.zeros(n_features, np.float32)
        self.count, self.nan_count, self.posinf_count, self.neginf_count = _readonly(self._counts)
        self.min, self.max, self.mean, self.m2 = _readonly(self._moments)
        self.bins = _readonly(self._bins)

    @property
    def n_features(self) -> int:
        return int(self.edges.shape[0])

    @property
    def n_bins(self) -> int:
        return int(self.edges.shape[1]) - 1

    @property
    def finite_count(self) -> NDArray[np.int64]:
        return _finite(self._counts)

    @property
    def nbytes(self) -> int:
        """Bytes of the state's arrays (edges and the loops' workspace included)."""
        owned = (self.edges, self._counts, self._moments, self._bins, self._scratch)
        workspace = (self._cuts64, self._cuts32, self._index64, self._index32)
        return sum(a.nbytes for a in owned + workspace)

    def variance(self, ddof: int = 0) -> NDArray[np.float64]:
        """M2 / (finite_count - ddof); NaN where finite_count <= ddof."""
        n = self.finite_count - ddof
        variance = np.full(self.n_features, np.nan)
        np.divide(self.m2, n, out=variance, where=n > 0)
        return variance

    def update(self, batch: NDArray[np.float32] | NDArray[np.float64]) -> None:
        """Add a float32 or float64 batch (rows x n_features); a 0-row batch is fine."""
        batch = _checked_batch(batch, self.n_features, _FLOATS)
        single = batch.dtype == np.float32
        cuts = self._cuts32 if single else self._cuts64
        index = self._index32 if single else self._index64
        self._backend.update_numeric(
            batch, cuts, self._counts, self._moments, self._bins, self._scratch, index
        )

    def merge(self, other: NumericStats) -> None:
        """Add `other`'s rows to these (the same edges; `other` is left as it is)."""
        if not isinstance(other, NumericStats):
            raise TypeError(f"can only merge NumericStats, got {type(other).__name__}")
        if not np.array_equal(self.edges, other.edges):
            raise ValueError("cannot merge NumericStats over different edges")
        counts, moments, bins = other._counts.copy(), other._moments.copy(), other._bins.copy()
        merge_moments(self._moments, self.finite_count, moments, _finite(counts))
        self._counts += counts
        self._bins += bins

    def to_arrays(self) -> dict[str, NDArray[Any]]:
        """The state as copies of its arrays: edges (F, B+1), counts (4, F), moments (4, F), bins (F, B)."""
        return {
            "edges": self.edges.copy(),
            "counts": self._counts.copy(),
            "moments": self._moments.copy(),
            "bins": self._bins.copy(),
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, ArrayLike], *, backend: Backend = BACKEND) -> Self:
        """The state that `to_arrays()` gave."""
        if "edges" not in arrays:
            raise ValueError("from_arrays: 'edges' is missing")
        stats = cls(arrays["edges"], backend=backend)
        _load(arrays, "counts", stats._counts)
        _load(arrays, "moments", stats._moments)
        _load(arrays, "bins", stats._bins)
        return stats


class CategoricalStats:
    """Per-feature counts of int64 category codes, with an "other" column for codes outside."""

    def __init__(self, n_categories: ArrayLike, *, backend: Backend = BACKEND) -> None:
        sizes = np.array(n_categories)
        if sizes.ndim != 1 or sizes.size == 0 or sizes.dtype.kind not in "iu" or (sizes < 0).any():
            raise ValueError(f"n_categories must be a non-empty 1-D array of integers >= 0, got {sizes!r}")
        self._backend = backend
        self.n_categories = _readonly(sizes.astype(np.int64))
        self._counts = np.zeros((sizes.size, int(sizes.max()) + 1), np.int64)
        self.counts = _readonly(self._counts)
        self.other = self.counts[:, -1]

    @property
    def n_features(self) -> int:
        return int(self.n_categories.size)

    @property
    def count(self) -> NDArray[np.int64]:
        total: NDArray[np.int64] = self._counts.sum(axis=1)
        return total

    @property
    def nbytes(self) -> int:
        return self.n_categories.nbytes + self._counts.nbytes

    def update(self, batch: NDArray[np.int64]) -> None:
        """Add an int64 batch of codes (rows x n_features); a 0-row batch is fine."""
        batch = _checked_batch(batch, self.n_features, _CODES)
        self._backend.update_categorical(batch, self.n_categories, self._counts)

    def merge(self, other: CategoricalStats) -> None:
        """Add `other`'s rows to these (the same n_categories; `other` is left as it is)."""
        if not isinstance(other, CategoricalStats):
            raise TypeError(f"can only merge CategoricalStats, got {type(other).__name__}")
        if not np.array_equal(self.n_categories, other.n_categories):
            raise ValueError("cannot merge CategoricalStats over different n_categories")
        self._counts += other._counts.copy()

    def to_arrays(self) -> dict[str, NDArray[Any]]:
        """The state as copies of its arrays: n_categories (F,), counts (F, max K + 1)."""
        return {"n_categories": self.n_categories.copy(), "counts": self._counts.copy()}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, ArrayLike], *, backend: Backend = BACKEND) -> Self:
        """The state that `to_arrays()` gave."""
        if "n_categories" not in arrays:
            raise ValueError("from_arrays: 'n_categories' is missing")
        stats = cls(arrays["n_categories"], backend=backend)
        _load(arrays, "counts", stats._counts)
        return stats
