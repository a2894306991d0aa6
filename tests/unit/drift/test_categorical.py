"""Categorical features: which features a profile makes categorical, exact counts per code in the
monitor (integer and float tensors, mixed with numeric features), merges over workers, the
scores (PSI and JS over the shares, total variation for KS and W1) and the report's shape."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gateway.drift import (
    DriftMonitor,
    DriftTracker,
    ProfileError,
    build_profile,
    categorical_scores,
    load_profile,
)
from gateway.drift.profile import MAX_CATEGORIES, profile_from_rows
from gateway.settings import DriftSettings, ModelSettings, Settings

RNG = np.random.default_rng(5)


def _mixed(rows: int = 5000) -> np.ndarray:
    """Float rows: feature 0 numeric, feature 1 codes 0..3 (as floats), feature 2 numeric."""
    x = RNG.normal(size=(rows, 3))
    x[:, 1] = RNG.choice(4, size=rows, p=[0.4, 0.3, 0.2, 0.1])
    return x.astype(np.float32)


def test_integer_tensors_are_categorical_and_float_columns_when_asked(tmp_path: Path) -> None:
    codes = RNG.integers(0, 5, size=(3000, 2))
    codes[:, 1] = RNG.integers(0, 10_000, size=3000)  # too many codes: binned as a number
    profile = profile_from_rows(
        "m", "1", {"ids": ("input", codes), "x": ("input", _mixed()), "y": ("output", _mixed())},
        categorical=[1],
    )  # fmt: skip
    ids, x, y = profile.tensors["ids"], profile.tensors["x"], profile.tensors["y"]
    assert ids.categorical == (0,) and ids.numeric == (1,) and ids.n_categories.tolist() == [5]
    assert ids.categories.sum() == 3000 and ids.categories[0, -1] == 0  # no "other" in the reference
    assert x.categorical == (1,) and x.edges.shape == (2, 11) and x.n_categories.tolist() == [4]
    assert y.categorical == ()  # `categorical` names input features only
    assert x.flat_size == 2 * 10 + 1 * 5
    path = tmp_path / "p.npz"
    profile.save(path)
    again = load_profile(path)
    assert again.tensors["x"].categorical == (1,)
    np.testing.assert_array_equal(again.tensors["x"].categories, x.categories)
    np.testing.assert_array_equal(again.tensors["ids"].reference, ids.reference)
    big = _mixed()
    big[:, 1] = 1000
    with pytest.raises(ProfileError, match="feature 1: codes go up to 1000"):
        profile_from_rows("m", "1", {"x": ("input", big)}, categorical=[1])


def test_the_monitor_counts_codes_exactly_with_other_and_merges_over_workers(tmp_path: Path) -> None:
    profile = profile_from_rows("m", "1", {"x": ("input", _mixed())}, categorical=[1])
    live = np.array(
        [[0.1, 0, 0.0], [0.2, 3, 0.0], [0.3, 3, 0.0], [0.4, 7, 0.0], [0.5, -1, 0.0], [0.6, np.nan, 0.0]],
        np.float32,
    )
    alone = DriftMonitor(profile, True, "m/1")
    alone.observe({"x": live}, {})
    snap = alone.snapshot()["x"]
    numeric, codes = profile.tensors["x"].split(np.asarray(snap["bins"]))
    assert codes.tolist() == [[1, 0, 0, 2, 3]]  # 0 once, 3 twice; 7, -1 and NaN are "other"
    assert numeric.sum() == 12 and snap["out"][1] == 3 and snap["nan"] == [0, 0, 0]

    ints = profile_from_rows("m", "1", {"ids": ("input", RNG.integers(0, 3, size=(100, 2)))})
    counted = DriftMonitor(ints, True, "m/1")
    counted.observe({"ids": np.array([[0, 2], [2, 2], [5, 1]], np.int64)}, {})
    counted.observe({"ids": np.array([[1, 1]], np.int32)}, {})  # another integer type counts the same
    _, codes = ints.tensors["ids"].split(np.asarray(counted.snapshot()["ids"]["bins"]))
    assert codes.tolist() == [[1, 1, 1, 1], [0, 2, 2, 0]]

    settings = _settings(tmp_path, profile, window=60)
    one, two = DriftTracker(), DriftTracker()
    one.configure(settings)
    two.configure(settings)
    workers = [DriftMonitor(profile, True, "m/1") for _ in range(2)]
    single = DriftMonitor(profile, True, "m/1")
    for i in range(10):
        workers[i % 2].observe({"x": live}, {})
        single.observe({"x": live}, {})
    assert one.tick([_snap(single)]) and two.tick([_snap(w) for w in workers])
    assert one.report("m") == two.report("m")
    row = next(r for r in one.report("m") if r["feature"] == "1")
    assert row["kind"] == "categorical" and row["edges"] == []
    assert row["live_counts"] == [10, 0, 0, 20, 30] and len(row["reference_counts"]) == 5
    assert row["out_of_range_rate"] == pytest.approx(0.5)
    assert row["ks"] == row["wasserstein"] and row["ks"] > 0.4  # total variation for both


def test_categorical_scores() -> None:
    ref = np.array([[40, 30, 20, 10, 0], [50, 50, 0, 0, 0]])
    live = np.array([[40, 30, 20, 10, 0], [0, 50, 0, 0, 50]])
    for kind in ("psi", "js", "ks", "wasserstein"):
        assert categorical_scores(kind, ref, live)[0] == pytest.approx(0.0)
    p, q = ref[1] / 100, live[1] / 100
    assert categorical_scores("ks", ref, live)[1] == pytest.approx(0.5)  # half the mass moved
    assert categorical_scores("wasserstein", ref, live)[1] == pytest.approx(0.5)
    ps, qs = np.maximum(p, 1e-4), np.maximum(q, 1e-4)
    assert categorical_scores("psi", ref, live)[1] == pytest.approx(((qs - ps) * np.log(qs / ps)).sum())
    assert categorical_scores("js", ref, np.zeros_like(live))[1] == 0.0  # no live rows: nothing to compare
    assert MAX_CATEGORIES == 256


def _settings(tmp_path: Path, profile: Any, **drift: Any) -> Settings:
    path = tmp_path / "profile.npz"
    profile.save(path)
    spec = DriftSettings(reference=path, **drift)
    return Settings(model_repository=tmp_path, models={"m": ModelSettings(drift=spec)})


def _snap(monitor: DriftMonitor) -> dict[str, Any]:
    return {"versions": [{"model": "m", "version": "1", "drift": monitor.snapshot()}]}


def test_a_format_1_profile_reads_as_all_numeric_and_build_profile_takes_categorical(tmp_path: Path) -> None:
    rows = _mixed()
    profile = build_profile(
        "m", "1", {"x": rows}, lambda batch: {}, chunk_rows=1000, features=("a", "b", "c"), progress=False,
        categorical=["b"],
    )  # fmt: skip
    assert profile.tensors["x"].categorical == (1,) and profile.tensors["x"].features == ("a", "b", "c")
    numeric = profile_from_rows("m", "1", {"x": ("input", rows)})
    t = numeric.tensors["x"]
    meta = {"format": 1, "model": "m", "version": "1", "bins": 10,
            "tensors": [{"name": "x", "role": "input", "rows": t.rows, "features": []}]}  # fmt: skip
    old = tmp_path / "old.npz"
    np.savez(old, meta=np.array(json.dumps(meta)), t0_edges=t.edges, t0_counts=t.counts, t0_nan=t.nan)
    again = load_profile(old).tensors["x"]
    assert again.categorical == () and again.n_features == 3 and again.flat_size == 30
    np.testing.assert_array_equal(again.reference, t.reference)
