"""gateway.tensors: KServe v2 tensors <-> NumPy and request validation (RELIABILITY cases 1-3, 6)."""

from __future__ import annotations

import struct
import tracemalloc
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gateway._proto import inference_pb2 as pb
from gateway.errors import Internal, InvalidArgument
from gateway.tensors import (
    DATATYPES,
    Signature,
    TensorSpec,
    datatype_of,
    decode_bytes,
    decode_inputs,
    encode_bytes,
    encode_outputs,
    requested_outputs,
)

# -- helpers ---------------------------------------------------------------------------------


def add_raw(
    req: pb.ModelInferRequest, name: str, datatype: str, shape: Sequence[int], payload: bytes
) -> None:
    req.inputs.add(name=name, datatype=datatype, shape=shape)
    req.raw_input_contents.append(payload)


def raw_request(name: str, datatype: str, shape: Sequence[int], payload: bytes) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name="m")
    add_raw(req, name, datatype, shape, payload)
    return req


def typed_request(name: str, datatype: str, shape: Sequence[int], **contents: Any) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name="m")
    req.inputs.add(name=name, datatype=datatype, shape=shape, contents=pb.InferTensorContents(**contents))
    return req


def one_input(datatype: str, shape: tuple[int, ...] = (-1, 4), max_batch_size: int = 8) -> Signature:
    return Signature((TensorSpec("x", datatype, shape),), (TensorSpec("y", datatype, shape),), max_batch_size)


FP32_X8 = Signature((TensorSpec("x", "FP32", (-1, 8)),), (TensorSpec("y", "FP32", (-1, 8)),), 4)
ANY_2D = Signature((TensorSpec("x", "FP32", (-1, -1)),), (), 0)
BYTES_2D = Signature((TensorSpec("s", "BYTES", (-1, -1)),), (), 0)
TWO_INPUTS = Signature(
    (TensorSpec("a", "FP32", (-1, 4)), TensorSpec("b", "INT64", (-1, 2))),
    (TensorSpec("y", "FP32", (-1, 1)), TensorSpec("z", "INT64", (-1, 1))),
    8,
)


def fp32(n: int) -> bytes:
    return np.arange(n, dtype="<f4").tobytes()


@contextmanager
def rejected(*fragments: str) -> Iterator[None]:
    """Expect InvalidArgument with status INVALID_ARGUMENT whose message holds every fragment."""
    with pytest.raises(InvalidArgument) as info:
        yield
    assert info.value.code == "INVALID_ARGUMENT"
    for fragment in fragments:
        assert fragment in info.value.message, info.value.message


def peak_bytes_while(fn: Any) -> int:
    """Peak traced allocation (NumPy reports its buffers to tracemalloc) while fn runs."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# One [1, 4] sample per datatype, extremes included.
SAMPLES: dict[str, np.ndarray] = {
    "BOOL": np.array([[True, False, False, True]]),
    "INT8": np.array([[-128, -1, 0, 127]], dtype="<i1"),
    "INT16": np.array([[-32768, -1, 0, 32767]], dtype="<i2"),
    "INT32": np.array([[-(2**31), -1, 0, 2**31 - 1]], dtype="<i4"),
    "INT64": np.array([[-(2**63), -1, 0, 2**63 - 1]], dtype="<i8"),
    "UINT8": np.array([[0, 1, 128, 255]], dtype="<u1"),
    "UINT16": np.array([[0, 1, 2**15, 2**16 - 1]], dtype="<u2"),
    "UINT32": np.array([[0, 1, 2**31, 2**32 - 1]], dtype="<u4"),
    "UINT64": np.array([[0, 1, 2**63, 2**64 - 1]], dtype="<u8"),
    "FP16": np.array([[-0.0, 1.5, np.inf, np.nan]], dtype="<f2"),
    "FP32": np.array([[-0.0, 1.5, -np.inf, 3.25e38]], dtype="<f4"),
    "FP64": np.array([[-0.0, 1.5, np.nan, 1e308]], dtype="<f8"),
    "BYTES": np.array([[b"", b"a", b"\x00\xff\x00", "é".encode()]], dtype=object),
    "BF16": np.array([[0x0000, 0x3F80, 0xBF80, 0x7F80]], dtype="<u2"),  # 0, 1, -1, inf as bits
}


def raw_payload(datatype: str, array: np.ndarray) -> bytes:
    return encode_bytes(array) if datatype == "BYTES" else array.tobytes()


def assert_same_tensor(got: np.ndarray, want: np.ndarray, datatype: str) -> None:
    assert got.shape == want.shape
    if datatype == "BYTES":
        assert got.dtype == object
        assert got.tolist() == want.tolist()
    else:
        assert got.dtype == DATATYPES[datatype].dtype
        assert got.tobytes() == want.tobytes()  # bitwise: NaN and -0.0 included


# -- decoding, every datatype -----------------------------------------------------------------


def test_samples_cover_every_datatype() -> None:
    assert set(SAMPLES) == set(DATATYPES)


@pytest.mark.parametrize("datatype", sorted(DATATYPES))
def test_decode_raw_every_datatype(datatype: str) -> None:
    sample = SAMPLES[datatype]
    req = raw_request("x", datatype, sample.shape, raw_payload(datatype, sample))
    arrays = decode_inputs(req, one_input(datatype))
    assert list(arrays) == ["x"]
    assert_same_tensor(arrays["x"], sample, datatype)


TYPED_CASES = [d for d in sorted(DATATYPES) if DATATYPES[d].contents_field]


@pytest.mark.parametrize("datatype", TYPED_CASES)
def test_decode_typed_every_datatype_with_contents(datatype: str) -> None:
    sample = SAMPLES[datatype]
    if datatype == "FP32":
        sample = np.array([[-0.0, 1.5, -np.inf, 3.25e38]], dtype="<f4")
    field = DATATYPES[datatype].contents_field
    assert field is not None
    req = typed_request("x", datatype, sample.shape, **{field: sample.reshape(-1).tolist()})
    arrays = decode_inputs(req, one_input(datatype))
    assert_same_tensor(arrays["x"], sample, datatype)


def test_typed_datatypes_are_all_but_the_half_floats() -> None:
    assert set(DATATYPES) - set(TYPED_CASES) == {"FP16", "BF16"}


@pytest.mark.parametrize("datatype", ["FP16", "BF16"])
def test_half_floats_typed_contents_rejected_with_hint_to_send_raw(datatype: str) -> None:
    req = typed_request("x", datatype, [1, 4], fp32_contents=[1.0, 2.0, 3.0, 4.0])
    with rejected("'x'", datatype, "raw_input_contents"):
        decode_inputs(req, one_input(datatype))


def test_raw_fp32_is_a_view_of_the_request_bytes() -> None:
    payload = fp32(8)
    arr = decode_inputs(raw_request("x", "FP32", [1, 8], payload), FP32_X8)["x"]
    owner: Any = arr
    while isinstance(owner, np.ndarray):
        owner = owner.base
    # upb hands out a fresh bytes object on every raw_input_contents[i] access, so the owner is
    # checked by value: what matters is that NumPy made no copy of its own.
    assert isinstance(owner, bytes) and owner == payload
    assert np.shares_memory(arr, np.frombuffer(owner, dtype=np.uint8))
    assert not arr.flags.owndata
    assert not arr.flags.writeable


def test_raw_inputs_keep_request_order_and_share_batch() -> None:
    req = pb.ModelInferRequest()
    add_raw(req, "b", "INT64", [3, 2], np.arange(6, dtype="<i8").tobytes())
    add_raw(req, "a", "FP32", [3, 4], fp32(12))
    arrays = decode_inputs(req, TWO_INPUTS)
    assert list(arrays) == ["b", "a"]
    assert arrays["a"].shape == (3, 4) and arrays["b"].shape == (3, 2)


def test_zero_sized_tensor_is_accepted() -> None:
    arrays = decode_inputs(raw_request("x", "FP32", [2, 0], b""), ANY_2D)
    assert arrays["x"].shape == (2, 0)


# -- INVALID_ARGUMENT ---------------------------------------------------------------------------


def test_byte_size_mismatch_names_input_and_both_sizes() -> None:
    with rejected("'x'", "32", "40"):
        decode_inputs(raw_request("x", "FP32", [1, 8], fp32(10)), FP32_X8)


def test_wrong_datatype() -> None:
    with rejected("'x'", "FP32", "FP64"):
        decode_inputs(raw_request("x", "FP64", [1, 8], bytes(64)), FP32_X8)


def test_unknown_datatype_name() -> None:
    with rejected("'x'", "FLOAT"):
        decode_inputs(raw_request("x", "FLOAT", [1, 8], fp32(8)), FP32_X8)


def test_unknown_input_lists_the_model_inputs() -> None:
    req = raw_request("z", "FP32", [1, 8], fp32(8))
    with rejected("'z'", "x"):
        decode_inputs(req, FP32_X8)


def test_duplicate_input() -> None:
    req = raw_request("x", "FP32", [1, 8], fp32(8))
    add_raw(req, "x", "FP32", [1, 8], fp32(8))
    with rejected("'x'", "more than once"):
        decode_inputs(req, FP32_X8)


def test_missing_input() -> None:
    req = raw_request("a", "FP32", [1, 4], fp32(4))
    with rejected("'b'", "missing"):
        decode_inputs(req, TWO_INPUTS)


def test_optional_input_may_be_left_out() -> None:
    sig = Signature(
        (TensorSpec("a", "FP32", (-1, 4)), TensorSpec("b", "FP32", (-1, 4), optional=True)), (), 8
    )
    assert list(decode_inputs(raw_request("a", "FP32", [1, 4], fp32(4)), sig)) == ["a"]


def test_missing_required_input_when_an_optional_one_is_given() -> None:
    sig = Signature(
        (TensorSpec("a", "FP32", (-1, 4)), TensorSpec("b", "FP32", (-1, 4), optional=True)), (), 8
    )
    with rejected("'a'", "missing"):
        decode_inputs(raw_request("b", "FP32", [1, 4], fp32(4)), sig)


def test_contents_and_raw_both_given() -> None:
    req = pb.ModelInferRequest()
    req.inputs.add(
        name="x", datatype="FP32", shape=[1, 8], contents=pb.InferTensorContents(fp32_contents=[0.0] * 8)
    )
    req.raw_input_contents.append(fp32(8))
    with rejected("'x'", "both contents and raw_input_contents"):
        decode_inputs(req, FP32_X8)


def test_raw_count_differs_from_input_count() -> None:
    req = raw_request("a", "FP32", [1, 4], fp32(4))
    req.inputs.add(name="b", datatype="INT64", shape=[1, 2])
    with rejected("raw_input_contents has 1 entries for 2 inputs"):
        decode_inputs(req, TWO_INPUTS)


def test_rank_wrong() -> None:
    with rejected("'x'", "[-1,8]", "[8]"):
        decode_inputs(raw_request("x", "FP32", [8], fp32(8)), FP32_X8)


def test_fixed_dim_wrong() -> None:
    with rejected("'x'", "[-1,8]", "[1,7]"):
        decode_inputs(raw_request("x", "FP32", [1, 7], fp32(7)), FP32_X8)


def test_batch_over_max_batch_size() -> None:
    with rejected("'x'", "batch size 5", "1..4"):
        decode_inputs(raw_request("x", "FP32", [5, 8], fp32(40)), FP32_X8)


def test_batch_zero() -> None:
    with rejected("'x'", "batch size 0"):
        decode_inputs(raw_request("x", "FP32", [0, 8], b""), FP32_X8)


def test_inputs_with_different_batch_sizes() -> None:
    req = raw_request("a", "FP32", [2, 4], fp32(8))
    add_raw(req, "b", "INT64", [3, 2], bytes(48))
    with rejected("'b'", "batch size 3", "2"):
        decode_inputs(req, TWO_INPUTS)


def test_negative_dim() -> None:
    with rejected("'x'", "negative", "[2,-3]"):
        decode_inputs(raw_request("x", "FP32", [2, -3], b""), ANY_2D)


def test_negative_batch_dim() -> None:
    with rejected("'x'", "batch size -1"):
        decode_inputs(raw_request("x", "FP32", [-1, 8], fp32(8)), FP32_X8)


def test_huge_shape_tiny_raw_payload_rejected_without_allocating() -> None:
    req = raw_request("x", "FP32", [2**31, 2**31], fp32(2))
    with rejected("'x'", str(2**62 * 4), "got 8"):
        decode_inputs(req, ANY_2D)

    def attempt() -> None:
        with pytest.raises(InvalidArgument):
            decode_inputs(req, ANY_2D)

    assert peak_bytes_while(attempt) < 1 << 20


def test_huge_shape_typed_contents_rejected_without_allocating() -> None:
    req = typed_request("x", "FP32", [2**31, 2**31], fp32_contents=[1.0])

    def attempt() -> None:
        with rejected("'x'", str(2**62)):
            decode_inputs(req, ANY_2D)

    assert peak_bytes_while(attempt) < 1 << 20


def test_huge_bytes_shape_tiny_payload_is_invalid_argument() -> None:
    with rejected("'s'"):
        decode_inputs(raw_request("s", "BYTES", [2**31, 2**31], struct.pack("<I", 0)), BYTES_2D)


def test_large_bytes_shape_tiny_payload_does_not_allocate() -> None:
    req = raw_request("s", "BYTES", [1, 2**22], struct.pack("<I", 0))

    def attempt() -> None:
        with rejected("'s'"):
            decode_inputs(req, BYTES_2D)

    assert peak_bytes_while(attempt) < 1 << 20


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (struct.pack("<I", 100) + b"abc", "declares 100 bytes but only 3 remain"),
        (b"\x01\x00", "1 BYTES elements need at least 4 bytes, got 2"),
        (b"", "1 BYTES elements need at least 4 bytes, got 0"),
        (struct.pack("<I", 1) + b"a" + b"junk", "4 bytes left over"),
    ],
    ids=["bad-length-prefix", "short-prefix", "empty", "trailing-bytes"],
)
def test_bytes_malformed(payload: bytes, fragment: str) -> None:
    with rejected("'s'", fragment):
        decode_inputs(raw_request("s", "BYTES", [1, 1], payload), BYTES_2D)


def test_bytes_truncated_after_some_elements() -> None:
    payload = encode_bytes(np.array([b"ab", b"cd", b"e"], dtype=object))[:-5]  # third element cut
    with rejected("'s'", "ends after 2 of 3"):
        decode_inputs(raw_request("s", "BYTES", [1, 3], payload), BYTES_2D)


@pytest.mark.parametrize(
    ("datatype", "field", "value"),
    [
        ("INT8", "int_contents", 200),
        ("INT8", "int_contents", -129),
        ("INT16", "int_contents", 40000),
        ("UINT8", "uint_contents", 256),
        ("UINT16", "uint_contents", 2**16),
    ],
)
def test_typed_values_out_of_range(datatype: str, field: str, value: int) -> None:
    req = typed_request("x", datatype, [1, 1], **{field: [value]})
    with rejected("'x'", datatype):
        decode_inputs(req, one_input(datatype, (-1, 1)))


def test_typed_values_in_the_wrong_field_hint_where_they_were() -> None:
    req = typed_request("x", "FP32", [1, 2], int_contents=[1, 2])
    with rejected("'x'", "contents.fp32_contents", "got 0", "found values in int_contents"):
        decode_inputs(req, one_input("FP32", (-1, 2)))


def test_typed_count_mismatch() -> None:
    req = typed_request("x", "FP32", [1, 2], fp32_contents=[1.0, 2.0, 3.0])
    with rejected("'x'", "needs 2 values", "got 3"):
        decode_inputs(req, one_input("FP32", (-1, 2)))


def test_typed_input_without_contents() -> None:
    req = pb.ModelInferRequest()
    req.inputs.add(name="x", datatype="FP32", shape=[1, 8])
    with rejected("'x'", "needs 8 values", "got 0"):
        decode_inputs(req, FP32_X8)


# -- requested outputs ------------------------------------------------------------------------


def test_requested_outputs_default_to_all() -> None:
    assert requested_outputs(pb.ModelInferRequest(), TWO_INPUTS) == ("y", "z")


def test_requested_outputs_subset_in_request_order() -> None:
    req = pb.ModelInferRequest()
    req.outputs.add(name="z")
    assert requested_outputs(req, TWO_INPUTS) == ("z",)


def test_requested_output_unknown() -> None:
    req = pb.ModelInferRequest()
    req.outputs.add(name="y")
    req.outputs.add(name="nope")
    with rejected("'nope'", "y, z"):
        requested_outputs(req, TWO_INPUTS)


# -- encoding ---------------------------------------------------------------------------------


def test_encode_outputs_raw_is_array_bytes() -> None:
    y = np.arange(6, dtype=np.float32).reshape(2, 3)
    z = np.array([[1], [2]], dtype=np.int64)
    response = pb.ModelInferResponse()
    encode_outputs(response, {"y": y, "z": z}, TWO_INPUTS)
    assert [(t.name, t.datatype, list(t.shape)) for t in response.outputs] == [
        ("y", "FP32", [2, 3]),
        ("z", "INT64", [2, 1]),
    ]
    assert list(response.raw_output_contents) == [y.tobytes(), z.tobytes()]


def test_encode_outputs_non_contiguous_array() -> None:
    y = np.arange(6, dtype=np.float32).reshape(2, 3).T
    response = pb.ModelInferResponse()
    encode_outputs(response, {"y": y}, TWO_INPUTS)
    assert list(response.outputs[0].shape) == [3, 2]
    assert response.raw_output_contents[0] == np.ascontiguousarray(y).tobytes()


def test_encode_outputs_bytes_are_length_prefixed() -> None:
    sig = Signature((), (TensorSpec("s", "BYTES", (-1,)),), 0)
    response = pb.ModelInferResponse()
    encode_outputs(response, {"s": np.array(["hé", b"\x00"], dtype=object)}, sig)
    assert response.outputs[0].datatype == "BYTES"
    want = struct.pack("<I", 3) + "hé".encode() + struct.pack("<I", 1) + b"\x00"
    assert response.raw_output_contents[0] == want


def test_encode_outputs_not_in_signature_uses_array_dtype() -> None:
    response = pb.ModelInferResponse()
    encode_outputs(response, {"extra": np.zeros(2, dtype=np.uint16)}, TWO_INPUTS)
    assert response.outputs[0].datatype == "UINT16"


def test_encode_outputs_big_endian_array_is_sent_little_endian() -> None:
    y = np.arange(3, dtype=">f4")
    response = pb.ModelInferResponse()
    encode_outputs(response, {"y": y}, Signature((), (TensorSpec("y", "FP32", (-1,)),), 0))
    assert response.raw_output_contents[0] == y.astype("<f4").tobytes()


def test_encode_outputs_dtype_disagreeing_with_signature_is_a_backend_fault_not_a_malformed_answer() -> None:
    response = pb.ModelInferResponse()
    with pytest.raises(Internal, match=r"output 'y' is declared \w+ but the backend returned float64"):
        encode_outputs(response, {"y": np.arange(3, dtype=np.float64)}, TWO_INPUTS)
    assert not response.raw_output_contents  # nothing half-written


@pytest.mark.parametrize(
    ("array", "datatype"),
    [
        (np.array(["a"]), "BYTES"),
        (np.array([b"a"]), "BYTES"),
        (np.array([1.0], dtype="<f2"), "FP16"),
        (np.array([True]), "BOOL"),
    ],
)
def test_datatype_of(array: np.ndarray, datatype: str) -> None:
    assert datatype_of(array) == datatype


def test_datatype_of_unsupported() -> None:
    with rejected("complex128"):
        datatype_of(np.zeros(1, dtype=np.complex128))


# -- properties -------------------------------------------------------------------------------

SHAPES = hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=4)


@st.composite
def tensors(draw: st.DrawFn) -> tuple[str, np.ndarray]:
    datatype = draw(st.sampled_from(sorted(DATATYPES)))
    shape = draw(SHAPES)
    if datatype == "BYTES":
        array = draw(hnp.arrays(object, shape, elements=st.binary(max_size=8)))
    else:
        array = draw(hnp.arrays(DATATYPES[datatype].dtype, shape))
    return datatype, array


@given(tensors())
@settings(max_examples=300, deadline=None)
def test_property_raw_round_trip(tensor: tuple[str, np.ndarray]) -> None:
    datatype, array = tensor
    sig = Signature((TensorSpec("t", datatype, (-1,) * array.ndim),), (), 0)
    req = raw_request("t", datatype, array.shape, raw_payload(datatype, array))
    assert_same_tensor(decode_inputs(req, sig)["t"], array, datatype)


@given(st.lists(st.binary(max_size=64), max_size=20))
def test_property_bytes_round_trip(items: list[bytes]) -> None:
    array = np.empty(len(items), dtype=object)
    array[:] = items
    assert decode_bytes("t", encode_bytes(array), len(items)).tolist() == items


CONTENTS = st.fixed_dictionaries(
    {},
    optional={
        "bool_contents": st.lists(st.booleans(), max_size=8),
        "int_contents": st.lists(st.integers(-(2**31), 2**31 - 1), max_size=8),
        "int64_contents": st.lists(st.integers(-(2**63), 2**63 - 1), max_size=8),
        "uint_contents": st.lists(st.integers(0, 2**32 - 1), max_size=8),
        "uint64_contents": st.lists(st.integers(0, 2**64 - 1), max_size=8),
        "fp32_contents": st.lists(st.floats(width=32), max_size=8),
        "fp64_contents": st.lists(st.floats(), max_size=8),
        "bytes_contents": st.lists(st.binary(max_size=4), max_size=8),
    },
)


@given(
    spec_type=st.sampled_from(sorted(DATATYPES)),
    datatype=st.one_of(st.sampled_from(sorted(DATATYPES)), st.text(max_size=5)),
    shape=st.lists(st.integers(-2, 6), max_size=3),
    raw=st.one_of(st.none(), st.binary(max_size=64)),
    contents=CONTENTS,
)
@settings(max_examples=500, deadline=None)
def test_property_random_requests_only_invalid_argument(
    spec_type: str, datatype: str, shape: list[int], raw: bytes | None, contents: dict[str, Any]
) -> None:
    sig = Signature((TensorSpec("t", spec_type, (-1, 2)),), (), 4)
    if raw is None:
        req = typed_request("t", datatype, shape, **contents)
    else:
        req = raw_request("t", datatype, shape, raw)
    try:
        arrays = decode_inputs(req, sig)
    except InvalidArgument as exc:
        assert exc.code == "INVALID_ARGUMENT"
        assert "'t'" in exc.message
        return
    assert arrays["t"].shape == tuple(shape)


@pytest.mark.parametrize("size", [0, 1, 127, 128, 300, 16_383, 16_384, 2_097_152])
def test_wire_field_parses_as_protobuf_does(size: int) -> None:
    from gateway._proto import inference_pb2 as pb
    from gateway.tensors import wire_field

    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    message = pb.ModelInferResponse.FromString(
        wire_field(3, b"req-7") + wire_field(6, data) + wire_field(6, b"x")
    )
    assert message.id == "req-7"
    assert list(message.raw_output_contents) == [data, b"x"]
    expected = pb.ModelInferResponse(id="req-7", raw_output_contents=[data, b"x"]).SerializeToString()
    assert wire_field(3, b"req-7") + wire_field(6, data) + wire_field(6, b"x") == expected


def two_inputs(a_rows: int = 2, b_rows: int = 2, b_bytes: int | None = None) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name="m")
    add_raw(req, "b", "INT64", [b_rows, 2], np.arange(b_rows * 2, dtype="<i8").tobytes()[:b_bytes])
    add_raw(req, "a", "FP32", [a_rows, 4], fp32(a_rows * 4))
    return req


def parts_of(request: pb.ModelInferRequest, signature: Signature) -> tuple[int, tuple[bytes, ...]] | None:
    """`raw_parts` of a request both ways the data plane gets one: read off the wire
    (gateway/wire.py) and parsed. They must agree."""
    from gateway.tensors import raw_parts
    from gateway.wire import input_parts, read_request

    body = request.SerializeToString()
    read = raw_parts(*input_parts(read_request(body)), signature)
    assert read == raw_parts(*input_parts(pb.ModelInferRequest.FromString(body)), signature)
    return read


def test_raw_parts_gives_rows_and_bytes_in_signature_order_and_join_parts_stacks_them() -> None:
    from gateway.tensors import join_parts

    signature = Signature(TWO_INPUTS.inputs, TWO_INPUTS.outputs, 8)  # its own header cache
    for _ in range(2):  # the second time from the cache: same answer
        found = parts_of(two_inputs(), signature)
        assert found is not None
        rows, parts = found
        assert rows == 2 and parts == (fp32(8), np.arange(4, dtype="<i8").tobytes())
    other = parts_of(two_inputs(3, 3), signature)
    assert other is not None and other[0] == 3
    joined = join_parts([parts, other[1]], 5, signature)
    decoded = [decode_inputs(two_inputs(), signature), decode_inputs(two_inputs(3, 3), signature)]
    for name in ("a", "b"):
        np.testing.assert_array_equal(joined[name], np.concatenate([d[name] for d in decoded]))


def test_raw_parts_turns_down_every_other_form_even_with_a_known_header() -> None:
    signature = Signature(TWO_INPUTS.inputs, TWO_INPUTS.outputs, 8)
    assert parts_of(two_inputs(), signature) is not None  # the headers are now known
    assert parts_of(two_inputs(b_bytes=24), signature) is None  # known header, short payload
    assert parts_of(two_inputs(2, 3), signature) is None  # rows differ between inputs
    assert parts_of(two_inputs(9, 9), signature) is None  # over max_batch_size
    one = pb.ModelInferRequest(model_name="m")
    add_raw(one, "a", "FP32", [2, 4], fp32(8))
    assert parts_of(one, signature) is None  # an input missing
    twice = two_inputs()
    add_raw(twice, "a", "FP32", [2, 4], fp32(8))
    del twice.inputs[0]
    del twice.raw_input_contents[0]
    assert parts_of(twice, signature) is None  # an input given twice
    wrong = two_inputs()
    wrong.inputs[1].datatype = "FP64"
    assert parts_of(wrong, signature) is None
    typed = two_inputs()
    typed.inputs[1].contents.fp32_contents.extend([1.0])
    assert parts_of(typed, signature) is None
    assert parts_of(raw_request("x", "FP32", [1, 8], fp32(8)), signature) is None  # unknown input
    assert parts_of(raw_request("s", "BYTES", [1, 1], b"\0\0\0\0"), BYTES_2D) is None  # not fixed-size
