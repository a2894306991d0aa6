"""Feature-statistics kernels for drift detection: streaming, mergeable per-feature statistics of
request batches (rows x features), and the reference bin edges they count against.

    stats = NumericStats(quantile_edges(reference, bins=10))
    stats.update(batch)            # float32 / float64, in place, no allocation
    total.merge(stats)             # across batches, windows and worker processes

The loops are Cython (kernels/_stats.pyx, built by `pip install -e .`); kernels/_reference.py is
their NumPy twin. kernels/_backend.py picks the compiled one, or falls back to the reference with
a RuntimeWarning; COMPILED says which runs. The rules (bins, NaN and ±inf, merging) are in
kernels/_state.py.
"""

from ._backend import BACKEND, COMPILED, Backend
from ._edges import quantile_edges
from ._state import CategoricalStats, NumericStats

__all__ = ["BACKEND", "COMPILED", "Backend", "CategoricalStats", "NumericStats", "quantile_edges"]
