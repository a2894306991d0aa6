"""The routing decision, as a pure function of a policy snapshot: pins, sticky keys, weights,
readiness, and the promise that a canary's growth moves keys only to the canary."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.routing import NO_POLICY, Route, Router, TrafficPolicy, sticky_unit

KEYS = [f"user-{i}" for i in range(10_000)]


def router(weights: dict[str, float], served: tuple[str, ...] = ("1", "2", "3"), **kw: object) -> Router[str]:
    policy = TrafficPolicy(weights=weights, sticky_metadata="x-user-id", **kw)  # type: ignore[arg-type]
    return Router(policy, {v: v for v in served}, declared=("1", "2", "3", "4"), default=max(served, key=int))


def assignment(r: Router[str]) -> dict[str, str]:
    out = {}
    for key in KEYS:
        chosen = r.choose(key)
        assert chosen is not None and chosen[1] == Route.STICKY
        out[key] = chosen[0]
    return out


def within(count: int, n: int, p: float, sigmas: float = 4.0) -> bool:
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


def test_no_policy_routes_to_the_default_version() -> None:
    r = Router(NO_POLICY, {"1": "a", "2": "b"}, default="2")
    assert r.choose() == ("b", Route.DEFAULT)
    assert r.choose("some-key") == ("b", Route.DEFAULT)  # no split: a key changes nothing
    assert not r.split and r.weights() == {}


def test_pin_finds_loaded_versions_and_tells_declared_from_unknown() -> None:
    r = router({"1": 1})
    assert r.pinned("2") == "2"
    assert r.pinned("4") is None  # declared (e.g. failed to load), not served
    with pytest.raises(KeyError):
        r.pinned("9")


def test_weighted_choice_reads_the_draw_against_cumulative_weights() -> None:
    r = router({"1": 70, "2": 30})
    assert r.choose(draw=0.0) == ("1", Route.WEIGHTED)
    assert r.choose(draw=0.699) == ("1", Route.WEIGHTED)
    assert r.choose(draw=0.701) == ("2", Route.WEIGHTED)
    assert r.choose(draw=0.999999) == ("2", Route.WEIGHTED)
    assert r.weights() == {"1": 0.7, "2": 0.3}


def test_a_version_that_is_not_ready_gives_its_share_to_the_others() -> None:
    r = router({"1": 70, "2": 20, "3": 10}, served=("1", "3"))
    assert r.weights() == {"1": 0.875, "3": 0.125}
    assert {r.choose(draw=d / 100)[0] for d in range(100)} == {"1", "3"}  # type: ignore[index]
    assert {v for v in assignment(r).values()} == {"1", "3"}


def test_no_ready_weighted_version_means_no_route() -> None:
    r = router({"2": 1}, served=("1",))
    assert r.choose() is None and r.choose("key") is None


def test_zero_weight_versions_get_nothing() -> None:
    r = router({"1": 1, "2": 0})
    assert r.weights() == {"1": 1.0}
    assert set(assignment(r).values()) == {"1"}


def test_sticky_shares_follow_the_weights() -> None:
    shares = list(assignment(router({"1": 60, "2": 30, "3": 10})).values())
    for version, p in (("1", 0.6), ("2", 0.3), ("3", 0.1)):
        assert within(shares.count(version), len(KEYS), p), (version, shares.count(version))


def test_a_growing_canary_takes_only_the_keys_in_between_and_gives_none_back() -> None:
    before = assignment(router({"1": 90, "2": 10}))
    after = assignment(router({"1": 70, "2": 30}))
    moved = [k for k in KEYS if before[k] != after[k]]
    assert all(before[k] == "1" and after[k] == "2" for k in moved)
    # P(moved) = 0.3 - 0.1 = 0.2 of all keys
    assert within(len(moved), len(KEYS), 0.2), len(moved)


def test_with_three_versions_keys_move_only_to_the_canary() -> None:
    """Cumulative intervals would also shift keys from 1 to 2 here; rendezvous does not."""
    before = assignment(router({"1": 50, "2": 40, "3": 10}))
    after = assignment(router({"1": 50 * 7 / 9, "2": 40 * 7 / 9, "3": 30}))
    assert all(after[k] == "3" for k in KEYS if before[k] != after[k])


def test_a_version_leaving_hands_on_only_its_own_keys() -> None:
    before = assignment(router({"1": 50, "2": 30, "3": 20}))
    after = assignment(router({"1": 50, "2": 30, "3": 20}, served=("1", "3")))
    assert all(before[k] == "2" for k in KEYS if before[k] != after[k])


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(0.5, 100), min_size=2, max_size=4),
    st.floats(1.05, 20),
)
def test_property_canary_growth_never_moves_a_key_elsewhere(weights: list[float], growth: float) -> None:
    versions = [str(i + 1) for i in range(len(weights))]
    canary = versions[-1]
    base = dict(zip(versions, weights, strict=True))
    grown = {**base, canary: base[canary] * growth}
    served = tuple(versions)
    r1, r2 = router(base, served=served), router(grown, served=served)
    for key in KEYS[:500]:
        a, b = r1.choose(key), r2.choose(key)
        assert a is not None and b is not None
        assert a[0] == b[0] or b[0] == canary


CHOICES = """
from gateway.routing import Router, TrafficPolicy, sticky_unit
r = Router(TrafficPolicy(weights={"1": 50, "2": 50}, sticky_metadata="k"), {"1": "1", "2": "2"})
print([r.choose(f"k{i}")[0] for i in range(200)], [sticky_unit(f"k{i}", "2") for i in range(5)])
"""


def test_the_sticky_hash_is_the_same_in_every_process() -> None:
    """Not Python's salted hash(): interpreters with other hash seeds agree on every key."""
    root = str(Path(__file__).resolve().parents[3])
    runs = {
        subprocess.run(
            [sys.executable, "-c", CHOICES],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed, "PATH": ""},
            cwd=root,
        ).stdout
        for seed in ("1", "12345")
    }
    assert len(runs) == 1
    r = Router(TrafficPolicy(weights={"1": 50, "2": 50}, sticky_metadata="k"), {"1": "1", "2": "2"})
    here = [r.choose(f"k{i}")[0] for i in range(200)]  # type: ignore[index]
    assert runs.pop().strip() == f"{here} {[sticky_unit(f'k{i}', '2') for i in range(5)]}"
    assert {"1", "2"} == set(here)
