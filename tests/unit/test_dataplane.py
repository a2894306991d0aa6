"""The registry and the data plane over a real repository on disk, with a fake backend behind the
Backend protocol (the seam): version loading and failed loads, routing and what every answer
says, the caps, and calls a stop cuts. No gRPC, no ONNX Runtime."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gateway._proto import inference_pb2 as pb
from gateway.batching import BatchingPolicy
from gateway.dataplane import DataPlane
from gateway.errors import InvalidArgument, LoadError, NotFound, ResourceExhausted, Unavailable
from gateway.examples import mlp
from gateway.registry import READY, Registry
from gateway.repository import ModelSource, Repository
from gateway.routing import TrafficPolicy
from gateway.telemetry import Metrics
from gateway.telemetry.cost import COST
from gateway.tensors import Signature, TensorSpec
from gateway.wire import WireRequest, read_request

pytestmark = pytest.mark.asyncio

SIGNATURE = Signature((TensorSpec("x", "FP32", (-1, 4)),), (TensorSpec("y", "FP32", (-1, 1)),), 8)


class FakeBackend:
    """Answers y = the version number for every row; `gate` holds calls until it is set."""

    def __init__(self, version: str, gate: asyncio.Event | None = None) -> None:
        self.version = version
        self.signature = SIGNATURE
        self.concurrency = 1
        self.calls = 0
        self.closed = False
        self._gate = gate

    @property
    def info(self) -> Mapping[str, str]:
        return {"fake": self.version}

    def upstream(self) -> Mapping[str, Any]:
        return {}

    async def infer(
        self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str], deadline: float | None = None
    ) -> dict[str, np.ndarray]:
        self.calls += 1
        cost = COST.get()
        if cost is not None:  # as a backend measures it: 1 µs of CPU per row
            cost.cpu_ns += 1_000 * len(inputs["x"])
        if self._gate is not None:
            await self._gate.wait()
        return {"y": np.full((len(inputs["x"]), 1), float(self.version), np.float32)}

    async def close(self) -> None:
        self.closed = True


MODEL = mlp((4, 8, 1), seed=1)


async def until(condition: Any) -> None:
    while True:
        if condition():
            return
        await asyncio.sleep(0)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    for version in ("1", "2", "3"):
        (tmp_path / "m" / version).mkdir(parents=True)
        (tmp_path / "m" / version / "model.onnx").write_bytes(MODEL)  # checked on read, run by the fake
    (tmp_path / "m" / "config.pbtxt").write_text(
        "max_batch_size: 8\nversion_policy: { specific { versions: [1] } }\n"
    )
    return tmp_path


class World:
    def __init__(
        self,
        repo: Path,
        failing: set[str] = frozenset(),
        gate: asyncio.Event | None = None,
        peers: Any = None,
        batching: BatchingPolicy | None = None,
    ) -> None:
        self.backends: dict[str, FakeBackend] = {}
        self.failing = set(failing)

        async def factory(source: ModelSource, version: str) -> FakeBackend:
            if version in self.failing:
                raise LoadError(f"version {version} will not load")
            backend = self.backends[version] = FakeBackend(version, gate)
            return backend

        self.metrics = Metrics()
        self.registry = Registry(
            Repository(repo),
            factory,  # type: ignore[arg-type]
            self.metrics,
            drain_s=0,
            batching=(lambda source, backend: (batching, None)) if batching else None,
        )
        self.dataplane = DataPlane(
            self.registry, self.metrics, max_inflight=2, max_inflight_bytes=10_000, peers=peers
        )
        self.dataplane.accepting = True


def request(version: str = "", rows: int = 1) -> pb.ModelInferRequest:
    r = pb.ModelInferRequest(model_name="m", model_version=version)
    r.inputs.add(name="x", datatype="FP32", shape=[rows, 4])
    r.raw_input_contents.append(np.zeros((rows, 4), np.float32).tobytes())
    return r


def answer(response: pb.ModelInferResponse) -> tuple[str, str, int, float]:
    y = np.frombuffer(response.raw_output_contents[0], np.float32)
    return (
        response.model_version,
        response.parameters["route"].string_param,
        response.parameters["policy_revision"].int64_param,
        float(y[0]),
    )


async def test_a_traffic_change_loads_what_it_names_and_a_failed_version_gets_no_traffic(repo: Path) -> None:
    world = World(repo, failing={"3"})
    assert await world.registry.load_repository() == []
    assert answer(await world.dataplane.infer(request())) == ("1", "default", 0, 1.0)
    failed = await world.registry.apply({"m": TrafficPolicy(weights={"2": 1, "3": 1})}, revision=5)
    assert failed == {"m": {"3": "version 3 will not load"}}
    for _ in range(20):  # v3 failed: its share goes to v2
        assert answer(await world.dataplane.infer(request())) == ("2", "weighted", 5, 2.0)
    with pytest.raises(Unavailable, match="version '3' is not ready: version 3 will not load"):
        await world.dataplane.infer(request("3"))
    with pytest.raises(NotFound, match="has no version '7'"):
        await world.dataplane.infer(request("7"))
    assert answer(await world.dataplane.infer(request("1"))) == ("1", "pinned", 5, 1.0)
    model = world.registry.models["m"]
    assert model.state == READY and list(model.versions) == ["1", "2"] and "3" in model.failed


async def test_versions_no_policy_keeps_are_drained_and_closed(repo: Path) -> None:
    world = World(repo)
    await world.registry.load_repository()
    await world.registry.apply({"m": TrafficPolicy(weights={"2": 1})}, revision=2)
    v2 = world.backends["2"]
    await world.registry.apply({}, revision=3)  # nothing names v2 any more
    await asyncio.wait_for(until(lambda: v2.closed), 5)  # drain_s 0: closed on the next turns
    assert not world.backends["1"].closed
    assert list(world.registry.models["m"].versions) == ["1"]


async def test_caps_refuse_at_once_and_leak_nothing(repo: Path) -> None:
    gate = asyncio.Event()
    world = World(repo, gate=gate)
    await world.registry.load_repository()
    held = [asyncio.ensure_future(world.dataplane.infer(request(), size=100)) for _ in range(2)]
    await until(lambda: world.metrics.inflight >= 2)
    with pytest.raises(ResourceExhausted, match="2 requests in flight"):
        await world.dataplane.infer(request(), size=100)
    gate.set()
    await asyncio.gather(*held)
    with pytest.raises(ResourceExhausted, match="max_inflight_bytes"):
        await world.dataplane.infer(request(), size=20_000)
    assert (world.metrics.inflight, world.metrics.inflight_bytes) == (0, 0)
    assert answer(await world.dataplane.infer(request(), size=100))[0] == "1"  # nothing leaked


async def test_calls_cancelled_while_draining_are_counted_as_cut(repo: Path) -> None:
    gate = asyncio.Event()
    world = World(repo, gate=gate)
    await world.registry.load_repository()
    before = asyncio.ensure_future(world.dataplane.infer(request()))
    await until(lambda: world.metrics.inflight >= 1)
    before.cancel()  # a caller that left while serving: not a cut
    await asyncio.gather(before, return_exceptions=True)
    during = asyncio.ensure_future(world.dataplane.infer(request()))
    await until(lambda: world.metrics.inflight >= 1)
    world.dataplane.accepting = False  # draining
    during.cancel()  # the stop ran out of grace
    await asyncio.gather(during, return_exceptions=True)
    assert world.dataplane.cut == 1 and world.metrics.inflight == 0


async def test_the_cost_parameter_asks_for_the_request_share(repo: Path) -> None:
    world = World(repo)
    await world.registry.load_repository()
    plain = await world.dataplane.infer(request(rows=3))
    assert "cost_us" not in plain.parameters  # not asked: not there
    asked = request(rows=3)
    asked.parameters["cost"].bool_param = True
    params = (await world.dataplane.infer(asked)).parameters
    assert params["cost_us"].double_param == 3.0
    assert "cost_gpu_us" not in params and "cost_cpu_measured" not in params  # no GPU, CPU measured
    declined = request()
    declined.parameters["cost"].bool_param = False
    assert "cost_us" not in (await world.dataplane.infer(declined)).parameters
    wrong = request()
    wrong.parameters["cost"].int64_param = 1
    with pytest.raises(InvalidArgument, match="parameter 'cost' must be a bool, got int64_param"):
        await world.dataplane.infer(wrong)
    assert world.metrics.for_version("m", "1").cpu_ns == 7_000  # the three calls that ran


async def test_statistics_add_the_other_workers_snapshots_to_fresh_own_counters(repo: Path) -> None:
    other = {
        "model": "m", "version": "1", "ok": 5, "failures": {"INTERNAL": 1}, "rows": 9, "executions": 4,
        "ok_ns": 500, "fail_ns": 7, "queue_ns": 50, "input_ns": 10, "infer_ns": 300, "output_ns": 20,
        "last_ms": 1, "batches": {"1": [2, 100], "4": [2, 200]}, "routes": {"default": 5},
    }  # fmt: skip
    world = World(repo, peers=lambda: [{"versions": [other]}, {"versions": [dict(other, ok=1)]}])
    await world.registry.load_repository()
    await world.dataplane.infer(request(rows=4))
    [stats] = (await world.dataplane.model_statistics("m", "1")).model_stats
    assert (stats.inference_count, stats.execution_count) == (4 + 2 * 9, 1 + 2 * 4)
    assert stats.inference_stats.success.count == 1 + 5 + 1  # this request counted at once
    assert stats.inference_stats.fail.count == 2 and stats.last_inference > 1
    assert {b.batch_size: b.compute_infer.count for b in stats.batch_stats} == {1: 4, 4: 5}


async def test_the_batch_path_frees_its_calls_without_the_cyclic_collector(repo: Path) -> None:
    """Joined calls point at their group and the group at them; once answered, nothing of the
    data plane's may be left for the cyclic collector (at 64 calls in flight its passes cost
    ~2 µs a call on the native transport's batch path)."""
    world = World(repo, batching=BatchingPolicy(max_batch_size=8, max_queue_delay_s=0))
    await world.registry.load_repository()
    answers: list[tuple[Any, Any]] = []
    body = request().SerializeToString()

    def done(response: Any, error: Any) -> None:
        answers.append((response, error))

    calls = [(read_request(body), None, None, len(body), None, done) for _ in range(2)]  # two: the cap
    assert all(call[0].__class__ is WireRequest for call in calls)
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        handles = world.dataplane.begin_batch(calls)
        assert [type(h).__name__ for h in handles] == ["_Member"] * 2, answers  # joined
        await until(lambda: len(answers) == 2)
        del handles, calls
        gc.collect()
        left = [type(o).__qualname__ for o in gc.garbage if type(o).__module__ == "gateway.dataplane"]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert [e for _, e in answers] == [None, None]
    assert left == []


async def test_an_answer_as_bytes_is_the_message_infer_builds(repo: Path) -> None:
    """ModelInfer's transports send the bytes `infer(..., as_bytes=True)` cuts from the version's
    template: they must parse to exactly the message built field by field."""
    world = World(repo)
    await world.registry.load_repository()
    for rows, request_id in ((1, ""), (3, "call-7")):
        ask = request(rows=rows)
        ask.id = request_id
        built = await world.dataplane.infer(ask)
        cut = await world.dataplane.infer(ask, None, None, 0, None, True)
        assert isinstance(cut, bytes)
        assert pb.ModelInferResponse.FromString(cut) == built
    ask = request()
    ask.parameters["cost"].bool_param = True  # a call asking its cost gets the message
    assert isinstance(await world.dataplane.infer(ask, None, None, 0, None, True), pb.ModelInferResponse)
    assert world.metrics.for_version("m", "1").success_count == 5
