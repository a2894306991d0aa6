"""The caller's W3C traceparent reaches the remote server of a `backend: triton` version.

The remote here is a small KServe v2 server (tritonclient's generated servicer, a real grpc.aio
server on loopback) that records the metadata of every ModelInfer it receives: Triton itself
only shows the header in its OpenTelemetry export."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from tests.peers.gateway import GatewayProcess

pytestmark = pytest.mark.timeout(60)
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class Recorder(pb_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []

    async def ServerReady(self, request: Any, context: Any) -> Any:
        return pb.ServerReadyResponse(ready=True)

    async def ModelReady(self, request: Any, context: Any) -> Any:
        return pb.ModelReadyResponse(ready=True)

    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name="echo", versions=["1"], platform="test",
            inputs=[tensor(name="x", datatype="FP32", shape=[-1, 4])],
            outputs=[tensor(name="y", datatype="FP32", shape=[-1, 4])],
        )  # fmt: skip

    async def ModelConfig(self, request: Any, context: Any) -> Any:
        return pb.ModelConfigResponse(config=mc.ModelConfig(name="echo", max_batch_size=8))

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        self.seen.append({k: v for k, v in context.invocation_metadata() if isinstance(v, str)})
        out = pb.ModelInferResponse(model_name="echo", model_version="1", id=request.id)
        out.outputs.add(name="y", datatype="FP32", shape=request.inputs[0].shape)
        out.raw_output_contents.append(request.raw_input_contents[0])
        return out


@pytest.fixture(scope="module")  # one grpc.aio event loop for the whole module
def recorder() -> Iterator[tuple[Recorder, int]]:
    service = Recorder()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    state: dict[str, Any] = {}

    async def serve() -> None:
        server = grpc.aio.server()
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(service, server)
        state["port"] = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        state["server"] = server
        started.set()
        await server.wait_for_termination()

    thread = threading.Thread(target=lambda: loop.run_until_complete(serve()), daemon=True)
    thread.start()
    assert started.wait(10)
    yield service, state["port"]
    asyncio.run_coroutine_threadsafe(state["server"].stop(0), loop).result(10)
    thread.join(10)
    loop.close()


@pytest.mark.parametrize("batching", ["off", "on"])
def test_traceparent_is_forwarded(tmp_path: Path, recorder: tuple[Recorder, int], batching: str) -> None:
    service, port = recorder
    config = {
        "models": {"echo": {"versions": {"1": {"backend": "triton", "endpoints": [f"127.0.0.1:{port}"]}}}}
    }
    (tmp_path / "gateway.json").write_text(json.dumps(config))
    (tmp_path / "models").mkdir()
    proc = GatewayProcess(
        tmp_path / "models", "--config", str(tmp_path / "gateway.json"), "--batching", batching
    )
    proc.wait_ready()
    try:
        client = grpcclient.InferenceServerClient(proc.url)
        x = grpcclient.InferInput("x", [1, 4], "FP32")
        x.set_data_from_numpy(np.arange(4, dtype=np.float32).reshape(1, 4))
        result = client.infer("echo", [x], headers={"traceparent": TRACEPARENT})
        np.testing.assert_array_equal(result.as_numpy("y"), np.arange(4, dtype=np.float32).reshape(1, 4))
        client.infer("echo", [x])  # without one, none is invented
    finally:
        assert proc.terminate() == 0
    assert service.seen[-2].get("traceparent") == TRACEPARENT
    assert "traceparent" not in service.seen[-1]
