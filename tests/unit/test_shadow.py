"""Shadow copies with fake backends behind the Backend protocol: comparison outcomes, the
in-flight cap, a primary that failed, a shadow that fails or cannot take the inputs, and the
description of the last disagreements."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from gateway.registry import READY, Model, ModelVersion
from gateway.routing import Router, TrafficPolicy
from gateway.shadow import Mirror, disagreements
from gateway.telemetry import Metrics
from gateway.tensors import Signature, TensorSpec

SIG = Signature((TensorSpec("x", "FP32", (-1, 4)),), (TensorSpec("y", "FP32", (-1, 2)),), 8)
OTHER = Signature((TensorSpec("x", "FP32", (-1, 3)),), (TensorSpec("y", "FP32", (-1, 2)),), 8)
X = {"x": np.ones((1, 4), np.float32)}


class Fake:
    """Answers `scale * [sum(x), 1]`; can be held back, or fail."""

    concurrency = 1
    info: Mapping[str, str] = {}

    def __init__(self, scale: float = 1.0, signature: Signature = SIG, fail: bool = False) -> None:
        self.signature = signature
        self.scale = scale
        self.fail = fail
        self.gate = asyncio.Event()
        self.gate.set()
        self.calls = 0

    def upstream(self) -> Mapping[str, Any]:
        return {}

    async def infer(
        self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str], deadline: float | None = None
    ) -> dict[str, np.ndarray]:
        self.calls += 1
        await self.gate.wait()
        if self.fail:
            raise RuntimeError("broken shadow")
        x = inputs["x"]
        return {"y": self.scale * np.stack([x.sum(axis=1), np.ones(len(x), np.float32)], axis=1)}

    async def close(self) -> None:
        pass


def model(metrics: Metrics, shadows: dict[str, Fake], max_inflight: int = 64) -> tuple[Model, ModelVersion]:
    versions = {"1": ModelVersion("m", "1", Fake(), metrics.for_version("m", "1"), Fake().infer)}  # type: ignore[arg-type]
    for v, backend in shadows.items():
        versions[v] = ModelVersion("m", v, backend, metrics.for_version("m", v), backend.infer)  # type: ignore[arg-type]
    policy = TrafficPolicy(
        weights={"1": 1}, shadows=dict.fromkeys(shadows, 1.0), shadow_max_inflight=max_inflight
    )
    router = Router(policy, versions)
    return Model("m", READY, versions=versions, router=router), versions["1"]


async def primary_answers(
    mirror: Mirror, m: Model, primary: ModelVersion, n: int = 1, ok: bool = True
) -> None:
    for _ in range(n):
        answer = mirror.send(m, primary, X, 1, ["y"])
        assert answer is not None
        answer.set_result(await primary.backend.infer(X, ["y"]) if ok else None)
    await mirror.settle()


def outcomes(metrics: Metrics, shadow: str) -> dict[str, int]:
    (stats,) = [s for s in metrics.shadow_stats("m") if s.shadow == shadow]
    return {k: v for k, v in stats.outcomes.items() if v}


def test_agreeing_and_disagreeing_shadows_are_counted_and_described() -> None:
    async def scenario() -> Metrics:
        metrics = Metrics()
        m, primary = model(metrics, {"2": Fake(1.0), "3": Fake(1.5)})
        mirror = Mirror(metrics)
        await primary_answers(mirror, m, primary, n=3)
        return metrics

    metrics = asyncio.run(scenario())
    assert outcomes(metrics, "2") == {"agree": 3}
    assert outcomes(metrics, "3") == {"disagree": 3}
    (three,) = [s for s in metrics.shadow_stats("m") if s.shadow == "3"]
    described = disagreements(three)
    assert len(described) == 3 and described[0]["max_abs_diff"] == 2.0  # 1.5 * 4 - 4
    assert described[0]["outputs"]["y"]["primary"]["max"] == 4.0
    assert described[0]["outputs"]["y"]["shadow"]["max"] == 6.0
    assert described[0]["input_digest"] == described[1]["input_digest"]  # the same input each time
    assert three.argmax_rows == 3 and three.argmax_agree == 3  # the label agrees, the scores do not


def test_over_the_cap_copies_are_dropped_and_the_primary_never_waits() -> None:
    async def scenario() -> tuple[Metrics, Fake]:
        metrics = Metrics()
        slow = Fake()
        slow.gate.clear()  # the shadow never answers until released
        m, primary = model(metrics, {"2": slow}, max_inflight=2)
        mirror = Mirror(metrics)
        answers = [mirror.send(m, primary, X, 1, ["y"]) for _ in range(5)]
        assert sum(a is not None for a in answers) == 2  # no future at all: nothing sent
        for a in answers:
            if a is not None:
                a.set_result(await primary.backend.infer(X, ["y"]))  # the primary goes on
        slow.gate.set()
        await mirror.settle()
        return metrics, slow

    metrics, slow = asyncio.run(scenario())
    assert slow.calls == 2
    assert outcomes(metrics, "2") == {"agree": 2, "dropped": 3}


def test_a_failed_primary_leaves_nothing_to_compare() -> None:
    async def scenario() -> Metrics:
        metrics = Metrics()
        m, primary = model(metrics, {"2": Fake()})
        await primary_answers(Mirror(metrics), m, primary, n=2, ok=False)
        return metrics

    assert outcomes(asyncio.run(scenario()), "2") == {"unpaired": 2}


def test_failing_and_incompatible_shadows_are_counted_not_raised() -> None:
    async def scenario() -> tuple[Metrics, Fake]:
        metrics = Metrics()
        other = Fake(signature=OTHER)
        m, primary = model(metrics, {"2": Fake(fail=True), "3": other})
        await primary_answers(Mirror(metrics), m, primary, n=2)
        return metrics, other

    metrics, other = asyncio.run(scenario())
    assert outcomes(metrics, "2") == {"failed": 2}
    assert outcomes(metrics, "3") == {"failed": 2} and other.calls == 0  # never called
    (two,) = [s for s in metrics.shadow_stats("m") if s.shadow == "2"]
    assert two.failures == {"INTERNAL": 2}


def test_after_close_nothing_is_sent_and_copies_in_flight_are_cancelled() -> None:
    async def scenario() -> tuple[Metrics, Fake]:
        metrics = Metrics()
        slow = Fake()
        slow.gate.clear()
        m, primary = model(metrics, {"2": slow})
        mirror = Mirror(metrics)
        assert mirror.send(m, primary, X, 1, ["y"]) is not None
        await asyncio.sleep(0)
        mirror.close()
        await mirror.settle()
        assert mirror.send(m, primary, X, 1, ["y"]) is None
        return metrics, slow

    metrics, slow = asyncio.run(scenario())
    assert slow.calls == 1 and outcomes(metrics, "2") == {"dropped": 1}
