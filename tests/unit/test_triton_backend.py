"""The Triton backend's endpoint logic with fake endpoints behind its stub and channel seam: who is
picked, when an endpoint is ejected and readmitted, which failures are sent again elsewhere and
within what budget. (tests/integration/test_triton_backend.py runs the same against real Tritons.)"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import numpy as np
import pytest

from gateway._proto import inference_pb2 as pb
from gateway.backends.triton import TritonBackend, TritonOptions, _Endpoint, _RetryBudget
from gateway.errors import Internal, InvalidArgument, Unavailable
from gateway.repository import RemoteVersion
from gateway.tensors import Signature, TensorSpec

pytestmark = pytest.mark.asyncio

SIGNATURE = Signature((TensorSpec("x", "FP32", (-1, 4)),), (TensorSpec("y", "FP32", (-1, 4)),), 8)
X = {"x": np.arange(4, dtype=np.float32).reshape(1, 4)}


class FakeStub:
    """Answers ModelInfer by echoing `x` as `y`, or fails with the next scripted status."""

    def __init__(self, script: list[grpc.StatusCode] | None = None) -> None:
        self.script = list(script or [])
        self.calls = 0
        self.ready = True

    async def ModelInfer(self, request: pb.ModelInferRequest, **_: Any) -> pb.ModelInferResponse:
        self.calls += 1
        if self.script:
            code = self.script.pop(0)
            raise grpc.aio.AioRpcError(
                code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=f"fake {code.name}"
            )
        response = pb.ModelInferResponse(model_name=request.model_name)
        response.outputs.add(name="y", datatype="FP32", shape=list(request.inputs[0].shape))
        response.raw_output_contents.append(request.raw_input_contents[0])
        return response

    async def ServerReady(self, request: Any, **_: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.ready)

    async def ModelReady(self, request: Any, **_: Any) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=self.ready)


class FakeChannel:
    def __init__(self, connected: bool = True) -> None:
        self.connected = connected

    def get_state(self) -> grpc.ChannelConnectivity:
        return (
            grpc.ChannelConnectivity.READY if self.connected else grpc.ChannelConnectivity.TRANSIENT_FAILURE
        )

    async def close(self) -> None:
        pass


def endpoint(address: str, stub: FakeStub, connected: bool = True) -> _Endpoint:
    ep = object.__new__(_Endpoint)  # its grpc channel replaced by the fakes
    ep.address, ep.channel, ep.stub = address, FakeChannel(connected), stub
    ep.outstanding = ep.failures = ep.ejections = 0
    ep.ejected = False
    ep.calls = {}
    return ep


def backend(*endpoints: _Endpoint, **options: Any) -> TritonBackend:
    remote = RemoteVersion(tuple(ep.address for ep in endpoints), "m")
    return TritonBackend("m/1", remote, "m", SIGNATURE, list(endpoints), TritonOptions(**options))


async def test_an_endpoint_is_ejected_after_consecutive_failures_and_readmitted_by_a_good_probe() -> None:
    bad = FakeStub([grpc.StatusCode.INTERNAL] * 3)
    good = FakeStub()
    b = backend(endpoint("bad", bad), endpoint("good", good), eject_after_failures=3)
    failures = 0
    for _ in range(12):
        try:
            np.testing.assert_array_equal((await b.infer(X, ["y"]))["y"], X["x"])
        except Internal:
            failures += 1
    assert failures == 3 and bad.calls == 3  # then never picked again while ejected
    state = {e["endpoint"]: e for e in b.upstream()["endpoints"]}
    assert state["bad"]["ejected"] == 1 and state["bad"]["ejections"] == 1
    assert state["bad"]["calls"] == {"INTERNAL": 3}
    await b._probe(b._endpoints[0])  # the fake now answers: readmitted
    assert not b._endpoints[0].ejected and b._endpoints[0].failures == 0
    for _ in range(6):
        await b.infer(X, ["y"])
    assert bad.calls > 3  # back in the rotation
    await b.close()


async def test_a_success_resets_the_failure_count_and_a_failed_probe_counts() -> None:
    flaky = FakeStub([grpc.StatusCode.INTERNAL, grpc.StatusCode.INTERNAL])
    b = backend(endpoint("flaky", flaky), eject_after_failures=3)
    for _ in range(2):
        with pytest.raises(Internal, match="INTERNAL"):
            await b.infer(X, ["y"])
    await b.infer(X, ["y"])
    assert b._endpoints[0].failures == 0 and not b._endpoints[0].ejected
    flaky.ready = False
    for _ in range(3):
        await b._probe(b._endpoints[0])
    assert b._endpoints[0].ejected
    with pytest.raises(Unavailable, match="no healthy Triton endpoint"):  # at once, no call
        await b.infer(X, ["y"])
    assert flaky.calls == 3
    await b.close()


async def test_a_call_that_never_reached_a_server_goes_to_another_endpoint() -> None:
    down = FakeStub([grpc.StatusCode.UNAVAILABLE])
    up = FakeStub()
    b = backend(endpoint("down", down, connected=False), endpoint("up", up))
    b._next = len(b._endpoints) - 1  # the next pick starts at "down"
    np.testing.assert_array_equal((await b.infer(X, ["y"]))["y"], X["x"])
    assert down.calls == 1 and up.calls == 1 and b.upstream()["retries"] == 1
    await b.close()


async def test_a_call_that_may_have_reached_a_server_is_not_sent_again() -> None:
    reached = FakeStub([grpc.StatusCode.UNAVAILABLE])
    other = FakeStub()
    b = backend(endpoint("reached", reached, connected=True), endpoint("other", other))
    b._next = len(b._endpoints) - 1
    with pytest.raises(Unavailable, match="reached"):
        await b.infer(X, ["y"])
    assert other.calls == 0 and b.upstream()["retries"] == 0
    await b.close()


async def test_errors_about_the_request_pass_through_and_do_not_count_against_the_endpoint() -> None:
    stub = FakeStub([grpc.StatusCode.INVALID_ARGUMENT] * 5)
    b = backend(endpoint("e", stub), eject_after_failures=2)
    for _ in range(5):
        with pytest.raises(InvalidArgument, match="Triton says"):
            await b.infer(X, ["y"])
    assert b._endpoints[0].failures == 0 and not b._endpoints[0].ejected
    await b.close()


async def test_retries_stop_when_the_budget_is_spent() -> None:
    budget = _RetryBudget(0.1, per_second=0.0, cap=10.0)
    assert [budget.spend() for _ in range(11)] == [True] * 10 + [False]
    for _ in range(9):
        budget.earn()
    assert not budget.spend()  # 0.9 of a retry
    budget.earn()
    assert budget.spend()  # ten calls earn one retry
    down = [FakeStub([grpc.StatusCode.UNAVAILABLE] * 100) for _ in range(2)]
    b = backend(
        *(endpoint(f"d{i}", s, connected=False) for i, s in enumerate(down)), eject_after_failures=1000
    )
    b._budget = _RetryBudget(0.1, per_second=0.0, cap=3.0)
    outcomes = await asyncio.gather(*(b.infer(X, ["y"]) for _ in range(10)), return_exceptions=True)
    assert all(isinstance(o, Unavailable) for o in outcomes)
    # the bucket's 3 (the first call's 0.1 is over the cap), then 0.2 + 7 x 0.1 left: no fourth;
    # and no token spent on a call's second failure, with no endpoint left to try
    assert b.upstream()["retries"] == 3
    assert sum(s.calls for s in down) == 10 + 3
    await b.close()
