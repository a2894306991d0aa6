"""Malformed requests against the live gateway (RELIABILITY.md cases 1-6).

Requests are built by hand from `tritonclient.grpc.service_pb2` and sent through the raw stub, so
the tests can send what tritonclient's helpers never would: mismatched byte counts, duplicate
inputs, bogus datatypes, huge shapes. Every case checks the exact status code, that the details
name what was wrong, and that a good request on the same channel still succeeds afterwards.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from harness.gateway import GatewayProcess

from .conftest import ALL_TYPES

Stub = pb_grpc.GRPCInferenceServiceStub
Code = grpc.StatusCode

CALL_TIMEOUT_S = 10.0

# Things a status message must never carry: a Python exception leaking, or a file system error
# (a model name reaching the disk).
LEAKS = ("Traceback", "Errno", "No such file", "Exception", "internal error")

NUMPY = {
    "BOOL": np.bool_,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def channel(gateway: GatewayProcess) -> Iterator[grpc.Channel]:
    ch = grpc.insecure_channel(gateway.url)
    yield ch
    ch.close()


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> Stub:
    return pb_grpc.GRPCInferenceServiceStub(channel)


@pytest.fixture
def scratch_gateway(repo: Path) -> Iterator[GatewayProcess]:
    """A gateway of its own, for requests that may change its state (model loads)."""
    proc = GatewayProcess(repo).wait_ready()
    yield proc
    code = proc.terminate()
    assert code == 0, proc.log()
    assert "Traceback" not in proc.log(), proc.log()


# -- request builders ----------------------------------------------------------------------------


def tensor(
    name: str, datatype: str, shape: list[int], **kwargs: object
) -> pb.ModelInferRequest.InferInputTensor:
    return pb.ModelInferRequest.InferInputTensor(name=name, datatype=datatype, shape=shape, **kwargs)


def mlp_request(rows: int = 1, version: str = "") -> pb.ModelInferRequest:
    """A good request: mlp, x FP32 [rows,32], raw."""
    x = np.linspace(-1, 1, rows * 32, dtype=np.float32).reshape(rows, 32)
    return pb.ModelInferRequest(
        model_name="mlp",
        model_version=version,
        inputs=[tensor("x", "FP32", [rows, 32])],
        raw_input_contents=[x.tobytes()],
    )


def raw_request(model: str, name: str, datatype: str, shape: list[int], raw: bytes) -> pb.ModelInferRequest:
    return pb.ModelInferRequest(
        model_name=model, inputs=[tensor(name, datatype, shape)], raw_input_contents=[raw]
    )


def typed_request(
    model: str, name: str, datatype: str, shape: list[int], **contents: list[object]
) -> pb.ModelInferRequest:
    return pb.ModelInferRequest(
        model_name=model,
        inputs=[tensor(name, datatype, shape, contents=pb.InferTensorContents(**contents))],
    )


def bytes_element(data: bytes) -> bytes:
    return struct.pack("<I", len(data)) + data


GOOD_BYTES = b"".join(bytes_element(s) for s in (b"a", b"bc", b"", b"def"))


def identity_request(rows: int = 1, override: dict[str, bytes] | None = None) -> pb.ModelInferRequest:
    """A good raw request for `identity` (every input in_<T> [rows,4]); `override` replaces
    chosen inputs' raw bytes."""
    request = pb.ModelInferRequest(model_name="identity")
    for t in ALL_TYPES:
        request.inputs.append(tensor(f"in_{t}", t, [rows, 4]))
        if t == "BYTES":
            raw = GOOD_BYTES * rows
        else:
            raw = np.arange(rows * 4).astype(NUMPY[t]).tobytes()
        request.raw_input_contents.append((override or {}).get(f"in_{t}", raw))
    return request


# -- assertions ----------------------------------------------------------------------------------


def assert_serves(stub: Stub) -> None:
    """The gateway still answers a good request on this channel."""
    response = stub.ModelInfer(mlp_request(2), timeout=CALL_TIMEOUT_S)
    assert response.model_name == "mlp"
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [("y", "FP32", [2, 8])]
    assert len(response.raw_output_contents[0]) == 2 * 8 * 4
    assert np.isfinite(np.frombuffer(response.raw_output_contents[0], np.float32)).all()


def assert_rejected(
    stub: Stub, request: object, code: grpc.StatusCode, *fragments: str, method: str = "ModelInfer"
) -> str:
    """`request` fails with exactly `code`, its details contain every fragment and leak nothing;
    then a good request on the same channel succeeds. Returns the details."""
    with pytest.raises(grpc.RpcError) as err:
        getattr(stub, method)(request, timeout=CALL_TIMEOUT_S)
    details = err.value.details() or ""
    assert err.value.code() == code, f"{err.value.code()}: {details}"
    for fragment in fragments:
        assert fragment in details, f"{fragment!r} not in {details!r}"
    for leak in LEAKS:
        assert leak not in details, details
    assert_serves(stub)
    return details


# -- the good requests the bad ones are mutated from -----------------------------------------------


def test_good_requests_pass(stub: Stub) -> None:
    assert_serves(stub)
    response = stub.ModelInfer(identity_request(2), timeout=CALL_TIMEOUT_S)
    assert {o.name for o in response.outputs} == {f"out_{t}" for t in ALL_TYPES}
    out = dict(zip((o.name for o in response.outputs), response.raw_output_contents, strict=True))
    assert out["out_BYTES"] == GOOD_BYTES * 2
    assert out["out_INT8"] == np.arange(8, dtype=np.int8).tobytes()


# -- tensors: byte sizes, datatypes, names, shapes -------------------------------------------------

X = "'x'"
BAD_PREFIX = struct.pack("<I", 100) + b"xy"  # declares 100 bytes, 2 follow
F32x32 = np.zeros(32, np.float32).tobytes()

INVALID: list[object] = [
    pytest.param(
        raw_request("mlp", "x", "FP32", [1, 32], b"\0" * 40),
        [X, "128", "40"],
        id="raw-byte-size-short",
    ),
    pytest.param(
        raw_request("mlp", "x", "FP32", [2, 32], b"\0" * 257),
        [X, "256", "257"],
        id="raw-byte-size-long",
    ),
    pytest.param(
        raw_request("mlp", "x", "FP64", [1, 32], b"\0" * 256),
        [X, "FP32", "FP64"],
        id="wrong-datatype",
    ),
    pytest.param(
        raw_request("mlp", "x", "FLOAT32", [1, 32], F32x32),
        [X, "FP32", "FLOAT32"],
        id="bogus-datatype",
    ),
    pytest.param(
        raw_request("mlp", "x", "", [1, 32], F32x32),
        [X, "FP32"],
        id="empty-datatype",
    ),
    pytest.param(
        raw_request("mlp", "z", "FP32", [1, 32], F32x32),
        ["'z'", "x"],
        id="unknown-input",
    ),
    pytest.param(
        pb.ModelInferRequest(model_name="mlp"),
        ["missing", X],
        id="missing-input",
    ),
    pytest.param(
        pb.ModelInferRequest(
            model_name="identity",
            inputs=[i for i in identity_request().inputs if i.name != "in_INT16"],
            raw_input_contents=[
                r
                for i, r in zip(identity_request().inputs, identity_request().raw_input_contents, strict=True)
                if i.name != "in_INT16"
            ],
        ),
        ["missing", "'in_INT16'"],
        id="missing-one-of-many",
    ),
    pytest.param(
        pb.ModelInferRequest(
            model_name="mlp",
            inputs=[tensor("x", "FP32", [1, 32]), tensor("x", "FP32", [1, 32])],
            raw_input_contents=[F32x32, F32x32],
        ),
        [X, "more than once"],
        id="duplicate-input",
    ),
    pytest.param(
        pb.ModelInferRequest(
            model_name="mlp",
            inputs=[tensor("x", "FP32", [1, 32], contents=pb.InferTensorContents(fp32_contents=[0.0] * 32))],
            raw_input_contents=[F32x32],
        ),
        [X, "contents", "raw_input_contents"],
        id="typed-and-raw",
    ),
    pytest.param(
        pb.ModelInferRequest(
            model_name="mlp",
            inputs=[tensor("x", "FP32", [1, 32])],
            raw_input_contents=[F32x32, F32x32],
        ),
        ["raw_input_contents", "2", "1 input"],
        id="raw-count-more-than-inputs",
    ),
    pytest.param(
        pb.ModelInferRequest(
            model_name="identity",
            inputs=identity_request().inputs,
            raw_input_contents=identity_request().raw_input_contents[:-1],
        ),
        ["raw_input_contents", str(len(ALL_TYPES) - 1), str(len(ALL_TYPES))],
        id="raw-count-fewer-than-inputs",
    ),
    pytest.param(
        pb.ModelInferRequest(model_name="mlp", raw_input_contents=[F32x32]),
        ["raw_input_contents", "1", "0 inputs"],
        id="raw-without-inputs",
    ),
    pytest.param(
        raw_request("mlp", "x", "FP32", [32], F32x32),
        [X, "[-1,32]", "[32]"],
        id="rank-too-low",
    ),
    pytest.param(
        raw_request("mlp", "x", "FP32", [1, 1, 32], F32x32),
        [X, "[-1,32]", "[1,1,32]"],
        id="rank-too-high",
    ),
    pytest.param(
        raw_request("mlp", "x", "FP32", [], b"\0" * 4),
        [X, "[-1,32]", "[]"],
        id="rank-zero",
    ),
    pytest.param(
        raw_request("mlp", "x", "FP32", [1, 31], b"\0" * 124),
        [X, "[-1,32]", "[1,31]"],
        id="fixed-dim-wrong",
    ),
    pytest.param(
        raw_request("mlp", "x", "FP32", [9, 32], b"\0" * 9 * 128),
        [X, "batch size 9", "8"],
        id="batch-over-max",
    ),
    pytest.param(
        raw_request("pinned", "x", "FP32", [5, 4], b"\0" * 5 * 16),
        [X, "batch size 5", "4"],
        id="batch-over-max-pinned",
    ),
    pytest.param(
        raw_request("mlp", "x", "FP32", [0, 32], b""),
        [X, "batch size 0"],
        id="batch-zero",
    ),
    pytest.param(
        raw_request("mlp", "x", "FP32", [-1, 32], F32x32),
        [X, "-1"],
        id="negative-batch-dim",
    ),
    pytest.param(
        raw_request("mlp", "x", "FP32", [1, -32], F32x32),
        [X, "-32"],
        id="negative-feature-dim",
    ),
    pytest.param(
        raw_request("identity", "in_FP32", "FP32", [-(2**63), 4], b"\0" * 16),
        ["'in_FP32'", str(-(2**63))],
        id="most-negative-dim",
    ),
    pytest.param(
        identity_request(
            override={
                "in_BYTES": bytes_element(b"a") + bytes_element(b"") + bytes_element(b"bc") + BAD_PREFIX
            }
        ),
        ["'in_BYTES'", "element 3", "100", "2"],
        id="bytes-length-prefix-past-end",
    ),
    pytest.param(
        identity_request(override={"in_BYTES": b"\xff\xff\xff\xff" + b"abc" * 5}),
        ["'in_BYTES'", str(0xFFFFFFFF)],
        id="bytes-length-prefix-huge",
    ),
    pytest.param(
        identity_request(override={"in_BYTES": b"\x01\x00"}),
        ["'in_BYTES'", "16", "2"],
        id="bytes-payload-shorter-than-prefixes",
    ),
    pytest.param(
        identity_request(override={"in_BYTES": GOOD_BYTES + b"junk"}),
        ["'in_BYTES'", "4 bytes left over"],
        id="bytes-trailing-garbage",
    ),
    pytest.param(
        identity_request(
            override={"in_BYTES": b"".join(bytes_element(b) for b in (b"\xff\xfe", b"", b"", b""))}
        ),
        ["'in_BYTES'", "UTF-8"],
        id="bytes-not-utf8",
    ),
    pytest.param(
        typed_request("mlp", "x", "FP32", [1, 32], fp32_contents=[0.5] * 31),
        [X, "32", "31", "fp32_contents"],
        id="typed-count-short",
    ),
    pytest.param(
        typed_request("mlp", "x", "FP32", [1, 32], fp64_contents=[0.5] * 32),
        [X, "fp32_contents", "fp64_contents"],
        id="typed-wrong-field",
    ),
    pytest.param(
        typed_request("mlp", "x", "FP32", [1, 32]),
        [X, "32", "got 0"],
        id="typed-no-values",
    ),
    pytest.param(
        typed_request("identity", "in_INT8", "INT8", [1, 4], int_contents=[1, 200, 3, 4]),
        ["'in_INT8'", "INT8", "200"],
        id="typed-int8-out-of-range",
    ),
    pytest.param(
        typed_request("identity", "in_INT8", "INT8", [1, 4], int_contents=[1, -129, 3, 4]),
        ["'in_INT8'", "INT8", "-129"],
        id="typed-int8-below-range",
    ),
    pytest.param(
        typed_request("identity", "in_UINT16", "UINT16", [1, 4], uint_contents=[1, 70000, 3, 4]),
        ["'in_UINT16'", "UINT16", "70000"],
        id="typed-uint16-out-of-range",
    ),
    pytest.param(
        typed_request("identity", "in_INT16", "INT16", [1, 4], int_contents=[1, 2, 3, -40000]),
        ["'in_INT16'", "INT16", "-40000"],
        id="typed-int16-out-of-range",
    ),
    pytest.param(
        typed_request("identity", "in_FP16", "FP16", [1, 4], fp32_contents=[1.0, 2.0, 3.0, 4.0]),
        ["'in_FP16'", "FP16", "raw_input_contents"],
        id="typed-fp16",
    ),
    pytest.param(
        pb.ModelInferRequest(
            model_name="mlp",
            inputs=[tensor("x", "FP32", [1, 32])],
            raw_input_contents=[F32x32],
            outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name="logits")],
        ),
        ["'logits'", "y"],
        id="unknown-requested-output",
    ),
    pytest.param(
        pb.ModelInferRequest(
            model_name="mlp",
            inputs=[tensor("x", "FP32", [1, 32])],
            raw_input_contents=[F32x32],
            outputs=[
                pb.ModelInferRequest.InferRequestedOutputTensor(name="y"),
                pb.ModelInferRequest.InferRequestedOutputTensor(name=""),
            ],
        ),
        ["''", "y"],
        id="empty-requested-output",
    ),
]


@pytest.mark.parametrize(("request_", "fragments"), INVALID)
def test_malformed_tensor_is_invalid_argument(
    stub: Stub, request_: pb.ModelInferRequest, fragments: list[str]
) -> None:
    assert_rejected(stub, request_, Code.INVALID_ARGUMENT, *fragments)


def test_bad_tensor_never_reaches_the_backend(stub: Stub) -> None:
    """A rejected request counts as a failure and executes nothing (RELIABILITY case 1)."""

    def stats() -> pb.ModelStatistics:
        req = pb.ModelStatisticsRequest(name="mlp", version="1")
        return stub.ModelStatistics(req, timeout=CALL_TIMEOUT_S).model_stats[0]

    before = stats()
    bad = raw_request("mlp", "x", "FP32", [1, 32], b"\0" * 40)
    bad.model_version = "1"
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(bad, timeout=CALL_TIMEOUT_S)
    assert err.value.code() == Code.INVALID_ARGUMENT
    after = stats()
    assert after.execution_count == before.execution_count
    assert after.inference_count == before.inference_count
    assert after.inference_stats.success.count == before.inference_stats.success.count
    assert after.inference_stats.fail.count == before.inference_stats.fail.count + 1


def test_bad_requests_do_not_disturb_concurrent_good_ones(stub: Stub) -> None:
    """Good and bad requests in flight together: each gets its own answer."""
    good = [stub.ModelInfer.future(mlp_request(1 + i % 8), timeout=CALL_TIMEOUT_S) for i in range(24)]
    bad = [
        stub.ModelInfer.future(
            raw_request("mlp", "x", "FP32", [1 + i % 8, 32], b"\0" * 40), timeout=CALL_TIMEOUT_S
        )
        for i in range(24)
    ]
    for i, f in enumerate(good):
        assert list(f.result().outputs[0].shape) == [1 + i % 8, 8]
    for f in bad:
        assert f.code() == Code.INVALID_ARGUMENT, f.details()
        assert "'x'" in f.details() and "40" in f.details()


# -- huge declared shapes --------------------------------------------------------------------------

HUGE: list[object] = [
    pytest.param(raw_request("mlp", "x", "FP32", [2**31, 2**31], b"\0" * 8), id="mlp-raw"),
    pytest.param(raw_request("identity", "in_FP32", "FP32", [2**31, 2**31], b"\0" * 8), id="identity-raw"),
    pytest.param(
        raw_request("identity", "in_BYTES", "BYTES", [2**31, 2**31], b"\0" * 8), id="identity-bytes"
    ),
    pytest.param(raw_request("identity", "in_FP32", "FP32", [2**62, 4], b"\0" * 8), id="batch-2^62"),
    pytest.param(
        raw_request("identity", "in_FP32", "FP32", [2**63 - 1, 2**63 - 1, 2**63 - 1], b"\0" * 8),
        id="int64-max",
    ),
    pytest.param(
        typed_request("mlp", "x", "FP32", [2**31, 2**31], fp32_contents=[0.0, 0.0]),
        id="mlp-typed",
    ),
    pytest.param(
        typed_request("identity", "in_BYTES", "BYTES", [2**31, 2**31], bytes_contents=[b"a", b"b"]),
        id="identity-typed-bytes",
    ),
]


@pytest.mark.parametrize("request_", HUGE)
def test_huge_declared_shape_is_rejected_fast(stub: Stub, request_: pb.ModelInferRequest) -> None:
    start = time.monotonic()
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(request_, timeout=CALL_TIMEOUT_S)
    elapsed = time.monotonic() - start
    assert err.value.code() == Code.INVALID_ARGUMENT, err.value.details()
    assert elapsed < 2.0, f"took {elapsed:.1f}s: something was allocated or iterated"
    assert_serves(stub)


# -- names: models, versions, path-like names ------------------------------------------------------


def test_unknown_model_is_not_found(stub: Stub) -> None:
    request = mlp_request()
    request.model_name = "no_such_model"
    assert_rejected(stub, request, Code.NOT_FOUND, "'no_such_model'")


@pytest.mark.parametrize(
    ("model", "version"),
    [("mlp", "3"), ("mlp", "0"), ("mlp", "01"), ("mlp", "-1"), ("mlp", "latest"), ("pinned", "3")],
)
def test_unknown_version_is_not_found(stub: Stub, model: str, version: str) -> None:
    if model == "mlp":
        request = mlp_request(version=version)
    else:
        request = raw_request("pinned", "x", "FP32", [1, 4], b"\0" * 16)
        request.model_version = version
    assert_rejected(stub, request, Code.NOT_FOUND, f"'{model}'", f"'{version}'")


def test_known_versions_are_served(stub: Stub) -> None:
    for version in ("1", "2"):
        assert stub.ModelInfer(mlp_request(version=version), timeout=CALL_TIMEOUT_S).model_version == version


PATH_NAMES = [
    "../etc",
    "../../../../etc/passwd",
    "/abs",
    "/etc",
    " mlp",
    "mlp ",
    "mlp\n",
    "",
    ".",
    "..",
    "mlp/1",
]


@pytest.mark.parametrize("name", PATH_NAMES, ids=repr)
def test_path_like_model_name_is_not_found(stub: Stub, name: str) -> None:
    request = mlp_request()
    request.model_name = name
    fragments = [f"'{name}'"] if name.strip() else []
    assert_rejected(stub, request, Code.NOT_FOUND, *fragments)
    assert_rejected(stub, pb.ModelMetadataRequest(name=name), Code.NOT_FOUND, method="ModelMetadata")
    assert_rejected(stub, pb.ModelConfigRequest(name=name), Code.NOT_FOUND, method="ModelConfig")
    assert not stub.ModelReady(pb.ModelReadyRequest(name=name), timeout=CALL_TIMEOUT_S).ready
    if name:  # an empty name asks for every model's statistics
        assert_rejected(stub, pb.ModelStatisticsRequest(name=name), Code.NOT_FOUND, method="ModelStatistics")


@pytest.mark.parametrize(
    "name", ["../etc", "/etc", "../../../../etc/passwd", " mlp", "", "..", "no_such_model"]
)
def test_repository_load_of_bad_name_is_not_found(scratch_gateway: GatewayProcess, name: str) -> None:
    with grpc.insecure_channel(scratch_gateway.url) as ch:
        stub = pb_grpc.GRPCInferenceServiceStub(ch)
        unload = pb.RepositoryModelUnloadRequest(model_name=name)
        assert_rejected(stub, unload, Code.NOT_FOUND, f"'{name}'", method="RepositoryModelUnload")
        load = pb.RepositoryModelLoadRequest(model_name=name)
        assert_rejected(stub, load, Code.NOT_FOUND, f"'{name}'", method="RepositoryModelLoad")


@pytest.mark.parametrize("name", ["../etc", "/etc", "no_such_model"])
def test_repository_load_of_bad_name_leaves_no_trace(scratch_gateway: GatewayProcess, name: str) -> None:
    with grpc.insecure_channel(scratch_gateway.url) as ch:
        stub = pb_grpc.GRPCInferenceServiceStub(ch)
        with pytest.raises(grpc.RpcError) as err:
            stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name=name), timeout=CALL_TIMEOUT_S)
        assert err.value.code() == Code.NOT_FOUND
        request = mlp_request()
        request.model_name = name
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelInfer(request, timeout=CALL_TIMEOUT_S)
        assert err.value.code() == Code.NOT_FOUND, f"{err.value.code()}: {err.value.details()}"
        index = stub.RepositoryIndex(pb.RepositoryIndexRequest(), timeout=CALL_TIMEOUT_S)
        assert name not in {m.name for m in index.models}
        assert stub.ServerReady(pb.ServerReadyRequest(), timeout=CALL_TIMEOUT_S).ready


# -- random requests (hypothesis) ------------------------------------------------------------------

ALLOWED = {Code.OK, Code.INVALID_ARGUMENT, Code.NOT_FOUND, Code.UNAVAILABLE}
"""What a bad request may get. UNAVAILABLE only for a pin to a version the model declares but
does not serve (`allowed` checks the message); never RESOURCE_EXHAUSTED: these calls come one
at a time and are small, so no cap can be reached."""


def allowed(code: grpc.StatusCode, details: str) -> bool:
    return code in ALLOWED and (code != Code.UNAVAILABLE or "is not ready" in details)


# What the fixture's models take: name -> (max_batch_size, inputs as (name, datatype, width), outputs).
MODELS = {
    "mlp": (8, [("x", "FP32", 32)], ["y"]),
    "pinned": (4, [("x", "FP32", 4)], ["y"]),
    "identity": (64, [(f"in_{t}", t, 4) for t in ALL_TYPES], [f"out_{t}" for t in ALL_TYPES]),
}
ODD_MODELS = ["", "nope", "../etc", "/abs", " mlp", "mlp/1", "identity\x00"]
DATATYPES = [*ALL_TYPES, "BF16", "FLOAT", "fp32", "TYPE_FP32", "", "INT128"]
DIMS = [-(2**63), -(2**31), -1, 0, 1, 2, 3, 4, 8, 9, 31, 32, 64, 65, 2**31, 2**32, 2**62, 2**63 - 1]
ITEMSIZE = {t: np.dtype(NUMPY[t]).itemsize for t in NUMPY}
TYPED_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
CONTENTS = {
    "bool_contents": st.booleans(),
    "int_contents": st.integers(-(2**31), 2**31 - 1),
    "int64_contents": st.integers(-(2**63), 2**63 - 1),
    "uint_contents": st.integers(0, 2**32 - 1),
    "uint64_contents": st.integers(0, 2**64 - 1),
    "fp32_contents": st.floats(width=32),
    "fp64_contents": st.floats(),
    "bytes_contents": st.binary(max_size=6) | st.text(max_size=4).map(str.encode),
}
BYTES_ELEMENTS = st.binary(max_size=6) | st.text(max_size=4).map(str.encode)


def _count(shape: list[int]) -> int | None:
    """Element count of a shape when it is small and valid, else None."""
    count = 1
    for d in shape:
        if d < 0:
            return None
        count *= d
    return count if count <= 512 else None


@st.composite
def infer_requests(draw: st.DrawFn) -> pb.ModelInferRequest:
    """Mostly near-valid requests for the fixture's models, mutated in one or more ways, so that
    validation is exercised at every depth and some requests reach the backend; plus odd names."""
    odd = draw(st.integers(0, 9))  # 0: an odd model name, 1: an odd version, else both known
    model = (
        draw(st.sampled_from(ODD_MODELS) | st.text(max_size=10))
        if odd == 0
        else draw(st.sampled_from(sorted(MODELS)))
    )
    max_batch, specs, outputs = MODELS.get(model, (8, [("x", "FP32", 32)], ["y"]))
    request = pb.ModelInferRequest(
        model_name=model,
        model_version=draw(
            st.sampled_from(["2", "3", "0", "-1", "01", " 1"]) | st.text(max_size=3)
            if odd == 1
            else st.sampled_from(["", "1"])
        ),
        id=draw(st.text(max_size=8)),
    )
    # Which inputs: all of them in a random order, then maybe drop, repeat or invent some.
    chosen = draw(st.permutations(specs))
    if draw(st.integers(0, 3)) == 0:
        chosen = draw(st.lists(st.sampled_from(specs), max_size=len(specs) + 1))
    if draw(st.integers(0, 5)) == 0:
        chosen = [*chosen, (draw(st.text(max_size=6)), draw(st.sampled_from(DATATYPES)), 4)]
    rows = draw(st.integers(1, max_batch) | st.sampled_from([0, max_batch + 1]))
    raw_mode = draw(st.sampled_from(["raw", "raw", "typed", "both"]))
    raws: list[bytes] = []
    for name, datatype, width in chosen:
        if draw(st.integers(0, 9)) == 0:
            datatype = draw(st.sampled_from(DATATYPES))
        shape = [rows, width]
        if draw(st.integers(0, 5)) == 0:
            shape = draw(st.lists(st.sampled_from(DIMS) | st.integers(-(2**63), 2**63 - 1), max_size=4))
        t = request.inputs.add(name=name, datatype=datatype, shape=shape)
        count = _count(shape)
        fits = count is not None and draw(st.integers(0, 7)) > 0  # payload matches the shape
        n = count if fits and count is not None else draw(st.integers(0, 12))
        if raw_mode in ("typed", "both"):
            field = TYPED_FIELD.get(datatype, "fp32_contents")
            if draw(st.integers(0, 7)) == 0:
                field = draw(st.sampled_from(sorted(CONTENTS)))
            getattr(t.contents, field).extend(draw(st.lists(CONTENTS[field], min_size=n, max_size=n)))
        if raw_mode in ("raw", "both"):
            if fits and datatype == "BYTES":
                raws.append(
                    b"".join(bytes_element(b) for b in draw(st.lists(BYTES_ELEMENTS, min_size=n, max_size=n)))
                )
            elif fits and datatype in ITEMSIZE:
                raws.append(draw(st.binary(min_size=n * ITEMSIZE[datatype], max_size=n * ITEMSIZE[datatype])))
            else:
                raws.append(draw(st.binary(max_size=64)))
    if raws and draw(st.integers(0, 7)) == 0:
        raws = raws[:-1] if draw(st.booleans()) else [*raws, b"\0" * 16]
    request.raw_input_contents.extend(raws)
    names = st.sampled_from(outputs) | st.sampled_from(["x", "", "y"]) | st.text(max_size=5)
    for name in draw(st.lists(names, max_size=3)):
        request.outputs.add(name=name)
    return request


def test_random_requests_get_documented_statuses(stub: Stub) -> None:
    seen: dict[grpc.StatusCode, int] = {}

    @settings(
        max_examples=150,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(request=infer_requests())
    def check(request: pb.ModelInferRequest) -> None:
        try:
            stub.ModelInfer(request, timeout=CALL_TIMEOUT_S)
            code, details = Code.OK, ""
        except grpc.RpcError as err:
            code, details = err.code(), err.details() or ""
        seen[code] = seen.get(code, 0) + 1
        assert allowed(code, details), f"{code}: {details}\n{request}"
        if code != Code.OK:
            assert details, f"{code} without details\n{request}"
        for leak in LEAKS:
            assert leak not in details, f"{code}: {details}\n{request}"

    check()
    assert stub.ServerReady(pb.ServerReadyRequest(), timeout=CALL_TIMEOUT_S).ready
    assert_serves(stub)
    # The generator reaches every outcome, the backend included.
    assert {Code.OK, Code.INVALID_ARGUMENT, Code.NOT_FOUND} <= set(seen), seen


SERVICE = "inference.GRPCInferenceService"
CORRUPT = b"\xff\xff\xff\xff\x0f garbage"  # a field key whose varint never ends


def raw_calls(channel: grpc.Channel) -> tuple[Any, Any]:
    """ModelInfer and ModelStreamInfer sending bytes as they are (the body need not parse)."""
    unary = channel.unary_unary(f"/{SERVICE}/ModelInfer", request_serializer=None, response_deserializer=None)
    stream = channel.stream_stream(
        f"/{SERVICE}/ModelStreamInfer",
        request_serializer=None,
        response_deserializer=pb.ModelStreamInferResponse.FromString,
    )
    return unary, stream


def test_a_corrupt_body_is_invalid_argument_on_unary_and_on_streams(
    channel: grpc.Channel, gateway: GatewayProcess
) -> None:
    unary, stream = raw_calls(channel)
    with pytest.raises(grpc.RpcError) as err:
        unary(CORRUPT, timeout=CALL_TIMEOUT_S)
    assert err.value.code() == Code.INVALID_ARGUMENT
    assert err.value.details() == "request body is not a valid ModelInferRequest"
    good = pb.ModelInferRequest(model_name="mlp", model_version="1", id="good")
    good.inputs.add(name="x", datatype="FP32", shape=[1, 32])
    good.raw_input_contents.append(bytes(32 * 4))
    answers = list(stream(iter([CORRUPT, good.SerializeToString()]), timeout=CALL_TIMEOUT_S))
    errors = [a.error_message for a in answers]
    assert "[INVALID_ARGUMENT] request body is not a valid ModelInferRequest" in errors
    assert [a.infer_response.id for a in answers if not a.error_message] == ["good"]  # the stream went on
    assert "DecodeError" not in gateway.log() and "Traceback" not in gateway.log()


def test_random_bytes_as_the_body_get_documented_statuses(channel: grpc.Channel) -> None:
    unary, stream = raw_calls(channel)

    @settings(max_examples=150, deadline=None, derandomize=True, database=None)
    @given(body=st.binary(max_size=256))
    def check(body: bytes) -> None:
        try:
            unary(body, timeout=CALL_TIMEOUT_S)
            code, details = Code.OK, ""
        except grpc.RpcError as err:
            code, details = err.code(), err.details() or ""
        assert allowed(code, details), f"{code}: {details}: {body!r}"
        for leak in LEAKS:
            assert leak not in details, details
        (answer,) = list(stream(iter([body]), timeout=CALL_TIMEOUT_S))
        if answer.error_message:
            status, _, message = answer.error_message[1:].partition("] ")
            assert allowed(getattr(Code, status), message), answer.error_message
            for leak in LEAKS:
                assert leak not in answer.error_message, answer.error_message

    check()
    assert_serves(pb_grpc.GRPCInferenceServiceStub(channel))


NAME_RPCS = [
    ("ModelMetadata", pb.ModelMetadataRequest),
    ("ModelConfig", pb.ModelConfigRequest),
    ("ModelStatistics", pb.ModelStatisticsRequest),
    ("ModelReady", pb.ModelReadyRequest),
]


def test_random_names_on_metadata_rpcs_get_documented_statuses(stub: Stub) -> None:
    @settings(max_examples=150, deadline=None, derandomize=True, database=None)
    @given(
        rpc=st.sampled_from(NAME_RPCS),
        name=st.sampled_from([*MODELS, *ODD_MODELS]) | st.text(max_size=12),
        version=st.sampled_from(["", "1", "2", "3", "01", "-1"]) | st.text(max_size=4),
    )
    def check(rpc: tuple[str, type], name: str, version: str) -> None:
        method, message = rpc
        try:
            getattr(stub, method)(message(name=name, version=version), timeout=CALL_TIMEOUT_S)
            code, details = Code.OK, ""
        except grpc.RpcError as err:
            code, details = err.code(), err.details() or ""
        assert allowed(code, details), f"{method}({name!r}, {version!r}): {code}: {details}"
        for leak in LEAKS:
            assert leak not in details, details

    check()
    assert stub.ServerReady(pb.ServerReadyRequest(), timeout=CALL_TIMEOUT_S).ready
    assert_serves(stub)


# -- message size ------------------------------------------------------------------------------------


def test_message_over_receive_limit_is_resource_exhausted(repo: Path, tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text("max_message_bytes: 1048576\n")
    proc = GatewayProcess(repo, "--config", str(config)).wait_ready()
    try:
        big = raw_request("mlp", "x", "FP32", [1, 32], b"\0" * (2 << 20))
        with grpc.insecure_channel(proc.url) as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)
            assert_rejected(stub, big, Code.RESOURCE_EXHAUSTED)
            assert_serves(stub)
        # A gzip message that is tiny on the wire but inflates past the limit.
        with grpc.insecure_channel(proc.url, compression=grpc.Compression.Gzip) as ch:
            stub = pb_grpc.GRPCInferenceServiceStub(ch)
            assert big.ByteSize() > 2 << 20
            assert_rejected(stub, big, Code.RESOURCE_EXHAUSTED)
            assert_serves(stub)
    finally:
        code = proc.terminate()
    assert code == 0, proc.log()
    assert "Traceback" not in proc.log(), proc.log()
