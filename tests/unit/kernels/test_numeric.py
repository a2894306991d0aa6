"""kernels.NumericStats: the rules on small examples, the input forms a request tensor takes, and
the errors for batches and states that do not fit."""

from __future__ import annotations

import pickle
import tracemalloc
from types import ModuleType

import numpy as np
import pytest

from kernels import NumericStats, _stats

NAN, INF = np.nan, np.inf
# One feature, 4 bins: (-inf, 1) [1, 2) [2, 3) [3, +inf); the outer edges 0 and 4 do not count.
EDGES = [[0.0, 1.0, 2.0, 3.0, 4.0]]


def column(*values: float, dtype: type = np.float64) -> np.ndarray:
    return np.array(values, dtype=dtype).reshape(-1, 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bins_counts_and_extrema(backend: ModuleType, dtype: type) -> None:
    stats = NumericStats(EDGES, backend=backend)
    stats.update(column(-5.0, 0.5, 1.0, 1.5, 2.0, 2.999, 3.0, 4.0, 100.0, NAN, INF, -INF, dtype=dtype))
    # below e_0 and below e_1 -> 0; an inner edge starts its bin; above e_4 -> last; ±inf at the ends
    assert stats.bins.tolist() == [[3, 2, 2, 4]]
    assert (stats.count[0], stats.nan_count[0], stats.posinf_count[0], stats.neginf_count[0]) == (12, 1, 1, 1)
    assert stats.finite_count.tolist() == [9]
    assert (stats.min[0], stats.max[0]) == (-5.0, 100.0)
    finite = np.array([-5.0, 0.5, 1.0, 1.5, 2.0, 2.999, 3.0, 4.0, 100.0], dtype=dtype).astype(np.float64)
    assert stats.mean[0] == pytest.approx(finite.mean(), rel=1e-12)
    assert stats.variance()[0] == pytest.approx(finite.var(), rel=1e-12)
    assert stats.variance(ddof=1)[0] == pytest.approx(finite.var(ddof=1), rel=1e-12)


def test_a_fresh_state_and_features_without_finite_values(backend: ModuleType) -> None:
    stats = NumericStats([[0.0, 1.0], [0.0, 1.0]], backend=backend)
    assert stats.n_features == 2 and stats.n_bins == 1
    assert stats.min.tolist() == [INF, INF] and stats.max.tolist() == [-INF, -INF]
    stats.update(np.array([[NAN, 5.0], [INF, 7.0]]))
    assert stats.bins.tolist() == [[1], [2]]  # one bin: every value but NaN
    assert stats.min.tolist() == [INF, 5.0] and stats.max.tolist() == [-INF, 7.0]
    assert stats.mean.tolist() == [0.0, 6.0] and stats.m2.tolist() == [0.0, 2.0]
    assert np.isnan(stats.variance()[0])


def test_empty_and_one_row_batches(backend: ModuleType) -> None:
    stats = NumericStats(EDGES, backend=backend)
    stats.update(np.empty((0, 1), np.float32))
    assert stats.count.tolist() == [0] and stats.bins.sum() == 0
    stats.update(column(2.5))
    assert stats.count.tolist() == [1] and stats.bins.tolist() == [[0, 0, 1, 0]]
    assert (stats.mean[0], stats.m2[0]) == (2.5, 0.0)


def test_float32_decides_as_float64_at_edges_float32_cannot_hold(backend: ModuleType) -> None:
    # 0.1 lies between two float32 values; 1e39 is beyond float32's range.
    stats = NumericStats([[0.0, 0.1, 1e39, 2e39]], backend=backend)
    just_below = np.nextafter(np.float32(0.1), np.float32(0))
    values = np.array([just_below, np.float32(0.1), np.finfo(np.float32).max, INF], np.float32)
    stats.update(values.reshape(-1, 1))
    expected = (values.astype(np.float64)[:, None] >= np.array([0.1, 1e39])).sum(axis=1)
    assert expected.tolist() == [0, 1, 1, 2]
    assert stats.bins.tolist() == [[1, 2, 1]]


def test_features_keep_their_own_edges(backend: ModuleType) -> None:
    n_features = 19  # two blocks of 8 features binned together, and 3 left over
    edges = np.array([[f, f + 1.0, f + 2.0] for f in range(n_features)])
    stats = NumericStats(edges, backend=backend)
    batch = np.tile(np.arange(n_features, dtype=np.float32) + 1.5, (3, 1))  # in each feature's bin 1
    stats.update(batch)
    assert stats.bins.tolist() == [[0, 3]] * n_features


def test_read_only_non_contiguous_and_misaligned_batches(backend: ModuleType) -> None:
    rng = np.random.default_rng(7)
    data = rng.normal(size=(50, 6)).astype(np.float32)
    edges = np.quantile(data, np.linspace(0, 1, 6), axis=0).T
    expected = NumericStats(edges, backend=backend)
    expected.update(data)

    raw = b"\0" + data.tobytes()
    batches = {
        "frombuffer": np.frombuffer(data.tobytes(), np.float32).reshape(50, 6),  # read-only
        "misaligned": np.frombuffer(raw, np.float32, offset=1).reshape(50, 6),
        "fortran": np.asfortranarray(data),
        "strided": np.repeat(data, 2, axis=0)[::2],
    }
    assert not batches["frombuffer"].flags.writeable and not batches["misaligned"].flags.aligned
    for name, batch in batches.items():
        stats = NumericStats(edges, backend=backend)
        stats.update(batch)
        for key, value in expected.to_arrays().items():
            np.testing.assert_array_equal(stats.to_arrays()[key], value, err_msg=name)


def test_the_state_is_read_only_from_outside(backend: ModuleType) -> None:
    stats = NumericStats(EDGES, backend=backend)
    for array in (stats.bins, stats.count, stats.mean, stats.edges):
        with pytest.raises(ValueError, match="read-only"):
            array[0] = 1


def test_merge_adds_and_checks_edges(backend: ModuleType) -> None:
    a, b = NumericStats(EDGES, backend=backend), NumericStats(EDGES, backend=backend)
    a.update(column(0.5, 1.5, NAN))
    b.update(column(3.5, INF))
    a.merge(b)
    assert a.bins.tolist() == [[1, 1, 0, 2]] and a.count.tolist() == [5]
    assert (a.min[0], a.max[0], a.mean[0]) == (0.5, 3.5, pytest.approx(5.5 / 3))
    assert b.count.tolist() == [2]  # left as it was
    a.merge(a)
    assert a.bins.tolist() == [[2, 2, 0, 4]] and a.m2[0] == pytest.approx(np.var([0.5, 1.5, 3.5]) * 6)
    with pytest.raises(ValueError, match="different edges"):
        a.merge(NumericStats([[0.0, 1.0, 2.0, 3.0, 5.0]], backend=backend))
    with pytest.raises(TypeError, match="NumericStats"):
        a.merge("stats")  # type: ignore[arg-type]


def test_to_and_from_arrays_between_processes(backend: ModuleType) -> None:
    stats = NumericStats(EDGES, backend=backend)
    stats.update(column(0.5, 2.5, NAN, -INF))
    sent = pickle.loads(pickle.dumps(stats.to_arrays()))
    copy = NumericStats.from_arrays(sent, backend=backend)
    for key, value in stats.to_arrays().items():
        np.testing.assert_array_equal(copy.to_arrays()[key], value)
    copy.update(column(3.5))
    assert copy.bins.tolist() == [[2, 0, 1, 1]] and stats.bins.tolist() == [[2, 0, 1, 0]]


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"counts": np.zeros((4, 1), np.int64)}, "'edges' is missing"),
        ({"edges": EDGES}, "'counts' is missing"),
        (
            {"edges": EDGES, "counts": np.zeros((4, 2), np.int64), "moments": 0, "bins": 0},
            r"'counts' must be int64 of shape \(4, 1\), got int64 of shape \(4, 2\)",
        ),
        (
            {"edges": EDGES, "counts": np.zeros((4, 1), np.int64), "moments": np.zeros((4, 1), np.float32)},
            "'moments' must be float64",
        ),
    ],
)
def test_from_arrays_rejects_what_does_not_fit(arrays: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        NumericStats.from_arrays(arrays)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("batch", "error", "message"),
    [
        (np.zeros((2, 1), np.int32), TypeError, "batch dtype is int32, expected float32 or float64"),
        (np.zeros((2, 1), np.float16), TypeError, "batch dtype is float16"),
        (np.zeros((2, 1), ">f8"), TypeError, "native byte order"),
        (np.zeros((2, 1), object), TypeError, "batch dtype is object"),
        ([[1.0]], TypeError, "batch must be a numpy.ndarray, got list"),
        (np.zeros(3), ValueError, r"batch must be 2-D \(rows x features\), got shape \(3,\)"),
        (np.zeros((2, 1, 1)), ValueError, r"got shape \(2, 1, 1\)"),
        (np.zeros((2, 3)), ValueError, r"batch has 3 features \(shape \(2, 3\)\), the stats have 1"),
    ],
)
def test_batches_that_do_not_fit(backend: ModuleType, batch: object, error: type, message: str) -> None:
    stats = NumericStats(EDGES, backend=backend)
    with pytest.raises(error, match=message):
        stats.update(batch)  # type: ignore[arg-type]
    assert stats.count.tolist() == [0]


@pytest.mark.parametrize(
    ("edges", "message"),
    [
        ([0.0, 1.0], r"edges must be \(features, bins \+ 1\)"),
        ([[0.0]], r"got shape \(1, 1\)"),
        (np.zeros((0, 3)), r"got shape \(0, 3\)"),
        ([[0.0, NAN, 1.0]], "edges must be finite"),
        ([[0.0, INF]], "edges must be finite"),
        ([[0.0, 2.0, 1.0]], "must be sorted"),
    ],
)
def test_edges_that_do_not_fit(edges: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        NumericStats(edges)  # type: ignore[arg-type]


def test_the_compiled_loops_check_the_arrays_they_are_given() -> None:
    stats = NumericStats(EDGES, backend=_stats)
    arrays = [stats._cuts64, stats._counts, stats._moments, stats._bins, stats._scratch, stats._index64]
    with pytest.raises(ValueError, match="do not fit"):
        _stats.update_numeric(np.zeros((2, 3)), *arrays)
    with pytest.raises(ValueError, match="Buffer dtype mismatch"):
        _stats.update_numeric(np.zeros((2, 1), np.float32), *arrays)  # float32 batch, float64 edges


def test_the_compiled_update_allocates_nothing_per_value() -> None:
    rng = np.random.default_rng(3)
    batch = rng.normal(size=(20_000, 32)).astype(np.float32)  # 2.5 MB
    stats = NumericStats(np.quantile(batch, np.linspace(0, 1, 11), axis=0).T, backend=_stats)
    stats.update(batch)
    tracemalloc.start()
    try:
        stats.update(batch)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4096, f"update allocated {peak} bytes"
