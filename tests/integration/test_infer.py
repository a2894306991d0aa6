"""Inference through tritonclient (sync, asyncio and streaming) against ONNX Runtime run directly."""

from __future__ import annotations

import asyncio
import queue
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from tritonclient.grpc import service_pb2, service_pb2_grpc

from .conftest import ALL_TYPES, TYPED_TYPES

pytestmark = pytest.mark.timeout(60)


def reference(repo: Path, model: str, version: str, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(
        str(repo / model / version / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    return session.run(None, feed)  # type: ignore[no-any-return]


def sample(datatype: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    if datatype == "BYTES":
        return np.array([f"s{i}-é".encode() for i in range(int(np.prod(shape)))], dtype=object).reshape(shape)
    if datatype == "BOOL":
        return rng.integers(0, 2, shape).astype(bool)
    dtype = {"FP16": np.float16, "FP32": np.float32, "FP64": np.float64}.get(datatype)
    if dtype is not None:
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(np.dtype(datatype.lower()))
    return rng.integers(info.min, info.max, shape, dtype=np.dtype(datatype.lower()), endpoint=True)


def mlp_input(rows: int, seed: int = 0) -> tuple[grpcclient.InferInput, np.ndarray]:
    x = np.random.default_rng(seed).standard_normal((rows, 32)).astype(np.float32)
    tensor = grpcclient.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return tensor, x


@pytest.mark.parametrize("rows", [1, 5, 8])
@pytest.mark.parametrize("version", ["1", "2"])
def test_mlp_matches_onnxruntime(
    client: grpcclient.InferenceServerClient, repo: Path, rows: int, version: str
) -> None:
    tensor, x = mlp_input(rows, seed=rows)
    result = client.infer("mlp", [tensor], model_version=version, request_id=f"r{rows}")
    np.testing.assert_allclose(
        result.as_numpy("y"), reference(repo, "mlp", version, {"x": x})[0], rtol=1e-5, atol=1e-6
    )
    response = result.get_response()
    assert response.model_version == version
    assert response.id == f"r{rows}"


def test_default_version_is_the_latest(client: grpcclient.InferenceServerClient, repo: Path) -> None:
    tensor, x = mlp_input(2)
    result = client.infer("mlp", [tensor])
    assert result.get_response().model_version == "2"
    np.testing.assert_allclose(
        result.as_numpy("y"), reference(repo, "mlp", "2", {"x": x})[0], rtol=1e-5, atol=1e-6
    )
    assert not np.allclose(reference(repo, "mlp", "1", {"x": x})[0], result.as_numpy("y"))


def test_every_datatype_raw(client: grpcclient.InferenceServerClient) -> None:
    rng = np.random.default_rng(7)
    data = {t: sample(t, (3, 4), rng) for t in ALL_TYPES}
    inputs = []
    for t, array in data.items():
        tensor = grpcclient.InferInput(f"in_{t}", [3, 4], t)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    result = client.infer("identity", inputs)
    for t, array in data.items():
        got = result.as_numpy(f"out_{t}")
        assert got.dtype == array.dtype or t == "BYTES", t
        np.testing.assert_array_equal(got, array, err_msg=t)


TYPED_FIELD = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
    "UINT32": "uint_contents", "UINT64": "uint64_contents", "FP32": "fp32_contents",
    "FP64": "fp64_contents", "BYTES": "bytes_contents",
}  # fmt: skip


def test_every_datatype_typed_contents(gateway: Any) -> None:
    rng = np.random.default_rng(11)
    request = service_pb2.ModelInferRequest(model_name="identity_typed")
    data = {}
    for t in TYPED_TYPES:
        data[t] = sample(t, (2, 4), rng)
        tensor = request.inputs.add(name=f"in_{t}", datatype=t, shape=[2, 4])
        getattr(tensor.contents, TYPED_FIELD[t]).extend(data[t].reshape(-1).tolist())
    with grpc.insecure_channel(gateway.url) as channel:
        response = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
    result = grpcclient.InferResult(response)
    for t, array in data.items():
        np.testing.assert_array_equal(result.as_numpy(f"out_{t}"), array, err_msg=t)


def test_fp16_typed_contents_are_refused(gateway: Any) -> None:
    request = service_pb2.ModelInferRequest(model_name="identity")
    for t in ALL_TYPES:
        tensor = request.inputs.add(name=f"in_{t}", datatype=t, shape=[1, 4])
        field = TYPED_FIELD.get(t, "fp32_contents")
        getattr(tensor.contents, field).extend([b"a"] * 4 if t == "BYTES" else [1] * 4)
    with grpc.insecure_channel(gateway.url) as channel, pytest.raises(grpc.RpcError) as err:
        service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "in_FP16" in err.value.details()
    assert "raw" in err.value.details()


def test_typed_contents_round_trip(gateway: Any, repo: Path) -> None:
    x = np.random.default_rng(3).standard_normal((2, 32)).astype(np.float32)
    request = service_pb2.ModelInferRequest(model_name="mlp", model_version="1")
    request.inputs.add(name="x", datatype="FP32", shape=[2, 32]).contents.fp32_contents.extend(
        x.reshape(-1).tolist()
    )
    with grpc.insecure_channel(gateway.url) as channel:
        response = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
    assert response.model_version == "1"
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [("y", "FP32", [2, 8])]
    y = np.frombuffer(response.raw_output_contents[0], dtype="<f4").reshape(2, 8)
    np.testing.assert_allclose(y, reference(repo, "mlp", "1", {"x": x})[0], rtol=1e-5, atol=1e-6)


def test_requested_outputs_are_filtered(client: grpcclient.InferenceServerClient) -> None:
    rng = np.random.default_rng(1)
    inputs = []
    for t in ALL_TYPES:
        tensor = grpcclient.InferInput(f"in_{t}", [1, 4], t)
        tensor.set_data_from_numpy(sample(t, (1, 4), rng))
        inputs.append(tensor)
    wanted = [grpcclient.InferRequestedOutput("out_INT64"), grpcclient.InferRequestedOutput("out_BYTES")]
    response = client.infer("identity", inputs, outputs=wanted).get_response()
    assert [o.name for o in response.outputs] == ["out_INT64", "out_BYTES"]
    assert len(response.raw_output_contents) == 2


def test_asyncio_client(gateway: Any, repo: Path) -> None:
    async def run() -> list[Any]:
        async with aioclient.InferenceServerClient(gateway.url) as c:
            assert await c.is_server_ready()
            assert (await c.get_model_metadata("mlp")).name == "mlp"
            calls = []
            for i in range(16):
                tensor = aioclient.InferInput("x", [1, 32], "FP32")
                tensor.set_data_from_numpy(np.full((1, 32), i, np.float32))
                calls.append(c.infer("mlp", [tensor], model_version="1", request_id=str(i)))
            return await asyncio.gather(*calls)

    results = asyncio.run(run())
    for i, result in enumerate(results):
        expected = reference(repo, "mlp", "1", {"x": np.full((1, 32), i, np.float32)})[0]
        assert result.get_response().id == str(i)
        np.testing.assert_allclose(result.as_numpy("y"), expected, rtol=1e-5, atol=1e-6)


def test_stream_answers_every_request_and_survives_errors(
    client: grpcclient.InferenceServerClient, repo: Path
) -> None:
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        sent = {}
        for i in range(40):
            if i % 10 == 9:  # every tenth request is malformed: wrong width
                bad = grpcclient.InferInput("x", [1, 31], "FP32")
                bad.set_data_from_numpy(np.zeros((1, 31), np.float32))
                client.async_stream_infer("mlp", [bad], request_id=f"bad{i}", model_version="1")
                continue
            tensor, x = mlp_input(1, seed=i)
            sent[f"ok{i}"] = x
            client.async_stream_infer("mlp", [tensor], request_id=f"ok{i}", model_version="1")
        got, errors = {}, []
        for _ in range(40):
            result, error = answers.get(timeout=20)
            if error is not None:
                errors.append(error)
            else:
                got[result.get_response().id] = result.as_numpy("y")
    finally:
        client.stop_stream()
    assert len(errors) == 4
    assert all("INVALID_ARGUMENT" in str(e) and "'x'" in str(e) for e in errors)
    assert set(got) == set(sent)
    for rid, x in sent.items():
        np.testing.assert_allclose(got[rid], reference(repo, "mlp", "1", {"x": x})[0], rtol=1e-5, atol=1e-6)


def test_stream_many_in_flight_on_one_stream(gateway: Any) -> None:
    """Requests are written without waiting for answers; every answer comes back, tagged."""
    count = 600

    def requests() -> Any:
        for i in range(count):
            request = service_pb2.ModelInferRequest(model_name="pinned", model_version="2", id=str(i))
            request.inputs.add(name="x", datatype="FP32", shape=[1, 4])
            request.raw_input_contents.append(np.full((1, 4), i, np.float32).tobytes())
            yield request

    with grpc.insecure_channel(gateway.url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        ids = [r.infer_response.id for r in stub.ModelStreamInfer(requests()) if not r.error_message]
    assert sorted(ids, key=int) == [str(i) for i in range(count)]
