"""A shadow's answer against the primary's, output by output (pure; NumPy only).

Numbers agree when every element is within `atol + rtol * |primary|` (numpy.isclose's rule,
NaN equal to NaN); anything else (BYTES, BOOL) must be equal. A missing output, or one whose
shape differs, disagrees with an infinite difference. For 2-D numeric outputs (rows × classes)
the argmax of each row is compared too: a classifier can drift in its scores and still agree
on every label.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Comparison", "compare"]


@dataclass(frozen=True, slots=True)
class Comparison:
    agree: bool  # every output within tolerance
    max_abs_diff: float  # over every output (inf: a shape or an output differs)
    argmax_rows: int  # rows of 2-D outputs compared by argmax
    argmax_agree: int  # of those, rows whose argmax agrees
    outputs: tuple[str, ...]  # the outputs that disagree


def compare(
    primary: Mapping[str, np.ndarray],
    shadow: Mapping[str, np.ndarray],
    names: Sequence[str],
    atol: float,
    rtol: float,
) -> Comparison:
    worst, rows, rows_agree, bad = 0.0, 0, 0, []
    for name in names:
        a, b = primary.get(name), shadow.get(name)
        if a is None or b is None or a.shape != b.shape:
            worst = float("inf")
            bad.append(name)
            continue
        if a.dtype.kind in "fiuc" and b.dtype.kind in "fiuc":
            if a.size:
                a64, b64 = a.astype(np.float64, copy=False), b.astype(np.float64, copy=False)
                diff = np.abs(a64 - b64)
                both_nan = np.isnan(a64) & np.isnan(b64)
                finite = np.where(both_nan, 0.0, diff)
                worst = max(worst, float(np.nanmax(np.where(np.isnan(finite), np.inf, finite))))
                if not np.all(np.isclose(b64, a64, rtol=rtol, atol=atol, equal_nan=True)):
                    bad.append(name)
                if a.ndim == 2 and a.shape[1] > 1:
                    rows += a.shape[0]
                    rows_agree += int(np.count_nonzero(np.argmax(a, axis=1) == np.argmax(b, axis=1)))
        elif not np.array_equal(a, b):
            worst = float("inf")
            bad.append(name)
    return Comparison(not bad, worst, rows, rows_agree, tuple(bad))
