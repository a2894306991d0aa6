# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False, cdivision=True
"""Per-feature statistics of a (rows x features) batch, added in place to a state, without the GIL.

kernels/_state.py owns the state's arrays and lays them out; these loops only add a batch:

    counts   int64 (4, F)       values, NaN, +inf, -inf
    moments  float64 (4, F)     min, max, mean, M2 over the finite values
    bins     int64 (F, B)       reference bins
    cuts     (B - 1, F)         each feature's inner edges, transposed, in the batch's dtype
    scratch  float64 (4, F)     the state's finite count; the block's finite count, mean, M2
    index    (F,)               a row's bin numbers, in the batch's dtype

The batch is read row by row, as it lies in memory, with one accumulator per feature, in blocks
of rows small enough to stay in the L1 cache:

* A value's bin is the number of inner edges <= value. For one row, all features at once: for
  each edge level, compare 8 features' values with their edges and add the 0/1 results. There is
  no branch to mispredict and the compiler turns it into SIMD code (plain SSE2: the wheel must
  not need -march=native); for the 10-20 bins of drift detection that beats a binary search per
  value. The edges come in the batch's dtype: float32 edges are rounded up, so `x >= edge`
  decides the same in float32 as in float64 (kernels/_state.py).
* Each block's mean and M2 come from two passes over the block (the second one reads the
  cache), merged into the state by Chan et al.'s formula: as stable as a two-pass variance, and
  one division per feature and block rather than one per value as with Welford's update.
"""

from cython cimport floating
from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memset

cdef enum:
    # Values per block: at most 32 KiB of float64, the L1 data cache of most cores.
    BLOCK_VALUES = 4096
    # Features binned together: 8 accumulators are 2 SSE2 registers of float32 (4 of float64).
    BIN_LANES = 8


def update_numeric(
    const floating[:, ::1] batch,
    const floating[:, ::1] cuts,
    int64_t[:, ::1] counts,
    double[:, ::1] moments,
    int64_t[:, ::1] bins,
    double[:, ::1] scratch,
    floating[::1] index,
):
    """Add a float32 or float64 batch to a numeric state (layout in the module docstring)."""
    cdef Py_ssize_t n_features = batch.shape[1]
    if not (
        cuts.shape[1] == bins.shape[0] == index.shape[0] == n_features
        and cuts.shape[0] + 1 == bins.shape[1]
        and counts.shape[0] == moments.shape[0] == scratch.shape[0] == 4
        and counts.shape[1] == moments.shape[1] == scratch.shape[1] == n_features
    ):
        raise ValueError("update_numeric: the state's arrays do not fit the batch's features")
    with nogil:
        numeric_update(batch, cuts, counts, moments, bins, scratch, index)


def update_categorical(
    const int64_t[:, ::1] batch,
    const int64_t[::1] n_categories,
    int64_t[:, ::1] counts,
):
    """Add an int64 batch of category codes to a categorical state's counts (F, K + 1)."""
    cdef Py_ssize_t f, n_features = batch.shape[1]
    if not (n_categories.shape[0] == counts.shape[0] == n_features):
        raise ValueError("update_categorical: the state's arrays do not fit the batch's features")
    for f in range(n_features):
        if not 0 <= n_categories[f] < counts.shape[1]:
            raise ValueError("update_categorical: n_categories does not fit the counts' columns")
    with nogil:
        categorical_update(batch, n_categories, counts)


cdef inline void _bin_row(
    const floating* row, const floating* cuts, Py_ssize_t n_cuts, Py_ssize_t n_features, floating* index
) noexcept nogil:
    """index[f] = the number of feature f's inner edges <= row[f] (0 for NaN)."""
    cdef Py_ssize_t j, f, first = 0
    cdef const floating* cut
    cdef floating count[BIN_LANES]
    cdef floating value[BIN_LANES]
    while first + BIN_LANES <= n_features:
        for f in range(BIN_LANES):
            count[f] = 0
            value[f] = row[first + f]
        for j in range(n_cuts):
            cut = cuts + j * n_features + first
            for f in range(BIN_LANES):
                count[f] += cut[f] <= value[f]
        for f in range(BIN_LANES):
            index[first + f] = count[f]
        first += BIN_LANES
    for f in range(first, n_features):
        index[f] = 0
    for j in range(n_cuts):
        cut = cuts + j * n_features
        for f in range(first, n_features):
            index[f] += cut[f] <= row[f]


cdef void numeric_update(
    const floating[:, ::1] batch,
    const floating[:, ::1] cuts,
    int64_t[:, ::1] counts,
    double[:, ::1] moments,
    int64_t[:, ::1] bins,
    double[:, ::1] scratch,
    floating[::1] index,
) noexcept nogil:
    cdef Py_ssize_t n_rows = batch.shape[0], n_features = batch.shape[1], n_cuts = cuts.shape[0]
    cdef Py_ssize_t block = max(1, BLOCK_VALUES // max(1, n_features))
    cdef Py_ssize_t start = 0, stop, r, f
    cdef const floating* row
    cdef double value, delta, n
    cdef int64_t* nan = &counts[1, 0]
    cdef int64_t* pos_inf = &counts[2, 0]
    cdef int64_t* neg_inf = &counts[3, 0]
    cdef double* lo = &moments[0, 0]
    cdef double* hi = &moments[1, 0]
    cdef double* mean = &moments[2, 0]
    cdef double* m2 = &moments[3, 0]
    cdef double* n_state = &scratch[0, 0]
    cdef double* n_block = &scratch[1, 0]
    cdef double* mean_block = &scratch[2, 0]
    cdef double* m2_block = &scratch[3, 0]

    for f in range(n_features):
        n_state[f] = <double>(counts[0, f] - nan[f] - pos_inf[f] - neg_inf[f])
        counts[0, f] += n_rows
    while start < n_rows:
        stop = min(start + block, n_rows)
        memset(n_block, 0, 3 * n_features * sizeof(double))
        # Pass 1: bins, counts, extrema and the block's sums.
        for r in range(start, stop):
            row = &batch[r, 0]
            _bin_row(row, &cuts[0, 0], n_cuts, n_features, &index[0])
            for f in range(n_features):
                value = row[f]
                if value - value == 0:  # finite (NaN and ±inf give NaN)
                    n_block[f] += 1
                    mean_block[f] += value
                    if value < lo[f]:
                        lo[f] = value
                    if value > hi[f]:
                        hi[f] = value
                    bins[f, <Py_ssize_t>index[f]] += 1
                elif value != value:
                    nan[f] += 1
                else:  # ±inf: its bin is the first or the last
                    if value > 0:
                        pos_inf[f] += 1
                    else:
                        neg_inf[f] += 1
                    bins[f, <Py_ssize_t>index[f]] += 1
        for f in range(n_features):
            if n_block[f] > 0:
                mean_block[f] /= n_block[f]
        # Pass 2: the block's M2 about its own mean.
        for r in range(start, stop):
            row = &batch[r, 0]
            for f in range(n_features):
                value = row[f]
                if value - value == 0:
                    delta = value - mean_block[f]
                    m2_block[f] += delta * delta
        # Chan et al.: the state (n_a, mean, M2) and the block (n_b, mean_b, M2_b) become one.
        for f in range(n_features):
            if n_block[f] > 0:
                n = n_state[f] + n_block[f]
                delta = mean_block[f] - mean[f]
                mean[f] += delta * (n_block[f] / n)
                m2[f] += m2_block[f] + delta * delta * (n_state[f] * n_block[f] / n)
                n_state[f] = n
        start = stop


cdef void categorical_update(
    const int64_t[:, ::1] batch,
    const int64_t[::1] n_categories,
    int64_t[:, ::1] counts,
) noexcept nogil:
    cdef Py_ssize_t n_rows = batch.shape[0], n_features = batch.shape[1]
    cdef Py_ssize_t other = counts.shape[1] - 1
    cdef Py_ssize_t r, f
    cdef const int64_t* row
    cdef int64_t code
    for r in range(n_rows):
        row = &batch[r, 0]
        for f in range(n_features):
            code = row[f]
            # One unsigned comparison sends negative codes and codes >= K alike to "other".
            if <uint64_t>code < <uint64_t>n_categories[f]:
                counts[f, code] += 1
            else:
                counts[f, other] += 1
