"""The rollout driver: counters in, weights out, the decision itself in gateway/routing/rollout.py.

Every tick it sums the serving processes' counters (their snapshots), takes what happened since
each rollout's step began, and asks `decide`. When the weights move, the control plane
(gateway/control/plane.py) publishes them as a new revision, through the same validated path as
a config edit. Operators promote, roll back, pause and resume through the admin API (`command`).

Its state file (`state_dir/traffic.json`) keeps each rollout's status and step, so a restarted
gateway resumes at the weights it last applied (its window starts afresh) and never escalates; a
rolled-back canary stays at 0%.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..drift import drift_counts
from ..errors import FailedPrecondition, NotFound
from ..routing.rollout import RolloutSpec, RolloutState, Status, VersionWindow, Window, decide
from ..settings import ModelSettings, Settings
from ..telemetry._histogram import LATENCY_BOUNDS
from .config import read_json, write_json

__all__ = ["RUNTIME_FILE", "RolloutDriver", "rollout_spec"]

log = logging.getLogger("gateway.rollout")

Snapshots = Callable[[], Iterable[dict[str, Any]]]
_REASONS = (
    ("error rate", "error_rate"),
    ("p99 ratio", "p99_ratio"),
    ("shadow disagreement", "shadow_disagreement"),
    ("drift", "drift"),
)  # a rollback's reason text -> its label on /metrics
Versus = Callable[
    [str, Mapping[str, NDArray[np.int64]], Mapping[str, NDArray[np.int64]]], tuple[float, str, float] | None
]
"""(model, the canary's output bins, the baseline's) -> (drift score, where, its chance level)
or None."""
RUNTIME_FILE = "traffic.json"  # in state_dir: each rollout's status, step and weights


def rollout_spec(model: ModelSettings) -> RolloutSpec | None:
    r = model.rollout
    baseline = model.rollout_baseline()
    if r is None or baseline is None:
        return None
    return RolloutSpec(
        canary=r.canary,
        baseline=baseline,
        steps=tuple(r.steps),
        interval_s=r.interval_s,
        min_requests=r.min_requests,
        max_error_rate=r.max_error_rate,
        max_p99_ratio=r.max_p99_ratio,
        max_shadow_disagreement=r.max_shadow_disagreement,
        max_drift=r.max_drift,
    )


@dataclass
class _Totals:
    """Counters summed over the serving processes, for the versions and shadow pairs rollouts watch."""

    versions: dict[tuple[str, str], VersionWindow] = field(default_factory=dict)
    shadows: dict[tuple[str, str, str], tuple[int, int]] = field(
        default_factory=dict
    )  # (compared, disagreed)
    drift: dict[tuple[str, str, str], NDArray[np.int64]] = field(default_factory=dict)  # bins (flat)

    @classmethod
    def of(cls, snapshots: Iterable[dict[str, Any]]) -> _Totals:
        totals = cls()
        for snap in snapshots:
            for v in snap.get("versions", ()):
                key = (v["model"], v["version"])
                prev = totals.versions.get(key, VersionWindow(latency_counts=[0] * (len(LATENCY_BOUNDS) + 1)))
                failures = dict(prev.failures)
                for code, n in v["failures"].items():
                    failures[code] = failures.get(code, 0) + n
                totals.versions[key] = VersionWindow(
                    prev.requests + v["ok"] + sum(v["failures"].values()),
                    failures,
                    LATENCY_BOUNDS,
                    [a + b for a, b in zip(prev.latency_counts, v["latency"][0], strict=True)],
                )
            for s in (snap.get("routing") or {}).get("shadows", ()):
                pair = (s["model"], s["primary"], s["shadow"])
                agree, disagree = s["outcomes"].get("agree", 0), s["outcomes"].get("disagree", 0)
                compared, disagreed = totals.shadows.get(pair, (0, 0))
                totals.shadows[pair] = (compared + agree + disagree, disagreed + disagree)
        totals.drift = {k: np.asarray(c[1], np.int64) for k, c in drift_counts(snapshots).items()}
        return totals

    def window(self, since: _Totals, model: str, spec: RolloutSpec, versus: Versus | None = None) -> Window:
        def version(v: str) -> VersionWindow:
            now = self.versions.get((model, v), VersionWindow())
            then = since.versions.get((model, v), VersionWindow())
            counts = list(now.latency_counts) or [0] * (len(LATENCY_BOUNDS) + 1)
            before = list(then.latency_counts) or [0] * len(counts)
            failures = {c: n - then.failures.get(c, 0) for c, n in now.failures.items()}
            return VersionWindow(
                now.requests - then.requests,
                {c: n for c, n in failures.items() if n},
                LATENCY_BOUNDS,
                [a - b for a, b in zip(counts, before, strict=True)],
            )

        def bins(v: str) -> dict[str, NDArray[np.int64]]:
            out = {}
            for (m, ver, tensor), now in self.drift.items():
                then = since.drift.get((m, ver, tensor))
                if m == model and ver == v:
                    out[tensor] = now - then if then is not None and then.shape == now.shape else now
            return out

        pair = (model, spec.baseline, spec.canary)
        compared, disagreed = self.shadows.get(pair, (0, 0))
        c0, d0 = since.shadows.get(pair, (0, 0))
        drift = versus(model, bins(spec.canary), bins(spec.baseline)) if versus is not None else None
        return Window(
            version(spec.canary),
            version(spec.baseline),
            compared - c0,
            disagreed - d0,
            drift[0] if drift is not None else None,
            drift[1] if drift is not None else "",
            drift[2] if drift is not None else None,
        )


@dataclass
class _Running:
    spec: RolloutSpec
    state: RolloutState
    since: _Totals  # the counters when the step began


class RolloutDriver:
    """Each rollout's state, stepped by `tick`, and the weights it serves (`serve`). The config
    it reads is the control plane's (the file with admin changes over it); its own state lives
    in `state_dir/traffic.json`, so a restart resumes it."""

    def __init__(
        self,
        state_dir: Path,
        snapshots: Snapshots,
        clock: Callable[[], float] = time.monotonic,
        versus: Versus | None = None,
    ):
        self._path = state_dir / RUNTIME_FILE
        self.snapshots = snapshots
        self._clock = clock
        self._versus = versus  # the drift gate's score (gateway/drift/tracker.py)
        self.rollbacks: dict[tuple[str, str], int] = {}  # (model, reason) -> rollbacks (this process's)
        self._rollouts: dict[str, _Running] = {}

    def _sync(self, settings: Settings, totals: _Totals | None = None) -> bool:
        """Follow the config's rollouts: a new one resumes its stored state (or starts at its
        first step); one that left the config is forgotten. True when anything changed."""
        specs = {n: s for n, m in settings.models.items() if (s := rollout_spec(m)) is not None}
        changed = False
        for name in [n for n in self._rollouts if n not in specs]:
            del self._rollouts[name]
            changed = True
        stored: dict[str, Any] | None = None
        for name, spec in specs.items():
            running = self._rollouts.get(name)
            if running is not None and running.spec == spec:
                continue
            if stored is None:
                stored = read_json(self._path).get("rollouts") or {}  # unreadable: start afresh
            state = _resume(stored.get(name), spec, self._clock())
            if totals is None:
                totals = _Totals.of(self.snapshots())
            self._rollouts[name] = _Running(spec, state, totals)
            changed = True
            log.info(
                "rollout of %s version %s against %s: %s at step %d (%s%%)",
                name, spec.canary, spec.baseline, state.status, state.step + 1, spec.steps[state.step],
            )  # fmt: skip
        return changed

    def serve(self, settings: Settings) -> Settings:
        """`settings` with each rolling-out model's traffic as its rollout serves it now."""
        self._sync(settings)
        models = dict(settings.models)
        for name, running in self._rollouts.items():
            traffic = running.state.weights(running.spec)
            models[name] = models[name].model_copy(update={"traffic": traffic})
        return settings.model_copy(update={"models": models})

    def tick(self, settings: Settings, snapshots: Snapshots | None = None) -> bool:
        """One look at every rollout of `settings` (`snapshots`: the serving processes' counters
        read once for this tick; default: read them). True when weights or a status moved (then
        the state file is written and the control plane publishes)."""
        if not self._rollouts and not any(m.rollout for m in settings.models.values()):
            return False
        totals = _Totals.of((snapshots or self.snapshots)())
        changed = self._sync(settings, totals)
        now = self._clock()
        for name, running in self._rollouts.items():
            spec = running.spec
            action = decide(spec, running.state, totals.window(running.since, name, spec, self._versus), now)
            running.state = action.state
            if action.changed:
                running.since = totals
                changed = True
                log_at = log.warning if action.state.status == Status.ROLLED_BACK else log.info
                log_at("rollout of %s version %s: %s", name, spec.canary, action.note)
                if action.state.status == Status.ROLLED_BACK:
                    self._count_rollback(name, action.state.reason)
        if changed:
            self._write()
        return changed

    def command(self, name: str, what: str) -> str:
        """An operator's promote, rollback, pause or resume of a model's rollout; returns what
        happened. NotFound without a rollout; FailedPrecondition when its status forbids it."""
        running = self._rollouts.get(name)
        if running is None:
            raise NotFound(f"model '{name}' has no rollout")
        state, now = running.state, self._clock()
        allowed = {
            "promote": state.status != Status.PROMOTED,
            "rollback": state.status != Status.ROLLED_BACK,
            "pause": state.status == Status.RUNNING,
            "resume": state.status == Status.PAUSED,
        }
        if not allowed[what]:
            raise FailedPrecondition(f"cannot {what} the rollout of '{name}': it is {state.status}")
        running.state = {
            "promote": RolloutState(Status.PROMOTED, state.step, now, "promoted by an operator"),
            "rollback": RolloutState(Status.ROLLED_BACK, state.step, now, "rolled back by an operator"),
            "pause": RolloutState(Status.PAUSED, state.step, now, "paused by an operator"),
            "resume": RolloutState(Status.RUNNING, state.step, now),
        }[what]
        running.since = _Totals.of(self.snapshots())  # a resumed step judges what comes after
        if what == "rollback":
            self._count_rollback(name, "operator")
        self._write()
        note = f"{running.state.status} at step {state.step + 1}"
        log.info("rollout of %s version %s: %s by an operator", name, running.spec.canary, note)
        return note

    def _count_rollback(self, model: str, reason: str) -> None:
        kind = next((k for prefix, k in _REASONS if reason.startswith(prefix)), "operator")
        self.rollbacks[(model, kind)] = self.rollbacks.get((model, kind), 0) + 1

    def snapshot(self) -> dict[str, Any]:
        """What /metrics shows of rollouts: each one's step, state and canary weight, and the
        rollbacks by reason (counted since this control process started)."""
        return {
            "rollouts": [
                {
                    "model": name,
                    "canary": r.spec.canary,
                    "status": str(r.state.status),
                    "step": r.state.step + 1,
                    "canary_weight": r.state.weights(r.spec)[r.spec.canary],
                }
                for name, r in sorted(self._rollouts.items())
            ],
            "rollbacks": [[m, reason, n] for (m, reason), n in sorted(self.rollbacks.items())],
        }

    def status(self) -> dict[str, dict[str, Any]]:
        return {name: _entry(r.spec, r.state) for name, r in self._rollouts.items()}

    def _write(self) -> None:
        write_json(self._path, {"rollouts": self.status()})


def _entry(spec: RolloutSpec, state: RolloutState) -> dict[str, Any]:
    return {
        "canary": spec.canary,
        "baseline": spec.baseline,
        "status": str(state.status),
        "step": state.step,
        "steps": list(spec.steps),
        "reason": state.reason,
        "traffic": state.weights(spec),
    }


def _resume(stored: dict[str, Any] | None, spec: RolloutSpec, now: float) -> RolloutState:
    """The stored state of the same rollout (same canary and baseline), its window afresh;
    else a new rollout at its first step."""
    if stored and stored.get("canary") == spec.canary and stored.get("baseline") == spec.baseline:
        try:
            status = Status(stored["status"])
            step = min(int(stored["step"]), len(spec.steps) - 1)
            return RolloutState(status, step, now, str(stored.get("reason", "")))
        except (KeyError, ValueError, TypeError):
            pass
    return RolloutState(Status.RUNNING, 0, now)
