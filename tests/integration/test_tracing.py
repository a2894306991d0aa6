"""OpenTelemetry tracing in the real gateway, exported over OTLP/gRPC to a real receiver
(harness/otlp.py): the caller's trace continued, the span tree behind a request, sampling,
several workers, and a collector that goes away mid-load or answers slowly."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient

from gateway.examples import mlp, write_config, write_version
from harness.gateway import GatewayProcess, metric, scrape
from harness.otlp import OtlpReceiver, Span
from harness.recorder import RecorderServer
from harness.triton import TritonServer, make_onnx_python_model, triton_available

pytestmark = pytest.mark.timeout(90)
SERVICE = "inference.GRPCInferenceService"
BATCHED = "max_batch_size: 32\ndynamic_batching { max_queue_delay_microseconds: 20000 }\n"


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("traced-models")
    write_config(root, "mlp", BATCHED)
    write_version(root, "mlp", 1, mlp(seed=3))
    return root


@pytest.fixture
def otlp() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as receiver:
        yield receiver


def otel_env(otlp: OtlpReceiver, **more: str) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
        "OTEL_SERVICE_NAME": "gateway-under-test",
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # the SDK's export interval (ms): 5 s by default
        **more,
    }


def new_traceparent(sampled: bool = True) -> tuple[str, str, str]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-{'01' if sampled else '00'}", trace_id, span_id


async def fire(
    url: str,
    headers: list[dict[str, str]],
    model: str = "mlp",
    width: int = 32,
    deadline_s: float | None = None,
) -> list[Any]:
    async with aioclient.InferenceServerClient(url) as c:

        async def one(i: int, h: dict[str, str]) -> Any:
            x = aioclient.InferInput("x", [1, width], "FP32")
            x.set_data_from_numpy(np.full((1, width), i / 100, np.float32))
            return await c.infer(model, [x], request_id=str(i), headers=h, client_timeout=deadline_s)

        return await asyncio.gather(*(one(i, h) for i, h in enumerate(headers)))


def by_name(spans: list[Span], name: str) -> list[Span]:
    return [s for s in spans if s.name == name]


def test_request_spans_continue_the_callers_trace(repo: Path, otlp: OtlpReceiver) -> None:
    """Concurrent calls into one batcher: a server span per call under the caller's span, a
    queue span under each, one batch span per backend call linked to every request it served."""
    callers = [new_traceparent() for _ in range(8)]
    proc = GatewayProcess(repo, env=otel_env(otlp)).wait_ready()
    try:
        results = asyncio.run(fire(proc.url, [{"traceparent": tp} for tp, _, _ in callers]))
        assert len(results) == len(callers)
        spans = otlp.wait_for(lambda s: len(by_name(s, f"{SERVICE}/ModelInfer")) >= len(callers))
        spans = otlp.wait_for(lambda s: len(by_name(s, "queue")) >= len(callers))
    finally:
        assert proc.terminate() == 0, proc.log()
    spans = otlp.spans()  # the stop flushed everything
    requests = {s.trace_id: s for s in by_name(spans, f"{SERVICE}/ModelInfer")}
    for _, trace_id, parent in callers:
        server = requests[trace_id]  # the caller's trace id, continued
        assert server.parent_id == parent and server.kind == "SERVER"
        assert server.attributes["rpc.system"] == "grpc"
        assert server.attributes["rpc.service"] == SERVICE
        assert server.attributes["rpc.method"] == "ModelInfer"
        assert server.attributes["rpc.grpc.status_code"] == 0
        assert server.attributes["modelgate.model"] == "mlp"
        assert server.attributes["modelgate.version"] == "1"
        assert server.attributes["modelgate.route"] == "default"
        assert server.attributes["modelgate.policy_revision"] >= 1
        assert server.attributes["modelgate.rows"] == 1
        assert 1 <= server.attributes["modelgate.batch_size"] <= 8
        assert server.attributes["modelgate.queue_ms"] >= 0
        assert server.resource["service.name"] == "gateway-under-test"
        queued = [s for s in by_name(spans, "queue") if s.parent_id == server.span_id]
        assert len(queued) == 1 and queued[0].trace_id == trace_id
    batches = by_name(spans, "batch")
    linked = [link for b in batches for link in b.links]
    assert sorted(linked) == sorted((s.trace_id, s.span_id) for s in requests.values())
    for b in batches:  # under the first request it serves, sized as the requests' spans say
        assert (b.trace_id, b.parent_id) in b.links
        assert b.attributes["modelgate.batch_size"] == len(b.links)
        for trace_id, _ in b.links:
            assert requests[trace_id].attributes["modelgate.batch_size"] == len(b.links)


def test_failed_call_and_stream(repo: Path, otlp: OtlpReceiver) -> None:
    """A failing call's span says its status; every request of a stream gets its own span."""
    tp, trace_id, _ = new_traceparent()
    proc = GatewayProcess(repo, env=otel_env(otlp)).wait_ready()
    try:
        client = grpcclient.InferenceServerClient(proc.url)
        x = grpcclient.InferInput("x", [1, 3], "FP32")  # wrong width: INVALID_ARGUMENT
        x.set_data_from_numpy(np.ones((1, 3), np.float32))
        with pytest.raises(grpcclient.InferenceServerException):
            client.infer("mlp", [x], headers={"traceparent": tp})
        answers: queue.Queue[Any] = queue.Queue()
        client.start_stream(lambda result, error: answers.put(error or result), headers={"traceparent": tp})
        x = grpcclient.InferInput("x", [1, 32], "FP32")
        x.set_data_from_numpy(np.ones((1, 32), np.float32))
        for i in range(3):
            client.async_stream_infer("mlp", [x], request_id=str(i))
        for _ in range(3):
            assert not isinstance(answers.get(timeout=20), Exception)
        client.stop_stream()
        client.close()
        spans = otlp.wait_for(lambda s: len(by_name(s, f"{SERVICE}/ModelStreamInfer")) >= 3)
    finally:
        assert proc.terminate() == 0, proc.log()
    failed = by_name(otlp.spans(), f"{SERVICE}/ModelInfer")
    assert len(failed) == 1 and failed[0].trace_id == trace_id
    assert failed[0].attributes["rpc.grpc.status_code"] == 3  # INVALID_ARGUMENT
    assert failed[0].attributes["error.type"] == "INVALID_ARGUMENT"
    assert failed[0].status == 2
    streamed = by_name(spans, f"{SERVICE}/ModelStreamInfer")
    assert {s.trace_id for s in streamed} == {trace_id}
    assert len({s.span_id for s in streamed}) == 3
    assert all(s.attributes["rpc.method"] == "ModelStreamInfer" for s in streamed)
    assert all(s.attributes["modelgate.model"] == "mlp" for s in streamed)


def test_ratio_zero_exports_nothing(repo: Path, otlp: OtlpReceiver) -> None:
    """Sampling ratio 0: new traces and callers that did not sample export nothing (a caller
    that did sample still decides for its requests: the sampler is parent-based)."""
    env = otel_env(otlp, OTEL_TRACES_SAMPLER="parentbased_traceidratio", OTEL_TRACES_SAMPLER_ARG="0")
    proc = GatewayProcess(repo, env=env).wait_ready()
    try:
        asyncio.run(fire(proc.url, [{}] * 8 + [{"traceparent": new_traceparent(False)[0]}] * 8))
    finally:
        assert proc.terminate() == 0, proc.log()  # the stop flushes what was queued
    assert otlp.spans() == []


def test_two_workers(repo: Path, otlp: OtlpReceiver) -> None:
    """Each worker builds its own tracer after the fork; spans of both arrive."""
    callers = [new_traceparent() for _ in range(24)]
    proc = GatewayProcess(repo, "--workers", "2", env=otel_env(otlp)).wait_ready(lines=2)
    try:
        asyncio.run(fire(proc.url, [{"traceparent": tp} for tp, _, _ in callers]))
        spans = otlp.wait_for(lambda s: len(by_name(s, f"{SERVICE}/ModelInfer")) >= len(callers))
    finally:
        assert proc.terminate() == 0, proc.log()
    assert {s.trace_id for s in by_name(spans, f"{SERVICE}/ModelInfer")} == {t for _, t, _ in callers}
    assert "Traceback" not in proc.log(), proc.log()


def test_collector_down_mid_load(repo: Path, otlp: OtlpReceiver, tmp_path: Path) -> None:
    """The collector goes away under load: every request still succeeds, and the spans that could
    not be exported are counted on /metrics."""
    (tmp_path / "gateway.yaml").write_text(
        "telemetry: {tracing: {max_queue_size: 64, export_timeout_s: 1}}\n"
    )
    proc = GatewayProcess(repo, "--config", str(tmp_path / "gateway.yaml"), env=otel_env(otlp)).wait_ready()
    try:
        ok = 0
        for round_ in range(12):
            if round_ == 3:
                otlp.stop()
            ok += len(asyncio.run(fire(proc.url, [{"traceparent": new_traceparent()[0]}] * 32)))
        assert ok == 12 * 32  # fire() raises on any failed request
        deadline = time.monotonic() + 20
        while metric(scrape(proc.metrics_port), "modelgate_trace_spans_dropped_total") <= 0:
            assert time.monotonic() < deadline, "no dropped spans counted"
            time.sleep(0.2)
    finally:
        assert proc.terminate() == 0, proc.log()


def test_slow_collector_never_slows_a_request(repo: Path, tmp_path: Path) -> None:
    """A collector that answers each export 3 s late, the gateway's export timeout 1 s: every
    export times out on the SDK's export thread and its spans are counted as dropped, while 320
    traced requests, each with a 1 s deadline, all succeed. Were an export on a request's way (or
    on the event loop), requests would wait for its 1 s timeout and miss their deadlines; a request
    here takes milliseconds, so the deadline leaves a busy machine a wide margin."""
    (tmp_path / "gateway.yaml").write_text("telemetry: {tracing: {export_timeout_s: 1}}\n")
    with OtlpReceiver(delay_s=3) as slow:
        proc = GatewayProcess(repo, "--config", str(tmp_path / "gateway.yaml"), env=otel_env(slow))
        proc.wait_ready()
        try:
            traced = [{"traceparent": new_traceparent()[0]} for _ in range(32)]
            ok = len(asyncio.run(fire(proc.url, traced, deadline_s=1)))
            slow.wait_for(lambda s: len(s) > 0)  # an export arrived: the collector holds it 3 s
            for _ in range(9):  # fire() raises on any failed or late request
                traced = [{"traceparent": new_traceparent()[0]} for _ in range(32)]
                ok += len(asyncio.run(fire(proc.url, traced, deadline_s=1)))
            assert ok == 10 * 32
            deadline = time.monotonic() + 20
            while metric(scrape(proc.metrics_port), "modelgate_trace_spans_dropped_total") <= 0:
                assert time.monotonic() < deadline, "no timed-out export counted"
                time.sleep(0.2)
            assert len(asyncio.run(fire(proc.url, traced, deadline_s=1))) == 32  # still serving
        finally:
            assert proc.terminate() == 0, proc.log()
    assert "Traceback" not in proc.log(), proc.log()


@pytest.fixture
def recorder(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """harness/recorder.py: a KServe v2 server that logs each call's metadata."""
    log = tmp_path / "calls.jsonl"
    with RecorderServer(log) as server:
        yield server.address, log
        assert server.stop() == 0


@pytest.mark.parametrize("batching", ["off", "on"])
def test_remote_call_is_a_client_span(
    tmp_path: Path, recorder: tuple[str, Path], otlp: OtlpReceiver, batching: str
) -> None:
    """A `backend: triton` call gets a client span, and the traceparent the remote receives is
    that span's."""
    address, log = recorder
    config = {"models": {"echo": {"versions": {"1": {"backend": "triton", "endpoints": [address]}}}}}
    (tmp_path / "gateway.json").write_text(json.dumps(config))
    (tmp_path / "models").mkdir()
    tp, trace_id, caller = new_traceparent()
    proc = GatewayProcess(
        tmp_path / "models", "--config", str(tmp_path / "gateway.json"), "--batching", batching,
        env=otel_env(otlp),
    ).wait_ready()  # fmt: skip
    try:
        asyncio.run(fire(proc.url, [{"traceparent": tp}], model="echo", width=4))
        spans = otlp.wait_for(lambda s: len([x for x in s if x.kind == "CLIENT"]) >= 1)
        spans = otlp.wait_for(lambda s: len(by_name(s, f"{SERVICE}/ModelInfer")) >= 2)
    finally:
        assert proc.terminate() == 0, proc.log()
    (server,) = [s for s in spans if s.kind == "SERVER"]
    (client,) = [s for s in spans if s.kind == "CLIENT"]
    assert server.trace_id == client.trace_id == trace_id and server.parent_id == caller
    assert client.attributes["rpc.method"] == "ModelInfer"
    assert client.attributes["rpc.grpc.status_code"] == 0
    assert client.attributes["server.address"] == address
    if batching == "on":  # request -> batch -> client
        (batch,) = by_name(spans, "batch")
        assert batch.parent_id == server.span_id and client.parent_id == batch.span_id
    else:
        assert client.parent_id == server.span_id
    sent = json.loads(log.read_text().splitlines()[-1])
    assert sent["traceparent"] == f"00-{trace_id}-{client.span_id}-01"


def test_off_by_default(repo: Path) -> None:
    """No OTEL_* variable, no telemetry section: no tracer; the drop counter reads 0."""
    assert not [k for k in os.environ if k.startswith("OTEL_")]
    proc = GatewayProcess(repo).wait_ready()
    try:
        asyncio.run(fire(proc.url, [{"traceparent": new_traceparent()[0]}] * 4))
        text = scrape(proc.metrics_port)
    finally:
        assert proc.terminate() == 0, proc.log()
    assert "modelgate_trace_spans_dropped_total 0.0" in text


def test_shadow_copy_is_its_own_span(tmp_path: Path, otlp: OtlpReceiver) -> None:
    """A shadow copy gets a span under (and linked to) the request it copies, its batch under it."""
    repo = tmp_path / "models"
    write_config(repo, "mlp", BATCHED)
    for v in (1, 2):
        write_version(repo, "mlp", v, mlp(seed=v))
    (tmp_path / "gateway.yaml").write_text('models: {mlp: {traffic: {"1": 100}, shadow: {"2": 1.0}}}\n')
    tp, trace_id, _ = new_traceparent()
    proc = GatewayProcess(repo, "--config", str(tmp_path / "gateway.yaml"), env=otel_env(otlp)).wait_ready()
    try:
        asyncio.run(fire(proc.url, [{"traceparent": tp}]))
        spans = otlp.wait_for(lambda s: len(by_name(s, "shadow")) >= 1 and len(by_name(s, "batch")) >= 2)
    finally:
        assert proc.terminate() == 0, proc.log()
    (server,) = by_name(spans, f"{SERVICE}/ModelInfer")
    (shadow,) = by_name(spans, "shadow")
    assert server.attributes["modelgate.version"] == "1"
    assert shadow.trace_id == trace_id and shadow.parent_id == server.span_id
    assert shadow.links == [(trace_id, server.span_id)]
    assert shadow.attributes["modelgate.version"] == "2"
    parents = {b.parent_id for b in by_name(spans, "batch")}
    assert parents == {server.span_id, shadow.span_id}


@pytest.mark.skipif(not triton_available(), reason="run `make triton-peer` first")
def test_tritons_own_spans_join_the_trace(tmp_path: Path, otlp: OtlpReceiver) -> None:
    """A real Triton with OpenTelemetry tracing on (OTLP/HTTP to the same receiver): its spans
    land in the caller's trace, under the gateway's client span."""
    onnx = tmp_path / "mlp.onnx"
    onnx.write_bytes(mlp(seed=21))
    triton_models = tmp_path / "triton"
    make_onnx_python_model(triton_models, "mlp", onnx, "x", 32, "y", 8)
    triton = TritonServer(
        triton_models,
        log_path=tmp_path / "triton.log",
        extra_args=[
            "--trace-config", "mode=opentelemetry",
            "--trace-config", "rate=1",
            "--trace-config", "level=TIMESTAMPS",
            "--trace-config", f"opentelemetry,url={otlp.http_endpoint}",
            "--trace-config", "opentelemetry,resource=service.name=triton",
        ],
    ).start()  # fmt: skip
    try:
        config = {
            "models": {"mlp": {"versions": {"1": {"backend": "triton", "endpoints": [triton.grpc_url]}}}}
        }
        (tmp_path / "gateway.json").write_text(json.dumps(config))
        (tmp_path / "models").mkdir()
        tp, trace_id, _ = new_traceparent()
        proc = GatewayProcess(
            tmp_path / "models", "--config", str(tmp_path / "gateway.json"), env=otel_env(otlp)
        ).wait_ready()
        try:
            asyncio.run(fire(proc.url, [{"traceparent": tp}]))
            spans = otlp.wait_for(
                lambda s: (
                    any(x.kind == "CLIENT" for x in s)
                    and any(x.resource.get("service.name") == "triton" for x in s)
                )
            )
        finally:
            assert proc.terminate() == 0, proc.log()
    finally:
        triton.close()
    (client,) = [s for s in spans if s.kind == "CLIENT"]
    tritons = [s for s in spans if s.resource.get("service.name") == "triton"]
    assert {s.trace_id for s in tritons} == {trace_id}
    assert client.span_id in {s.parent_id for s in tritons}
