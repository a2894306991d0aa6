"""Property tests: the compiled loops against the NumPy reference and the definitions, and merging
over any split of a batch, on random data with NaN, ±inf, values on the edges, float32 and
float64, empty and one-row batches and all-NaN features."""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from kernels import CategoricalStats, NumericStats, _reference, _stats

# The backend fixture is a module: sharing it across examples is safe.
shared_fixture = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
EXACT = ("counts", "bins", "edges")


@dataclass
class Case:
    batch: np.ndarray
    edges: np.ndarray


def finite_numbers(dtype: type) -> st.SearchStrategy[float]:
    # Quarters on a small grid meet the edges often; the wide range exercises the moments.
    width = 32 if dtype == np.float32 else 64
    return st.one_of(
        st.integers(-12, 12).map(lambda i: i / 4),
        st.floats(-1e6, 1e6, width=width),
    )


@st.composite
def cases(draw: st.DrawFn, max_rows: int = 40) -> Case:
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    n_rows = draw(st.integers(0, max_rows))
    n_features = draw(st.integers(1, 11))  # more than the 8 features binned together
    n_bins = draw(st.integers(1, 12))
    special = st.sampled_from([np.nan, np.inf, -np.inf])
    elements = st.one_of(finite_numbers(dtype), special) if draw(st.booleans()) else finite_numbers(dtype)
    batch = draw(hnp.arrays(dtype, (n_rows, n_features), elements=elements))
    for f in draw(st.lists(st.integers(0, n_features - 1), max_size=2)):
        batch[:, f] = np.nan  # all-NaN features
    edge_values = st.integers(-12, 12).map(lambda i: i / 4) | st.floats(-10, 10)
    edges = draw(hnp.arrays(np.float64, (n_features, n_bins + 1), elements=edge_values))
    return Case(batch, np.sort(edges, axis=1))


def stats_of(case: Case, backend: ModuleType, batches: list[np.ndarray] | None = None) -> NumericStats:
    stats = NumericStats(case.edges, backend=backend)
    for batch in [case.batch] if batches is None else batches:
        stats.update(batch)
    return stats


def assert_same(actual: NumericStats, expected: NumericStats, values: np.ndarray) -> None:
    """Counts, bins, min and max exactly; mean and M2 to rounding, relative to the values' size."""
    a, e = actual.to_arrays(), expected.to_arrays()
    for key in EXACT:
        np.testing.assert_array_equal(a[key], e[key], err_msg=key)
    np.testing.assert_array_equal(a["moments"][:2], e["moments"][:2], err_msg="min/max")
    finite = np.abs(values[np.isfinite(values)].astype(np.float64))
    scale = float(finite.max()) if finite.size else 0.0
    np.testing.assert_allclose(a["moments"][2], e["moments"][2], rtol=1e-9, atol=1e-12 * scale)
    m2_scale = scale * scale * max(1, len(values))
    np.testing.assert_allclose(a["moments"][3], e["moments"][3], rtol=1e-9, atol=1e-12 * m2_scale)


@shared_fixture
@given(case=cases())
def test_compiled_matches_reference(case: Case) -> None:
    assert_same(stats_of(case, _stats), stats_of(case, _reference), case.batch)


@shared_fixture
@given(case=cases())
def test_statistics_match_their_definitions(backend: ModuleType, case: Case) -> None:
    stats = stats_of(case, backend)
    values = case.batch.astype(np.float64)
    finite = np.isfinite(values)
    assert stats.count.tolist() == [len(values)] * values.shape[1]
    assert stats.nan_count.tolist() == np.isnan(values).sum(axis=0).tolist()
    assert stats.posinf_count.tolist() == (values == np.inf).sum(axis=0).tolist()
    assert stats.neginf_count.tolist() == (values == -np.inf).sum(axis=0).tolist()
    for f in range(values.shape[1]):
        column = values[finite[:, f], f]
        assert stats.min[f] == (column.min() if column.size else np.inf)
        assert stats.max[f] == (column.max() if column.size else -np.inf)
        number = np.searchsorted(case.edges[f, 1:-1], values[:, f], side="right")  # inner edges <= x
        expected = np.bincount(number[~np.isnan(values[:, f])], minlength=stats.n_bins)
        assert stats.bins[f].tolist() == expected.tolist()
        if column.size:
            scale = float(np.abs(column).max())
            assert abs(stats.mean[f] - column.mean()) <= 1e-9 * scale
            assert abs(stats.m2[f] - column.var() * column.size) <= 1e-9 * scale * scale * column.size


@shared_fixture
@given(case=cases(max_rows=60), data=st.data())
def test_any_split_merges_to_the_whole(backend: ModuleType, case: Case, data: st.DataObject) -> None:
    n_rows = len(case.batch)
    cuts = sorted(data.draw(st.lists(st.integers(0, n_rows), max_size=4), label="cuts"))
    parts = np.split(case.batch, cuts)
    whole = stats_of(case, backend)

    merged = NumericStats(case.edges, backend=backend)
    for part in parts:  # each part in its own state, as in separate windows or processes
        merged.merge(stats_of(case, backend, [part]))
    assert_same(merged, whole, case.batch)
    assert_same(stats_of(case, backend, parts), whole, case.batch)  # one state, batch by batch


@st.composite
def category_cases(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    n_features = draw(st.integers(1, 6))
    sizes = draw(hnp.arrays(np.int64, n_features, elements=st.integers(0, 6)))
    codes = st.one_of(st.integers(-2, 8), st.sampled_from([np.iinfo(np.int64).min, np.iinfo(np.int64).max]))
    batch = draw(hnp.arrays(np.int64, (draw(st.integers(0, 30)), n_features), elements=codes))
    return sizes, batch


@shared_fixture
@given(case=category_cases(), data=st.data())
def test_categories_match_their_definition_over_any_split(
    backend: ModuleType, case: tuple[np.ndarray, np.ndarray], data: st.DataObject
) -> None:
    sizes, batch = case
    whole = CategoricalStats(sizes, backend=backend)
    whole.update(batch)
    for f, size in enumerate(sizes):
        inside = (batch[:, f] >= 0) & (batch[:, f] < size)
        expected = np.bincount(batch[inside, f], minlength=size).tolist()
        assert whole.counts[f, :size].tolist() == expected
        assert whole.counts[f, size:-1].sum() == 0
        assert whole.other[f] == (~inside).sum()
    assert whole.count.tolist() == [len(batch)] * len(sizes)

    cuts = sorted(data.draw(st.lists(st.integers(0, len(batch)), max_size=3), label="cuts"))
    merged = CategoricalStats(sizes, backend=backend)
    for part in np.split(batch, cuts):
        piece = CategoricalStats(sizes, backend=backend)
        piece.update(part)
        merged.merge(piece)
    np.testing.assert_array_equal(merged.counts, whole.counts)
