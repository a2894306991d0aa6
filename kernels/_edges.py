"""Reference bin edges: per-feature quantiles of reference data, made fit for counting.

A NumericStats bin is decided by the inner edges only (see kernels/_state.py): a value's bin is
the number of its feature's inner edges <= value. Quantile edges repeat where the reference has
a point mass (a constant feature, a feature that is mostly zero). A run of equal inner edges
would put the point mass and everything just above it into one bin, so the run's last edge is
moved up to the next float: the point mass keeps a bin of its own ([v, v+) holds v alone), the
bins inside the run stay empty, and a shift to values above v lands in a different bin.
"""

from __future__ import annotations

import warnings

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["quantile_edges"]


def quantile_edges(data: ArrayLike, bins: int) -> NDArray[np.float64]:
    """Edges (F, bins + 1) of `bins` equal-mass bins per feature of `data` (rows x F).

    Quantiles are taken over each feature's finite values; NaN and ±inf are left out. Edges are
    non-decreasing, finite and fit NumericStats; a run of equal inner edges ends one float above
    (module docstring). A feature with no finite value gets edges at 0.
    """
    if isinstance(bins, bool) or not isinstance(bins, int | np.integer) or bins < 1:
        raise ValueError(f"bins must be an integer >= 1, got {bins!r}")
    values = np.asarray(data)
    if values.ndim != 2 or values.shape[0] == 0 or values.shape[1] == 0:
        raise ValueError(f"data must be 2-D (rows x features) and not empty, got shape {values.shape}")
    if values.dtype.kind not in "fiu":
        raise TypeError(f"data must hold numbers, got dtype {values.dtype}")
    values = values.astype(np.float64)
    values[~np.isfinite(values)] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a feature with no finite value: all NaN
        edges = np.nanquantile(values, np.linspace(0.0, 1.0, bins + 1), axis=0).T
    edges = np.maximum.accumulate(np.nan_to_num(edges, nan=0.0), axis=1)  # rounding never unsorts

    inner = edges[:, 1:-1]
    same_as_previous = np.zeros(inner.shape, bool)
    same_as_previous[:, 1:] = inner[:, 1:] == inner[:, :-1]
    same_as_next = np.zeros(inner.shape, bool)
    same_as_next[:, :-1] = same_as_previous[:, 1:]
    run_end = same_as_previous & ~same_as_next
    inner[run_end] = np.nextafter(inner[run_end], np.inf)
    np.maximum(edges[:, -1], edges[:, -2], out=edges[:, -1])
    return edges
