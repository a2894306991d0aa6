"""Drift: scores against SciPy on the same binned data, profiles (round trip, bad files, signature
checks), the data plane's monitor, and the control plane's windows over several workers'
snapshots, down to detection power and false alarms on seeded data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon
from scipy.stats import wasserstein_distance

from gateway.drift import (
    DriftMonitor,
    DriftTracker,
    ProfileError,
    build_profile,
    load_profile,
    read_data,
    score,
)
from gateway.drift.profile import Profile
from gateway.drift.scores import EPS, bin_positions
from gateway.settings import DriftSettings, ModelSettings, Settings

RNG = np.random.default_rng(7)


def _profile(reference: np.ndarray, bins: int = 10, version: str = "1", outputs: bool = True) -> Profile:
    def run(batch: dict[str, Any]) -> dict[str, Any]:
        return {"y": np.repeat(batch["x"][:, :1], 4, axis=1) * 2} if outputs else {}

    return build_profile("m", version, {"x": reference}, run, bins=bins, chunk_rows=50_000, progress=False)


def test_scores_equal_direct_computations_on_the_same_bins() -> None:
    ref = RNG.integers(0, 500, size=(6, 10))
    live = RNG.integers(0, 500, size=(6, 10))
    live[2, 3] = 0  # an empty bin: PSI smooths it
    edges = np.sort(RNG.normal(size=(6, 11)), axis=1)
    p, q = ref / ref.sum(1, keepdims=True), live / live.sum(1, keepdims=True)
    ps, qs = np.maximum(p, EPS), np.maximum(q, EPS)
    np.testing.assert_allclose(score("psi", ref, live, edges), ((qs - ps) * np.log(qs / ps)).sum(1))
    np.testing.assert_allclose(
        score("js", ref, live, edges), [jensenshannon(a, b, base=2) for a, b in zip(p, q, strict=True)]
    )
    np.testing.assert_allclose(score("ks", ref, live, edges), np.abs(p.cumsum(1) - q.cumsum(1)).max(1))
    mids = bin_positions(edges)
    expected = [wasserstein_distance(m, m, a, b) for m, a, b in zip(mids, p, q, strict=True)]
    np.testing.assert_allclose(score("wasserstein", ref, live, edges), expected)
    same = score("psi", ref, ref * 3, edges)
    np.testing.assert_allclose(same, 0.0, atol=1e-12)  # proportions, not counts
    empty = score("js", ref, np.zeros_like(live), edges)
    assert (empty == 0).all()  # nothing live: nothing to compare
    with pytest.raises(ValueError, match="unknown score"):
        score("kl", ref, live, edges)  # type: ignore[arg-type]


def test_a_profile_round_trips_and_bad_files_say_what_is_wrong(tmp_path: Path) -> None:
    data = RNG.normal(size=(5000, 3)).astype(np.float32)
    data[:, 2] = np.nan  # an all-NaN feature: no bins, all counted as NaN
    profile = _profile(data, bins=8)
    path = tmp_path / "p.npz"
    profile.save(path)
    again = load_profile(path)
    assert (
        again.model == "m" and again.version == "1" and again.bins == 8 and list(again.tensors) == ["x", "y"]
    )
    x = again.tensors["x"]
    np.testing.assert_array_equal(x.counts, profile.tensors["x"].counts)
    assert x.counts[:2].sum(axis=1).tolist() == [5000, 5000] and x.counts[2].sum() == 0 and x.nan[2] == 5000
    assert again.check({"x": ("FP32", 3)}, {"y": ("FP32", 4)}) == []
    problems = again.check({"x": ("FP32", 5)}, {"z": ("FP32", 4)})
    assert problems == [
        "input 'x' has 5 values per row; the profile has 3 features",
        "the profile's output 'y' is not one of the model's outputs",
    ]
    truncated = tmp_path / "t.npz"
    truncated.write_bytes(path.read_bytes()[:100])
    for bad, why in (
        (truncated, "is not a readable modelgate profile"),
        (tmp_path / "none.npz", "no such file"),
    ):
        with pytest.raises(ProfileError, match=why):
            load_profile(bad)
    with pytest.raises(ProfileError, match="no rows"):
        _profile(np.zeros((0, 3), np.float32))


def test_data_files(tmp_path: Path) -> None:
    csv = tmp_path / "d.csv"
    csv.write_text("age,income\n1,2\n3,4\n")
    arrays, names = read_data(csv, ["x"])
    assert names == ("age", "income") and arrays["x"].tolist() == [[1, 2], [3, 4]]
    np.savez(tmp_path / "d.npz", a=np.zeros((2, 2)))
    with pytest.raises(ProfileError, match="no array named x"):
        read_data(tmp_path / "d.npz", ["x"])
    (tmp_path / "d.npy").write_bytes(b"garbage")
    with pytest.raises(ProfileError, match="cannot be read as npy"):
        read_data(tmp_path / "d.npy", ["x"])
    with pytest.raises(ProfileError, match="unknown data format"):
        read_data(tmp_path / "d.txt", ["x"])
    with pytest.raises(ProfileError, match="one array per input"):
        read_data(csv, ["a", "b"])


def test_the_monitor_counts_read_only_one_row_and_integer_batches_and_never_raises() -> None:
    profile = _profile(RNG.normal(size=(2000, 3)).astype(np.float32))
    monitor = DriftMonitor(profile, batched=True, label="m/1")
    view = np.frombuffer(np.ones((1, 3), np.float32).tobytes(), np.float32).reshape(1, 3)  # read-only
    monitor.observe({"x": view}, {"y": np.ones((1, 4), np.float64)})
    monitor.observe({"x": np.ones((2, 3), np.int64)}, {})
    monitor.observe({"x": np.zeros((0, 3), np.float32)}, {})  # an empty batch counts nothing
    monitor.observe({"x": np.ones((2, 7), np.float32)}, {})  # wrong width: logged once, not raised
    monitor.observe({"x": np.array([[1e9, -1e9, 0.0]], np.float32)}, {})  # outside the reference's range
    snap = monitor.snapshot()
    assert snap["x"]["rows"] == 4 and snap["y"]["rows"] == 1 and sum(snap["x"]["bins"]) == 12
    assert snap["x"]["out"] == [1, 1, 0]


def _settings(tmp_path: Path, profile: Profile, **drift: Any) -> Settings:
    path = tmp_path / "profile.npz"
    profile.save(path)
    spec = DriftSettings(reference=path, **drift)
    return Settings(model_repository=tmp_path, models={"m": ModelSettings(drift=spec)})


def _snapshot(monitor: DriftMonitor, version: str = "1") -> dict[str, Any]:
    return {"versions": [{"model": "m", "version": version, "drift": monitor.snapshot()}]}


def test_windows_merge_every_worker_exactly(tmp_path: Path) -> None:
    profile = _profile(RNG.normal(size=(20_000, 4)).astype(np.float32))
    one, two = DriftTracker(), DriftTracker()
    for tracker in (one, two):
        tracker.configure(_settings(tmp_path, profile, window=1000))
    alone = DriftMonitor(profile, True, "m/1")
    workers = [DriftMonitor(profile, True, "m/1") for _ in range(2)]
    for i in range(12):
        batch = RNG.normal(size=(100, 4)).astype(np.float32)
        alone.observe({"x": batch}, {"y": batch * 2})
        workers[i % 2].observe({"x": batch}, {"y": batch * 2})
    assert one.tick([_snapshot(alone)]) and two.tick([_snapshot(w) for w in workers])
    assert one.report("m") == two.report("m")
    assert {r["window_rows"] for r in one.report("m")} == {1200}
    assert all(0 <= r["out_of_range_rate"] < 0.01 for r in one.report("m"))  # the same distribution
    assert not one.tick([_snapshot(alone)])  # nothing new: no window


def test_a_quarter_sigma_shift_in_one_feature_of_32_alerts_within_one_window(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    profile = _profile(rng.normal(size=(200_000, 32)).astype(np.float32), outputs=False)
    tracker = DriftTracker()
    tracker.configure(_settings(tmp_path, profile, window=10_000, alert=0.02))
    monitor = DriftMonitor(profile, True, "m/1")
    assert not tracker.tick([_snapshot(monitor)])  # no rows: no window
    for _ in range(100):  # the same distribution: no alert in 100 windows
        monitor.observe({"x": rng.normal(size=(10_000, 32)).astype(np.float32)}, {})
        assert tracker.tick([_snapshot(monitor)])
        worst = tracker.worst("m", "1")
        assert worst is not None and worst < 0.02 and not tracker.alerting
    shifted = rng.normal(size=(10_000, 32)).astype(np.float32)
    shifted[:, 17] += 0.25
    monitor.observe({"x": shifted}, {})
    tracker.tick([_snapshot(monitor)])
    assert "input 'x' feature 17: psi" in tracker.alerting[("m", "1")]
    assert tracker.snapshot()["drift"]["versions"] == [
        {"model": "m", "version": "1", "alert": 1, "windows": 101, "alerts": 1}
    ]
    monitor.observe({"x": rng.normal(size=(10_000, 32)).astype(np.float32)}, {})
    tracker.tick([_snapshot(monitor)])
    assert not tracker.alerting  # back to normal: the alert clears


def test_versus_scores_the_canary_outputs_against_the_baselines(tmp_path: Path) -> None:
    profile = _profile(RNG.normal(size=(20_000, 4)).astype(np.float32))
    tracker = DriftTracker()
    tracker.configure(_settings(tmp_path, profile, score="ks"))
    shape = profile.tensors["y"].counts.shape
    same = RNG.integers(100, 200, size=shape)
    found = tracker.versus("m", {"y": same.ravel()}, {"y": same.ravel() * 2})
    assert found is not None and found[:2] == (0.0, "output 'y' feature 0")
    moved = np.zeros(shape, np.int64)
    moved[:, -1] = 100  # every canary output in the top bin
    found = tracker.versus("m", {"y": moved.ravel()}, {"y": same.ravel()})
    assert found is not None and found[0] > 0.8
    assert tracker.versus("m", {"y": moved.ravel()}, {}) is None and tracker.versus("other", {}, {}) is None


@pytest.mark.parametrize("score", ["psi", "js", "ks"])
def test_the_chance_level_bounds_an_equal_canary_and_falls_with_rows(tmp_path: Path, score: str) -> None:
    """Two samples of ONE distribution score above zero by chance, the more so the fewer rows
    they hold: `versus` says how high (the rollout's drift gate judges only far above it)."""
    profile = _profile(RNG.normal(size=(20_000, 4)).astype(np.float32))
    tracker = DriftTracker()
    tracker.configure(_settings(tmp_path, profile, score=score))
    features, bins = profile.tensors["y"].counts.shape
    p = np.full(bins, 1 / bins)
    rng = np.random.default_rng(7)

    def sample(rows: int) -> np.ndarray:
        return rng.multinomial(rows, p, size=features).ravel()

    levels = {}
    for rows in (30, 300, 30_000):
        above = 0
        for _ in range(20):
            found = tracker.versus("m", {"y": sample(rows)}, {"y": sample(rows)})
            assert found is not None
            drift, _where, chance = found
            above += drift > chance
            levels[rows] = chance
        assert above <= 4  # the chance level is about the 95th percentile
    assert levels[30] > 2 * levels[300] > 4 * levels[30_000]  # about 1/rows (psi), 1/sqrt(rows) (ks)
