"""ModelInferRequest bodies in, requests out: parsed, or, in the common form, only read.

Clients of a model send the same message over and over: a model name, maybe a version and an id,
one tensor header per input (name, datatype, shape) and the raw contents. `read_request` finds
those fields on the wire (`scan_infer`, compiled from gateway/_wire.pyx, with a pure-Python twin
here) without building a protobuf message: the data plane's batch path joins the contents of
such requests and never needs the message (gateway/dataplane.py). A request in any other form
(parameters, requested outputs, `contents` instead of raw, fields it should not have) is parsed
as before; so is one whose form the data plane cannot join (`WireRequest.parse`).

A `WireRequest` is as valid as the parsed message: its strings are UTF-8 and each tensor header
parses (headers are checked once, then known by their bytes).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from google.protobuf.message import DecodeError

from ._proto import inference_pb2 as pb
from .errors import InvalidArgument

__all__ = ["COMPILED", "WireRequest", "input_parts", "parse_request", "read_request", "scan_infer_reference"]

Scanned = tuple[str, str, str, list[bytes], list[bytes]]
"""(model_name, model_version, id, tensor headers, raw contents)"""


def parse_request(data: bytes) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest()
    try:
        request.ParseFromString(data)
    except DecodeError:
        raise InvalidArgument("request body is not a valid ModelInferRequest") from None
    return request


class WireRequest:
    """A request in the common form, read off the wire (`read_request`): what the data plane
    reads of a ModelInferRequest, plus its inputs as header bytes and raw contents."""

    __slots__ = ("body", "contents", "headers", "id", "model_name", "model_version")

    parameters: Mapping[str, pb.InferParameter] = MappingProxyType({})
    outputs: Sequence[Any] = ()

    def __init__(self, body: bytes, scanned: Scanned) -> None:
        self.body = body
        self.model_name, self.model_version, self.id, self.headers, self.contents = scanned

    def parse(self) -> pb.ModelInferRequest:
        """The whole message."""
        return parse_request(self.body)


def read_request(body: bytes) -> WireRequest | pb.ModelInferRequest:
    """The request in `body`: read (`WireRequest`) when in the common form, else parsed.
    InvalidArgument when it is not a ModelInferRequest."""
    scanned = scan_infer(body)
    if scanned is None:
        return parse_request(body)
    known = _HEADERS
    for header in scanned[3]:
        if header not in known:
            try:
                pb.ModelInferRequest.InferInputTensor.FromString(header)
            except DecodeError:
                return parse_request(body)  # raises
            if len(known) >= 4096:  # bounded: a header per input and row count
                known.clear()
            known.add(header)
    return WireRequest(body, scanned)


_HEADERS: set[bytes] = set()  # tensor headers known to parse


def input_parts(request: WireRequest | pb.ModelInferRequest) -> tuple[Sequence[bytes], Sequence[bytes]]:
    """A request's tensor headers (serialized InferInputTensor) and raw contents."""
    if request.__class__ is WireRequest:
        return request.headers, request.contents
    return [t.SerializeToString() for t in request.inputs], request.raw_input_contents  # type: ignore[union-attr]


def _varint(body: bytes, i: int) -> tuple[int, int]:
    """The varint at body[i] and the index after it; (-1, -1) when it is cut short or too long."""
    value = shift = 0
    while i < len(body) and shift < 70:
        byte = body[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i
        shift += 7
    return -1, -1


def scan_infer_reference(body: bytes) -> Scanned | None:
    """The fields of a ModelInferRequest that holds only model_name (1), model_version (2), id (3),
    inputs (5) and raw_input_contents (7), each length-delimited; None for any other message or
    for bytes that are not a message (the parser explains what is wrong). A string field seen
    twice keeps its last value, as protobuf's parser does."""
    end = len(body)
    i = 0
    strings = [b"", b"", b""]
    headers: list[bytes] = []
    contents: list[bytes] = []
    while i < end:
        key, i = _varint(body, i)
        if i < 0 or key & 7 != 2:
            return None
        size, i = _varint(body, i)
        if i < 0 or size > end - i:
            return None
        field = key >> 3
        value = body[i : i + size]
        if field in (1, 2, 3):
            strings[field - 1] = value
        elif field == 5:
            headers.append(value)
        elif field == 7:
            contents.append(value)
        else:
            return None
        i += size
    try:
        return strings[0].decode(), strings[1].decode(), strings[2].decode(), headers, contents
    except UnicodeDecodeError:
        return None


scan_infer: Callable[[bytes], Scanned | None]
try:
    from ._wire import scan_infer
except ImportError as exc:  # a source checkout without `pip install -e .`
    warnings.warn(
        f"gateway.wire: the compiled scanner is not built ({exc}); using its pure-Python twin, "
        "which is slower. Build it with `pip install -e .`.",
        RuntimeWarning,
        stacklevel=2,
    )
    scan_infer = scan_infer_reference
COMPILED: bool = scan_infer is not scan_infer_reference
