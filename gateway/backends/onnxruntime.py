"""ONNX Runtime, in-process: one InferenceSession per model version.

A session is created, checked against the model's config and warmed in `load`, which is blocking
and meant to run in a thread. `infer` runs small calls inline on the event loop, where a thread
hop would cost more than the call, and larger ones in the backend's own executor (ONNX Runtime
releases the GIL). Which one is decided per call from a cost model measured at warm-up
(`base + per_row x rows`), not from live timings: under load every call looks slow because the
cores are busy, and moving tiny calls to a thread then would only add to the load.

Each call's cost (gateway/telemetry/cost.py) is read in the thread that runs it: that thread's
CPU time and the wall time around `session.run`, and the wall time again as GPU time when the
CUDA provider runs the session. ONNX Runtime's intra-op pool threads (with more than one
intra-op thread) are not the calling thread: their CPU shows in the gateway's overhead instead.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._proto import model_config_pb2 as mc
from ..errors import Internal, InvalidArgument, LoadError
from ..telemetry.cost import COST, CallCost
from ..tensors import DATATYPES, Signature, TensorSpec, declared_specs

__all__ = ["OnnxRuntimeBackend", "OrtOptions"]

log = logging.getLogger(__name__)

_ORT_TYPES = {
    "tensor(bool)": "BOOL",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
    "tensor(bfloat16)": "BF16",
}
_WARM_RUNS = 5
_WARM_ROWS = 8  # the second warm-up batch, to estimate the cost of a row


@dataclass(frozen=True)
class OrtOptions:
    """How sessions are built. `providers` None picks CUDA when onnxruntime-gpu sees a GPU."""

    providers: tuple[str, ...] | None = None
    intra_op_threads: int = 1
    executor_threads: int = 1
    inline_below_us: float = 250.0
    default_max_batch_size: int = 64


def _pick_providers(wanted: tuple[str, ...] | None) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if wanted is None:
        return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    missing = [p for p in wanted if p not in available]
    if missing:
        raise LoadError(f"execution providers {missing} are not available (have {available})")
    return list(wanted)


def _dims(shape: Sequence[Any]) -> tuple[int, ...]:
    return tuple(d if isinstance(d, int) and d >= 0 else -1 for d in shape)


def _signature(session: Any, config: mc.ModelConfig, name: str, options: OrtOptions) -> Signature:
    """The version's signature: the config's when it declares inputs and outputs (checked against
    the ONNX graph), else derived from the graph."""
    graph_in = {i.name: (_ORT_TYPES.get(i.type, i.type), _dims(i.shape)) for i in session.get_inputs()}
    graph_out = {o.name: (_ORT_TYPES.get(o.type, o.type), _dims(o.shape)) for o in session.get_outputs()}
    batched_graph = all(dims and dims[0] == -1 for _, dims in (*graph_in.values(), *graph_out.values()))

    if config.input or config.output:
        declared_in, declared_out = declared_specs(config)

        def from_config(
            kind: str, declared: tuple[TensorSpec, ...], graph: dict[str, tuple[str, tuple[int, ...]]]
        ) -> tuple[TensorSpec, ...]:
            for spec in declared:
                if spec.name not in graph:
                    raise LoadError(
                        f"model '{name}': config {kind} '{spec.name}' is not in the ONNX graph "
                        f"(it has {', '.join(graph)})"
                    )
                graph_type, graph_dims = graph[spec.name]
                if spec.datatype != graph_type:
                    raise LoadError(
                        f"model '{name}': config {kind} '{spec.name}' is {spec.datatype}, "
                        f"the ONNX graph says {graph_type}"
                    )
                if len(spec.shape) != len(graph_dims) or any(
                    g != -1 and c != -1 and g != c for c, g in zip(spec.shape, graph_dims, strict=False)
                ):
                    raise LoadError(
                        f"model '{name}': config {kind} '{spec.name}' has shape {list(spec.shape)}, "
                        f"the ONNX graph has {list(graph_dims)}"
                    )
            return declared

        inputs = from_config("input", declared_in, graph_in)
        outputs = (
            from_config("output", declared_out, graph_out)
            if declared_out
            else tuple(TensorSpec(n, t, d) for n, (t, d) in graph_out.items())
        )
        missing = [n for n in graph_in if n not in {s.name for s in inputs}]
        if missing:
            raise LoadError(f"model '{name}': config.pbtxt does not declare ONNX input(s) {missing}")
        return Signature(inputs, outputs, config.max_batch_size)

    mbs = config.max_batch_size or (options.default_max_batch_size if batched_graph else 0)
    if mbs and not batched_graph:
        raise LoadError(
            f"model '{name}': max_batch_size {mbs} but the ONNX graph has a fixed first dimension"
        )

    def derive(graph: dict[str, tuple[str, tuple[int, ...]]]) -> tuple[TensorSpec, ...]:
        for tname, (dtype, _) in graph.items():
            if dtype not in DATATYPES:
                raise LoadError(f"model '{name}': tensor '{tname}' has unsupported type {dtype}")
        return tuple(TensorSpec(n, t, d) for n, (t, d) in graph.items())

    return Signature(derive(graph_in), derive(graph_out), mbs)


def _dummy(spec: TensorSpec, rows: int = 1) -> np.ndarray:
    shape = tuple(1 if d == -1 else d for d in spec.shape)
    if spec.shape and spec.shape[0] == -1:
        shape = (rows, *shape[1:])
    if spec.datatype == "BYTES":
        return np.full(shape, "", dtype=object)
    return np.zeros(shape, dtype=DATATYPES[spec.datatype].dtype)


class OnnxRuntimeBackend:
    """A loaded, warmed ONNX Runtime session serving one model version."""

    def __init__(self, session: Any, signature: Signature, info: dict[str, str], options: OrtOptions) -> None:
        self._session = session
        self.signature = signature
        self._info = info
        self._options = options
        self._bytes_inputs = frozenset(s.name for s in signature.inputs if s.datatype == "BYTES")
        self._executor = ThreadPoolExecutor(options.executor_threads, thread_name_prefix="ort")
        self.concurrency = options.executor_threads
        self._batched = signature.max_batch_size > 0
        self._inline_rows = 0  # calls of at most this many rows run inline (set by warm-up)
        self._on_gpu = info.get("providers", "").startswith("CUDAExecutionProvider")

    @property
    def info(self) -> Mapping[str, str]:
        return self._info

    def upstream(self) -> Mapping[str, Any]:
        return {}  # in process: nobody to call

    @classmethod
    def load(
        cls, path: Path, config: mc.ModelConfig, options: OrtOptions, digest: str = ""
    ) -> OnnxRuntimeBackend:
        """Create, check and warm a session. Blocking: run it in a thread."""
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = options.intra_op_threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        # Spinning intra-op threads would burn the cores the gRPC threads and the event loop need.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = _pick_providers(options.providers)
        try:
            session = ort.InferenceSession(str(path), sess_options=so, providers=providers)
        except Exception as exc:  # ORT raises its own untyped errors for bad graphs
            raise LoadError(f"model '{config.name}': onnxruntime cannot load {path.name}: {exc}") from None
        signature = _signature(session, config, config.name, options)
        info = {
            "providers": ",".join(session.get_providers()),
            "artifact_digest": digest,
            "intra_op_threads": str(options.intra_op_threads),
        }
        backend = cls(session, signature, info, options)
        backend._warm()
        return backend

    def _time_us(self, rows: int) -> float:
        feed = {s.name: _dummy(s, rows) for s in self.signature.inputs}
        names = list(self.signature.output_names)
        times = []
        for _ in range(_WARM_RUNS):
            start = time.perf_counter()
            self._session.run(names, feed)
            times.append((time.perf_counter() - start) * 1e6)
        return float(np.median(times[1:]))

    def _warm(self) -> None:
        """Run dummy batches (the first run allocates) and fit the inline cost model."""
        try:
            one = self._time_us(1)
            rows = min(_WARM_ROWS, self.signature.max_batch_size) if self._batched else 1
            per_row = max(0.0, (self._time_us(rows) - one) / (rows - 1)) if rows > 1 else 0.0
        except Exception as exc:
            raise LoadError(f"warm-up run failed: {exc}") from None
        limit = self._options.inline_below_us
        if one >= limit:
            self._inline_rows = 0
        elif not self._batched:
            self._inline_rows = 1
        else:
            self._inline_rows = 1 + int((limit - one) / per_row) if per_row else 1 << 62
        self._info["warm_us_per_call"] = f"{one:.0f}"
        self._info["inline_max_rows"] = str(min(self._inline_rows, self.signature.max_batch_size or 1))

    async def infer(
        self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str], deadline: float | None = None
    ) -> dict[str, np.ndarray]:
        feed: Mapping[str, np.ndarray] = inputs
        if self._bytes_inputs:
            feed = dict(inputs)
            for name in self._bytes_inputs & feed.keys():
                feed[name] = _to_str(name, feed[name])
        names = list(outputs)
        rows = next(iter(feed.values())).shape[0] if self._batched and feed else 1
        cost = COST.get() or CallCost()
        try:
            if rows <= self._inline_rows:
                result = self._run(cost, names, feed)
            else:
                loop = asyncio.get_running_loop()
                result = await loop.run_in_executor(self._executor, self._run, cost, names, feed)
        except Exception as exc:  # ORT's own untyped errors: the model failed on these inputs
            raise Internal(f"onnxruntime failed on this request: {exc}") from None
        return dict(zip(names, result, strict=True))

    def _run(self, cost: CallCost, names: list[str], feed: Mapping[str, np.ndarray]) -> list[Any]:
        """`session.run`, its CPU and wall time added to `cost`, in the thread that runs it (the
        event loop's, inline; an executor thread's otherwise)."""
        cpu, wall = time.thread_time_ns(), time.perf_counter_ns()
        try:
            result: list[Any] = self._session.run(names, feed)
        finally:
            wall = time.perf_counter_ns() - wall
            cost.cpu_ns += time.thread_time_ns() - cpu
            cost.wall_ns += wall
            if self._on_gpu:
                cost.gpu_ns += wall
        return result

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=False)


def _to_str(name: str, array: np.ndarray) -> np.ndarray:
    """ONNX string tensors are UTF-8: decode BYTES elements (ORT would str() a bytes object)."""
    out = np.empty(array.shape, dtype=object)
    flat = out.reshape(-1)
    try:
        for i, item in enumerate(array.reshape(-1)):
            flat[i] = item.decode("utf-8") if isinstance(item, bytes) else item
    except UnicodeDecodeError as exc:
        raise InvalidArgument(f"input '{name}': element is not UTF-8 text ({exc.reason})") from None
    return out


def default_intra_op_threads(workers: int) -> int:
    """Cores per worker less one for its transport (the event loop and gRPC's threads), so N
    workers do not oversubscribe the machine. On 2 cores, 2 threads ran a batched wide model at
    0.6x the speed of 1 (loadtests/bench_batching.py --gateway-intra-op-threads)."""
    return max(1, (os.cpu_count() or 1) // max(1, workers) - 1)
