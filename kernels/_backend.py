"""Which implementation runs the loops: the compiled extension, or, when it was not built (a
source checkout without `pip install -e .`), the NumPy reference, with a warning that says so.

Both modules are a `Backend`: the same functions over the same arrays. The state classes use
BACKEND unless given another (the tests run everything against both).
"""

from __future__ import annotations

import warnings
from typing import Protocol, TypeVar

import numpy as np
from numpy.typing import NDArray

from . import _reference

__all__ = ["BACKEND", "COMPILED", "Backend"]

_Float = TypeVar("_Float", np.float32, np.float64)


class Backend(Protocol):
    def update_numeric(
        self,
        batch: NDArray[_Float],
        cuts: NDArray[_Float],
        counts: NDArray[np.int64],
        moments: NDArray[np.float64],
        bins: NDArray[np.int64],
        scratch: NDArray[np.float64],
        index: NDArray[_Float],
    ) -> None: ...

    def update_categorical(
        self, batch: NDArray[np.int64], n_categories: NDArray[np.int64], counts: NDArray[np.int64]
    ) -> None: ...


BACKEND: Backend
try:
    from . import _stats
except ImportError as exc:
    warnings.warn(
        f"kernels: the compiled extension is not built ({exc}); using the NumPy reference, "
        "which is many times slower. Build it with `pip install -e .`.",
        RuntimeWarning,
        stacklevel=2,
    )
    BACKEND = _reference
else:
    BACKEND = _stats

COMPILED: bool = BACKEND is not _reference
