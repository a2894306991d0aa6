"""kernels.quantile_edges: equal-mass reference bins, with point masses kept in bins of their own."""

from __future__ import annotations

import numpy as np
import pytest

from kernels import NumericStats, quantile_edges


def test_equal_mass_bins_on_the_reference() -> None:
    reference = np.random.default_rng(5).normal(size=(10_000, 3)).astype(np.float32)
    edges = quantile_edges(reference, 10)
    assert edges.shape == (3, 11) and edges.dtype == np.float64
    stats = NumericStats(edges)
    stats.update(reference)
    assert (np.abs(stats.bins - 1000) <= 1).all()


def test_point_masses_and_constant_features_get_a_bin_of_their_own() -> None:
    rng = np.random.default_rng(6)
    reference = np.zeros((1000, 2))
    reference[:, 0] = 2.0  # constant
    reference[600:, 1] = rng.uniform(1, 2, 400)  # 60% zeros
    edges = quantile_edges(reference, 4)
    assert (np.diff(edges, axis=1) >= 0).all()
    stats = NumericStats(edges)
    stats.update(reference)
    assert stats.bins[0].tolist() == [0, 0, 1000, 0]  # 2.0 alone; below 2 in bin 0, above in bin 3
    assert stats.bins[1, :2].tolist() == [0, 600] and stats.bins[1, 2:].sum() == 400  # zeros alone
    stats.update(np.array([[1.9, -0.1], [2.1, 1e-300]]))
    assert stats.bins[0].tolist() == [1, 0, 1000, 1]
    assert stats.bins[1, 0] == 1 and stats.bins[1, 1] == 600  # just above zero: no longer with zeros


def test_non_finite_values_are_left_out() -> None:
    reference = np.array([[np.nan, np.nan], [0.0, np.inf], [1.0, -np.inf], [2.0, np.nan]])
    edges = quantile_edges(reference, 2)
    assert edges[0].tolist() == [0.0, 1.0, 2.0]
    assert edges[1, :2].tolist() == [0.0, 0.0] and np.isfinite(edges).all()  # no finite value: at 0


def test_one_bin_and_integer_data() -> None:
    assert quantile_edges(np.array([[3], [1], [2]]), 1).tolist() == [[1.0, 3.0]]


@pytest.mark.parametrize(
    ("data", "bins", "error", "message"),
    [
        (np.zeros((3, 2)), 0, ValueError, "bins must be an integer >= 1, got 0"),
        (np.zeros((3, 2)), 2.5, ValueError, "bins must be an integer"),
        (np.zeros((3, 2)), True, ValueError, "bins must be an integer"),
        (np.zeros(3), 2, ValueError, r"data must be 2-D .* got shape \(3,\)"),
        (np.zeros((0, 2)), 2, ValueError, "not empty"),
        (np.array([["a"]]), 2, TypeError, "data must hold numbers"),
    ],
)
def test_arguments_that_do_not_fit(data: np.ndarray, bins: object, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        quantile_edges(data, bins)  # type: ignore[arg-type]
