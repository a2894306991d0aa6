"""Versions served by remote Triton (or any KServe v2 gRPC) servers.

- One persistent grpc.aio channel per endpoint (keepalive, the gateway's message-size limit),
  called through modelgate's own stubs: against the same server they did 1.17x the calls/s of
  tritonclient.grpc.aio at 16 in flight, with 20% less client CPU per call, since tritonclient
  wraps every call in its own Python objects (loadtests/bench_triton_client.py).
- Inputs go out as raw contents, outputs come back as raw contents and become NumPy views.
- Balancing: least outstanding requests among healthy endpoints.
- Health: every `probe_interval_s` each endpoint is asked ServerReady and ModelReady. An endpoint
  is ejected after `eject_after_failures` consecutive failures (calls or probes) and readmitted
  on its first good probe. With every endpoint ejected a call fails at once (UNAVAILABLE).
- The caller's remaining deadline becomes the remote call's timeout; a cancelled caller
  cancels the remote call. Only an UNAVAILABLE call made while its channel was not connected
  (so it never reached a server) is retried, on another endpoint, within a retry budget.
- Trace context (gateway/telemetry/tracing.py) is forwarded: with tracing on, that of a client
  span made for the call (under the batch's span); off, the caller's `traceparent` as it came.
- Cost: each call's wall time; its CPU is the remote server's, not measured here.
- At load, the remote model's metadata and config give the signature; a config.pbtxt in the
  gateway's repository that disagrees with it fails the load with a message naming the tensor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from opentelemetry.trace import SpanKind

from .._proto import inference_pb2 as pb
from .._proto import inference_pb2_grpc as pb_grpc
from .._proto import model_config_pb2 as mc
from ..errors import (
    DeadlineExceeded,
    GatewayError,
    Internal,
    InvalidArgument,
    LoadError,
    NotFound,
    Unavailable,
)
from ..repository import RemoteVersion
from ..telemetry.cost import COST
from ..telemetry.tracing import CALL, SERVICE, Trace
from ..tensors import DATATYPES, Signature, TensorSpec, declared_specs, decode_bytes, encode_bytes

__all__ = ["TritonBackend", "TritonOptions"]

log = logging.getLogger(__name__)

_PASS_THROUGH = {  # remote statuses that say something about the request, not the endpoint
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
}


@dataclass(frozen=True)
class TritonOptions:
    max_message_bytes: int = 64 * 1024 * 1024
    eject_after_failures: int = 3
    probe_interval_s: float = 1.0
    connect_timeout_s: float = 10.0
    retry_budget: float = 0.1


class _Endpoint:
    __slots__ = ("address", "calls", "channel", "ejected", "ejections", "failures", "outstanding", "stub")

    def __init__(self, address: str, options: TritonOptions) -> None:
        self.address = address
        self.channel = grpc.aio.insecure_channel(
            address,
            options=[
                ("grpc.max_receive_message_length", options.max_message_bytes),
                ("grpc.max_send_message_length", options.max_message_bytes),
                ("grpc.keepalive_time_ms", 10_000),
                ("grpc.keepalive_timeout_ms", 5_000),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.max_pings_without_data", 0),
                ("grpc.initial_reconnect_backoff_ms", 200),
                ("grpc.max_reconnect_backoff_ms", 2_000),
                ("grpc.enable_retries", 0),  # retries are decided here, within a budget
            ],
        )
        self.stub = pb_grpc.GRPCInferenceServiceStub(self.channel)
        self.outstanding = 0
        self.failures = 0
        self.ejected = False
        self.ejections = 0
        self.calls: dict[str, int] = {}  # inference calls by gRPC status code

    def count(self, code: str) -> None:
        self.calls[code] = self.calls.get(code, 0) + 1


class _RetryBudget:
    """Token bucket: each call earns `ratio` of a retry, and 3 more trickle in each second."""

    def __init__(self, ratio: float, per_second: float = 3.0, cap: float = 10.0) -> None:
        self._ratio = ratio
        self._per_second = per_second
        self._cap = cap
        self._tokens = cap
        self._at = time.monotonic()

    def earn(self) -> None:
        self._tokens = min(self._cap, self._tokens + self._ratio)

    def spend(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self._cap, self._tokens + (now - self._at) * self._per_second)
        self._at = now
        if self._tokens >= 1 - 1e-9:  # ten earnings of 0.1 add up to 0.9999999999999999
            self._tokens = max(0.0, self._tokens - 1)
            return True
        return False


def _spec(t: Any) -> TensorSpec:
    return TensorSpec(t.name, t.datatype, tuple(int(d) for d in t.shape))


def _check_against_config(name: str, config: mc.ModelConfig, signature: Signature, where: str) -> None:
    """A config.pbtxt in the gateway's repository states what the model must look like."""
    declared_in, declared_out = declared_specs(config)
    for kind, declared, actual in (
        ("input", declared_in, signature.input),
        ("output", declared_out, signature.output),
    ):
        for want in declared:
            got = actual(want.name)
            if got is None:
                raise LoadError(
                    f"model '{name}': config.pbtxt expects {kind} '{want.name}', {where} has none"
                )
            if (got.datatype, got.shape) != (want.datatype, want.shape):
                raise LoadError(
                    f"model '{name}': config.pbtxt expects {kind} '{want.name}' {want.describe()}, "
                    f"{where} has {got.describe()}"
                )
    if config.input and config.max_batch_size != signature.max_batch_size:
        raise LoadError(
            f"model '{name}': config.pbtxt says max_batch_size {config.max_batch_size}, "
            f"{where} says {signature.max_batch_size}"
        )


class TritonBackend:
    def __init__(
        self,
        label: str,
        remote: RemoteVersion,
        model: str,
        signature: Signature,
        endpoints: list[_Endpoint],
        options: TritonOptions,
    ) -> None:
        self.signature = signature
        self._label = label
        self._model = model
        self._version = remote.model_version
        self._endpoints = endpoints
        self._options = options
        self._budget = _RetryBudget(options.retry_budget)
        self._retries = 0
        self._datatypes = {s.name: s.datatype for s in signature.inputs}
        self._next = 0
        self.concurrency = len(endpoints)  # one batch in flight per endpoint: the rest gather
        self._info = {
            "backend": "triton",
            "endpoints": ",".join(remote.endpoints),
            "remote_model": f"{model}:{remote.model_version or 'default'}",
            "artifact_digest": f"triton://{model}/{remote.model_version or 'default'}",
        }
        self._prober: asyncio.Task[None] | None = None

    @property
    def info(self) -> Mapping[str, str]:
        return self._info

    def upstream(self) -> dict[str, Any]:
        """Retries and each endpoint's state and counters, for /metrics (a reload starts them
        again, as a restart would)."""
        return {
            "retries": self._retries,
            "endpoints": [
                {
                    "endpoint": ep.address,
                    "calls": dict(ep.calls),
                    "ejections": ep.ejections,
                    "ejected": int(ep.ejected),
                    "outstanding": ep.outstanding,
                }
                for ep in self._endpoints
            ],
        }

    @classmethod
    async def connect(
        cls, name: str, version: str, remote: RemoteVersion, config: mc.ModelConfig, options: TritonOptions
    ) -> TritonBackend:
        """Open the channels, read the remote model's signature, check it against the config."""
        endpoints = [_Endpoint(address, options) for address in remote.endpoints]
        model = remote.model or name
        label = f"{name}/{version}"
        errors = []
        try:
            for ep in endpoints:
                try:
                    meta = await ep.stub.ModelMetadata(
                        pb.ModelMetadataRequest(name=model, version=remote.model_version),
                        timeout=options.connect_timeout_s,
                    )
                    remote_config = await ep.stub.ModelConfig(
                        pb.ModelConfigRequest(name=model, version=remote.model_version),
                        timeout=options.connect_timeout_s,
                    )
                    break
                except grpc.aio.AioRpcError as exc:
                    errors.append(f"{ep.address}: {exc.code().name}: {exc.details()}")
            else:
                raise LoadError(
                    f"model '{label}': no endpoint served '{model}' metadata ({'; '.join(errors)})"
                )
            signature = Signature(
                tuple(_spec(t) for t in meta.inputs),
                tuple(_spec(t) for t in meta.outputs),
                max(0, remote_config.config.max_batch_size),
            )
            unknown = [
                s.datatype for s in (*signature.inputs, *signature.outputs) if s.datatype not in DATATYPES
            ]
            if unknown:
                raise LoadError(f"model '{label}': the remote model uses unknown datatypes {unknown}")
            _check_against_config(name, config, signature, f"the remote model '{model}' at {ep.address}")
        except BaseException:
            for ep in endpoints:
                await ep.channel.close()
            raise
        backend = cls(label, remote, model, signature, endpoints, options)
        backend._prober = asyncio.get_running_loop().create_task(backend._probe_forever())
        return backend

    # -- calls --------------------------------------------------------------------------------

    def _pick(self, tried: Sequence[_Endpoint]) -> _Endpoint | None:
        best: _Endpoint | None = None
        n = len(self._endpoints)
        self._next = (self._next + 1) % n
        for i in range(n):  # rotate the start so ties spread
            ep = self._endpoints[(self._next + i) % n]
            if ep.ejected or ep in tried:
                continue
            if best is None or ep.outstanding < best.outstanding:
                best = ep
        return best

    def _untried(self, tried: Sequence[_Endpoint]) -> bool:
        """Is there an endpoint left to send a call again to? (A retry token is spent only then.)"""
        return any(not ep.ejected and ep not in tried for ep in self._endpoints)

    def _failed(self, ep: _Endpoint) -> None:
        ep.failures += 1
        if not ep.ejected and ep.failures >= self._options.eject_after_failures:
            ep.ejected = True
            ep.ejections += 1
            log.warning("%s: endpoint %s ejected after %d failures", self._label, ep.address, ep.failures)

    def _request(self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]) -> pb.ModelInferRequest:
        request = pb.ModelInferRequest(model_name=self._model, model_version=self._version)
        for name, array in inputs.items():
            datatype = self._datatypes[name]
            request.inputs.add(name=name, datatype=datatype, shape=array.shape)
            request.raw_input_contents.append(encode_bytes(array) if datatype == "BYTES" else array.tobytes())
        for name in outputs:
            request.outputs.add(name=name)
        return request

    async def infer(
        self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str], deadline: float | None = None
    ) -> dict[str, np.ndarray]:
        """One remote call. Its cost (gateway/telemetry/cost.py) is its wall time, retries
        included; its CPU runs on the remote server, out of sight (`cpu_measured` False)."""
        cost = COST.get()
        start = time.perf_counter_ns()
        try:
            return await self._infer(inputs, outputs, deadline)
        finally:
            if cost is not None:
                cost.cpu_measured = False
                cost.wall_ns += time.perf_counter_ns() - start

    async def _infer(
        self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str], deadline: float | None
    ) -> dict[str, np.ndarray]:
        request = self._request(inputs, outputs)
        timeout = None
        if deadline is not None:
            # time.monotonic(), not loop.time(): uvloop's loop time is cached per iteration and
            # runs behind, which made the remote's timeout longer than what the caller had left
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                raise DeadlineExceeded(f"{self._label}: deadline passed before the call to Triton")
        trace = CALL.get()
        metadata = None
        client = None
        if trace is not None:
            if trace.recording:
                client = trace.child(
                    f"{SERVICE}/ModelInfer",
                    kind=SpanKind.CLIENT,
                    attributes={
                        "rpc.system": "grpc",
                        "rpc.service": SERVICE,
                        "rpc.method": "ModelInfer",
                        "modelgate.remote_model": self._model,
                    },
                )
                trace = client
            metadata = trace.headers() or None
        if client is None:
            response = await self._call(request, timeout, metadata, None)
        else:
            try:
                response = await self._call(request, timeout, metadata, client)
            except GatewayError as exc:
                client.fail(exc.code)
                _status(client, exc.code)
                raise
            except asyncio.CancelledError:
                client.fail("CANCELLED")
                _status(client, "CANCELLED")
                raise
            finally:
                client.end()
        return self._outputs(response)

    async def _call(
        self,
        request: pb.ModelInferRequest,
        time_left: float | None,
        metadata: tuple[tuple[str, str], ...] | None,
        client: Trace | None,
    ) -> pb.ModelInferResponse:
        """One call, sent again to another endpoint when it never reached a server."""
        self._budget.earn()
        tried: list[_Endpoint] = []
        while True:
            ep = self._pick(tried)
            if ep is None:
                raise Unavailable(
                    f"{self._label}: no healthy Triton endpoint ({len(self._endpoints)} ejected or tried)"
                )
            connected = ep.channel.get_state() == grpc.ChannelConnectivity.READY
            ep.outstanding += 1
            try:
                response: pb.ModelInferResponse = await ep.stub.ModelInfer(
                    request, timeout=time_left, metadata=metadata
                )
            except asyncio.CancelledError:
                ep.count("CANCELLED")
                raise
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                ep.count(code.name)
                error = _PASS_THROUGH.get(code)
                if error is not None:
                    raise error(f"{self._label}: Triton says: {exc.details()}") from None
                self._failed(ep)
                if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise DeadlineExceeded(
                        f"{self._label}: Triton at {ep.address} did not answer in time"
                    ) from None
                if code == grpc.StatusCode.UNAVAILABLE:
                    tried.append(ep)
                    if not connected and self._untried(tried) and self._budget.spend():
                        self._retries += 1
                        continue  # never reached a server: safe to send elsewhere
                    raise Unavailable(
                        f"{self._label}: Triton at {ep.address} unavailable: {exc.details()}"
                    ) from None
                raise Internal(f"{self._label}: Triton at {ep.address} failed: {code.name}") from None
            finally:
                ep.outstanding -= 1
            ep.failures = 0
            ep.count("OK")
            if client is not None:
                _status(client, "OK", ep.address)
            return response

    def _outputs(self, response: pb.ModelInferResponse) -> dict[str, np.ndarray]:
        raw = response.raw_output_contents
        if len(raw) != len(response.outputs):
            raise Internal(f"{self._label}: Triton answered without raw output contents")
        out = {}
        for tensor, data in zip(response.outputs, raw, strict=True):
            shape = tuple(tensor.shape)
            if tensor.datatype == "BYTES":
                out[tensor.name] = decode_bytes(tensor.name, data, int(np.prod(shape))).reshape(shape)
            else:
                try:
                    out[tensor.name] = np.frombuffer(data, dtype=DATATYPES[tensor.datatype].dtype).reshape(
                        shape
                    )
                except (KeyError, ValueError) as exc:
                    raise Internal(
                        f"{self._label}: malformed output '{tensor.name}' from Triton: {exc}"
                    ) from None
        return out

    # -- health -------------------------------------------------------------------------------

    async def _probe(self, ep: _Endpoint) -> None:
        timeout = self._options.probe_interval_s
        try:
            live = await ep.stub.ServerReady(pb.ServerReadyRequest(), timeout=timeout)
            ready = await ep.stub.ModelReady(
                pb.ModelReadyRequest(name=self._model, version=self._version), timeout=timeout
            )
            ok = live.ready and ready.ready
        except grpc.aio.AioRpcError:
            ok = False
        if ok:
            if ep.ejected:
                log.warning("%s: endpoint %s readmitted", self._label, ep.address)
            ep.ejected = False
            ep.failures = 0
        else:
            self._failed(ep)

    async def _probe_forever(self) -> None:
        while True:
            await asyncio.sleep(self._options.probe_interval_s)
            await asyncio.gather(*(self._probe(ep) for ep in self._endpoints), return_exceptions=True)

    async def close(self) -> None:
        if self._prober is not None:
            self._prober.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prober
        for ep in self._endpoints:
            await ep.channel.close()


def _status(client: Trace, code: str, address: str | None = None) -> None:
    """The outcome of a call on its client span (gRPC status number, the server that answered)."""
    if client.span is not None:
        client.span.set_attribute(
            "rpc.grpc.status_code", getattr(grpc.StatusCode, code, grpc.StatusCode.UNKNOWN).value[0]
        )
        if address is not None:
            client.span.set_attribute("server.address", address)
