"""The rollout driver: counters in, weights out, the decision itself in gateway/routing/rollout.py.

Every tick it sums the serving processes' counters (their snapshots), takes what happened since
each rollout's step began, asks `decide`, and when the weights move writes them to the runtime
traffic file in `state_dir`. The serving processes watch that file as they watch the config, so
a step, a promotion or a rollback reaches every worker through the same validated path as an
edit. It runs where the control plane runs: the supervisor with `--workers N` (no gRPC there,
so it can still fork), the one process otherwise.

The file keeps each rollout's status and step, so a restarted gateway resumes at the weights it
last applied (its window starts afresh) and never escalates; a rolled-back canary stays at 0%.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..routing.rollout import RolloutSpec, RolloutState, Status, VersionWindow, Window, decide
from ..settings import RUNTIME_FILE, ConfigSource, ModelSettings, Settings, read_runtime
from ..telemetry._histogram import LATENCY_BOUNDS

__all__ = ["RolloutDriver", "rollout_spec"]

log = logging.getLogger("gateway.rollout")

Snapshots = Callable[[], Iterable[dict[str, Any]]]


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
        return totals

    def window(self, since: _Totals, model: str, spec: RolloutSpec) -> Window:
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

        pair = (model, spec.baseline, spec.canary)
        compared, disagreed = self.shadows.get(pair, (0, 0))
        c0, d0 = since.shadows.get(pair, (0, 0))
        return Window(version(spec.canary), version(spec.baseline), compared - c0, disagreed - d0)


@dataclass
class _Running:
    spec: RolloutSpec
    state: RolloutState
    since: _Totals  # the counters when the step began


class RolloutDriver:
    def __init__(
        self, source: ConfigSource, snapshots: Snapshots, clock: Callable[[], float] = time.monotonic
    ):
        self._source = source
        self._snapshots = snapshots
        self._clock = clock
        self._rollouts: dict[str, _Running] = {}
        self._settings: Settings | None = None
        self._seen: Any = None

    def _config(self) -> Settings | None:
        """The config as written (without runtime traffic), re-read when its file changes."""
        path = self._source.path
        try:
            seen = path.stat().st_mtime_ns if path is not None else None
        except OSError:
            seen = None
        if self._settings is None or seen != self._seen:
            try:
                self._settings = self._source.load(runtime=False)
            except Exception as exc:  # a refused config: keep driving what was valid
                if self._settings is None:
                    log.error("rollouts cannot read the config: %s", exc)
                    return None
            self._seen = seen
        return self._settings

    def tick(self) -> None:
        """One look at every rollout; writes the runtime traffic file when weights move."""
        settings = self._config()
        if settings is None:
            return
        specs = {n: s for n, m in settings.models.items() if (s := rollout_spec(m)) is not None}
        if not specs and not self._rollouts:
            return
        now = self._clock()
        totals = _Totals.of(self._snapshots())
        changed = False
        stored = read_runtime(settings.state_dir).get("rollouts") or {}
        for name in list(self._rollouts):
            if name not in specs:  # the rollout left the config: its weights go with it
                del self._rollouts[name]
                changed = True
        for name, spec in specs.items():
            running = self._rollouts.get(name)
            if running is None or running.spec != spec:
                state = _resume(stored.get(name), spec, now)
                running = self._rollouts[name] = _Running(spec, state, totals)
                changed = True
                log.info(
                    "rollout of %s version %s against %s: %s at step %d (%s%%)",
                    name,
                    spec.canary,
                    spec.baseline,
                    state.status,
                    state.step + 1,
                    spec.steps[state.step],
                )
            action = decide(spec, running.state, totals.window(running.since, name, spec), now)
            running.state = action.state
            if action.changed:
                running.since = totals
                changed = True
                log_at = log.warning if action.state.status == Status.ROLLED_BACK else log.info
                log_at("rollout of %s version %s: %s", name, spec.canary, action.note)
        if changed:
            self._write(settings.state_dir)

    def status(self) -> dict[str, dict[str, Any]]:
        return {name: _entry(r.spec, r.state) for name, r in self._rollouts.items()}

    def _write(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        path = state_dir / RUNTIME_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"rollouts": self.status()}, indent=1))
        tmp.replace(path)


def _entry(spec: RolloutSpec, state: RolloutState) -> dict[str, Any]:
    return {
        "canary": spec.canary,
        "baseline": spec.baseline,
        "status": str(state.status),
        "step": state.step,
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
