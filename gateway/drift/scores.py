"""Distance scores between a reference and a live distribution, per feature, from bin counts.

Every score works on the same binned data (the reference's quantile bins, see kernels/), so a
window of any size costs O(features x bins) to score. They are distances, not p-values: a
p-value flags everything once the window is large, a distance says how far apart the two are.

    psi          population stability index: sum (q - p) ln(q / p), empty bins smoothed by EPS;
                 a common reading: < 0.1 stable, 0.1-0.25 moved, > 0.25 shifted
    js           Jensen-Shannon distance, base 2 (0: same, 1: disjoint)
    ks           Kolmogorov-Smirnov statistic of the binned CDFs: the largest gap between them
    wasserstein  Wasserstein-1 between the binned distributions, each bin at its midpoint (the
                 outer bins at the reference's min and max): in the feature's own units

`p` is the reference's share per bin, `q` the live one's; rows (features) with no live value
score 0 (nothing to compare).

Categorical features (`categorical_scores`) have shares per category, "other" included, and no
order: PSI and JS are the same sums over them; KS and Wasserstein-1 need an order or a distance
between values, so both read the total variation distance, 1/2 sum |q - p| (the largest gap in
share over any set of categories: what KS becomes without an order, and what W1 is when any two
categories are 1 apart).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import NDArray

__all__ = ["EPS", "SCORES", "Score", "bin_positions", "categorical_scores", "score"]

Score = Literal["psi", "js", "ks", "wasserstein"]
SCORES: tuple[Score, ...] = ("psi", "js", "ks", "wasserstein")
EPS = 1e-4  # the share an empty bin is taken to have (PSI's logarithm needs it)

F64 = NDArray[np.float64]


def _shares(counts: NDArray[np.integer] | F64) -> tuple[F64, NDArray[np.bool_]]:
    counts = np.asarray(counts, dtype=np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    empty = totals[:, 0] == 0
    return counts / np.where(totals == 0, 1.0, totals), empty


def bin_positions(edges: F64) -> F64:
    """Where each bin sits: the midpoint of its edges (edges (F, B + 1))."""
    return (edges[:, :-1] + edges[:, 1:]) / 2


def score(
    kind: Score, reference: NDArray[np.integer] | F64, live: NDArray[np.integer] | F64, edges: F64
) -> F64:
    """The score per feature; `reference` and `live` are counts (F, B) over the same `edges`."""
    p, no_ref = _shares(reference)
    q, no_live = _shares(live)
    if kind == "psi":
        ps, qs = np.maximum(p, EPS), np.maximum(q, EPS)
        out = ((qs - ps) * np.log(qs / ps)).sum(axis=1)
    elif kind == "js":
        m = (p + q) / 2
        with np.errstate(divide="ignore", invalid="ignore"):
            kl_p = np.where(p > 0, p * np.log2(p / m), 0.0).sum(axis=1)
            kl_q = np.where(q > 0, q * np.log2(q / m), 0.0).sum(axis=1)
        out = np.sqrt(np.maximum((kl_p + kl_q) / 2, 0.0))
    elif kind == "ks":
        out = np.abs(np.cumsum(p, axis=1) - np.cumsum(q, axis=1)).max(axis=1)
    elif kind == "wasserstein":
        gaps = np.diff(bin_positions(np.asarray(edges, dtype=np.float64)), axis=1)
        cdf_gap = np.abs(np.cumsum(p, axis=1) - np.cumsum(q, axis=1))[:, :-1]
        out = (cdf_gap * gaps).sum(axis=1)
    else:
        raise ValueError(f"unknown score '{kind}' (one of {', '.join(SCORES)})")
    out[no_ref | no_live] = 0.0
    return np.asarray(out, dtype=np.float64)


def categorical_scores(
    kind: Score, reference: NDArray[np.integer] | F64, live: NDArray[np.integer] | F64
) -> F64:
    """The score per categorical feature; `reference` and `live` are counts per category (F, K + 1)."""
    if kind in ("psi", "js"):
        return score(kind, reference, live, np.zeros((len(reference), 2)))
    if kind not in SCORES:
        raise ValueError(f"unknown score '{kind}' (one of {', '.join(SCORES)})")
    p, no_ref = _shares(reference)
    q, no_live = _shares(live)
    out = np.abs(q - p).sum(axis=1) / 2
    out[no_ref | no_live] = 0.0
    return np.asarray(out, dtype=np.float64)
