"""The automatic rollout decision: a pure function of (spec, state, window statistics, now).

A rollout moves a canary's share of a model's traffic through `steps` (percentages), the rest
going to the baseline. Each step lasts at least `interval_s` and until the canary has served
`min_requests` since the step began; then the canary is compared with the baseline on what the
step's window saw:

    error rate        canary requests that failed for the server's reasons (not the client's)
    p99 ratio         canary p99 / baseline p99 (latency histograms, interpolated in-bucket)
    disagreement      shadow copies of the baseline's requests sent to the canary that disagreed
    drift             the canary's outputs scored against the baseline's over the step
                      (gateway/drift/tracker.py's `versus`), when the model is monitored; a
                      score fails the gate only when it is also over twice what two samples
                      of the step's sizes from one distribution score by chance

One gate failing rolls back at once, whenever the canary has `min_requests` in the window (so
a bad canary goes within one interval): 100% to the baseline, the canary stays loaded at 0%.
Every gate passing at the last step promotes the canary (100%). A paused rollout holds its
weights. The driver around this (gateway/control/rollout.py) only reads counters and writes the
weights it is told.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

__all__ = [
    "CLIENT_CODES",
    "Action",
    "RolloutSpec",
    "RolloutState",
    "Status",
    "VersionWindow",
    "Window",
    "decide",
    "quantile",
]

CLIENT_CODES = frozenset(
    {"INVALID_ARGUMENT", "NOT_FOUND", "CANCELLED", "FAILED_PRECONDITION", "UNAUTHENTICATED"}
)
"""Failures that say nothing about the version (the caller's request or the caller leaving)."""


class Status(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"


@dataclass(frozen=True)
class RolloutSpec:
    canary: str
    baseline: str
    steps: tuple[float, ...]  # canary percentages, rising, the last one 100 to promote
    interval_s: float
    min_requests: int
    max_error_rate: float | None = None
    max_p99_ratio: float | None = None
    max_shadow_disagreement: float | None = None
    max_drift: float | None = None


@dataclass(frozen=True)
class RolloutState:
    status: Status
    step: int  # index into spec.steps
    step_started: float  # on the driver's clock
    reason: str = ""  # why it rolled back (or what it waits for)

    def weights(self, spec: RolloutSpec) -> dict[str, float]:
        """The traffic this state serves: the canary's share of the step, the rest to the
        baseline; all to the baseline after a rollback, all to the canary once promoted."""
        if self.status == Status.ROLLED_BACK:
            return {spec.baseline: 100.0, spec.canary: 0.0}
        if self.status == Status.PROMOTED:
            return {spec.baseline: 0.0, spec.canary: 100.0}
        share = spec.steps[self.step]
        return {spec.baseline: 100.0 - share, spec.canary: share}


@dataclass(frozen=True)
class VersionWindow:
    """What one version did since the step began."""

    requests: int = 0
    failures: Mapping[str, int] = field(default_factory=dict)  # status code -> count
    latency_bounds: Sequence[float] = ()
    latency_counts: Sequence[int] = ()  # per bucket, the last one above every bound

    @property
    def server_errors(self) -> int:
        return sum(n for code, n in self.failures.items() if code not in CLIENT_CODES)

    @property
    def p99(self) -> float | None:
        return quantile(0.99, self.latency_bounds, self.latency_counts)


@dataclass(frozen=True)
class Window:
    canary: VersionWindow
    baseline: VersionWindow
    compared: int = 0  # shadow copies (baseline -> canary) compared
    disagreed: int = 0
    drift: float | None = None  # the canary's outputs against the baseline's (None: not measured)
    drift_where: str = ""  # which output feature scored it
    drift_chance: float | None = None  # what the score reaches by chance with these many rows


@dataclass(frozen=True)
class Action:
    state: RolloutState
    changed: bool  # the weights (or status) moved: the driver publishes them
    note: str = ""  # what happened, for the log


def quantile(q: float, bounds: Sequence[float], counts: Sequence[int]) -> float | None:
    """Prometheus' histogram_quantile: linear inside the bucket; the open last bucket answers
    its lower bound."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    lower = 0.0
    for i, n in enumerate(counts):
        if seen + n >= rank and n > 0:
            if i >= len(bounds):
                return lower
            upper = bounds[i]
            return lower + (upper - lower) * (rank - seen) / n
        seen += n
        lower = bounds[i] if i < len(bounds) else lower
    return lower


def _gates(spec: RolloutSpec, window: Window) -> str:
    """The first gate that fails, as a reason; "" when all pass."""
    canary, baseline = window.canary, window.baseline
    if spec.max_error_rate is not None and canary.requests:
        rate = canary.server_errors / canary.requests
        if rate > spec.max_error_rate:
            return (
                f"error rate {rate:.4f} > {spec.max_error_rate} ({canary.server_errors} of {canary.requests})"
            )
    if spec.max_p99_ratio is not None:
        mine, theirs = canary.p99, baseline.p99
        if mine is not None and theirs:
            ratio = mine / theirs
            if ratio > spec.max_p99_ratio:
                times = f"{mine * 1e3:.2f} ms vs {theirs * 1e3:.2f} ms"
                return f"p99 ratio {ratio:.2f} > {spec.max_p99_ratio} ({times})"
    if spec.max_shadow_disagreement is not None and window.compared:
        share = window.disagreed / window.compared
        if share > spec.max_shadow_disagreement:
            return (
                f"shadow disagreement {share:.4f} > {spec.max_shadow_disagreement} "
                f"({window.disagreed} of {window.compared})"
            )
    drift, limit, chance = window.drift, spec.max_drift, window.drift_chance or 0.0
    if drift is not None and limit is not None and drift > limit and drift > 2 * chance:
        odds = f"; {chance:.4f} by chance" if window.drift_chance is not None else ""
        return f"drift {drift:.4f} > {limit} (against the baseline, {window.drift_where}{odds})"
    return ""


def decide(spec: RolloutSpec, state: RolloutState, window: Window, now: float) -> Action:
    """The next state. `window` counts what happened since `state.step_started`."""
    if state.status != Status.RUNNING:
        return Action(state, False)
    if window.canary.requests < spec.min_requests:
        waiting = f"waiting for {spec.min_requests} canary requests ({window.canary.requests} so far)"
        return Action(replace(state, reason=waiting), False)
    failed = _gates(spec, window)
    if failed:
        rolled = RolloutState(Status.ROLLED_BACK, state.step, now, failed)
        return Action(
            rolled, True, f"rolled back at step {state.step + 1} ({spec.steps[state.step]}%): {failed}"
        )
    if now - state.step_started < spec.interval_s:
        left = math.ceil(spec.interval_s - (now - state.step_started))
        return Action(replace(state, reason=f"gates pass; step ends in {left} s"), False)
    if state.step + 1 >= len(spec.steps):
        return Action(
            RolloutState(Status.PROMOTED, state.step, now), True, "promoted: every gate passed at every step"
        )
    step = state.step + 1
    return Action(
        RolloutState(Status.RUNNING, step, now), True, f"step {step + 1}: canary at {spec.steps[step]}%"
    )
