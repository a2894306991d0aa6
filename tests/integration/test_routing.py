"""Versioned traffic in the real gateway: weighted splits, sticky keys, pins, shadows compared
with the primary, a canary that fails to load, and configs that are refused.

Every answer is checked against the version it names (each version is a different model, run
here with ONNX Runtime), so a request can never be counted for one version and served by
another.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
import yaml
from tritonclient.utils import InferenceServerException

from gateway.examples import mlp, slow, write_version
from harness.gateway import GatewayProcess, metric, scrape

pytestmark = pytest.mark.timeout(180)

SEEDS = {"1": 1, "2": 2, "3": 1}  # version 3 is version 1 again: a shadow that agrees
X = np.linspace(-1, 1, 32, dtype=np.float32).reshape(1, 32)


def build(root: Path) -> Path:
    for version, seed in SEEDS.items():
        write_version(root, "m", int(version), mlp(seed=seed))
    for version in (1, 2):
        write_version(root, "p", version, mlp(seed=version))
    return root


CONFIG = {
    "models": {
        "m": {"traffic": {"1": 70, "2": 30}, "sticky": {"key": "x-user-id"}, "shadow": {"3": 1.0}},
        "p": {"traffic": {"1": 50, "2": 50}, "sticky": {"parameter": "user"}},
    }
}


def serve(root: Path, config: dict[str, Any], *args: str, name: str = "gateway.yaml") -> GatewayProcess:
    path = root / name
    path.write_text(yaml.safe_dump(config))
    return GatewayProcess(root / "models", "--config", str(path), *args)


@pytest.fixture(scope="module")
def expected(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """What each version of `m` answers to X, from ONNX Runtime directly."""
    out = {}
    for version, seed in SEEDS.items():
        session = ort.InferenceSession(mlp(seed=seed), providers=["CPUExecutionProvider"])
        out[version] = session.run(None, {"x": X})[0]
    return out


@pytest.fixture(scope="module")
def routed(tmp_path_factory: pytest.TempPathFactory, transport: str) -> Iterator[GatewayProcess]:
    root = tmp_path_factory.mktemp("routed")
    build(root / "models")
    proc = serve(root, CONFIG).wait_ready()
    yield proc
    assert proc.terminate() == 0, proc.log()
    assert "Traceback" not in proc.log(), proc.log()


async def fire(url: str, n: int, keys: list[str | None] | None = None, concurrency: int = 32) -> list[Any]:
    """n requests for `m` (request i carries keys[i % len(keys)] as x-user-id), `concurrency` at
    a time; returns the responses (or exceptions) in order."""
    results: list[Any] = [None] * n
    async with aioclient.InferenceServerClient(url) as client:
        x = aioclient.InferInput("x", [1, 32], "FP32")
        x.set_data_from_numpy(X)
        queue = iter(range(n))

        async def worker() -> None:
            for i in queue:
                key = keys[i % len(keys)] if keys else None
                headers = {"x-user-id": key} if key is not None else None
                try:
                    results[i] = await client.infer("m", [x], headers=headers)
                except InferenceServerException as exc:
                    results[i] = exc

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


def served(response: Any, expected: dict[str, np.ndarray]) -> tuple[str, str, int]:
    """(version, route, revision) of one answer, after checking its content is that version's."""
    r = response.get_response()
    np.testing.assert_allclose(response.as_numpy("y"), expected[r.model_version], rtol=1e-5, atol=1e-6)
    return r.model_version, r.parameters["route"].string_param, r.parameters["policy_revision"].int64_param


def within(count: int, n: int, p: float) -> bool:
    return abs(count - n * p) <= 4 * math.sqrt(n * p * (1 - p))


def wait_for(port: int, predicate: Any, timeout: float = 30) -> str:
    """Scrape /metrics until predicate(text) holds (shadow copies finish after their primaries)."""
    deadline = time.monotonic() + timeout
    while True:
        text = scrape(port)
        if predicate(text) or time.monotonic() > deadline:
            return text
        time.sleep(0.1)


def test_weighted_split_lands_within_binomial_tolerance_and_shadows_compare(
    routed: GatewayProcess, expected: dict[str, np.ndarray]
) -> None:
    n = 5000
    before = scrape(routed.metrics_port)
    results = asyncio.run(fire(routed.url, n))
    outcomes = Counter(served(r, expected) for r in results)
    assert set(outcomes) <= {("1", "weighted", 1), ("2", "weighted", 1)}, outcomes
    v2 = outcomes[("2", "weighted", 1)]
    assert within(v2, n, 0.3), v2

    # every request was mirrored to v3 (= v1): it agrees with v1's answers, not with v2's
    def compared(text: str) -> float:
        return sum(
            metric(text, "modelgate_shadow_requests_total", model="m", shadow="3", outcome=o)
            - metric(before, "modelgate_shadow_requests_total", model="m", shadow="3", outcome=o)
            for o in ("agree", "disagree")
        )

    text = wait_for(routed.metrics_port, lambda t: compared(t) >= n)
    delta = {
        (p, o): metric(text, "modelgate_shadow_requests_total", model="m", primary=p, shadow="3", outcome=o)
        - metric(before, "modelgate_shadow_requests_total", model="m", primary=p, shadow="3", outcome=o)
        for p in ("1", "2")
        for o in ("agree", "disagree", "failed", "dropped")
    }
    assert delta == {
        ("1", "agree"): n - v2,
        ("1", "disagree"): 0,
        ("1", "failed"): 0,
        ("1", "dropped"): 0,
        ("2", "agree"): 0,
        ("2", "disagree"): v2,
        ("2", "failed"): 0,
        ("2", "dropped"): 0,
    }
    assert metric(text, "modelgate_shadow_agreement_ratio", model="m", primary="1", shadow="3") == 1.0
    assert metric(text, "modelgate_shadow_agreement_ratio", model="m", primary="2", shadow="3") == 0.0
    assert metric(text, "modelgate_traffic_weight", model="m", version="1") == 0.7
    assert metric(text, "modelgate_traffic_weight", model="m", version="2") == 0.3
    assert metric(text, "modelgate_policy_revision") == 1
    routed_v2 = metric(text, "modelgate_routed_requests_total", model="m", version="2", route="weighted")
    assert (
        routed_v2
        - metric(before, "modelgate_routed_requests_total", model="m", version="2", route="weighted")
        == v2
    )


def test_each_sticky_key_stays_on_one_version(
    routed: GatewayProcess, expected: dict[str, np.ndarray]
) -> None:
    keys: list[str | None] = [f"user-{i}" for i in range(1000)]
    results = asyncio.run(fire(routed.url, 20 * len(keys), keys, concurrency=64))
    versions: dict[str, set[str]] = {}
    for i, r in enumerate(results):
        version, route, _ = served(r, expected)
        assert route == "sticky"
        versions.setdefault(keys[i % len(keys)], set()).add(version)  # type: ignore[arg-type]
    assert all(len(v) == 1 for v in versions.values())  # 20 calls each, one version each
    on_v2 = sum(1 for v in versions.values() if v == {"2"})
    assert within(on_v2, len(keys), 0.3), on_v2


def test_a_pin_beats_a_sticky_key_which_beats_the_weights(
    routed: GatewayProcess, expected: dict[str, np.ndarray]
) -> None:
    client = grpcclient.InferenceServerClient(routed.url)
    x = grpcclient.InferInput("x", [1, 32], "FP32")
    x.set_data_from_numpy(X)
    key = "user-7"
    sticky = {served(client.infer("m", [x], headers={"x-user-id": key}), expected) for _ in range(10)}
    assert len(sticky) == 1 and next(iter(sticky))[1] == "sticky"
    other = "2" if next(iter(sticky))[0] == "1" else "1"
    pinned = client.infer("m", [x], model_version=other, headers={"x-user-id": key})
    assert served(pinned, expected)[:2] == (other, "pinned")
    # a pin reaches a version that takes no traffic (the shadow); an unknown one is NOT_FOUND
    assert served(client.infer("m", [x], model_version="3"), expected)[:2] == ("3", "pinned")
    with pytest.raises(InferenceServerException) as err:
        client.infer("m", [x], model_version="9")
    assert err.value.status() == "StatusCode.NOT_FOUND" and "no version '9'" in err.value.message()
    # a request parameter as the key (model p)
    by_param = {
        client.infer("p", [x], parameters={"user": "alice"}).get_response().model_version for _ in range(10)
    }
    assert len(by_param) == 1
    r = client.infer("p", [x], parameters={"user": "alice"}).get_response()
    assert r.parameters["route"].string_param == "sticky"
    assert client.infer("p", [x]).get_response().parameters["route"].string_param == "weighted"
    client.close()


def assignment(
    proc: GatewayProcess, keys: list[str | None], expected: dict[str, np.ndarray]
) -> dict[str, str]:
    results = asyncio.run(fire(proc.url, len(keys), keys, concurrency=64))
    return {k: served(r, expected)[0] for k, r in zip(keys, results, strict=True)}  # type: ignore[misc]


def test_sticky_keys_hold_across_restarts_and_workers_and_a_growing_canary_takes_only_its_share(
    tmp_path: Path, expected: dict[str, np.ndarray]
) -> None:
    build(tmp_path / "models")
    keys: list[str | None] = [f"key-{i}" for i in range(1000)]
    at_10 = {"models": {"m": {"traffic": {"1": 90, "2": 10}, "sticky": {"key": "x-user-id"}}}}
    at_30 = {"models": {"m": {"traffic": {"1": 70, "2": 30}, "sticky": {"key": "x-user-id"}}}}
    runs = {}
    for label, config, args in (
        ("first", at_10, ()),
        ("restart", at_10, ()),
        ("workers", at_10, ("--workers", "2")),
        ("canary 30%", at_30, ()),
    ):
        proc = serve(tmp_path, config, *args).wait_ready(lines=2 if args else 1)
        try:
            runs[label] = assignment(proc, keys, expected)
        finally:
            assert proc.terminate() == 0, proc.log()
    assert runs["restart"] == runs["first"] and runs["workers"] == runs["first"]
    moved = [k for k in runs["first"] if runs["first"][k] != runs["canary 30%"][k]]
    assert all(runs["first"][k] == "1" and runs["canary 30%"][k] == "2" for k in moved)
    assert within(len(moved), len(keys), 0.2), len(moved)


def test_weighted_split_with_two_workers(tmp_path: Path, expected: dict[str, np.ndarray]) -> None:
    build(tmp_path / "models")
    proc = serve(tmp_path, {"models": {"m": {"traffic": {"1": 50, "2": 50}}}}, "--workers", "2")
    proc.wait_ready(lines=2)
    try:

        async def several_connections() -> list[Any]:  # the kernel spreads connections over workers
            parts = await asyncio.gather(*(fire(proc.url, 1250, concurrency=8) for _ in range(4)))
            return [r for part in parts for r in part]

        results = asyncio.run(several_connections())
        counts = Counter(served(r, expected)[0] for r in results)
        assert within(counts["2"], len(results), 0.5), counts
        text = wait_for(
            proc.metrics_port,
            lambda t: (
                metric(t, "modelgate_routed_requests_total", model="m", route="weighted") == len(results)
            ),
        )
        assert metric(text, "modelgate_routed_requests_total", model="m", route="weighted") == len(results)
    finally:
        assert proc.terminate() == 0, proc.log()


def test_slow_and_failing_shadows_change_nothing_for_the_primary(tmp_path: Path) -> None:
    root = tmp_path / "models"
    write_version(root, "s", 1, mlp((256, 256), seed=4))
    write_version(root, "s", 2, slow(20_000))  # ~0.2 s a call
    write_version(root, "s", 3, mlp((16, 8), seed=5))  # other input width: every copy fails
    shadows = {"traffic": {"1": 1}, "shadow": {"2": 1.0, "3": 1.0}, "shadow_max_inflight": 4}
    config = {"models": {"s": shadows}}
    proc = serve(tmp_path, config).wait_ready()
    try:

        async def load() -> list[Any]:
            async with aioclient.InferenceServerClient(proc.url) as client:
                x = aioclient.InferInput("x", [1, 256], "FP32")
                x.set_data_from_numpy(np.ones((1, 256), np.float32))
                out = []
                for _ in range(25):
                    out += await asyncio.gather(*(client.infer("s", [x]) for _ in range(8)))
                return out

        results = asyncio.run(load())
        assert all(r.get_response().model_version == "1" for r in results)
        assert {r.get_response().parameters["route"].string_param for r in results} == {"weighted"}

        def settled(t: str) -> bool:
            done = sum(
                metric(t, "modelgate_shadow_requests_total", model="s", shadow=v, outcome=o)
                for v in ("2", "3")
                for o in ("agree", "disagree", "failed", "dropped", "unpaired")
            )
            return done == 2 * len(results)

        text = wait_for(proc.metrics_port, settled, timeout=60)
        assert settled(text)
        assert metric(text, "modelgate_requests_total", model="s", version="1", code="OK") == len(results)
        assert metric(text, "modelgate_shadow_requests_total", model="s", shadow="2", outcome="dropped") > 0
        assert metric(text, "modelgate_shadow_failures_total", model="s", shadow="3") > 0
        # the primary never waited for a shadow: its mean latency is far below the slow shadow's
        primary_mean = metric(text, "modelgate_request_duration_seconds_sum", model="s", version="1") / len(
            results
        )
        shadow_mean = metric(text, "modelgate_shadow_duration_seconds_sum", model="s", shadow="2") / metric(
            text, "modelgate_shadow_duration_seconds_count", model="s", shadow="2"
        )
        assert primary_mean < shadow_mean / 2, (primary_mean, shadow_mean)
    finally:
        assert proc.terminate() == 0, proc.log()
    assert "Traceback" not in proc.log()


def test_a_canary_that_fails_to_load_gets_no_traffic(tmp_path: Path, expected: dict[str, np.ndarray]) -> None:
    root = tmp_path / "models"
    write_version(root, "m", 1, mlp(seed=1))
    (root / "m" / "2").mkdir(parents=True)
    (root / "m" / "2" / "model.onnx").write_bytes(b"not an onnx file")
    proc = serve(tmp_path, {"models": {"m": {"traffic": {"1": 90, "2": 10}}}}).wait_ready()
    try:
        results = asyncio.run(fire(proc.url, 300))
        assert {served(r, expected)[:2] for r in results} == {("1", "weighted")}
        client = grpcclient.InferenceServerClient(proc.url)
        assert client.is_server_ready() and client.is_model_ready("m")
        x = grpcclient.InferInput("x", [1, 32], "FP32")
        x.set_data_from_numpy(X)
        with pytest.raises(InferenceServerException) as err:
            client.infer("m", [x], model_version="2")
        assert (
            err.value.status() == "StatusCode.UNAVAILABLE" and "not a valid ONNX model" in err.value.message()
        )
        index = {(m.name, m.version): (m.state, m.reason) for m in client.get_model_repository_index().models}
        assert index[("m", "1")][0] == "READY"
        assert index[("m", "2")][0] == "UNAVAILABLE" and "not a valid ONNX model" in index[("m", "2")][1]
        text = scrape(proc.metrics_port)
        assert metric(text, "modelgate_traffic_weight", model="m", version="1") == 1.0
        assert 'modelgate_traffic_weight{model="m",version="2"}' not in text
        client.close()
    finally:
        assert proc.terminate() == 0, proc.log()


def test_a_bad_config_is_refused_with_every_error_listed(tmp_path: Path) -> None:
    build(tmp_path / "models")
    config = {
        "models": {
            "m": {"traffic": {"1": 50, "9": 50}, "shadow": {"8": 0.5}},
            "p": {"traffic": {"1": -1, "2": 0}, "shadow": {"1": 0.5}, "canary": "2"},
        }
    }
    proc = serve(tmp_path, config)
    assert proc.proc.wait(60) == 2, proc.log()
    proc.terminate()
    text = proc.log()
    for expected in (
        "negative weight",
        "weights sum to 0",
        "models.p.canary: Extra inputs are not permitted",
    ):
        assert expected in text, (expected, text)
    assert "Traceback" not in text
    # versions unknown to the repository, once the config itself is well-formed
    config = {"models": {"m": {"traffic": {"1": 50, "9": 50}, "shadow": {"8": 0.5}}}}
    proc = serve(tmp_path, config, name="unknown.yaml")
    assert proc.proc.wait(60) == 2, proc.log()
    proc.terminate()
    assert "version '8'" in proc.log() and "version '9'" in proc.log(), proc.log()
