"""The NumPy reference of the compiled loops (kernels/_stats.pyx): the same functions, the same
arrays, the same results (counts and bins exactly; mean and M2 to rounding).

It is what runs when the extension was not built, and what the tests hold the extension to, so
it says each rule the plain way. It is vectorised as well as NumPy allows (no loop over values
or rows; one pass over the batch per inner edge, to bound the memory to the batch's size), yet
it allocates several batch-sized temporaries per call; the compiled loops allocate nothing.
`scratch` and `index` are the compiled loops' workspace; here they are left alone.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

__all__ = ["merge_moments", "update_categorical", "update_numeric"]

_Float = TypeVar("_Float", np.float32, np.float64)


def merge_moments(
    moments: NDArray[np.float64],
    n_a: NDArray[np.int64],
    other: NDArray[np.float64],
    n_b: NDArray[np.int64],
) -> None:
    """Merge `other` (min, max, mean, M2 over n_b finite values) into `moments` (over n_a) in
    place, by Chan et al.'s formula; a side with no finite values leaves the other as it is."""
    a = n_a.astype(np.float64)
    b = n_b.astype(np.float64)
    n = a + b
    np.minimum(moments[0], other[0], out=moments[0])
    np.maximum(moments[1], other[1], out=moments[1])
    delta = other[2] - moments[2]
    share = np.divide(b, n, out=np.zeros_like(n), where=n > 0)
    weight = np.divide(a * b, n, out=np.zeros_like(n), where=n > 0)
    moments[2] += np.where(b > 0, delta * share, 0.0)
    moments[3] += np.where(b > 0, other[3] + delta * delta * weight, 0.0)


def update_numeric(
    batch: NDArray[_Float],
    cuts: NDArray[_Float],
    counts: NDArray[np.int64],
    moments: NDArray[np.float64],
    bins: NDArray[np.int64],
    scratch: NDArray[np.float64],
    index: NDArray[_Float],
) -> None:
    """Add a float32 or float64 batch (rows x F) to a numeric state; the layout of the arrays is
    in kernels/_stats.pyx."""
    n_rows, n_features = batch.shape
    finite_before = counts[0] - counts[1:].sum(axis=0)
    nan = np.isnan(batch)
    finite = np.isfinite(batch)
    counts[0] += n_rows
    counts[1] += nan.sum(axis=0)
    counts[2] += (batch == np.inf).sum(axis=0)
    counts[3] += (batch == -np.inf).sum(axis=0)

    values = batch.astype(np.float64)
    n_batch = finite.sum(axis=0)
    batch_moments = np.empty((4, n_features))
    batch_moments[0] = np.where(finite, values, np.inf).min(axis=0, initial=np.inf)
    batch_moments[1] = np.where(finite, values, -np.inf).max(axis=0, initial=-np.inf)
    total = np.where(finite, values, 0.0).sum(axis=0)
    batch_moments[2] = np.divide(total, n_batch, out=np.zeros(n_features), where=n_batch > 0)
    deviation = np.where(finite, values - batch_moments[2], 0.0)
    batch_moments[3] = (deviation * deviation).sum(axis=0)
    merge_moments(moments, finite_before, batch_moments, n_batch)

    # A value's bin: the number of its feature's inner edges <= value (NaN: none).
    n_bins = bins.shape[1]
    number = np.zeros(batch.shape, np.uint8 if n_bins <= 256 else np.intp)
    at_or_above = np.empty(batch.shape, bool)
    for edge in cuts:
        np.greater_equal(batch, edge, out=at_or_above)
        number += at_or_above
    flat = (number + np.arange(n_features) * n_bins)[~nan]
    bins += np.bincount(flat, minlength=bins.size).reshape(bins.shape)


def update_categorical(
    batch: NDArray[np.int64], n_categories: NDArray[np.int64], counts: NDArray[np.int64]
) -> None:
    """Add an int64 batch of category codes (rows x F) to counts (F, K + 1): code c of feature f
    counts in column c when 0 <= c < n_categories[f], else in the last column ("other")."""
    n_features = batch.shape[1]
    width = counts.shape[1]
    inside = (batch >= 0) & (batch < n_categories)
    column = np.where(inside, batch, width - 1)
    flat = column + np.arange(n_features) * width
    counts += np.bincount(flat.ravel(), minlength=counts.size).reshape(counts.shape)
