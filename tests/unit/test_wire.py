"""gateway/wire.py: requests read off the wire agree with protobuf's parser, in both twins of the
scanner (compiled and pure Python), on well-formed messages of every form and on garbage."""

from __future__ import annotations

import pytest
from google.protobuf.message import DecodeError
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import wire
from gateway._proto import inference_pb2 as pb
from gateway.errors import InvalidArgument
from gateway.wire import WireRequest, parse_request, read_request, scan_infer_reference

SCANNERS = {"compiled": wire.scan_infer, "reference": scan_infer_reference}


def test_the_compiled_scanner_is_built() -> None:
    assert wire.COMPILED, "gateway/_wire.pyx is not built: pip install -e ."


names = st.text(max_size=12)
tensor = st.builds(
    pb.ModelInferRequest.InferInputTensor,
    name=names,
    datatype=st.sampled_from(["FP32", "INT64", "BYTES"]),
    shape=st.lists(st.integers(-1, 1 << 40), max_size=4),
)


@st.composite
def common_form(draw: st.DrawFn) -> pb.ModelInferRequest:
    """A request with only names, id, tensor headers and raw contents (any counts, any sizes)."""
    return pb.ModelInferRequest(
        model_name=draw(names),
        model_version=draw(names),
        id=draw(names),
        inputs=draw(st.lists(tensor, max_size=3)),
        raw_input_contents=draw(st.lists(st.binary(max_size=300), max_size=3)),
    )


def scanned_as_parsed(request: pb.ModelInferRequest) -> tuple[object, ...]:
    return (
        request.model_name,
        request.model_version,
        request.id,
        [t.SerializeToString() for t in request.inputs],
        list(request.raw_input_contents),
    )


@settings(max_examples=300, deadline=None)
@given(common_form())
def test_the_common_form_is_read_as_protobuf_parses_it(request: pb.ModelInferRequest) -> None:
    body = request.SerializeToString()
    for scan in SCANNERS.values():
        found = scan(body)
        assert found is not None
        assert tuple(found) == scanned_as_parsed(request)
    read = read_request(body)
    assert isinstance(read, WireRequest)
    assert read.parse() == request and read.body == body
    assert not read.parameters and not read.outputs


@settings(max_examples=100, deadline=None)
@given(common_form(), st.sampled_from(["parameter", "output", "contents"]))
def test_other_forms_are_parsed(request: pb.ModelInferRequest, form: str) -> None:
    if form == "parameter":
        request.parameters["priority"].int64_param = 1
    elif form == "output":
        request.outputs.add(name="y")
    else:
        request.inputs.add(name="x", datatype="FP32", shape=[1]).contents.fp32_contents.append(1.0)
    body = request.SerializeToString()
    if form != "contents":  # contents live inside a header: still the form the scanner reads
        assert all(scan(body) is None for scan in SCANNERS.values())
    read = read_request(body)
    parsed = read.parse() if isinstance(read, WireRequest) else read
    assert parsed == request


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=64))
def test_garbage_is_refused_or_read_exactly_as_parsed(body: bytes) -> None:
    """Random bytes: both scanners agree; whatever read_request accepts protobuf accepts and
    means the same; whatever protobuf refuses is INVALID_ARGUMENT."""
    found = [scan(body) for scan in SCANNERS.values()]
    assert found[0] == found[1]
    try:
        parsed: pb.ModelInferRequest | None = pb.ModelInferRequest.FromString(body)
    except DecodeError:
        parsed = None
    if parsed is None:
        with pytest.raises(InvalidArgument, match="request body is not a valid ModelInferRequest"):
            read_request(body)
        return
    read = read_request(body)
    if isinstance(read, WireRequest):
        assert read.parse() == parsed
        assert (read.model_name, read.model_version, read.id) == (
            parsed.model_name,
            parsed.model_version,
            parsed.id,
        )
        assert list(read.contents) == list(parsed.raw_input_contents)
        header = pb.ModelInferRequest.InferInputTensor.FromString
        assert [header(h) for h in read.headers] == list(parsed.inputs)
    else:
        assert read == parsed


def field(number: int, data: bytes) -> bytes:
    return bytes([number << 3 | 2, len(data)]) + data


@pytest.mark.parametrize("name", SCANNERS)
def test_edge_cases(name: str) -> None:
    scan = SCANNERS[name]
    twice = field(1, b"first") + field(1, b"mlp")  # the last value counts, as for protobuf
    found = scan(twice)
    assert found is not None and found[0] == "mlp" == pb.ModelInferRequest.FromString(twice).model_name
    assert scan(b"") == ("", "", "", [], [])
    assert scan(field(1, b"\xff\xfe")) is None  # not UTF-8
    assert scan(field(1, b"mlp")[:-1]) is None  # cut short
    assert scan(bytes([1 << 3 | 0, 5])) is None  # a varint field
    assert scan(b"\x0a" + b"\xff" * 11) is None  # a length of over 10 bytes
    assert scan(field(9, b"x")) is None  # a field the protocol does not have


def test_a_header_that_does_not_parse_is_invalid_argument() -> None:
    body = field(1, b"mlp") + field(5, b"\x0a\x05ab")  # the header's name runs past its end
    assert wire.scan_infer(body) is not None
    with pytest.raises(InvalidArgument, match="not a valid ModelInferRequest"):
        read_request(body)
    with pytest.raises(InvalidArgument):
        parse_request(body)
