"""ModelInfer calls arriving together, against the real gateway: on the native transport they
take the batch path (gateway/transport/native.py: a front's batch of calls decoded, routed,
joined per version and answered without a task per call); on grpcio each is its own task. The
rules are the same on both, and so are these tests: a bad call fails alone, a cancelled call's
rows leave its batch, expired calls never run, a burst spanning versions and models is answered
by the right ones, and 10,000 calls are each answered exactly once."""

from __future__ import annotations

import asyncio
import collections
import os
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnxruntime as ort
import pytest
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from gateway.examples import mlp, slow, write_config, write_version
from harness.gateway import GatewayProcess, metric, scrape

pytestmark = pytest.mark.timeout(180)

MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"


def request(model: str, x: np.ndarray, request_id: str = "", version: str = "") -> pb.ModelInferRequest:
    r = pb.ModelInferRequest(model_name=model, model_version=version, id=request_id)
    r.inputs.add(name="x", datatype="FP32", shape=list(x.shape))
    r.raw_input_contents.append(np.ascontiguousarray(x, np.float32).tobytes())
    return r


def output(response: pb.ModelInferResponse) -> np.ndarray:
    shape = list(response.outputs[0].shape)
    return np.frombuffer(response.raw_output_contents[0], np.float32).reshape(shape)


def start(repo: Path, tmp_path: Path, yaml_text: str = "") -> GatewayProcess:
    extra: list[str] = []
    if yaml_text:
        (tmp_path / "gateway.yaml").write_text(yaml_text)
        extra = ["--config", str(tmp_path / "gateway.yaml")]
    return GatewayProcess(repo, *extra).wait_ready()


def statistics(url: str, model: str) -> Any:
    with grpc.insecure_channel(url) as ch:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(ch)
        return stub.ModelStatistics(pb.ModelStatisticsRequest(name=model)).model_stats


async def until(condition: Any, within_s: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + within_s
    while not await asyncio.to_thread(condition):
        assert loop.time() < end, "timed out waiting"
        await asyncio.sleep(0.01)


def inflight(port: int) -> float:
    return metric(scrape(port), "modelgate_inflight_requests")


def test_a_bad_call_among_good_ones_fails_alone(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    write_config(repo, "mlp", "max_batch_size: 32\ndynamic_batching { max_queue_delay_microseconds: 5000 }\n")
    write_version(repo, "mlp", 1, mlp(seed=3))
    session = ort.InferenceSession(str(repo / "mlp" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    proc = start(repo, tmp_path)
    wrong_shape = pb.ModelInferRequest(model_name="mlp", id="bad-shape")
    wrong_shape.inputs.add(name="x", datatype="FP32", shape=[1, 31])
    wrong_shape.raw_input_contents.append(b"\0" * 124)
    bad = {
        "bad-shape": (wrong_shape.SerializeToString(), grpc.StatusCode.INVALID_ARGUMENT, "x"),
        "bad-model": (
            request("nope", np.zeros((1, 32))).SerializeToString(),
            grpc.StatusCode.NOT_FOUND,
            "nope",
        ),
        "bad-body": (b"\xff\xff\xff", grpc.StatusCode.INVALID_ARGUMENT, "not a valid ModelInferRequest"),
    }
    try:

        async def scenario() -> tuple[list[Any], dict[str, Any]]:
            async with grpc.aio.insecure_channel(proc.url) as ch:
                raw = ch.unary_unary(MODEL_INFER)  # bytes in, bytes out: bodies no client would send
                xs = [np.full((1, 32), i / 50, np.float32) for i in range(48)]
                good = [raw(request("mlp", x, str(i)).SerializeToString()) for i, x in enumerate(xs)]
                wrong = {name: raw(body) for name, (body, _, _) in bad.items()}
                answers = await asyncio.gather(*good, *wrong.values(), return_exceptions=True)
                return answers[: len(good)], dict(zip(wrong, answers[len(good) :], strict=True))

        good, wrong = asyncio.run(scenario())
        for i, body in enumerate(good):
            assert isinstance(body, bytes), body
            response = pb.ModelInferResponse.FromString(body)
            assert response.id == str(i)
            expected = session.run(None, {"x": np.full((1, 32), i / 50, np.float32)})[0]
            np.testing.assert_allclose(output(response), expected, rtol=1e-5, atol=1e-6)
        for name, (_, code, says) in bad.items():
            error = wrong[name]
            assert isinstance(error, grpc.aio.AioRpcError), (name, error)
            assert error.code() == code, (name, error)
            assert says in (error.details() or ""), (name, error.details())
        assert statistics(proc.url, "mlp")[0].inference_stats.success.count == 48
    finally:
        assert proc.terminate() == 0


LONG = 150_000
"""Iterations of the slow model (~1.5 s a call) for tests that act while a call runs: a poll of
/metrics or the statistics, then a cancel or a short deadline, must land before it ends, on a
busy machine too (at ~0.2 s a call, one once did not)."""


def slow_repo(root: Path, max_batch: int = 8, iterations: int = 20_000) -> Path:
    write_config(root, "slow", f"max_batch_size: {max_batch}\ndynamic_batching {{ }}\n")
    write_version(root, "slow", 1, slow(iterations))  # 20,000: ~0.2 s a call
    return root


def test_calls_cancelled_in_the_queue_leave_their_batch(tmp_path: Path) -> None:
    """One call holds the backend; four more queue behind it (together: on native, one joined
    request); two of those are cancelled while queued. The next backend call has the other
    two's rows only, and the cancelled two are counted as CANCELLED."""
    proc = start(slow_repo(tmp_path / "models", iterations=LONG), tmp_path)
    try:

        async def scenario() -> list[Any]:
            async with grpc.aio.insecure_channel(proc.url) as ch:
                stub = service_pb2_grpc.GRPCInferenceServiceStub(ch)
                x = np.ones((1, 256), np.float32)
                first = stub.ModelInfer(request("slow", x, "first"))
                await until(lambda: inflight(proc.metrics_port) >= 1)
                queued = [stub.ModelInfer(request("slow", x, f"q{i}")) for i in range(4)]
                await until(lambda: inflight(proc.metrics_port) >= 5)
                queued[1].cancel()
                queued[3].cancel()
                return await asyncio.gather(first, *queued, return_exceptions=True)

        first, *queued = asyncio.run(scenario())
        assert isinstance(first, pb.ModelInferResponse)
        assert [isinstance(r, pb.ModelInferResponse) for r in queued] == [True, False, True, False]
        assert all(isinstance(queued[i], asyncio.CancelledError) for i in (1, 3))
        stats = statistics(proc.url, "slow")[0]
        sizes = {b.batch_size: b.compute_infer.count for b in stats.batch_stats}
        assert stats.inference_count == 3 and stats.execution_count == 2, sizes
        assert sizes == {1: 1, 2: 1}  # the cancelled rows never ran
        text = scrape(proc.metrics_port)
        assert metric(text, "modelgate_requests_total", model="slow", version="1", code="CANCELLED") == 2
        assert metric(text, "modelgate_inflight_requests") == 0
    finally:
        assert proc.terminate() == 0


def test_a_call_cancelled_while_its_batch_runs_is_not_answered_and_the_rest_are(tmp_path: Path) -> None:
    proc = start(slow_repo(tmp_path / "models", iterations=LONG), tmp_path)
    try:

        async def scenario() -> list[Any]:
            async with grpc.aio.insecure_channel(proc.url) as ch:
                stub = service_pb2_grpc.GRPCInferenceServiceStub(ch)
                x = np.ones((1, 256), np.float32)
                first = stub.ModelInfer(request("slow", x, "first"))
                await until(lambda: inflight(proc.metrics_port) >= 1)
                calls = [stub.ModelInfer(request("slow", x, f"b{i}")) for i in range(3)]
                await until(lambda: inflight(proc.metrics_port) >= 4)
                await first  # the three now run together
                await until(lambda: statistics(proc.url, "slow")[0].execution_count >= 1)
                calls[1].cancel()
                return await asyncio.gather(*calls, return_exceptions=True)

        answers = asyncio.run(scenario())
        assert isinstance(answers[0], pb.ModelInferResponse) and answers[0].id == "b0"
        assert isinstance(answers[1], asyncio.CancelledError)
        assert isinstance(answers[2], pb.ModelInferResponse) and answers[2].id == "b2"
        text = scrape(proc.metrics_port)
        assert metric(text, "modelgate_inflight_requests") == 0
        assert metric(text, "modelgate_requests_total", model="slow", version="1", code="CANCELLED") == 1
        # the gateway goes on serving
        again = grpc.insecure_channel(proc.url)
        stub = service_pb2_grpc.GRPCInferenceServiceStub(again)
        assert (
            stub.ModelInfer(request("slow", np.ones((1, 256), np.float32), "after"), timeout=30).id == "after"
        )
        again.close()
    finally:
        assert proc.terminate() == 0


def test_calls_that_expire_together_in_the_queue_never_run(tmp_path: Path) -> None:
    proc = start(slow_repo(tmp_path / "models", iterations=LONG), tmp_path)
    try:

        async def scenario() -> tuple[Any, list[Any]]:
            async with grpc.aio.insecure_channel(proc.url) as ch:
                stub = service_pb2_grpc.GRPCInferenceServiceStub(ch)
                x = np.ones((1, 256), np.float32)
                first = stub.ModelInfer(request("slow", x, "first"))
                await until(lambda: inflight(proc.metrics_port) >= 1)
                hasty = [stub.ModelInfer(request("slow", x, f"h{i}"), timeout=0.05) for i in range(3)]
                return await first, await asyncio.gather(*hasty, return_exceptions=True)

        first, hasty = asyncio.run(scenario())
        assert first.id == "first"
        for error in hasty:
            assert (
                isinstance(error, grpc.aio.AioRpcError) and error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            )
        stats = statistics(proc.url, "slow")[0]
        assert stats.execution_count == 1 and stats.inference_count == 1  # the expired never ran
        assert metric(scrape(proc.metrics_port), "modelgate_inflight_requests") == 0
    finally:
        assert proc.terminate() == 0


def test_a_call_that_expires_before_its_queued_companions_leaves_without_its_rows(tmp_path: Path) -> None:
    """Two calls queued together behind a busy backend, one with a short deadline and one with a
    long one: the short one is DEADLINE_EXCEEDED at its own deadline, and the next backend call
    has only the other's row."""
    proc = start(slow_repo(tmp_path / "models", iterations=LONG), tmp_path)
    try:

        async def scenario() -> tuple[Any, Any, Any]:
            async with grpc.aio.insecure_channel(proc.url) as ch:
                stub = service_pb2_grpc.GRPCInferenceServiceStub(ch)
                x = np.ones((1, 256), np.float32)
                first = stub.ModelInfer(request("slow", x, "first"))
                await until(lambda: inflight(proc.metrics_port) >= 1)
                hasty = stub.ModelInfer(request("slow", x, "hasty"), timeout=0.05)
                patient = stub.ModelInfer(request("slow", x, "patient"), timeout=60)
                answers = await asyncio.gather(first, hasty, patient, return_exceptions=True)
                return answers[0], answers[1], answers[2]

        first, hasty, patient = asyncio.run(scenario())
        assert first.id == "first" and patient.id == "patient"
        assert isinstance(hasty, grpc.aio.AioRpcError)
        assert hasty.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        stats = statistics(proc.url, "slow")[0]
        sizes = {b.batch_size: b.compute_infer.count for b in stats.batch_stats}
        assert stats.inference_count == 2 and sizes == {1: 2}, sizes  # the hasty row never ran
    finally:
        assert proc.terminate() == 0


def test_a_burst_across_two_versions_and_two_models_is_answered_by_each(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    for name, dims, seeds in (("a", (32, 16, 8), (1, 2)), ("b", (32, 16, 4), (3,))):
        write_config(
            repo, name, "max_batch_size: 64\ndynamic_batching { max_queue_delay_microseconds: 2000 }\n"
        )
        for version, seed in enumerate(seeds, start=1):
            write_version(repo, name, version, mlp(dims, seed=seed))
    sessions = {
        (name, str(v)): ort.InferenceSession(str(repo / name / str(v) / "model.onnx"))
        for name, v in (("a", 1), ("a", 2), ("b", 1))
    }
    proc = start(repo, tmp_path, "models:\n  a:\n    traffic: {'1': 50, '2': 50}\n")
    try:

        async def scenario() -> list[pb.ModelInferResponse]:
            async with grpc.aio.insecure_channel(proc.url) as ch:
                stub = service_pb2_grpc.GRPCInferenceServiceStub(ch)
                calls = []
                for i in range(300):
                    x = np.full((1 + i % 3, 32), i / 300, np.float32)
                    pinned = "1" if i % 10 == 8 else ""  # some of model a's calls name version 1
                    calls.append(stub.ModelInfer(request("ab"[i % 2], x, str(i), pinned)))
                return await asyncio.gather(*calls)

        answers = asyncio.run(scenario())
        served: collections.Counter[tuple[str, str]] = collections.Counter()
        for i, response in enumerate(answers):
            model = "ab"[i % 2]
            assert response.id == str(i) and response.model_name == model
            x = np.full((1 + i % 3, 32), i / 300, np.float32)
            expected = sessions[(model, response.model_version)].run(None, {"x": x})[0]
            np.testing.assert_allclose(output(response), expected, rtol=1e-5, atol=1e-6)
            served[(model, response.model_version)] += 1
        assert served[("a", "1")] > 0 and served[("a", "2")] > 0
        for stat in [*statistics(proc.url, "a"), *statistics(proc.url, "b")]:
            assert stat.inference_stats.success.count == served[(stat.name, stat.version)]
            assert stat.execution_count <= stat.inference_stats.success.count
        if os.environ.get("GATEWAY_TRANSPORT") == "native":  # one hand-over's calls share calls
            stats = [*statistics(proc.url, "a"), *statistics(proc.url, "b")]
            assert sum(s.execution_count for s in stats) < len(answers)
    finally:
        assert proc.terminate() == 0


def test_a_burst_of_10000_calls_is_answered_once_each(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    write_config(repo, "mlp", "max_batch_size: 64\ndynamic_batching { }\n")
    write_version(repo, "mlp", 1, mlp(seed=9))
    proc = start(repo, tmp_path)
    total, inflight_cap, channels = 10_000, 512, 4
    try:

        async def scenario() -> collections.Counter[str]:
            answered: collections.Counter[str] = collections.Counter()
            chans = [grpc.aio.insecure_channel(proc.url) for _ in range(channels)]
            stubs = [service_pb2_grpc.GRPCInferenceServiceStub(ch) for ch in chans]
            x = np.ones((1, 32), np.float32)
            bodies = iter(range(total))

            async def client(k: int) -> None:
                for i in bodies:
                    response = await stubs[k % channels].ModelInfer(request("mlp", x, str(i)), timeout=60)
                    answered[response.id] += 1

            await asyncio.gather(*(client(k) for k in range(inflight_cap)))
            for ch in chans:
                await ch.close()
            return answered

        answered = asyncio.run(scenario())
        assert len(answered) == total and set(answered.values()) == {1}
        assert set(answered) == {str(i) for i in range(total)}
        stats = statistics(proc.url, "mlp")[0]
        assert stats.inference_stats.success.count == total and stats.inference_count == total
        assert stats.inference_stats.fail.count == 0
    finally:
        assert proc.terminate() == 0
