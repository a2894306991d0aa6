# The loops of kernels/_stats.pyx, for other Cython modules to `cimport`; Python code uses
# kernels.NumericStats and kernels.CategoricalStats. The arrays' layout is in _stats.pyx's
# docstring. The loops trust their caller: the shapes agree, and they run without the GIL.

from cython cimport floating
from libc.stdint cimport int64_t


cdef void numeric_update(
    const floating[:, ::1] batch,
    const floating[:, ::1] cuts,
    int64_t[:, ::1] counts,
    double[:, ::1] moments,
    int64_t[:, ::1] bins,
    double[:, ::1] scratch,
    floating[::1] index,
) noexcept nogil

cdef void categorical_update(
    const int64_t[:, ::1] batch,
    const int64_t[::1] n_categories,
    int64_t[:, ::1] counts,
) noexcept nogil
