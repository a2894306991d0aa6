"""What the inference service does, free of any transport: messages in, messages out.

The servicer (gateway/transport) turns gRPC calls into these methods and errors into statuses;
this module never imports grpc. It works on the protocol's protobuf messages directly, so a
request is decoded exactly once (raw tensors become NumPy views in gateway/tensors.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, overload

import numpy as np

from . import __version__
from ._proto import inference_pb2 as pb
from ._proto import model_config_pb2 as mc
from .batching import Batcher, BatchResult, Ticket
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
from .telemetry import STATISTICS, Metrics, fold
from .telemetry.cost import COST, CallCost
from .telemetry.tracing import CALL, Trace
from .tensors import (
    Signature,
    datatype_of,
    decode_inputs,
    encode_outputs,
    join_parts,
    raw_outputs,
    raw_parts,
    requested_outputs,
    wire_field,
    wire_head,
)
from .wire import WireRequest, input_parts

__all__ = ["EXTENSIONS", "DataPlane", "Handle", "Incoming", "Pending"]

EXTENSIONS = ("model_configuration", "model_repository", "statistics")
PLATFORM = "onnxruntime_onnx"


ModelControl = Callable[[str, str], Awaitable[None]]
"""(op "load" | "unload", model) -> done in this process; raises the load's error."""

Answer = Callable[["pb.ModelInferResponse | bytes | None", "BaseException | None"], None]
"""How `DataPlane.begin_batch` hands back a call's outcome: (response, None) or (None, error);
the response may come as its serialized bytes."""


Request = pb.ModelInferRequest | WireRequest
"""A request as the batch path gets it: parsed, or only read (gateway/wire.py)."""

_PER_CALL = ("priority", "timeout", "cost")
"""Request parameters that make a call take `begin_batch`'s per-call path."""

Incoming = tuple["Request", "float | None", "Mapping[str, str] | None", int, "Trace | None", Answer]
"""A call for `DataPlane.begin_batch`: the arguments of `infer` (request, deadline, metadata, size,
trace), and where its outcome goes."""


class Pending:
    """A call `begin_batch` queued: `task` completes when it is answered; `cancel()` takes it
    back. (The native front's drain and cancellation use exactly these members.)"""

    __slots__ = ("cancelled", "task")

    def __init__(self, task: asyncio.Future[Any]) -> None:
        self.task = task
        self.cancelled = False

    @property
    def live(self) -> bool:
        return not self.task.done()

    def cancel(self) -> None:
        self.cancelled = True
        self.task.cancel()


class _Call:
    """One inference call between admission and its answer."""

    __slots__ = (
        "arrays",
        "decoded",
        "mirrored",
        "names",
        "priority",
        "request",
        "revision",
        "route",
        "rows",
        "served",
        "size",
        "span",
        "start",
        "timeout_at",
        "trace",
        "want_cost",
    )

    def __init__(
        self,
        request: Request,
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
        self.priority = 0  # the request's parameters (_parameters)
        self.timeout_at: float | None = None
        self.want_cost = False


class DataPlane:
    def __init__(
        self,
        registry: Registry,
        metrics: Metrics,
        model_control: ModelControl | None = None,
        max_inflight: int = 0,
        max_inflight_bytes: int = 0,
        peers: Callable[[], Iterable[dict[str, Any]]] | None = None,
    ) -> None:
        """`model_control` carries RepositoryModelLoad/Unload to every serving process (the
        control plane's path); None refuses them. `peers` reads the other serving processes'
        snapshots (blocking: it runs in a thread), for ModelStatistics; None: this process is
        the only one."""
        self._peers = peers
        self.registry = registry
        self._metrics = metrics
        self._model_control = model_control
        self._max_inflight = max_inflight or 1 << 62
        self._max_bytes = max_inflight_bytes  # 0: no budget
        self.accepting = False  # set by the server once every model is loaded, cleared on drain
        self.cut = 0  # calls cancelled while draining: the stop cut them
        self.forwards_trace = bool(registry.repository.remote)  # remote backends want traceparent
        self.mirror = Mirror(metrics)
        self._templates: dict[tuple[Any, ...], tuple[bytes, bytes, bytes, list[bytes]]] = {}  # see _template

    # -- server ------------------------------------------------------------------------------

    def server_ready(self) -> bool:
        return self.accepting and self.registry.all_ready()

    @staticmethod
    def server_metadata() -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name="modelgate", version=__version__, extensions=EXTENSIONS)

    # -- inference ---------------------------------------------------------------------------

    @overload
    async def infer(
        self,
        request: Request,
        deadline: float | None = None,
        metadata: Mapping[str, str] | None = None,
        size: int = 0,
        trace: Trace | None = None,
        as_bytes: Literal[False] = False,
    ) -> pb.ModelInferResponse: ...

    @overload
    async def infer(
        self,
        request: Request,
        deadline: float | None,
        metadata: Mapping[str, str] | None,
        size: int,
        trace: Trace | None,
        as_bytes: bool,
    ) -> pb.ModelInferResponse | bytes: ...

    async def infer(
        self,
        request: Request,
        deadline: float | None = None,
        metadata: Mapping[str, str] | None = None,
        size: int = 0,
        trace: Trace | None = None,
        as_bytes: bool = False,
    ) -> pb.ModelInferResponse | bytes:
        """Serve one request. `deadline` is on the event loop's clock (None: no deadline); the
        request's parameters may add `priority` (1 = highest) and `timeout` (µs in the queue).
        `metadata` holds the call's sticky keys (`sticky_keys`), when it carries any; `size` is
        the request message's size on the wire (it counts toward `max_inflight_bytes`). `trace`:
        the call's trace (gateway/telemetry/tracing.py), when it is traced or forwarded.
        `as_bytes`: the response may come serialized (`_answer_bytes`), for a transport that
        sends it as it is."""
        call = self._admit(request, metadata, size, trace)
        try:
            result = await self._execute(call, deadline)
        except BaseException as exc:
            self._failed(call, exc)
            raise
        return self._answer_bytes(call, result) if as_bytes else self._answer(call, result)

    def begin_batch(self, calls: Sequence[Incoming]) -> list[Handle | None]:
        """Many calls at once, for a transport that takes them in batches (the native front):
        each is routed, admitted and queued now and answered through its `done` (response, None)
        or (None, error) once its rows have run; errors of admission are answered at once.

        Calls in the common form (every input raw and as the model declares it, none of the
        parameters `_PER_CALL`, not traced) that go to the same batched version are joined into
        one request of the batcher: one join per input instead of a decode per call, one queue
        entry, one wake-up. The rest are queued one by one, as `infer` does, without a task per
        call. Either way, every call of a batch lands in the batcher's queue before its scheduler
        runs, so they share backend calls. Returns for each call a handle to cancel it (its rows
        leave the queue), or None when it is already answered."""
        handles: list[Handle | None] = []
        groups: dict[ModelVersion, list[_Member]] = {}
        # A route that needs no draw (pinned, or the default) is the same for every call of a
        # batch that names the same model and version: decided once per batch, counted per call.
        lanes: dict[tuple[str, str], tuple[ModelVersion, str, Model]] = {}
        start = time.perf_counter_ns()  # every call of the batch has arrived by now
        for request, deadline, metadata, size, trace, done in calls:
            try:
                params = request.parameters
                if trace is not None or (params and any(name in params for name in _PER_CALL)):
                    call = self._admit(_parsed(request), metadata, size, trace)
                    handles.append(self._start(call, deadline, done))
                    continue
                lane = (request.model_name, request.model_version)
                routed = lanes.get(lane)
                if routed is None:
                    routed = self._route(request, metadata, None)
                    if routed[1] is Route.DEFAULT or routed[1] is Route.PINNED:
                        lanes[lane] = routed
                else:
                    routes = routed[0].metrics.routes
                    routes[routed[1]] += 1
                served, route, model = routed
                parts = None
                if served.batcher is not None and not model.router.shadows:
                    parts = raw_parts(*input_parts(request), served.signature)
                if parts is None:
                    call = self._admit_routed(_parsed(request), served, route, model, size, None, start)
                    handles.append(self._start(call, deadline, done))
                    continue
                call = self._admit_joined(request, served, route, model, size, parts[0], start)
                member = _Member(self, call, parts[1], deadline, done)
                members = groups.get(served)
                if members is None:
                    members = groups[served] = []
                members.append(member)
                handles.append(member)
            except BaseException as exc:
                done(None, exc)
                handles.append(None)
        for served, members in groups.items():
            self._queue_group(served, members)
        return [h if h is None or h.live else None for h in handles]

    def _queue_group(self, served: ModelVersion, members: list[_Member]) -> None:
        """Queue a version's joined calls, as few requests as its max_batch_size allows."""
        batcher = served.batcher
        assert batcher is not None
        limit = batcher.policy.max_batch_size
        chunk: list[_Member] = []
        rows = 0
        for member in members:
            if chunk and rows + member.call.rows > limit:
                _Group(batcher, served.signature, chunk, rows)
                chunk, rows = [], 0
            chunk.append(member)
            rows += member.call.rows
        _Group(batcher, served.signature, chunk, rows)

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

    def _start(self, call: _Call, deadline: float | None, done: Answer) -> Pending:
        """Queue one admitted call in its version's batcher (or run it in a task of its own when
        the version does not batch); `done` gets its outcome."""
        batcher = call.served.batcher
        if batcher is None:
            task = asyncio.get_running_loop().create_task(self._execute(call, deadline))
            task.add_done_callback(lambda t: self._settle(call, t, done))
            return Pending(task)
        try:
            deadline = _earlier(deadline, call.timeout_at)
            ticket = batcher.enqueue(call.arrays, call.rows, deadline, call.priority, call.trace)
        except BaseException as exc:
            self._failed(call, exc)
            raise

        def settled(future: asyncio.Future[BatchResult]) -> None:
            batcher.release(ticket)
            self._settle(call, future, done)

        ticket.future.add_done_callback(settled)
        return Pending(ticket.future)

    def _admit(
        self,
        request: Request,
        metadata: Mapping[str, str] | None,
        size: int,
        trace: Trace | None,
    ) -> _Call:
        """Route a request, check the caps, decode its inputs: everything before its rows run.
        Errors are counted against the version they were routed to."""
        start = time.perf_counter_ns()
        served, route, model = self._route(request, metadata, trace)
        return self._admit_routed(request, served, route, model, size, trace, start)

    def _route(
        self, request: Request, metadata: Mapping[str, str] | None, trace: Trace | None
    ) -> tuple[ModelVersion, str, Model]:
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
        if trace is not None and trace.recording and trace.span is not None:
            trace.span.set_attributes(
                {
                    "modelgate.model": served.model,
                    "modelgate.version": served.version,
                    "modelgate.route": route,
                    "modelgate.policy_revision": router.revision,
                }
            )
        return served, route, model

    def _admit_routed(
        self,
        request: Request,
        served: ModelVersion,
        route: str,
        model: Model,
        size: int,
        trace: Trace | None,
        start: int,
    ) -> _Call:
        router = model.router
        span = trace.span if trace is not None and trace.recording else None
        call = _Call(request, served, route, router.revision, size, trace, span, start)
        self._hold(call)
        try:
            signature = served.signature
            arrays = call.arrays = _decoded(request, signature)
            call.names = requested_outputs(request, signature)
            call.rows = next(iter(arrays.values())).shape[0] if signature.max_batch_size and arrays else 1
            if request.parameters:
                call.priority, call.timeout_at, call.want_cost = _parameters(_parsed(request))
            if router.shadows:
                call.mirrored = self.mirror.send(model, served, arrays, call.rows, call.names, trace)
        except BaseException as exc:
            self._failed(call, exc)
            raise
        call.decoded = time.perf_counter_ns()
        return call

    def _admit_joined(
        self,
        request: Request,
        served: ModelVersion,
        route: str,
        model: Model,
        size: int,
        rows: int,
        start: int,
    ) -> _Call:
        """`_admit_routed` for a call in the common form (`raw_parts`): its inputs are joined with
        others' later, never decoded on their own."""
        call = _Call(request, served, route, model.router.revision, size, None, None, start)
        self._hold(call)
        call.rows = rows
        call.names = served.signature.output_names
        if request.outputs:
            try:
                call.names = requested_outputs(request, served.signature)
            except BaseException as exc:
                self._failed(call, exc)
                raise
        call.decoded = time.perf_counter_ns()
        return call

    def _hold(self, call: _Call) -> None:
        """Count a call in flight, within the gateway's caps (RESOURCE_EXHAUSTED beyond them)."""
        metrics = self._metrics
        size = call.size
        if metrics.inflight >= self._max_inflight:
            call.served.metrics.failed("RESOURCE_EXHAUSTED", 0)
            raise ResourceExhausted(f"{metrics.inflight} requests in flight: the gateway's cap")
        if self._max_bytes and metrics.inflight_bytes + size > self._max_bytes:
            call.served.metrics.failed("RESOURCE_EXHAUSTED", 0)
            raise ResourceExhausted(
                f"{metrics.inflight_bytes} bytes of requests in flight and this one has {size}: "
                f"over the gateway's max_inflight_bytes ({self._max_bytes})"
            )
        metrics.inflight += 1
        metrics.inflight_bytes += size

    async def _execute(self, call: _Call, deadline: float | None) -> BatchResult:
        """Run a call's rows: in its version's batcher, or on its own."""
        served = call.served
        batcher = served.batcher
        if batcher is not None:
            deadline = _earlier(deadline, call.timeout_at)
            return await batcher.submit(call.arrays, call.rows, deadline, call.priority, call.trace)
        cost = CallCost()
        outputs = await _run_once(served, call.arrays, call.names, deadline, call.trace, cost)
        infer_ns = time.perf_counter_ns() - call.decoded
        served.metrics.executed(call.rows, infer_ns, cost)
        return BatchResult(outputs, 0, infer_ns, call.rows, cost)

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
            if call.want_cost:
                _add_cost(params, result.cost or CallCost(), call.rows, result.batch_rows)
        except BaseException as exc:
            self._failed(call, exc)
            raise
        self._succeeded(call, result, inferred)
        return response

    def _answer_bytes(self, call: _Call, result: BatchResult) -> pb.ModelInferResponse | bytes:
        """`_answer` as the response's bytes, cut as the batch path cuts them (`_Cuts`): for a
        batched version whose outputs are all raw, when the call asks for no cost and is not
        mirrored. Otherwise, or if an output does not fit, `_answer`."""
        served = call.served
        if call.want_cost or call.mirrored is not None or not served.signature.max_batch_size:
            return self._answer(call, result)
        inferred = time.perf_counter_ns()
        try:
            arrays = raw_outputs(result.outputs, call.names, served.signature)
        except GatewayError:  # a backend fault: `_answer` says so and counts it
            arrays = None
        if arrays is None:
            return self._answer(call, result)
        data = _Cuts(self, arrays).cut(call, 0)
        self._succeeded(call, result, inferred)
        return data

    def _succeeded(self, call: _Call, result: BatchResult, inferred: int) -> None:
        """Count a call answered (`inferred`: when its encoding began) and give back what it held."""
        metrics = self._metrics
        metrics.inflight -= 1
        metrics.inflight_bytes -= call.size
        end = time.perf_counter_ns()
        start = call.start
        call.served.metrics.succeeded(
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

    def _succeeded_together(self, calls: list[_Call], result: BatchResult, inferred: int) -> None:
        """`_succeeded` for calls of one version answered at once (none traced)."""
        metrics = self._metrics
        metrics.inflight -= len(calls)
        end = time.perf_counter_ns()
        rows = size = input_ns = 0
        totals = []
        for call in calls:
            start = call.start
            rows += call.rows
            size += call.size
            input_ns += call.decoded - start
            totals.append(end - start)
        metrics.inflight_bytes -= size
        calls[0].served.metrics.succeeded_together(
            rows, totals, input_ns, result.compute_ns, (end - inferred) * len(calls), result.queue_ns
        )

    def _template(self, call: _Call, cuts: _Cuts) -> tuple[bytes, bytes, bytes, list[bytes]]:
        """What every answer cut for a call of this version, route, revision, output selection
        and row count from outputs of these shapes shares (`_Cuts`): the response's bytes
        before its id (head) and after it (tail), each output's field head, and head + tail
        for a call with no id; with a single output (the common case) the tail ends with its
        field head. Made once, then cut per call."""
        rows = call.rows
        key = (call.served, call.route, call.revision, call.names, rows, cuts.shapes, cuts.row_bytes)
        found = self._templates.get(key)
        if found is not None:
            return found
        served = call.served
        head = pb.ModelInferResponse(model_name=served.model, model_version=served.version)
        message = pb.ModelInferResponse()
        for name, array, shape in zip(call.names, cuts.arrays, cuts.shapes, strict=True):
            spec = served.signature.output(name)
            datatype = spec.datatype if spec is not None else datatype_of(array)
            message.outputs.add(name=name, datatype=datatype, shape=[rows, *shape])
        message.parameters["route"].string_param = call.route
        message.parameters["policy_revision"].int64_param = call.revision
        before, tail = head.SerializeToString(), message.SerializeToString()
        heads = [wire_head(6, rows * n) for n in cuts.row_bytes]
        if len(heads) == 1:
            tail += heads[0]
        if len(self._templates) >= 1024:  # revisions and row counts come and go
            self._templates.clear()
        found = self._templates[key] = (before + tail, before, tail, heads)
        return found

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

    async def model_statistics(self, name: str, version: str) -> pb.ModelStatisticsResponse:
        """Each version's counters: this process's as they are now, plus, with `--workers N`,
        the other workers' latest snapshots and the dead ones' retired sum (`peers`), so that
        every worker answers the same totals /metrics shows."""
        if name:
            models: Iterable[Model] = [self.registry.model(name)]
        else:
            if version:
                raise InvalidArgument("a version needs a model name")
            models = self.registry.models.values()
        chosen: list[ModelVersion] = []
        for model in models:
            versions = model.versions
            if version:
                if version not in versions:
                    raise NotFound(f"model '{model.name}' has no version '{version}'")
                versions = {version: versions[version]}
            chosen.extend(versions.values())
        others = await asyncio.to_thread(_sum_versions, self._peers) if self._peers else {}
        response = pb.ModelStatisticsResponse()
        for served in chosen:
            own = served.metrics.statistics()
            _add_statistics(response, fold(own, others.get((served.model, served.version))))
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


async def _run_once(
    served: ModelVersion,
    arrays: Mapping[str, Any],
    names: Sequence[str],
    deadline: float | None,
    trace: Trace | None,
    cost: CallCost,
) -> dict[str, Any]:
    """An unbatched backend call, its cost in `cost`, in the request's trace when it has one."""
    cost_token = COST.set(cost)
    call_token = CALL.set(trace) if trace is not None else None
    try:
        return await served.run(arrays, names, deadline)
    finally:
        if call_token is not None:
            CALL.reset(call_token)
        COST.reset(cost_token)


def _add_cost(params: Any, cost: CallCost, rows: int, batch_rows: int) -> None:
    """The request's share of its backend call (its rows over the batch's), in µs, unrounded:
    asked for with the request parameter `cost: true`. GPU time and `cost_cpu_measured` (false)
    only when they say something: each parameter costs the answer most of a microsecond."""
    cpu_us, wall_us, gpu_us = cost.share(rows, batch_rows)
    params["cost_us"].double_param = cpu_us
    params["cost_wall_us"].double_param = wall_us
    if gpu_us:
        params["cost_gpu_us"].double_param = gpu_us
    if not cost.cpu_measured:
        params["cost_cpu_measured"].bool_param = False


def _parameters(request: pb.ModelInferRequest) -> tuple[int, float | None, bool]:
    """Triton's request parameters `priority` and `timeout` (µs in the queue): the priority level
    and when the timeout ends (on the loop's clock; None: none); and modelgate's `cost` (bool):
    whether the answer carries the request's cost."""
    params = request.parameters
    priority = 0
    timeout_at = None
    want_cost = False
    if "cost" in params:
        param = params["cost"]
        which = param.WhichOneof("parameter_choice")
        if which != "bool_param":
            raise InvalidArgument(f"parameter 'cost' must be a bool, got {which or 'nothing'}")
        want_cost = param.bool_param
    if "priority" in params:
        priority = _int_param(params["priority"], "priority")
    if "timeout" in params:
        micros = _int_param(params["timeout"], "timeout")
        if micros > 0:
            timeout_at = asyncio.get_running_loop().time() + micros / 1e6
    return priority, timeout_at, want_cost


def _earlier(deadline: float | None, other: float | None) -> float | None:
    if other is None:
        return deadline
    return other if deadline is None else min(deadline, other)


def _sticky_key(policy: TrafficPolicy, request: Request, metadata: Mapping[str, str] | None) -> str | None:
    """The request's sticky key: a metadata value or a request parameter (any scalar type)."""
    if policy.sticky_metadata is not None:
        return metadata.get(policy.sticky_metadata) if metadata else None
    name = policy.sticky_parameter
    if name is None or not request.parameters or name not in request.parameters:
        return None
    param = request.parameters[name]
    which = param.WhichOneof("parameter_choice")
    return None if which is None else str(getattr(param, which))


def _decoded(request: Request, signature: Signature) -> dict[str, np.ndarray]:
    """A request's inputs as arrays: one read off the wire in the common form is cut into its
    raw parts (each header known by its bytes) rather than parsed and decoded field by field."""
    if request.__class__ is WireRequest:
        parts = raw_parts(request.headers, request.contents, signature)
        if parts is not None:
            return join_parts((parts[1],), parts[0], signature)
        request = request.parse()  # decode_inputs says what is wrong
    return decode_inputs(request, signature)


def _parsed(request: Request) -> pb.ModelInferRequest:
    """The whole message of a request the batch path cannot join."""
    return request.parse() if request.__class__ is WireRequest else request  # type: ignore[return-value]


def _int_param(param: pb.InferParameter, name: str) -> int:
    which = param.WhichOneof("parameter_choice")
    if which not in ("int64_param", "uint64_param"):
        raise InvalidArgument(f"parameter '{name}' must be an integer, got {which or 'nothing'}")
    value = int(getattr(param, which))
    if value < 0:
        raise InvalidArgument(f"parameter '{name}' must be >= 0, got {value}")
    return value


def _sum_versions(
    read: Callable[[], Iterable[dict[str, Any]]],
) -> dict[tuple[str, str], dict[str, Any]]:
    """The versions' counters of the snapshots `read` reads (in a thread), summed per (model,
    version)."""
    summed: dict[tuple[str, str], dict[str, Any]] = {}
    for snap in read():
        for v in snap.get("versions", ()):
            key = (v["model"], v["version"])
            summed[key] = fold(summed.get(key), {k: v[k] for k in STATISTICS if k in v})
    return summed


def _add_statistics(response: pb.ModelStatisticsResponse, m: dict[str, Any]) -> None:
    """One version's entry, from its counters (`VersionMetrics.statistics()`, maybe summed)."""
    ok = m["ok"]
    entry = response.model_stats.add(
        name=m["model"],
        version=m["version"],
        last_inference=m["last_ms"],
        inference_count=m["rows"],
        execution_count=m["executions"],
    )
    s = entry.inference_stats
    s.success.count, s.success.ns = ok, m["ok_ns"]
    s.fail.count, s.fail.ns = sum(m["failures"].values()), m["fail_ns"]
    s.queue.count, s.queue.ns = ok, m["queue_ns"]
    s.compute_input.count, s.compute_input.ns = ok, m["input_ns"]
    s.compute_infer.count, s.compute_infer.ns = ok, m["infer_ns"]
    s.compute_output.count, s.compute_output.ns = ok, m["output_ns"]
    for size, (count, ns) in sorted(m["batches"].items(), key=lambda i: int(i[0])):
        b = entry.batch_stats.add(batch_size=int(size))
        b.compute_infer.count, b.compute_infer.ns = count, ns


class _Group:
    """Calls joined into one request of a batcher (`DataPlane.begin_batch`): their rows in one
    array per input, answered from one future. A call cancelled while the group is queued takes
    its rows out; one cancelled while it runs is just not answered."""

    __slots__ = ("batcher", "future", "members", "signature", "ticket")

    def __init__(self, batcher: Batcher, signature: Signature, members: list[_Member], rows: int) -> None:
        self.batcher = batcher
        self.signature = signature
        self.members = members
        deadlines = [m.deadline for m in members]
        # Each call's own deadline is the front's to enforce (it cancels the call, which leaves
        # the group); the group's is the latest of them.
        deadline = None if None in deadlines else max(d for d in deadlines if d is not None)
        self.ticket: Ticket | None = None
        self.future: asyncio.Future[BatchResult]
        try:
            inputs = join_parts([m.parts for m in members], rows, signature)
            if batcher.idle(rows):  # one client at a time: straight to the backend, as `infer`
                self.future = batcher.start_alone(inputs, rows, deadline)
            else:
                self.ticket = batcher.enqueue(inputs, rows, deadline)
                self.future = self.ticket.future
        except BaseException as exc:
            for member in members:
                member.fail(exc)
            return
        for member in members:
            member.group = self
        self.future.add_done_callback(self._settled)

    def _settled(self, future: asyncio.Future[BatchResult]) -> None:
        if self.ticket is not None:
            self.batcher.release(self.ticket)
        try:
            self._answer_all(future)
        finally:
            # Each member points back at its group: dropping the list lets reference counting
            # free the calls at once, not the cyclic collector later (loadtests/README.md).
            self.members = []

    def _answer_all(self, future: asyncio.Future[BatchResult]) -> None:
        error = asyncio.CancelledError() if future.cancelled() else future.exception()
        if error is not None:
            for member in self.members:
                if member.live:
                    member.fail(error)
            return
        result = future.result()
        outputs = result.outputs
        try:
            names = self.members[0].call.names
            same = all(m.call.names == names for m in self.members)
            arrays = raw_outputs(outputs, names, self.signature) if same else None
        except BaseException as exc:  # the backend answered what the model does not declare
            for member in self.members:
                if member.live:
                    member.fail(exc)
            return
        if arrays is not None:
            self._answer_raw(result, arrays)
            return
        offset = 0
        for member in self.members:
            rows = member.call.rows
            if member.live:
                end = offset + rows
                slices = {n: a[offset:end] for n, a in outputs.items()}
                member.answer(BatchResult(slices, result.queue_ns, result.compute_ns, result.batch_rows))
            offset += rows

    def _answer_raw(self, result: BatchResult, arrays: list[np.ndarray]) -> None:
        """Answer the live members with bytes cut from the batch's raw outputs (`_Cuts`). Each
        answer goes out as soon as it is cut (the front writes it on its own threads while the
        rest are cut); the answered calls are then counted in one step
        (`VersionMetrics.succeeded_together`)."""
        inferred = time.perf_counter_ns()
        members = self.members
        dp = members[0].dp
        cuts = _Cuts(dp, arrays)
        answered: list[_Call] = []
        offset = 0
        try:
            for member in members:
                call = member.call
                if member.live:
                    try:
                        data = cuts.cut(call, offset)
                    except BaseException as exc:  # an output the response cannot hold
                        member.fail(exc)
                    else:
                        member.live = False
                        answered.append(call)
                        member.done(data, None)
                offset += call.rows
        finally:
            if answered:
                dp._succeeded_together(answered, result, inferred)

    def leave(self, member: _Member) -> None:
        """A member was cancelled: while queued, its rows leave the batch."""
        ticket = self.ticket  # None: the group went straight to the backend
        if ticket is None or not ticket.queued or ticket.future.done():
            return
        self.members.remove(member)
        if not self.members:
            ticket.future.cancel()
            return
        rows = sum(m.call.rows for m in self.members)
        self.batcher.resize(ticket, join_parts([m.parts for m in self.members], rows, self.signature), rows)


class _Cuts:
    """Answers as bytes, cut from one result's raw outputs (`raw_outputs`) for the calls whose
    rows they hold: each is its version's template for the call's route, revision and row count
    (`DataPlane._template`) around the call's id and its rows of each output, the message
    `DataPlane._answer` would build, without building it. The per-call path cuts one answer
    (`_answer_bytes`), the batch path a group's (`_Group._answer_raw`)."""

    __slots__ = ("arrays", "blobs", "dp", "made", "row_bytes", "shapes")

    def __init__(self, dp: DataPlane, arrays: list[np.ndarray]) -> None:
        self.dp = dp
        self.arrays = arrays
        self.blobs = [a.tobytes() for a in arrays]
        self.row_bytes = tuple([a.strides[0] if a.ndim else 0 for a in arrays])
        self.shapes = tuple([a.shape[1:] for a in arrays])
        # the templates of the few kinds of call (route, revision, rows) one result answers
        self.made: dict[tuple[str, int, int], tuple[bytes, bytes, bytes, list[bytes]]] = {}

    def cut(self, call: _Call, offset: int) -> bytes:
        """The answer of `call`, whose rows start at row `offset` of the outputs."""
        rows = call.rows
        key = (call.route, call.revision, rows)
        made = self.made.get(key)
        if made is None:
            made = self.made[key] = self.dp._template(call, self)
        whole, head, tail, heads = made
        request_id = call.request.id
        if len(heads) == 1:
            n = self.row_bytes[0]
            mine = self.blobs[0][offset * n : (offset + rows) * n]  # all of it: the same object
            if request_id:
                return b"".join((head, wire_field(3, request_id.encode()), tail, mine))
            return whole + mine
        parts = [head, wire_field(3, request_id.encode()) if request_id else b"", tail]
        for blob, field_head, n in zip(self.blobs, heads, self.row_bytes, strict=True):
            parts += (field_head, blob[offset * n : (offset + rows) * n])
        return b"".join(parts)


class _Member:
    """One call of a `_Group`; its handle for the transport (as `Pending`)."""

    __slots__ = ("call", "cancelled", "deadline", "done", "dp", "group", "live", "parts")

    def __init__(
        self, dp: DataPlane, call: _Call, parts: tuple[bytes, ...], deadline: float | None, done: Answer
    ) -> None:
        self.dp = dp
        self.call = call
        self.parts = parts
        self.deadline = deadline
        self.done = done
        self.group: _Group | None = None
        self.live = True
        self.cancelled = False

    @property
    def task(self) -> asyncio.Future[Any]:
        group = self.group
        if group is None:  # never queued: answered already
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            future.set_result(None)
            return future
        return group.future

    def cancel(self) -> None:
        self.cancelled = True
        if self.live:
            if self.group is not None:
                self.group.leave(self)
            self.fail(asyncio.CancelledError())

    def fail(self, error: BaseException) -> None:
        self.live = False
        self.dp._failed(self.call, error)
        self.done(None, error)

    def answer(self, result: BatchResult) -> None:
        self.live = False
        try:
            response = self.dp._answer(self.call, result)
        except BaseException as exc:  # encoding failed (already counted)
            self.done(None, exc)
            return
        self.done(response, None)


Handle = Pending | _Member
"""What `begin_batch` returns for a queued call: `task` completes when it is answered,
`cancel()` takes it back."""
