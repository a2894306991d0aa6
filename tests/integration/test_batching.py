"""Dynamic batching in the real gateway: many requests in, fewer backend calls out."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc.aio as aioclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from gateway.examples import mlp, slow, write_config, write_version
from harness.gateway import GatewayProcess, metric, scrape

pytestmark = pytest.mark.timeout(120)


def start(repo: Path, tmp_path: Path, yaml_text: str = "", *args: str) -> GatewayProcess:
    extra: list[str] = []
    if yaml_text:
        (tmp_path / "gateway.yaml").write_text(yaml_text)
        extra = ["--config", str(tmp_path / "gateway.yaml")]
    return GatewayProcess(repo, *extra, *args).wait_ready()


async def fire(
    url: str, model: str, count: int, width: int, client_timeout: float | None = None, **kw: Any
) -> list[Any]:
    async with aioclient.InferenceServerClient(url) as c:

        async def one(i: int) -> Any:
            x = aioclient.InferInput("x", [1, width], "FP32")
            x.set_data_from_numpy(np.full((1, width), i / 100, np.float32))
            try:
                return await c.infer(model, [x], request_id=str(i), client_timeout=client_timeout, **kw)
            except InferenceServerException as exc:
                return exc

        return await asyncio.gather(*(one(i) for i in range(count)))


def statistics(url: str, model: str) -> Any:
    with grpc.insecure_channel(url) as ch:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(ch)
        return stub.ModelStatistics(service_pb2.ModelStatisticsRequest(name=model)).model_stats[0]


def test_concurrent_requests_share_backend_calls(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    write_config(
        repo, "mlp", "max_batch_size: 32\ndynamic_batching { max_queue_delay_microseconds: 20000 }\n"
    )
    write_version(repo, "mlp", 1, mlp(seed=5))
    proc = start(repo, tmp_path)
    try:
        results = asyncio.run(fire(proc.url, "mlp", 64, 32))
        session = ort.InferenceSession(
            str(repo / "mlp" / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
        )
        for i, r in enumerate(results):
            assert not isinstance(r, Exception), r
            assert r.get_response().id == str(i)
            expected = session.run(None, {"x": np.full((1, 32), i / 100, np.float32)})[0]
            np.testing.assert_allclose(r.as_numpy("y"), expected, rtol=1e-5, atol=1e-6)
        stats = statistics(proc.url, "mlp")
        assert stats.inference_count == 64
        assert stats.execution_count < 64  # batched: fewer backend calls than requests
        assert max(b.batch_size for b in stats.batch_stats) > 1
        assert stats.inference_stats.queue.ns > 0
    finally:
        assert proc.terminate() == 0


def slow_repo(root: Path, config: str, iterations: int = 20_000) -> Path:
    write_config(root, "slow", config)
    write_version(root, "slow", 1, slow(iterations))  # 20,000: ~0.2 s a call
    return root


def test_full_queue_is_resource_exhausted_at_once(tmp_path: Path) -> None:
    repo = slow_repo(
        tmp_path / "models",
        "max_batch_size: 1\ndynamic_batching { default_queue_policy { max_queue_size: 2 } }\n",
    )
    proc = start(repo, tmp_path)
    try:
        began = time.monotonic()
        results = asyncio.run(fire(proc.url, "slow", 8, 256))
        refused = [r for r in results if isinstance(r, InferenceServerException)]
        assert refused and all(r.status() == "StatusCode.RESOURCE_EXHAUSTED" for r in refused)
        assert all("queue full" in r.message() for r in refused)
        served = [r for r in results if not isinstance(r, Exception)]
        assert 1 <= len(served) <= 3  # one running, at most two queued
        assert time.monotonic() - began < 10
        again = asyncio.run(fire(proc.url, "slow", 1, 256))  # no counter leaked
        assert not isinstance(again[0], Exception)
    finally:
        assert proc.terminate() == 0


def test_deadline_in_queue_is_deadline_exceeded_and_never_runs(tmp_path: Path) -> None:
    # ~1.5 s a call: the hasty calls, sent after a poll sees the patient ones in flight (and a new
    # client's connection), must still find them running on a busy machine (at ~0.2 s a call,
    # under `make test-busy`, they once did not)
    repo = slow_repo(tmp_path / "models", "max_batch_size: 1\ndynamic_batching { }\n", 150_000)
    proc = start(repo, tmp_path)
    try:

        async def scenario() -> tuple[list[Any], list[Any]]:
            patient = asyncio.ensure_future(fire(proc.url, "slow", 2, 256))  # ~3 s of work queued
            # the hasty ones must queue behind both patient ones: wait until the gateway holds them
            while True:
                text = await asyncio.to_thread(scrape, proc.metrics_port)
                if metric(text, "modelgate_inflight_requests") >= 2:
                    break
                await asyncio.sleep(0.005)
            hasty = await fire(proc.url, "slow", 3, 256, client_timeout=0.1)
            return await patient, hasty

        patient, hasty = asyncio.run(scenario())
        assert all(not isinstance(r, Exception) for r in patient)
        assert all(isinstance(r, InferenceServerException) and "DEADLINE" in str(r.status()) for r in hasty)
        # One more, queued after them: had the expired ones stayed in the queue, they would
        # have run before it (one call at a time, in order), so it answers after they would.
        assert not isinstance(asyncio.run(fire(proc.url, "slow", 1, 256))[0], Exception)
        stats = statistics(proc.url, "slow")
        assert stats.execution_count == 3  # the patient two and the last one; the expired never ran
    finally:
        assert proc.terminate() == 0


def test_a_higher_priority_request_is_served_before_those_queued_earlier(tmp_path: Path) -> None:
    repo = slow_repo(
        tmp_path / "models",
        "max_batch_size: 1\ndynamic_batching { priority_levels: 2 default_priority_level: 2 }\n",
    )
    proc = start(repo, tmp_path)
    try:

        async def scenario() -> list[str]:
            order: list[str] = []
            async with aioclient.InferenceServerClient(proc.url) as c:

                async def one(name: str, priority: int = 0) -> None:
                    x = aioclient.InferInput("x", [1, 256], "FP32")
                    x.set_data_from_numpy(np.zeros((1, 256), np.float32))
                    await c.infer("slow", [x], priority=priority)
                    order.append(name)

                async def held(n: int) -> None:  # until the gateway holds n requests
                    while True:
                        text = await asyncio.to_thread(scrape, proc.metrics_port)
                        if metric(text, "modelgate_inflight_requests") >= n:
                            return
                        await asyncio.sleep(0.005)

                tasks = [asyncio.ensure_future(one("running"))]
                await held(1)
                tasks += [asyncio.ensure_future(one("low 1")), asyncio.ensure_future(one("low 2"))]
                await held(3)
                tasks.append(asyncio.ensure_future(one("high", priority=1)))
                await asyncio.gather(*tasks)
            return order

        order = asyncio.run(scenario())
        assert order[:2] == ["running", "high"], order  # the lows arrived together: either first
        assert sorted(order[2:]) == ["low 1", "low 2"], order
    finally:
        assert proc.terminate() == 0


def test_priority_and_timeout_parameters(tmp_path: Path) -> None:
    repo = slow_repo(
        tmp_path / "models",
        "max_batch_size: 1\ndynamic_batching { priority_levels: 2 default_priority_level: 2 }\n",
    )
    proc = start(repo, tmp_path)
    try:
        results = asyncio.run(fire(proc.url, "slow", 2, 256, priority=1))
        assert all(not isinstance(r, Exception) for r in results)
        late = asyncio.run(fire(proc.url, "slow", 4, 256, parameters={"timeout": 1}))
        # a 1 µs queue timeout: whatever had to queue expired
        assert any(isinstance(r, InferenceServerException) and "DEADLINE" in str(r.status()) for r in late)
    finally:
        assert proc.terminate() == 0


def test_adaptive_mode_reports_its_settings(tmp_path: Path, repo: Path) -> None:
    yaml_text = "batching:\n  mode: on\n  target_p99_ms: 20\n"
    proc = start(repo, tmp_path, yaml_text)
    try:
        results = asyncio.run(fire(proc.url, "mlp", 300, 32))
        assert all(not isinstance(r, Exception) for r in results)
        with urllib.request.urlopen(f"http://127.0.0.1:{proc.metrics_port}/metrics", timeout=10) as r:
            text = r.read().decode()
        assert 'modelgate_batch_target_p99_seconds{model="mlp",version="2"} 0.02' in text
        assert 'modelgate_batch_max_size{model="mlp",version="2"}' in text
        assert 'modelgate_batch_queue_delay_seconds{model="mlp",version="2"}' in text
    finally:
        assert proc.terminate() == 0
