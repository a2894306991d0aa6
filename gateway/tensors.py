"""KServe v2 tensors <-> NumPy, and request validation against a model's signature.

Inputs stay bytes: a raw input becomes an `np.frombuffer` view, never a copy; typed `contents`
(the slow form some clients use) are converted once. Every check that can fail does so here,
before anything reaches a backend, with an `InvalidArgument` that names the input and says what
was expected. Element counts are computed with Python integers and compared with the payload
before anything is allocated, so a declared shape of 2^31 x 2^31 costs nothing.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import Internal, InvalidArgument

__all__ = [
    "DATATYPES",
    "DataType",
    "Signature",
    "TensorSpec",
    "datatype_of",
    "declared_specs",
    "decode_bytes",
    "decode_inputs",
    "encode_bytes",
    "encode_outputs",
    "join_parts",
    "raw_outputs",
    "raw_parts",
    "requested_outputs",
    "wire_field",
    "wire_head",
]


@dataclass(frozen=True, slots=True)
class DataType:
    name: str  # the KServe name, e.g. "FP32"
    dtype: np.dtype[Any]  # NumPy dtype of the raw form (BYTES: object, BF16: uint16 bits)
    contents_field: str | None  # InferTensorContents field for typed contents (None: raw only)
    config_type: str  # model_config DataType name, e.g. "TYPE_FP32"

    @property
    def itemsize(self) -> int:
        return 0 if self.name == "BYTES" else self.dtype.itemsize


def _dt(name: str, dtype: str | type, contents: str | None, config: str) -> DataType:
    return DataType(name, np.dtype(dtype), contents, config)


DATATYPES: dict[str, DataType] = {
    d.name: d
    for d in (
        _dt("BOOL", np.bool_, "bool_contents", "TYPE_BOOL"),
        _dt("INT8", "<i1", "int_contents", "TYPE_INT8"),
        _dt("INT16", "<i2", "int_contents", "TYPE_INT16"),
        _dt("INT32", "<i4", "int_contents", "TYPE_INT32"),
        _dt("INT64", "<i8", "int64_contents", "TYPE_INT64"),
        _dt("UINT8", "<u1", "uint_contents", "TYPE_UINT8"),
        _dt("UINT16", "<u2", "uint_contents", "TYPE_UINT16"),
        _dt("UINT32", "<u4", "uint_contents", "TYPE_UINT32"),
        _dt("UINT64", "<u8", "uint64_contents", "TYPE_UINT64"),
        _dt("FP16", "<f2", None, "TYPE_FP16"),
        _dt("FP32", "<f4", "fp32_contents", "TYPE_FP32"),
        _dt("FP64", "<f8", "fp64_contents", "TYPE_FP64"),
        _dt("BYTES", object, "bytes_contents", "TYPE_STRING"),
        _dt("BF16", "<u2", None, "TYPE_BF16"),
    )
}
_BY_CONFIG_TYPE = {d.config_type: d.name for d in DATATYPES.values()}
_CONTENTS_FIELDS = sorted({d.contents_field for d in DATATYPES.values() if d.contents_field})
_BY_NUMPY_KIND = {
    np.dtype(np.bool_): "BOOL",
    np.dtype(np.int8): "INT8",
    np.dtype(np.int16): "INT16",
    np.dtype(np.int32): "INT32",
    np.dtype(np.int64): "INT64",
    np.dtype(np.uint8): "UINT8",
    np.dtype(np.uint16): "UINT16",
    np.dtype(np.uint32): "UINT32",
    np.dtype(np.uint64): "UINT64",
    np.dtype(np.float16): "FP16",
    np.dtype(np.float32): "FP32",
    np.dtype(np.float64): "FP64",
    np.dtype(object): "BYTES",
}


def datatype_of(array: np.ndarray) -> str:
    """The KServe datatype of a NumPy array (strings and bytes are BYTES)."""
    if array.dtype.kind in "SUO":
        return "BYTES"
    try:
        return _BY_NUMPY_KIND[array.dtype.newbyteorder("=")]
    except KeyError:
        raise InvalidArgument(f"no KServe datatype for NumPy dtype {array.dtype}") from None


def datatype_from_config(config_type: str) -> str:
    """KServe name for a model_config DataType name ("TYPE_FP32" -> "FP32")."""
    try:
        return _BY_CONFIG_TYPE[config_type]
    except KeyError:
        raise InvalidArgument(f"unsupported data_type {config_type}") from None


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One input or output of a model. `shape` includes the batch dimension (-1) when batched;
    -1 anywhere means any size."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    optional: bool = False

    def describe(self) -> str:
        return f"{self.datatype} {list(self.shape)}"


def declared_specs(config: Any) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """The inputs and outputs a model_config (config.pbtxt) declares, as TensorSpecs: the batch
    dimension (-1) leads when max_batch_size > 0."""
    from ._proto import model_config_pb2 as mc

    lead = (-1,) if config.max_batch_size > 0 else ()

    def specs(tensors: Any) -> tuple[TensorSpec, ...]:
        return tuple(
            TensorSpec(
                t.name,
                datatype_from_config(mc.DataType.Name(t.data_type)),
                lead + tuple(t.dims),
                getattr(t, "optional", False),
            )
            for t in tensors
        )

    return specs(config.input), specs(config.output)


@dataclass(frozen=True)
class Signature:
    """What a model version takes and returns. `max_batch_size` 0 means the model has no batch
    dimension; otherwise the first dimension of every input and output is the batch."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int
    _inputs: dict[str, TensorSpec] = field(init=False, repr=False, compare=False)
    _outputs: dict[str, TensorSpec] = field(init=False, repr=False, compare=False)
    _required: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _has_optional: bool = field(init=False, repr=False, compare=False)
    _fast: dict[str, tuple[int, list[int], int, np.dtype[Any]]] = field(init=False, repr=False, compare=False)
    _layouts: dict[bytes, tuple[int, int, int]] = field(init=False, repr=False, compare=False)  # raw_parts
    output_names: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_inputs", {s.name: s for s in self.inputs})
        object.__setattr__(self, "_outputs", {s.name: s for s in self.outputs})
        object.__setattr__(self, "output_names", tuple(self._outputs))
        object.__setattr__(self, "_required", tuple(s.name for s in self.inputs if not s.optional))
        object.__setattr__(self, "_has_optional", any(s.optional for s in self.inputs))
        # The common case checked in a few comparisons: a batched, fixed-size, raw input.
        fast = {}
        for s in self.inputs:
            tail = list(s.shape[1:])
            if self.max_batch_size and s.datatype != "BYTES" and -1 not in tail:
                dtype = DATATYPES[s.datatype].dtype
                row_bytes = int(np.prod(tail, dtype=np.int64)) * dtype.itemsize
                fast[s.name] = (len(s.shape), tail, row_bytes, dtype)
        object.__setattr__(self, "_fast", fast)
        object.__setattr__(self, "_layouts", {})

    def input(self, name: str) -> TensorSpec | None:
        return self._inputs.get(name)

    def output(self, name: str) -> TensorSpec | None:
        return self._outputs.get(name)


def _shape_text(shape: Iterable[int]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def _element_count(name: str, shape: Sequence[int]) -> int:
    count = 1
    for dim in shape:
        if dim < 0:
            raise InvalidArgument(f"input '{name}': negative dimension in shape {_shape_text(shape)}")
        count *= dim
    return count


def _check_shape(spec: TensorSpec, shape: Sequence[int], max_batch_size: int) -> None:
    if len(shape) != len(spec.shape) or any(
        want != -1 and want != got for want, got in zip(spec.shape, shape, strict=True)
    ):
        raise InvalidArgument(
            f"input '{spec.name}': expected shape {_shape_text(spec.shape)}, got {_shape_text(shape)}"
        )
    if max_batch_size and not 0 < shape[0] <= max_batch_size:
        raise InvalidArgument(
            f"input '{spec.name}': batch size {shape[0]} is outside 1..{max_batch_size} "
            f"(the model's max_batch_size)"
        )


def decode_bytes(name: str, raw: bytes, count: int) -> np.ndarray:
    """Split a raw BYTES tensor (each element a 4-byte little-endian length, then the bytes)."""
    if count > len(raw) // 4:  # before allocating: every element needs a 4-byte length
        raise InvalidArgument(
            f"input '{name}': {count} BYTES elements need at least {4 * count} bytes, got {len(raw)}"
        )
    out = np.empty(count, dtype=object)
    view = memoryview(raw)
    pos, end = 0, len(raw)
    for i in range(count):
        if pos + 4 > end:
            raise InvalidArgument(
                f"input '{name}': BYTES payload ends after {i} of {count} elements (no length prefix)"
            )
        (length,) = struct.unpack_from("<I", view, pos)
        pos += 4
        if pos + length > end:
            raise InvalidArgument(
                f"input '{name}': BYTES element {i} declares {length} bytes but only {end - pos} remain"
            )
        out[i] = bytes(view[pos : pos + length])
        pos += length
    if pos != end:
        raise InvalidArgument(f"input '{name}': {end - pos} bytes left over after {count} BYTES elements")
    return out


def encode_bytes(array: np.ndarray) -> bytes:
    """Serialise a BYTES tensor: per element a 4-byte little-endian length, then the bytes."""
    parts = []
    for item in array.reshape(-1):
        data = item.encode() if isinstance(item, str) else bytes(item)
        parts.append(struct.pack("<I", len(data)))
        parts.append(data)
    return b"".join(parts)


def _decode_raw(spec: TensorSpec, dtype: DataType, shape: Sequence[int], raw: bytes) -> np.ndarray:
    count = _element_count(spec.name, shape)
    if dtype.name == "BYTES":
        return decode_bytes(spec.name, raw, count).reshape(shape)
    expected = count * dtype.itemsize
    if len(raw) != expected:
        raise InvalidArgument(
            f"input '{spec.name}': {dtype.name} {_shape_text(shape)} needs {expected} bytes, got {len(raw)}"
        )
    return np.frombuffer(raw, dtype=dtype.dtype).reshape(shape)


def _decode_typed(spec: TensorSpec, dtype: DataType, shape: Sequence[int], contents: Any) -> np.ndarray:
    count = _element_count(spec.name, shape)
    if dtype.contents_field is None:
        raise InvalidArgument(
            f"input '{spec.name}': {dtype.name} has no typed contents; send it in raw_input_contents"
        )
    values = getattr(contents, dtype.contents_field)
    if len(values) != count:
        others = [f for f in _CONTENTS_FIELDS if f != dtype.contents_field and len(getattr(contents, f))]
        hint = f" (found values in {', '.join(others)})" if others else ""
        raise InvalidArgument(
            f"input '{spec.name}': {dtype.name} {_shape_text(shape)} needs {count} values in "
            f"contents.{dtype.contents_field}, got {len(values)}{hint}"
        )
    try:
        if dtype.name == "BYTES":
            array = np.empty(count, dtype=object)
            array[:] = list(values)
        else:
            # Through Python ints: numpy would otherwise cast the container's own int32 array
            # and wrap out-of-range values silently (200 as INT8 -> -56).
            array = np.array(list(values), dtype=dtype.dtype)
    except (OverflowError, ValueError) as exc:
        raise InvalidArgument(f"input '{spec.name}': contents do not fit {dtype.name}: {exc}") from None
    return array.reshape(shape)


def decode_inputs(request: Any, signature: Signature) -> dict[str, np.ndarray]:
    """Validate a ModelInferRequest's inputs against `signature` and return them as arrays, in
    the request's order. Raw inputs are zero-copy views of the request's bytes."""
    inputs = request.inputs
    raw = request.raw_input_contents
    if raw and len(raw) != len(inputs):
        raise InvalidArgument(
            f"raw_input_contents has {len(raw)} entries for {len(inputs)} inputs; "
            "send every input raw or none"
        )
    arrays: dict[str, np.ndarray] = {}
    batch = -1
    max_batch = signature.max_batch_size
    fast = signature._fast
    for i, tensor in enumerate(inputs):
        name = tensor.name
        known = fast.get(name) if raw else None
        if known is not None and name not in arrays:
            rank, tail, row_bytes, np_dtype = known
            shape = tensor.shape[:]
            if (
                len(shape) == rank
                and shape[1:] == tail
                and 0 < shape[0] <= max_batch
                and tensor.datatype == signature._inputs[name].datatype
                and len(data := raw[i]) == shape[0] * row_bytes
                and not tensor.HasField("contents")
                and (batch == -1 or batch == shape[0])
            ):
                arrays[name] = np.frombuffer(data, dtype=np_dtype).reshape(shape)
                batch = shape[0]
                continue
        # The general path, which also explains whatever the fast path did not accept.
        spec = signature.input(name)
        if spec is None:
            expected = ", ".join(s.name for s in signature.inputs)
            raise InvalidArgument(f"unknown input '{name}'; the model takes: {expected}")
        if name in arrays:
            raise InvalidArgument(f"input '{name}' is given more than once")
        dtype = DATATYPES.get(tensor.datatype)
        if dtype is None or tensor.datatype != spec.datatype:
            raise InvalidArgument(
                f"input '{name}': expected datatype {spec.datatype}, got '{tensor.datatype}'"
            )
        shape = tensor.shape
        _check_shape(spec, shape, signature.max_batch_size)
        if raw:
            if tensor.HasField("contents"):
                raise InvalidArgument(f"input '{name}': both contents and raw_input_contents given; send one")
            array = _decode_raw(spec, dtype, shape, raw[i])
        else:
            array = _decode_typed(spec, dtype, shape, tensor.contents)
        if signature.max_batch_size:
            if batch == -1:
                batch = shape[0]
            elif shape[0] != batch:
                raise InvalidArgument(
                    f"input '{name}': batch size {shape[0]} differs from the other inputs' {batch}"
                )
        arrays[name] = array
    if len(arrays) != len(signature._required) or signature._has_optional:
        missing = [n for n in signature._required if n not in arrays]
        if missing:
            raise InvalidArgument(
                "missing input "
                + ", ".join(f"'{n}'" for n in missing)
                + f"; the model takes: {', '.join(s.name for s in signature.inputs)}"
            )
    return arrays


def raw_parts(
    headers: Sequence[bytes], raw: Sequence[bytes], signature: Signature
) -> tuple[int, tuple[bytes, ...]] | None:
    """For a request in the common form (every input raw, batched and fixed-size, as the model
    declares it), its rows and its inputs' bytes in the signature's order: requests in this form
    can be joined into one batch without decoding each. None: any other form (`decode_inputs`
    takes it, and explains what is wrong with it). `headers` are the request's inputs serialized
    (InferInputTensor messages, each known to parse), `raw` its raw_input_contents
    (gateway/wire.py `input_parts`).

    Clients send the same few tensor headers over and over (name, datatype, shape), so each
    header is checked once: its bytes are remembered with what they mean."""
    count = len(headers)
    if count != len(signature.inputs) or len(raw) != count:
        return None
    layouts = signature._layouts
    found: list[bytes | None] = [None] * count
    rows = -1
    for i in range(count):
        header = headers[i]
        known = layouts.get(header)
        if known is None:
            from ._proto.inference_pb2 import ModelInferRequest

            known = _layout(ModelInferRequest.InferInputTensor.FromString(header), signature)
            if known is None:
                return None
            if len(layouts) >= 4096:  # bounded: headers of every row count, per input
                layouts.clear()
            layouts[header] = known
        j, n, size = known
        if (rows != -1 and n != rows) or found[j] is not None or len(data := raw[i]) != size:
            return None
        found[j] = data
        rows = n
    return rows, tuple(found)  # type: ignore[arg-type]


def _layout(tensor: Any, signature: Signature) -> tuple[int, int, int] | None:
    """What a raw input's header means, if it is one the model takes as it is: (its place in the
    signature, rows, bytes)."""
    known = signature._fast.get(tensor.name)
    if known is None or tensor.HasField("contents") or tensor.parameters:
        return None
    rank, tail, row_bytes, _dtype = known
    shape = list(tensor.shape)
    if len(shape) != rank or shape[1:] != tail or not 0 < shape[0] <= signature.max_batch_size:
        return None
    if tensor.datatype != signature._inputs[tensor.name].datatype:
        return None
    index = next(j for j, spec in enumerate(signature.inputs) if spec.name == tensor.name)
    return index, shape[0], shape[0] * row_bytes


def join_parts(parts: Sequence[tuple[bytes, ...]], rows: int, signature: Signature) -> dict[str, np.ndarray]:
    """The batch of `rows` rows made of requests' `raw_parts`: one array per input."""
    arrays = {}
    fast = signature._fast
    for j, spec in enumerate(signature.inputs):
        _rank, tail, _row_bytes, dtype = fast[spec.name]
        data = parts[0][j] if len(parts) == 1 else b"".join([p[j] for p in parts])
        arrays[spec.name] = np.frombuffer(data, dtype=dtype).reshape([rows, *tail])
    return arrays


def raw_outputs(
    outputs: Mapping[str, np.ndarray], names: Sequence[str], signature: Signature
) -> list[np.ndarray] | None:
    """A batch's outputs `names`, each in its declared datatype's raw (little-endian) form, for
    answers cut from them as bytes (`wire_field`). None when one is BYTES (encode_outputs takes
    those). An array whose dtype disagrees with its declared datatype is a backend fault."""
    arrays = []
    for name in names:
        array = outputs[name]
        spec = signature.output(name)
        datatype = spec.datatype if spec is not None else datatype_of(array)
        if datatype == "BYTES":
            return None
        arrays.append(np.ascontiguousarray(_raw_form(name, array, datatype)))
    return arrays


def _raw_form(name: str, array: np.ndarray, datatype: str) -> np.ndarray:
    want = DATATYPES[datatype].dtype
    if array.dtype != want:
        if array.dtype.newbyteorder("=") != want.newbyteorder("="):
            raise Internal(f"output '{name}' is declared {datatype} but the backend returned {array.dtype}")
        array = array.astype(want)  # byte order only
    return array


def wire_field(number: int, data: bytes) -> bytes:
    """One length-delimited protobuf field (a string, bytes or message field) on the wire."""
    return wire_head(number, len(data)) + data


def wire_head(number: int, size: int) -> bytes:
    """What precedes `size` bytes of a length-delimited field on the wire: its tag and length."""
    head = bytearray([number << 3 | 2])
    while size > 0x7F:
        head.append(size & 0x7F | 0x80)
        size >>= 7
    head.append(size)
    return bytes(head)


def requested_outputs(request: Any, signature: Signature) -> tuple[str, ...]:
    """Names of the outputs the request asked for (all of them when it names none)."""
    if not request.outputs:
        return signature.output_names
    names = []
    for out in request.outputs:
        if signature.output(out.name) is None:
            raise InvalidArgument(
                f"unknown output '{out.name}'; the model returns: {', '.join(signature.output_names)}"
            )
        names.append(out.name)
    return tuple(names)


def encode_outputs(response: Any, outputs: Mapping[str, np.ndarray], signature: Signature) -> None:
    """Append `outputs` to a ModelInferResponse as raw (little-endian) contents. An array whose
    dtype disagrees with the output's declared datatype is a backend fault: Internal."""
    tensors = response.outputs
    raw = response.raw_output_contents
    for name, array in outputs.items():
        spec = signature.output(name)
        datatype = spec.datatype if spec is not None else datatype_of(array)
        tensor = tensors.add()
        tensor.name = name
        tensor.datatype = datatype
        tensor.shape.extend(array.shape)
        if datatype == "BYTES":
            raw.append(encode_bytes(array))
            continue
        raw.append(_raw_form(name, array, datatype).tobytes())
