"""What the inference service does, free of any transport: messages in, messages out.

The servicer (gateway/transport) turns gRPC calls into these methods and errors into statuses;
this module never imports grpc. It works on the protocol's protobuf messages directly, so a
request is decoded exactly once (raw tensors become NumPy views in gateway/tensors.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

from . import __version__
from ._proto import inference_pb2 as pb
from ._proto import model_config_pb2 as mc
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
from .tensors import decode_inputs, encode_outputs, requested_outputs

__all__ = ["EXTENSIONS", "DataPlane"]

EXTENSIONS = ("model_configuration", "model_repository", "statistics")
PLATFORM = "onnxruntime_onnx"


ModelControl = Callable[[str, str], Awaitable[None]]
"""(op "load" | "unload", model) -> done in this process; raises the load's error."""


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
        mirrored = None
        try:
            signature = served.signature
            arrays = decode_inputs(request, signature)
            names = requested_outputs(request, signature)
            rows = next(iter(arrays.values())).shape[0] if signature.max_batch_size and arrays else 1
            if router.shadows:
                mirrored = self.mirror.send(model, served, arrays, rows, names, trace)
            decoded = time.perf_counter_ns()
            batcher = served.batcher
            priority = 0
            want_cost = False
            if request.parameters:  # priority and the queue timeout matter only when queued
                priority, queue_deadline, want_cost = _scheduling(request, deadline)
                if batcher is not None:
                    deadline = queue_deadline
            if batcher is None:
                cost = CallCost()
                outputs = await _run_once(served, arrays, names, deadline, trace, cost)
                inferred = time.perf_counter_ns()
                queue_ns, infer_ns = 0, inferred - decoded
                batch_rows = rows
                stats.executed(rows, infer_ns, cost)
            else:
                result = await batcher.submit(arrays, rows, deadline, priority, trace)
                inferred = time.perf_counter_ns()
                outputs = (
                    result.outputs
                    if len(names) == len(result.outputs)
                    else {n: result.outputs[n] for n in names}
                )
                queue_ns, infer_ns, batch_rows = result.queue_ns, result.compute_ns, result.batch_rows
                cost = result.cost or CallCost()
            if mirrored is not None:
                mirrored.set_result(outputs)
            response = pb.ModelInferResponse(
                model_name=served.model, model_version=served.version, id=request.id
            )
            encode_outputs(response, outputs, signature)
            params = response.parameters
            params["route"].string_param = route
            params["policy_revision"].int64_param = router.revision
            if want_cost:
                _add_cost(params, cost, rows, batch_rows)
        except GatewayError as exc:
            stats.failed(exc.code, time.perf_counter_ns() - start)
            raise
        except asyncio.CancelledError:  # the caller left, or a stop cut the call
            stats.failed("CANCELLED", time.perf_counter_ns() - start)
            if not self.accepting:
                self.cut += 1
            raise
        except BaseException:
            stats.failed("INTERNAL", time.perf_counter_ns() - start)
            raise
        finally:
            metrics.inflight -= 1
            metrics.inflight_bytes -= size
            if mirrored is not None and not mirrored.done():
                mirrored.set_result(None)  # the primary failed: nothing to compare
        end = time.perf_counter_ns()
        stats.succeeded(rows, end - start, decoded - start, infer_ns, end - inferred, queue_ns)
        if span is not None:
            span.set_attributes(
                {
                    "modelgate.rows": rows,
                    "modelgate.batch_size": batch_rows,
                    "modelgate.queue_ms": queue_ns / 1e6,
                }
            )
        return response

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


def _scheduling(request: pb.ModelInferRequest, deadline: float | None) -> tuple[int, float | None, bool]:
    """Triton's request parameters `priority` and `timeout` (µs): the priority level and the
    deadline, the earlier of the caller's and the timeout's; and modelgate's `cost` (bool):
    whether the answer carries the request's cost."""
    params = request.parameters
    priority = 0
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
            at = asyncio.get_running_loop().time() + micros / 1e6
            deadline = at if deadline is None else min(deadline, at)
    return priority, deadline, want_cost


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
