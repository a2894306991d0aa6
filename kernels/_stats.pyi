"""Types of the compiled loops (kernels/_stats.pyx); kernels/_reference.py has the same API."""

from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

_Float = TypeVar("_Float", np.float32, np.float64)

def update_numeric(
    batch: NDArray[_Float],
    cuts: NDArray[_Float],
    counts: NDArray[np.int64],
    moments: NDArray[np.float64],
    bins: NDArray[np.int64],
    scratch: NDArray[np.float64],
    index: NDArray[_Float],
) -> None: ...
def update_categorical(
    batch: NDArray[np.int64], n_categories: NDArray[np.int64], counts: NDArray[np.int64]
) -> None: ...
