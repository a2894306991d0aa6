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

INF = float("inf")


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
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf is dealt with in _output
        for name in names:
            ok, diff, n, agree = _output(primary.get(name), shadow.get(name), atol, rtol)
            worst, rows, rows_agree = max(worst, diff), rows + n, rows_agree + agree
            if not ok:
                bad.append(name)
    return Comparison(not bad, worst, rows, rows_agree, tuple(bad))


def _output(
    a: np.ndarray | None, b: np.ndarray | None, atol: float, rtol: float
) -> tuple[bool, float, int, int]:
    """(within tolerance, largest difference, 2-D rows compared by argmax, rows that agree)."""
    if a is None or b is None or a.shape != b.shape:
        return False, INF, 0, 0
    if a.dtype.kind not in "fiuc" or b.dtype.kind not in "fiuc":
        return (True, 0.0, 0, 0) if np.array_equal(a, b) else (False, INF, 0, 0)
    if not a.size:
        return True, 0.0, 0, 0
    if a.dtype.kind in "fc" and b.dtype.kind in "fc":
        diff = np.abs(a - b)
    else:  # integers: no wrap-around in the subtraction
        diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    largest = float(diff.max())
    if largest != largest:  # a NaN: NaN equals NaN (and inf inf), else infinitely far
        same = (np.isnan(a) & np.isnan(b)) | (a == b)
        diff = np.where(same, 0.0, np.where(np.isnan(diff), INF, diff))
        largest = float(diff.max())
    ok = largest <= atol or bool((diff <= atol + rtol * np.abs(a)).all())
    if a.ndim == 2 and a.shape[1] > 1:
        return ok, largest, a.shape[0], int(np.count_nonzero(a.argmax(axis=1) == b.argmax(axis=1)))
    return ok, largest, 0, 0
