"""The rollout decision as a pure function of (spec, state, window, now): every gate, the step
timing, promotion, and the states that never move."""

from __future__ import annotations

import itertools

import pytest

from gateway.routing.rollout import (
    RolloutSpec,
    RolloutState,
    Status,
    VersionWindow,
    Window,
    decide,
    quantile,
)

BOUNDS = (0.001, 0.002, 0.004, 0.008)
SPEC = RolloutSpec(
    canary="2",
    baseline="1",
    steps=(10, 50, 100),
    interval_s=60,
    min_requests=100,
    max_error_rate=0.01,
    max_p99_ratio=1.5,
    max_shadow_disagreement=0.05,
    max_drift=0.2,
)
START = RolloutState(Status.RUNNING, 0, 1000.0)


def version(requests: int, failures: dict[str, int] | None = None, bucket: int = 1) -> VersionWindow:
    counts = [0] * (len(BOUNDS) + 1)
    counts[bucket] = requests
    return VersionWindow(requests, failures or {}, BOUNDS, counts)


def window(
    canary: VersionWindow | None = None,
    compared: int = 0,
    disagreed: int = 0,
    drift: float | None = None,
    chance: float | None = None,
) -> Window:
    where = "output 'y' feature 3"
    return Window(canary or version(200), version(2000), compared, disagreed, drift, where, chance)


def test_weights_follow_the_state() -> None:
    assert START.weights(SPEC) == {"1": 90.0, "2": 10.0}
    assert RolloutState(Status.RUNNING, 1, 0).weights(SPEC) == {"1": 50.0, "2": 50.0}
    assert RolloutState(Status.ROLLED_BACK, 1, 0).weights(SPEC) == {"1": 100.0, "2": 0.0}
    assert RolloutState(Status.PROMOTED, 2, 0).weights(SPEC) == {"1": 0.0, "2": 100.0}


def test_a_step_waits_for_its_requests_and_its_interval() -> None:
    few = decide(SPEC, START, window(version(99)), now=5000.0)
    assert not few.changed and few.state.step == 0 and "waiting for 100" in few.state.reason
    early = decide(SPEC, START, window(), now=1059.0)
    assert not early.changed and early.state.step == 0 and "step ends in 1 s" in early.state.reason
    on_time = decide(SPEC, START, window(), now=1060.0)
    assert on_time.changed and on_time.state == RolloutState(Status.RUNNING, 1, 1060.0)


def test_every_step_then_promotion() -> None:
    state, now = START, 1000.0
    seen = []
    for _ in range(3):
        now += 60
        action = decide(SPEC, state, window(), now)
        assert action.changed
        state = action.state
        seen.append((state.status, state.step))
    assert seen == [(Status.RUNNING, 1), (Status.RUNNING, 2), (Status.PROMOTED, 2)]
    assert state.weights(SPEC) == {"1": 0.0, "2": 100.0}


@pytest.mark.parametrize(
    ("win", "why"),
    [
        (window(version(200, {"INTERNAL": 3})), "error rate 0.0150 > 0.01"),
        (window(version(200, {"UNAVAILABLE": 2, "DEADLINE_EXCEEDED": 1})), "error rate"),
        (window(version(200, bucket=3)), "p99 ratio"),
        (window(compared=100, disagreed=6), "shadow disagreement 0.0600 > 0.05"),
        (window(drift=0.31), "drift 0.3100 > 0.2 (against the baseline, output 'y' feature 3)"),
    ],
    ids=["errors", "unavailable+deadline", "slower", "disagrees", "drifts"],
)
def test_one_failing_gate_rolls_back_at_once(win: Window, why: str) -> None:
    action = decide(SPEC, START, win, now=1001.0)  # long before the interval ends
    assert action.changed and action.state.status == Status.ROLLED_BACK
    assert why in action.state.reason and why in action.note
    assert action.state.weights(SPEC) == {"1": 100.0, "2": 0.0}


def test_the_callers_own_failures_do_not_count() -> None:
    caller = window(version(200, {"INVALID_ARGUMENT": 50, "CANCELLED": 20, "NOT_FOUND": 5}))
    assert decide(SPEC, START, caller, now=1060.0).state.status == Status.RUNNING


def test_within_thresholds_passes() -> None:
    ok = window(version(200, {"INTERNAL": 2}, bucket=1), compared=100, disagreed=5)
    action = decide(SPEC, START, ok, now=1060.0)
    assert action.state == RolloutState(Status.RUNNING, 1, 1060.0)


def test_gates_left_out_never_fail() -> None:
    lax = RolloutSpec("2", "1", (10, 100), 60, 100, None, None, None, max_drift=None)
    bad = window(version(200, {"INTERNAL": 200}, bucket=4), compared=10, disagreed=10)
    assert decide(lax, START, bad, now=1060.0).state.status == Status.RUNNING
    unmeasured = window(drift=None)  # a model without drift monitoring: the drift gate cannot fail
    assert decide(SPEC, START, unmeasured, now=1060.0).state.status == Status.RUNNING


@pytest.mark.parametrize("status", [Status.PAUSED, Status.PROMOTED, Status.ROLLED_BACK])
def test_stopped_rollouts_never_move(status: Status) -> None:
    state = RolloutState(status, 1, 0.0, "held")
    for win, now in itertools.product([window(), window(version(200, {"INTERNAL": 100}))], [0.0, 1e9]):
        assert decide(SPEC, state, win, now) == decide(SPEC, state, win, now)
        assert decide(SPEC, state, win, now).state == state and not decide(SPEC, state, win, now).changed


def test_quantile_interpolates_inside_the_bucket() -> None:
    assert quantile(0.99, BOUNDS, [0, 0, 0, 0, 0]) is None
    assert quantile(0.5, BOUNDS, [0, 100, 0, 0, 0]) == pytest.approx(0.0015)
    assert quantile(0.99, BOUNDS, [50, 50, 0, 0, 0]) == pytest.approx(0.001 + 0.001 * 49 / 50)
    assert quantile(0.99, BOUNDS, [0, 0, 0, 0, 10]) == 0.008  # the open bucket: its lower bound


def test_the_drift_gate_fails_only_beyond_twice_the_chance_level() -> None:
    """Small samples score high by chance: a drift over the limit fails the gate only when it is
    also over twice what these rows score by chance (an equal canary once failed a 0.1 gate at
    0.185 on a few hundred rows). Otherwise the step goes on: a gate that waited for rows could
    wait forever at a 100% step, where the baseline gets none."""
    within = decide(SPEC, START, window(drift=0.31, chance=0.2), now=1060.0)  # 0.31 <= 2 x 0.2
    assert within.state == RolloutState(Status.RUNNING, 1, 1060.0)
    beyond = decide(SPEC, START, window(drift=0.31, chance=0.15), now=1000.5)
    assert beyond.state.status == Status.ROLLED_BACK
    where = "against the baseline, output 'y' feature 3; 0.1500 by chance"
    assert beyond.state.reason == f"drift 0.3100 > 0.2 ({where})"
    under = decide(SPEC, START, window(drift=0.15, chance=0.01), now=1060.0)  # beyond chance, under the limit
    assert under.state == RolloutState(Status.RUNNING, 1, 1060.0)
