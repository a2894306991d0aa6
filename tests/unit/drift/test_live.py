"""Live references: the config's schema, the ring of recent rows, and the whole hand-over in one
process: two workers' baseline rows dumped, one profile learned by the control plane once they
are enough, every monitor counting against it, a shifted canary alerting and the baseline not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from gateway.drift import DriftMonitor, DriftTracker, LiveReferences, ProfileError, load_profile, profile_path
from gateway.drift.monitor import LiveRows
from gateway.settings import (
    DriftSettings,
    LiveReference,
    ModelSettings,
    Settings,
    SettingsError,
    load_settings,
)


def test_the_schema_takes_live_as_shorthand_and_names_a_bad_source() -> None:
    assert DriftSettings(reference="live").live == LiveReference(
        live="baseline", rows=10_000, bins=10, categorical=[]
    )  # type: ignore[arg-type]
    spec = DriftSettings.model_validate({"reference": {"live": "2", "rows": 500}})
    assert spec.live is not None and spec.live.live == "2" and spec.live.rows == 500
    assert DriftSettings.model_validate({"reference": "p.npz"}).live is None
    for bad, why in (
        ({"live": "newest"}, "live must be `baseline` or a version"),
        ({"rows": 500}, "a live reference needs `live: baseline`"),
        ({"live": "baseline", "rows": 1}, "greater than or equal to 10"),
    ):
        with pytest.raises(ValidationError, match=why):
            DriftSettings.model_validate({"reference": bad})


def test_a_config_with_a_bad_live_reference_is_refused_with_every_reason(tmp_path: Path) -> None:
    text = (
        f"model_repository: {tmp_path}\n"
        + """
models:
  m: {drift: {reference: {live: newest, rows: 5}}}
  n: {drift: {reference: {rows: 5}}}
"""
    )
    with pytest.raises(SettingsError) as refused:
        load_settings(text=text)
    assert str(refused.value) == (
        "invalid configuration: "
        "models.m.drift.reference.live.live: Value error, live must be `baseline` or a version like "
        "1, 2, 3, got 'newest'; "
        "models.m.drift.reference.live.rows: Input should be greater than or equal to 10; "
        "models.n.drift.reference: Value error, a live reference needs `live: baseline` (or a version), "
        "e.g. {live: baseline, rows: 10000}"
    )


def test_the_baseline_is_the_named_version_the_rollouts_the_heaviest_or_the_newest() -> None:
    def model(**fields: Any) -> ModelSettings:
        return ModelSettings.model_validate({"drift": {"reference": "live"}, **fields})

    assert model().live_reference_version(["1", "3", "2"]) == "3"
    assert model(traffic={"1": 70, "2": 30}).live_reference_version(["1", "2"]) == "1"
    rollout = {"canary": "2", "baseline": "1"}
    assert model(traffic={"1": 0, "2": 100}, rollout=rollout).live_reference_version(["1", "2"]) == "1"
    named = ModelSettings.model_validate(
        {"drift": {"reference": {"live": "2"}}, "traffic": {"1": 90, "2": 10}}
    )
    assert named.live_reference_version(["1", "2"]) == "2"
    assert ModelSettings().live_reference_version(["1"]) is None


def test_the_ring_keeps_the_most_recent_rows_in_order() -> None:
    ring = LiveRows(5)
    ring.add("x", "input", np.arange(6).reshape(3, 2))
    ring.add("x", "input", np.arange(6, 14).reshape(4, 2))
    assert ring.rows == 5 and ring.seen == 7 and ring.nbytes == 5 * 2 * 8
    role, rows = ring.arrays()["x"]
    assert role == "input" and rows[:, 0].tolist() == [4, 6, 8, 10, 12]
    ring.add("x", "input", np.arange(100, 120).reshape(10, 2))  # more than it holds: the last 5
    assert ring.arrays()["x"][1][:, 0].tolist() == [110, 112, 114, 116, 118]


def test_two_workers_learn_one_reference_and_a_shifted_canary_alerts(tmp_path: Path) -> None:
    drift = {
        "reference": {"live": "baseline", "rows": 3000, "categorical": [3]},
        "window": 2000,
        "alert": 0.1,
    }
    settings = Settings.model_validate(
        {"model_repository": str(tmp_path), "models": {"m": {"traffic": {"1": 70, "2": 30}, "drift": drift}}}
    )
    folder = tmp_path / "drift"
    workers = [LiveReferences(folder, settings, worker=w) for w in ("a", "b")]
    monitors = {
        (w, v): workers[w].monitor("m", v, ["1", "2"], True, lambda p: [], None)
        for w in (0, 1)
        for v in ("1", "2")
    }
    assert all(m is not None and m.profile is None for m in monitors.values())
    assert monitors[(0, "1")].live is not None and monitors[(0, "2")].live is None  # only v1 learns
    tracker = DriftTracker(folder=folder)
    tracker.configure(settings)
    assert tracker.reference_state("m") == "reference filling: 0 of 3000 rows (baseline) (live)"
    rng = np.random.default_rng(1)

    def feed(w: int, version: str, rows: int, shift: float = 0.0) -> None:
        x = rng.normal(size=(rows, 4)).astype(np.float32)
        x[:, 2] += shift
        x[:, 3] = rng.integers(0, 3, size=rows)  # a code, in a float tensor
        monitor = monitors[(w, version)]
        assert monitor is not None
        monitor.observe({"x": x}, {"y": (x[:, :2] * (1 + shift)).copy()})

    def snapshots() -> list[dict[str, Any]]:
        return [
            {
                "versions": [
                    {"model": "m", "version": v, "drift": monitors[(w, v)].snapshot()} for v in ("1", "2")
                ]
            }  # type: ignore[union-attr]
            for w in (0, 1)
        ]

    feed(0, "1", 1000)
    feed(1, "1", 1000)
    feed(0, "2", 500, shift=1.0)  # before the reference: counted nowhere
    for worker in workers:
        worker.poll()
    assert not tracker.tick(snapshots())
    assert tracker.reference_state("m") == "reference filling: 2000 of 3000 rows of version 1 (live)"
    with pytest.raises(ProfileError, match="no such file"):  # nothing learned yet
        load_profile(profile_path(folder, "m"))
    feed(1, "1", 1500)
    workers[1].poll()
    tracker.tick(snapshots())
    learned = load_profile(profile_path(folder, "m"))
    assert learned.version == "1" and learned.tensors["x"].rows == 3500  # every row the workers held
    assert learned.tensors["x"].categorical == (3,) and learned.tensors["x"].n_categories.tolist() == [3]
    assert learned.tensors["y"].role == "output" and tracker.reference_state("m").startswith(
        "reference: live: 3500 rows of version 1"
    )
    for worker in workers:
        worker.poll()
    assert all(m is not None and m.profile is not None and m.live is None for m in monitors.values())
    for w in (0, 1):
        feed(w, "1", 1000)
        feed(w, "2", 1000, shift=1.0)
    assert tracker.tick(snapshots())
    assert ("m", "1") not in tracker.alerting
    why = tracker.alerting[("m", "2")]
    assert "input 'x' feature 2" in why or "output 'y'" in why, why
    rows = tracker.report("m", "2")
    assert {r["role"] for r in rows} == {"input", "output"}  # the canary's outputs are scored too
    assert {r["window_rows"] for r in rows} == {2000}


def test_a_monitor_without_a_live_reference_is_left_alone(tmp_path: Path) -> None:
    settings = Settings.model_validate({"model_repository": str(tmp_path), "models": {"m": {}}})
    refs = LiveReferences(tmp_path, settings)
    assert not refs.active and refs.monitor("m", "1", ["1"], True, lambda p: [], None) is None
    monitor = DriftMonitor(None, True, "m/1")
    monitor.observe({"x": np.ones((3, 2), np.float32)}, {})
    assert monitor.snapshot() == {} and monitor.live_rows() is None
