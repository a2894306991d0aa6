"""What the inference service does, free of any transport: messages in, messages out.

The servicer (gateway/transport) turns gRPC calls into these methods and errors into statuses;
this module never imports grpc. It works on the protocol's protobuf messages directly, so a
request is decoded exactly once (raw tensors become NumPy views in gateway/tensors.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from . import __version__
from ._proto import inference_pb2 as pb
from ._proto import model_config_pb2 as mc
from .batching import BatchResult
from .errors import (
    FailedPrecondition,
    GatewayError,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from .registry import READY, Model, ModelVersion, Registry
from .routing import Route, TrafficPolicy
from .shadow import Mirror
from .telemetry import Metrics
from .telemetry.tracing import CALL, Trace
from .tensors import decode_inputs, encode_outputs, requested_outputs

__all__ = ["EXTENSIONS", "DataPlane"]

EXTENSIONS = ("model_configuration", "model_repository", "statistics")
PLATFORM = "onnxruntime_onnx"


ModelControl = Callable[[str, str], Awaitable[None]]
"""(op "load" | "unload", model) -> done in this process; raises the load's error."""

Answer = Callable[["pb.ModelInferResponse | None", "BaseException | None"], None]
"""How `DataPlane.begin` hands back a call's outcome: (response, None) or (None, error)."""


class _Call:
    """One inference call between admission and its answer."""

    __slots__ = (
        "arrays",
        "decoded",
        "mirrored",
        "names",
        "request",
        "revision",
        "route",
        "rows",
        "served",
        "size",
        "span",
        "start",
        "trace",
    )

    def __init__(
        self,
        request: pb.ModelInferRequest,
        served: ModelVersion,
        route: str,
        revision: int,
        size: int,
        trace: Trace | None,
        span: Any,
        start: int,
    ) -> None:
        self.request = request
        self.served = served
        self.route = route
        self.revision = revision
        self.size = size
        self.trace = trace
        self.span = span
        self.start = start
        self.decoded = start
        self.arrays: dict[str, Any] = {}
        self.names: tuple[str, ...] = ()
        self.rows = 1
        self.mirrored: asyncio.Future[Any] | None = None


class DataPlane:
    def __init__(
        self,
        registry: Registry,
        metrics: Metrics,
        model_control: ModelControl | None = None,
        max_inflight: int = 0,
        max_inflight_bytes: int = 0,
    ) -> None:
        """`model_control` carries RepositoryModelLoad/Unload to every serving process (the
        control plane's path); None refuses them."""
        self.registry = registry
        self._metrics = metrics
        self._model_control = model_control
        self._max_inflight = max_inflight or 1 << 62
        self._max_bytes = max_inflight_bytes  # 0: no budget
        self.accepting = False  # set by the server once every model is loaded, cleared on drain
        self.cut = 0  # calls cancelled while draining: the stop cut them
        self.forwards_trace = bool(registry.repository.remote)  # remote backends want traceparent
        self.mirror = Mirror(metrics)

    # -- server ------------------------------------------------------------------------------

    def server_ready(self) -> bool:
        return self.accepting and self.registry.all_ready()

    @staticmethod
    def server_metadata() -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name="modelgate", version=__version__, extensions=EXTENSIONS)

    # -- inference ---------------------------------------------------------------------------

    async def infer(
        self,
        request: pb.ModelInferRequest,
        deadline: float | None = None,
        metadata: Mapping[str, str] | None = None,
        size: int = 0,
        trace: Trace | None = None,
    ) -> pb.ModelInferResponse:
        """Serve one request. `deadline` is on the event loop's clock (None: no deadline); the
        request's parameters may add `priority` (1 = highest) and `timeout` (µs in the queue).
        `metadata` holds the call's sticky keys (`sticky_keys`), when it carries any; `size` is
        the request message's size on the wire (it counts toward `max_inflight_bytes`). `trace`:
        the call's trace (gateway/telemetry/tracing.py), when it is traced or forwarded."""
        call = self._admit(request, metadata, size, trace)
        try:
            result = await self._execute(call, deadline)
        except BaseException as exc:
            self._failed(call, exc)
            raise
        return self._answer(call, result)

    def begin(
        self,
        request: pb.ModelInferRequest,
        deadline: float | None,
        metadata: Mapping[str, str] | None,
        size: int,
        trace: Trace | None,
        done: Answer,
    ) -> asyncio.Future[Any]:
        """`infer` without a task per call, for a transport that takes calls in batches: admit,
        route and decode now (errors raise here, as from `infer`), queue the rows in the version's
        batcher, and call `done(response, None)` or `done(None, error)` when the batch has run.
        Every call of a batch the transport admits in one step lands in the batcher's queue
        before its scheduler wakes, so they share backend calls. Cancel the returned future to
        take the call back (its rows leave the queue; `done` gets the CancelledError)."""
        call = self._admit(request, metadata, size, trace)
        batcher = call.served.batcher
        if batcher is None:  # no batching: each call runs in its own task
            task = asyncio.get_running_loop().create_task(self._execute(call, deadline))
            task.add_done_callback(lambda t: self._settle(call, t, done))
            return task
        try:
            priority = 0
            if request.parameters:
                priority, deadline = _scheduling(request, deadline)
            ticket = batcher.enqueue(call.arrays, call.rows, deadline, priority, trace)
        except BaseException as exc:
            self._failed(call, exc)
            raise

        def settled(future: asyncio.Future[BatchResult]) -> None:
            batcher.release(ticket)
            self._settle(call, future, done)

        ticket.future.add_done_callback(settled)
        return ticket.future

    def _settle(self, call: _Call, future: asyncio.Future[BatchResult], done: Answer) -> None:
        error = asyncio.CancelledError() if future.cancelled() else future.exception()
        if error is not None:
            self._failed(call, error)
            done(None, error)
            return
        try:
            response = self._answer(call, future.result())
        except BaseException as exc:  # encoding failed (already counted)
            done(None, exc)
            return
        done(response, None)

    def _admit(
        self,
        request: pb.ModelInferRequest,
        metadata: Mapping[str, str] | None,
        size: int,
        trace: Trace | None,
    ) -> _Call:
        """Route a request, check the caps, decode its inputs: everything before its rows run.
        Errors are counted against the version they were routed to."""
        start = time.perf_counter_ns()
        model = self.registry.resolve(request.model_name)
        router = model.router
        if request.model_version:
            served, route = model.pinned(request.model_version), Route.PINNED
        else:
            chosen = router.choose(_sticky_key(router.policy, request, metadata) if router.sticky else None)
            if chosen is None:
                raise Unavailable(f"model '{model.name}': no version that takes traffic is ready")
            served, route = chosen
        stats = served.metrics
        stats.routes[route] = stats.routes.get(route, 0) + 1
        span = trace.span if trace is not None and trace.recording else None
        if span is not None:
            span.set_attributes(
                {
                    "modelgate.model": served.model,
                    "modelgate.version": served.version,
                    "modelgate.route": route,
                    "modelgate.policy_revision": router.revision,
                }
            )
        metrics = self._metrics
        if metrics.inflight >= self._max_inflight:
            stats.failed("RESOURCE_EXHAUSTED", 0)
            raise ResourceExhausted(f"{metrics.inflight} requests in flight: the gateway's cap")
        if self._max_bytes and metrics.inflight_bytes + size > self._max_bytes:
            stats.failed("RESOURCE_EXHAUSTED", 0)
            raise ResourceExhausted(
                f"{metrics.inflight_bytes} bytes of requests in flight and this one has {size}: "
                f"over the gateway's max_inflight_bytes ({self._max_bytes})"
            )
        metrics.inflight += 1
        metrics.inflight_bytes += size
        call = _Call(request, served, route, router.revision, size, trace, span, start)
        try:
            signature = served.signature
            arrays = call.arrays = decode_inputs(request, signature)
            call.names = requested_outputs(request, signature)
            call.rows = next(iter(arrays.values())).shape[0] if signature.max_batch_size and arrays else 1
            if router.shadows:
                call.mirrored = self.mirror.send(model, served, arrays, call.rows, call.names, trace)
        except BaseException as exc:
            self._failed(call, exc)
            raise
        call.decoded = time.perf_counter_ns()
        return call

    async def _execute(self, call: _Call, deadline: float | None) -> BatchResult:
        """Run a call's rows: in its version's batcher, or on its own."""
        served = call.served
        batcher = served.batcher
        if batcher is not None:
            request = call.request
            priority = 0
            if request.parameters:
                priority, deadline = _scheduling(request, deadline)
            return await batcher.submit(call.arrays, call.rows, deadline, priority, call.trace)
        trace = call.trace
        if trace is None:
            outputs = await served.run(call.arrays, call.names, deadline)
        else:  # the backend call belongs to this request's trace
            token = CALL.set(trace)
            try:
                outputs = await served.run(call.arrays, call.names, deadline)
            finally:
                CALL.reset(token)
        infer_ns = time.perf_counter_ns() - call.decoded
        served.metrics.executed(call.rows, infer_ns)
        return BatchResult(outputs, 0, infer_ns, call.rows)

    def _answer(self, call: _Call, result: BatchResult) -> pb.ModelInferResponse:
        """The response of a call whose rows ran; counted as a success."""
        inferred = time.perf_counter_ns()
        served, names = call.served, call.names
        outputs = result.outputs
        if len(names) != len(outputs):
            outputs = {n: outputs[n] for n in names}
        if call.mirrored is not None:
            call.mirrored.set_result(outputs)
        try:
            response = pb.ModelInferResponse(
                model_name=served.model, model_version=served.version, id=call.request.id
            )
            encode_outputs(response, outputs, served.signature)
            params = response.parameters
            params["route"].string_param = call.route
            params["policy_revision"].int64_param = call.revision
        except BaseException as exc:
            self._failed(call, exc)
            raise
        metrics = self._metrics
        metrics.inflight -= 1
        metrics.inflight_bytes -= call.size
        end = time.perf_counter_ns()
        start = call.start
        served.metrics.succeeded(
            call.rows, end - start, call.decoded - start, result.compute_ns, end - inferred, result.queue_ns
        )
        if call.span is not None:
            call.span.set_attributes(
                {
                    "modelgate.rows": call.rows,
                    "modelgate.batch_size": result.batch_rows,
                    "modelgate.queue_ms": result.queue_ns / 1e6,
                }
            )
        return response

    def _failed(self, call: _Call, exc: BaseException) -> None:
        """Count a call that ends without an answer and give back what it held."""
        stats = call.served.metrics
        elapsed = time.perf_counter_ns() - call.start
        if isinstance(exc, GatewayError):
            stats.failed(exc.code, elapsed)
        elif isinstance(exc, asyncio.CancelledError):  # the caller left, or a stop cut the call
            stats.failed("CANCELLED", elapsed)
            if not self.accepting:
                self.cut += 1
        else:
            stats.failed("INTERNAL", elapsed)
        metrics = self._metrics
        metrics.inflight -= 1
        metrics.inflight_bytes -= call.size
        if call.mirrored is not None and not call.mirrored.done():
            call.mirrored.set_result(None)  # the primary failed: nothing to compare

    @property
    def sticky_keys(self) -> frozenset[str]:
        """The metadata keys any model routes by (the transport passes only these)."""
        return self.registry.sticky_keys

    async def close(self) -> None:
        """Stop shadowing (copies in flight are cancelled: nobody waits for them)."""
        self.mirror.close()
        await self.mirror.settle()

    # -- models ------------------------------------------------------------------------------

    def model_ready(self, name: str, version: str) -> bool:
        try:
            self.registry.get(name, version)
        except GatewayError:
            return False
        return True

    def model_metadata(self, name: str, version: str) -> pb.ModelMetadataResponse:
        served = self.registry.get(name, version)
        model = self.registry.model(name)
        response = pb.ModelMetadataResponse(
            name=name,
            versions=sorted(model.versions, key=int),
            platform=model.config.platform or PLATFORM,
        )
        for spec in served.signature.inputs:
            response.inputs.add(name=spec.name, datatype=spec.datatype, shape=spec.shape)
        for spec in served.signature.outputs:
            response.outputs.add(name=spec.name, datatype=spec.datatype, shape=spec.shape)
        response.parameters["model_version"].string_param = served.version
        for key, value in served.backend.info.items():
            response.parameters[key].string_param = value
        return response

    def model_config(self, name: str, version: str) -> pb.ModelConfigResponse:
        self.registry.get(name, version)  # NOT_FOUND / UNAVAILABLE as for inference
        config = mc.ModelConfig()
        config.CopyFrom(self.registry.model(name).config)
        return pb.ModelConfigResponse(config=config)

    def model_statistics(self, name: str, version: str) -> pb.ModelStatisticsResponse:
        if name:
            models: Iterable[Model] = [self.registry.model(name)]
        else:
            if version:
                raise InvalidArgument("a version needs a model name")
            models = self.registry.models.values()
        response = pb.ModelStatisticsResponse()
        for model in models:
            versions = model.versions
            if version:
                if version not in versions:
                    raise NotFound(f"model '{model.name}' has no version '{version}'")
                versions = {version: versions[version]}
            for served in versions.values():
                _add_statistics(response, served)
        return response

    def repository_index(self, ready_only: bool) -> pb.RepositoryIndexResponse:
        response = pb.RepositoryIndexResponse()
        known = self.registry.models
        for name in sorted(set(known) | set(self.registry.repository.model_names())):
            model = known.get(name)
            if model is None:
                if not ready_only:
                    response.models.add(name=name, state="UNAVAILABLE", reason="not loaded")
                continue
            if model.state == READY:
                for v in sorted(model.versions, key=int):
                    response.models.add(name=name, version=v, state=READY)
                if not ready_only:  # versions that failed beside ones that serve (a broken canary)
                    for v, reason in sorted(model.failed.items(), key=lambda i: int(i[0])):
                        response.models.add(name=name, version=v, state="UNAVAILABLE", reason=reason)
            elif not ready_only:
                state = "UNAVAILABLE" if model.state == "FAILED" else model.state
                response.models.add(name=name, state=state, reason=model.reason)
        return response

    async def load_model(self, name: str) -> None:
        self.registry.repository.check_name(name)  # NOT_FOUND before anything is asked
        await self._control()("load", name)

    async def unload_model(self, name: str) -> None:
        self.registry.model(name)  # NOT_FOUND for a name never loaded
        await self._control()("unload", name)

    def _control(self) -> ModelControl:
        if self._model_control is None:
            raise FailedPrecondition(
                "model load/unload is disabled (start with --model-control-mode explicit)"
            )
        return self._model_control


def _scheduling(request: pb.ModelInferRequest, deadline: float | None) -> tuple[int, float | None]:
    """Triton's request parameters `priority` and `timeout` (µs): the priority level and the
    deadline, the earlier of the caller's and the timeout's."""
    params = request.parameters
    priority = 0
    if "priority" in params:
        priority = _int_param(params["priority"], "priority")
    if "timeout" in params:
        micros = _int_param(params["timeout"], "timeout")
        if micros > 0:
            at = asyncio.get_running_loop().time() + micros / 1e6
            deadline = at if deadline is None else min(deadline, at)
    return priority, deadline


def _sticky_key(
    policy: TrafficPolicy, request: pb.ModelInferRequest, metadata: Mapping[str, str] | None
) -> str | None:
    """The request's sticky key: a metadata value or a request parameter (any scalar type)."""
    if policy.sticky_metadata is not None:
        return metadata.get(policy.sticky_metadata) if metadata else None
    name = policy.sticky_parameter
    if name is None or not request.parameters or name not in request.parameters:
        return None
    param = request.parameters[name]
    which = param.WhichOneof("parameter_choice")
    return None if which is None else str(getattr(param, which))


def _int_param(param: pb.InferParameter, name: str) -> int:
    which = param.WhichOneof("parameter_choice")
    if which not in ("int64_param", "uint64_param"):
        raise InvalidArgument(f"parameter '{name}' must be an integer, got {which or 'nothing'}")
    value = int(getattr(param, which))
    if value < 0:
        raise InvalidArgument(f"parameter '{name}' must be >= 0, got {value}")
    return value


def _add_statistics(response: pb.ModelStatisticsResponse, served: ModelVersion) -> None:
    m = served.metrics
    entry = response.model_stats.add(
        name=served.model,
        version=served.version,
        last_inference=m.last_inference_ms,
        inference_count=m.inference_count,
        execution_count=m.execution_count,
    )
    s = entry.inference_stats
    s.success.count, s.success.ns = m.success_count, m.success_ns
    s.fail.count, s.fail.ns = m.fail_count, m.fail_ns
    s.queue.count, s.queue.ns = m.success_count, m.queue_ns
    s.compute_input.count, s.compute_input.ns = m.success_count, m.input_ns
    s.compute_infer.count, s.compute_infer.ns = m.success_count, m.infer_ns
    s.compute_output.count, s.compute_output.ns = m.success_count, m.output_ns
    for size, (count, ns) in sorted(m.batches.items()):
        b = entry.batch_stats.add(batch_size=size)
        b.compute_infer.count, b.compute_infer.ns = count, ns
