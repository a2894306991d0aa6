"""The control plane's side of drift: windows over every worker's counts, scores, alerts.

Workers only count (gateway/drift/monitor.py); their counts only grow and reach the control
plane in their snapshots (a dead worker's stay, in the retired sum). So a window is the
difference of two sums: it merges exactly across workers, and costs nothing on the data plane.
Windows are consecutive: one ends once `window` rows have been seen since it began (or, with
`window_s`, once that many seconds have passed and it saw a row), and the next begins there.

Each ended window is scored per feature against the reference profile with every score
(gateway/drift/scores.py; categorical features: `categorical_scores`): the inputs of every
version, the outputs of the version the profile was built from (another version's outputs
differ by design), or, with a live reference (gateway/drift/live.py), of every version: it is
learned from the baseline's traffic to compare the others with. A live reference's model has no
window until the reference is learned (`reference_state` says how far it is). The model's
configured `score` decides its alert: the worst feature (of `features`, for inputs; every output
feature) over `alert`. An alert is a log line when it starts and when it clears,
`modelgate_drift_alert` on /metrics, and in the drift report.

The rollout gate `max_drift` reads `versus`: the canary's outputs scored against the baseline's
over the step, in the profile's output bins (prediction drift between the versions; both see
the same inputs, so input drift says nothing about the canary).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..settings import DriftSettings, Settings
from .live import LiveLearner
from .profile import Profile, ProfileError, TensorProfile, load_profile
from .scores import SCORES, Score, categorical_scores, score

__all__ = ["DriftTracker", "drift_counts"]

log = logging.getLogger("gateway.drift")

Key = tuple[str, str, str]  # model, version, tensor


@dataclass(frozen=True)
class _Counts:
    rows: int
    bins: NDArray[np.int64]  # flat: numeric bins, then categorical counts (TensorProfile.split)
    nan: NDArray[np.int64]  # (F,)
    out: NDArray[np.int64]  # (F,): outside the reference's [min, max]


@dataclass(frozen=True)
class _Start:
    at: float
    counts: _Counts


@dataclass(frozen=True)
class WindowScores:
    rows: int
    scores: dict[Score, NDArray[np.float64]]  # per feature
    nan_rate: NDArray[np.float64]
    out_of_range_rate: NDArray[np.float64]
    live: NDArray[np.int64]  # the window's counts, flat (TensorProfile.split)
    ended: float  # unix time


Sums = tuple[int, list[int], list[int], list[int]]  # rows, flat bins, NaNs, out of range


def drift_counts(snapshots: Iterable[dict[str, Any]]) -> dict[Key, Sums]:
    """Each (model, version, tensor)'s counts summed over snapshots: rows, flat bins, NaNs and
    values outside the reference's range per feature."""
    out: dict[Key, Sums] = {}
    for snap in snapshots:
        for v in snap.get("versions", ()):
            for tensor, d in (v.get("drift") or {}).items():
                key = (v["model"], v["version"], tensor)
                prev = out.get(key)
                outside = d.get("out") or [0] * len(d["nan"])
                if prev is None:
                    out[key] = (d["rows"], list(d["bins"]), list(d["nan"]), list(outside))
                elif len(prev[1]) == len(d["bins"]):
                    out[key] = (
                        prev[0] + d["rows"],
                        [a + b for a, b in zip(prev[1], d["bins"], strict=True)],
                        [a + b for a, b in zip(prev[2], d["nan"], strict=True)],
                        [a + b for a, b in zip(prev[3], outside, strict=True)],
                    )
    return out


def tensor_scores(
    tensor: TensorProfile,
    reference: NDArray[np.int64],
    live: NDArray[np.int64],
    kinds: Iterable[Score] = SCORES,
) -> dict[Score, NDArray[np.float64]]:
    """Each score (every one, unless `kinds` says) per feature of a tensor, from flat counts
    (TensorProfile.split)."""
    ref_bins, ref_codes = tensor.split(reference)
    live_bins, live_codes = tensor.split(live)
    numeric, categorical = list(tensor.numeric), list(tensor.categorical)
    out = {}
    for kind in kinds:
        values = np.zeros(tensor.n_features)
        if numeric:
            values[numeric] = score(kind, ref_bins, live_bins, tensor.edges)
        if categorical:
            values[categorical] = categorical_scores(kind, ref_codes, live_codes)
        out[kind] = values
    return out


CHANCE_DRAWS = 20


def chance_level(
    tensor: TensorProfile, kind: Score, first: NDArray[np.int64], second: NDArray[np.int64]
) -> float:
    """How high the worst feature's score of two samples of these sizes goes by chance alone:
    the highest of `CHANCE_DRAWS` pairs of samples of the same sizes, per feature, drawn from ONE
    distribution (the two samples pooled). About the 95th percentile of the score when nothing
    differs: small samples score high by chance (PSI about (bins - 1) x (1/n1 + 1/n2) on
    average), so a gate must not judge a score near this level. Seeded: the same counts give the
    same level."""
    rng = np.random.default_rng(0)
    parts = []
    for a, b in zip(tensor.split(first), tensor.split(second), strict=True):  # (features, bins) each
        pooled = (a + b).astype(np.float64)
        totals = pooled.sum(axis=1, keepdims=True)
        width = max(pooled.shape[1], 1)
        p = np.divide(pooled, totals, out=np.full_like(pooled, 1.0 / width), where=totals > 0)
        parts.append((p, a.sum(axis=1), b.sum(axis=1)))
    level = 0.0
    for _ in range(CHANCE_DRAWS):
        draws = [
            [rng.multinomial(n, p) if p.size else np.zeros(p.shape, np.int64) for n in (n1, n2)]
            for p, n1, n2 in parts
        ]
        one = np.concatenate([d[0].ravel() for d in draws]).astype(np.int64)
        two = np.concatenate([d[1].ravel() for d in draws]).astype(np.int64)
        values = tensor_scores(tensor, one, two, (kind,))[kind]
        if values.size:
            level = max(level, float(np.nanmax(values)))
    return level


class DriftTracker:
    def __init__(self, clock: Callable[[], float] = time.monotonic, folder: Path | None = None) -> None:
        self._clock = clock
        self._learner = LiveLearner(folder) if folder is not None else None
        self._specs: dict[str, tuple[DriftSettings, Profile | None]] = {}
        self.filling: dict[str, tuple[int, str]] = {}  # live references not learned yet: rows, version
        self._profiles: dict[Path, tuple[int, Profile]] = {}  # path -> (mtime, profile)
        self._start: dict[Key, _Start] = {}
        self.last: dict[Key, WindowScores] = {}
        self.windows: dict[tuple[str, str], int] = {}
        self.alerts: dict[tuple[str, str], int] = {}  # alerts raised (each start counts once)
        self.alerting: dict[tuple[str, str], str] = {}  # (model, version) -> why, while alerting

    def configure(self, settings: Settings) -> None:
        specs = {}
        for name, model in settings.models.items():
            if model.drift is None:
                continue
            try:
                if model.drift.live is not None:
                    learned = self._learner.learned(name) if self._learner is not None else None
                    specs[name] = (model.drift, learned)
                else:
                    assert isinstance(model.drift.reference, Path)
                    specs[name] = (model.drift, self._profile(model.drift.reference))
            except ProfileError as exc:
                log.error("model '%s': drift monitoring off: %s", name, exc)
        self._specs = specs

    def _profile(self, path: Path) -> Profile:
        mtime = path.stat().st_mtime_ns if path.exists() else -1
        cached = self._profiles.get(path)
        if cached is None or cached[0] != mtime:
            cached = self._profiles[path] = (mtime, load_profile(path))
        return cached[1]

    @property
    def monitoring(self) -> bool:
        """Some model has drift monitoring (else a tick has nothing to read)."""
        return bool(self._specs)

    def tick(self, snapshots: Iterable[dict[str, Any]]) -> bool:
        """Cut and score the windows that ended; True when any did."""
        if not self._specs:
            return False
        self._learn()
        now = self._clock()
        ended: set[tuple[str, str]] = set()
        for key, (rows, bins, nan, outside) in drift_counts(snapshots).items():
            spec, profile = self._specs.get(key[0], (None, None))
            tensor = profile.tensors.get(key[2]) if profile is not None else None
            if spec is None or profile is None or tensor is None or len(bins) != tensor.flat_size:
                continue
            if tensor.role == "output" and key[1] != profile.version and spec.live is None:
                continue  # another version's outputs are not the profile's to judge (see versus)
            counts = _Counts(
                rows, np.asarray(bins, np.int64), np.asarray(nan, np.int64), np.asarray(outside, np.int64)
            )
            start = self._start.get(key)
            if start is None or rows < start.counts.rows:  # first sight, or the counts started over:
                zero = _Counts(
                    0, np.zeros_like(counts.bins), np.zeros_like(counts.nan), np.zeros_like(counts.out)
                )
                start = self._start[key] = _Start(now, zero)
            seen = rows - start.counts.rows
            due = (
                seen >= spec.window
                if spec.window_s is None
                else (now - start.at >= spec.window_s and seen > 0)
            )
            if not due:
                continue
            window = counts.bins - start.counts.bins
            self.last[key] = WindowScores(
                seen,
                tensor_scores(tensor, tensor.reference, window),
                (counts.nan - start.counts.nan) / seen,
                (counts.out - start.counts.out) / seen,
                window,
                time.time(),
            )
            self._start[key] = _Start(now, counts)
            ended.add(key[:2])
        for model, version in ended:
            self.windows[(model, version)] = self.windows.get((model, version), 0) + 1
            self._judge(model, version)
        return bool(ended)

    def _learn(self) -> None:
        """Learn the live references whose rows are in (gateway/drift/live.py)."""
        if self._learner is None:
            return
        for name, (spec, profile) in self._specs.items():
            if spec.live is None or profile is not None:
                continue
            learned = self._learner.learn(name, spec.live)
            if learned is None:
                self.filling[name] = self._learner.filling(name)
            else:
                self._specs[name] = (spec, learned)
                self.filling.pop(name, None)

    def reference_state(self, model: str) -> str:
        """Where a model's reference comes from, and, for a live one, how far it is."""
        found = self._specs.get(model)
        if found is None:
            return ""
        spec, profile = found
        if spec.live is None:
            return f"reference: {spec.reference}"
        if profile is None:
            rows, version = self.filling.get(model, (0, ""))
            of = f" of version {version}" if version else f" ({spec.live.live})"
            return f"reference filling: {min(rows, spec.live.rows)} of {spec.live.rows} rows{of} (live)"
        where = f" ({self._learner.path(model)})" if self._learner is not None else ""
        return f"reference: {profile.source or 'live'}{where}"

    def reference_file(self, model: str) -> Path | None:
        """The file that holds a model's reference profile; None while a live one fills."""
        spec, profile = self._specs.get(model, (None, None))
        if spec is None or profile is None:
            return None
        if spec.live is None:
            assert isinstance(spec.reference, Path)
            return spec.reference
        return self._learner.path(model) if self._learner is not None else None

    def _worst(self, model: str, version: str) -> tuple[float, str]:
        spec, profile = self._specs[model]
        worst, where = 0.0, ""
        if profile is None:
            return worst, where
        for name, tensor in profile.tensors.items():
            last = self.last.get((model, version, name))
            if last is None:
                continue
            values = last.scores[spec.score]
            chosen = _selected(spec, tensor)
            for i in chosen:
                if values[i] > worst:
                    worst, where = float(values[i]), f"{tensor.role} '{name}' feature {_label(tensor, i)}"
        return worst, where

    def _judge(self, model: str, version: str) -> None:
        spec = self._specs[model][0]
        worst, where = self._worst(model, version)
        key = (model, version)
        if worst > spec.alert:
            why = f"{where}: {spec.score} {worst:.4f} > {spec.alert}"
            if key not in self.alerting:
                self.alerts[key] = self.alerts.get(key, 0) + 1
                log.warning("drift alert: model '%s' version %s: %s", model, version, why)
            self.alerting[key] = why
        elif self.alerting.pop(key, None) is not None:
            log.info(
                "drift alert cleared: model '%s' version %s (worst %s %.4f)",
                model,
                version,
                spec.score,
                worst,
            )

    def worst(self, model: str, version: str) -> float | None:
        """The version's worst score in its last windows (None: not monitored, or no window yet)."""
        if model not in self._specs or not any(k[:2] == (model, version) for k in self.last):
            return None
        return self._worst(model, version)[0]

    def versus(
        self, model: str, canary: Mapping[str, NDArray[np.int64]], baseline: Mapping[str, NDArray[np.int64]]
    ) -> tuple[float, str, float] | None:
        """The canary's outputs scored against the baseline's (bins counted over the same span):
        the worst output feature, where, and the chance level of that score for these many rows
        (`chance_level`); None without a profile or data on both sides."""
        spec, profile = self._specs.get(model, (None, None))
        if spec is None or profile is None:
            return None
        worst: tuple[float, str] | None = None
        chance = 0.0
        for name, tensor in profile.tensors.items():
            c, b = canary.get(name), baseline.get(name)
            if tensor.role != "output" or c is None or b is None or not c.sum() or not b.sum():
                continue
            if c.size != tensor.flat_size or b.size != tensor.flat_size:
                continue
            values = tensor_scores(tensor, b, c, (spec.score,))[spec.score]
            i = int(np.argmax(values))
            if worst is None or values[i] > worst[0]:
                worst = (float(values[i]), f"output '{name}' feature {_label(tensor, i)}")
            chance = max(chance, chance_level(tensor, spec.score, b, c))
        return None if worst is None else (*worst, chance)

    def report(self, model: str, version: str = "") -> list[dict[str, Any]]:
        """Per version, tensor and feature: the last window's scores, worst first."""
        spec, profile = self._specs.get(model, (None, None))
        if spec is None or profile is None:
            return []
        rows: list[dict[str, Any]] = []
        for (m, v, name), last in self.last.items():
            if m != model or (version and v != version):
                continue
            tensor = profile.tensors[name]
            counted = set(_selected(spec, tensor))
            shapes = _per_feature(tensor, tensor.reference, last.live)
            for i in range(tensor.n_features):
                feature_kind, edges, reference, live = shapes[i]
                row: dict[str, Any] = {
                    "model": m,
                    "version": v,
                    "tensor": name,
                    "role": tensor.role,
                    "feature": _label(tensor, i),
                    "window_rows": last.rows,
                    "nan_rate": float(last.nan_rate[i]),
                    "out_of_range_rate": float(last.out_of_range_rate[i]),
                    "kind": feature_kind,
                    "edges": edges,
                    "reference_counts": reference,
                    "live_counts": live,
                    **{kind: float(last.scores[kind][i]) for kind in SCORES},
                    "counts": i in counted,  # toward the alert
                    "over": i in counted and float(last.scores[spec.score][i]) > spec.alert,
                }
                rows.append(row)
        rows.sort(key=lambda r: (-r[spec.score], r["version"], r["tensor"]))
        return rows

    def settings_of(self, model: str) -> DriftSettings | None:
        found = self._specs.get(model)
        return found[0] if found is not None else None

    def snapshot(self) -> dict[str, Any]:
        """What /metrics shows: the configured score per feature of the last windows, and each
        version's alert state and counters."""
        scores = []
        for (model, version, name), last in sorted(self.last.items()):
            spec, profile = self._specs[model]
            if profile is None:
                continue
            tensor = profile.tensors[name]
            values = last.scores[spec.score]
            scores.append(
                {
                    "model": model, "version": version, "tensor": name,
                    "features": [[_label(tensor, i), float(values[i])] for i in range(tensor.n_features)],
                }
            )  # fmt: skip
        versions = [
            {
                "model": m,
                "version": v,
                "alert": int((m, v) in self.alerting),
                "windows": n,
                "alerts": self.alerts.get((m, v), 0),
            }
            for (m, v), n in sorted(self.windows.items())
        ]
        return {"drift": {"scores": scores, "versions": versions}}


def _per_feature(
    tensor: TensorProfile, reference: NDArray[np.int64], live: NDArray[np.int64]
) -> list[tuple[str, list[float], list[int], list[int]]]:
    """Per feature: its kind, edges (none for a categorical one), the reference's and the live
    counts (a categorical feature's: codes 0..K-1, then "other")."""
    ref_bins, ref_codes = tensor.split(reference)
    live_bins, live_codes = tensor.split(live)
    out: list[tuple[str, list[float], list[int], list[int]]] = [("", [], [], [])] * tensor.n_features
    for j, i in enumerate(tensor.numeric):
        out[i] = ("numeric", tensor.edges[j].tolist(), ref_bins[j].tolist(), live_bins[j].tolist())
    for j, i in enumerate(tensor.categorical):
        k = int(tensor.n_categories[j])
        keep = [*range(k), -1]
        out[i] = ("categorical", [], ref_codes[j, keep].tolist(), live_codes[j, keep].tolist())
    return out


def _label(tensor: TensorProfile, i: int) -> str:
    return tensor.features[i] if tensor.features else str(i)


def _selected(spec: DriftSettings, tensor: TensorProfile) -> list[int]:
    """The features of a tensor that count toward alerts: `features` (names or indices) for
    inputs, every one for outputs."""
    if tensor.role == "output" or spec.features is None:
        return list(range(tensor.n_features))
    out = []
    for f in spec.features:
        if isinstance(f, int):
            if 0 <= f < tensor.n_features:
                out.append(f)
        elif f in tensor.features:
            out.append(tensor.features.index(f))
    return out
