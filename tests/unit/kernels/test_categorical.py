"""kernels.CategoricalStats: codes per feature, the "other" column, and what does not fit."""

from __future__ import annotations

from types import ModuleType

import numpy as np
import pytest

from kernels import CategoricalStats


def test_codes_count_in_their_column_and_the_rest_in_other(backend: ModuleType) -> None:
    stats = CategoricalStats([3, 1], backend=backend)  # columns: 0 1 2 other
    codes = np.array([[0, 0], [2, 1], [-1, 0], [3, 2], [2, np.iinfo(np.int64).min]], np.int64)
    stats.update(np.frombuffer(codes.tobytes(), np.int64).reshape(5, 2))  # read-only, as requests are
    assert stats.counts.tolist() == [[1, 0, 2, 2], [2, 0, 0, 3]]
    assert stats.other.tolist() == [2, 3] and stats.count.tolist() == [5, 5]
    stats.update(np.asfortranarray(codes[:1]))
    assert stats.counts[:, 0].tolist() == [2, 3]


def test_merge_and_arrays(backend: ModuleType) -> None:
    a, b = CategoricalStats([2, 2], backend=backend), CategoricalStats([2, 2], backend=backend)
    a.update(np.array([[0, 1]], np.int64))
    b.update(np.array([[1, 5]], np.int64))
    a.merge(b)
    assert a.counts.tolist() == [[1, 1, 0], [0, 1, 1]]
    copy = CategoricalStats.from_arrays(a.to_arrays(), backend=backend)
    np.testing.assert_array_equal(copy.counts, a.counts)
    with pytest.raises(ValueError, match="different n_categories"):
        a.merge(CategoricalStats([2, 3], backend=backend))


@pytest.mark.parametrize(
    ("batch", "error", "message"),
    [
        (np.zeros((2, 2), np.int32), TypeError, "batch dtype is int32, expected int64"),
        (np.zeros((2, 2)), TypeError, "batch dtype is float64, expected int64"),
        (np.zeros(2, np.int64), ValueError, "batch must be 2-D"),
        (np.zeros((2, 3), np.int64), ValueError, "batch has 3 features"),
    ],
)
def test_batches_that_do_not_fit(backend: ModuleType, batch: np.ndarray, error: type, message: str) -> None:
    stats = CategoricalStats([2, 2], backend=backend)
    with pytest.raises(error, match=message):
        stats.update(batch)


@pytest.mark.parametrize("sizes", [[], [[2]], [-1], [1.5], 3])
def test_n_categories_that_do_not_fit(sizes: object) -> None:
    with pytest.raises(ValueError, match="n_categories must be"):
        CategoricalStats(sizes)  # type: ignore[arg-type]
