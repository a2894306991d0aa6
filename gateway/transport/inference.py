"""The `inference.GRPCInferenceService` servicer: convert, call the data plane, convert back.

ModelInfer and ModelStreamInfer take their request bytes raw and parse them here
(gateway/wire.py; the batch path only reads requests in the common form), so a body that is not
a ModelInferRequest is INVALID_ARGUMENT with a plain message (on a stream: that message's error,
and the stream goes on), never the transport's UNKNOWN or INTERNAL with a Python exception text.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc

from .._proto import inference_pb2 as pb
from .._proto import inference_pb2_grpc as pb_grpc
from ..dataplane import DataPlane, Incoming
from ..errors import GatewayError
from ..telemetry.tracing import Trace, Tracing
from ..wire import parse_request, read_request
from ._errors import handled, internal_message
from ._server import NO_DEADLINE_S, deadline_of

if TYPE_CHECKING:
    from .native import BatchServer

__all__ = ["InferenceServicer", "add_inference_service"]

Ctx: TypeAlias = Any  # grpc.aio.ServicerContext; grpcio ships no type information


RAW_REQUESTS = frozenset({"ModelInfer", "ModelStreamInfer"})
SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
_STATUS_NUMBERS = {code.name: code.value[0] for code in grpc.StatusCode}
_INTERNAL = grpc.StatusCode.INTERNAL.value[0]


def _serialized(response: Any) -> bytes:
    """A response as bytes: ModelInfer may answer with them already made (`DataPlane.infer`)."""
    return response if response.__class__ is bytes else response.SerializeToString()


def add_inference_service(servicer: InferenceServicer, server: Any) -> None:
    """Register every method of the service on a server (either transport), as the generated
    adder does, except that RAW_REQUESTS get their request bytes unparsed and may answer with bytes."""
    makers = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
    }
    handlers = {}
    for method in SERVICE.methods:
        request = getattr(pb, method.input_type.name)
        response = getattr(pb, method.output_type.name)
        make = makers[(method.client_streaming, method.server_streaming)]
        handlers[method.name] = make(
            getattr(servicer, method.name),
            request_deserializer=None if method.name in RAW_REQUESTS else request.FromString,
            response_serializer=_serialized if method.name in RAW_REQUESTS else response.SerializeToString,
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE.full_name, handlers),))
    server.add_registered_method_handlers(SERVICE.full_name, handlers)


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(
        self, dataplane: DataPlane, stream_window: int = 256, tracing: Tracing | None = None
    ) -> None:
        self._dp = dataplane
        self._stream_window = stream_window
        self._tracing = tracing

    @handled
    async def ServerLive(self, request: pb.ServerLiveRequest, context: Ctx) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    @handled
    async def ServerReady(self, request: pb.ServerReadyRequest, context: Ctx) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._dp.server_ready())

    @handled
    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: Ctx
    ) -> pb.ServerMetadataResponse:
        return self._dp.server_metadata()

    @handled
    async def ModelReady(self, request: pb.ModelReadyRequest, context: Ctx) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=self._dp.model_ready(request.name, request.version))

    @handled
    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Ctx) -> pb.ModelMetadataResponse:
        return self._dp.model_metadata(request.name, request.version)

    @handled
    async def ModelConfig(self, request: pb.ModelConfigRequest, context: Ctx) -> pb.ModelConfigResponse:
        return self._dp.model_config(request.name, request.version)

    @handled
    async def ModelStatistics(
        self, request: pb.ModelStatisticsRequest, context: Ctx
    ) -> pb.ModelStatisticsResponse:
        return await self._dp.model_statistics(request.name, request.version)

    @handled
    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: Ctx
    ) -> pb.RepositoryIndexResponse:
        return self._dp.repository_index(request.ready)

    @handled
    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: Ctx
    ) -> pb.RepositoryModelLoadResponse:
        await self._dp.load_model(request.model_name)
        return pb.RepositoryModelLoadResponse()

    @handled
    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: Ctx
    ) -> pb.RepositoryModelUnloadResponse:
        await self._dp.unload_model(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    @handled
    async def ModelInfer(self, body: bytes, context: Ctx) -> pb.ModelInferResponse | bytes:
        if self._tracing is not None:
            traced = self._tracing.server_span("ModelInfer", context.invocation_metadata())
            if traced is not None:
                return await self._traced_infer(traced, body, context)
        request = read_request(body)
        deadline = deadline_of(context)
        trace = _forwarding(context) if self._dp.forwards_trace else None
        keys = self._dp.sticky_keys
        metadata = _metadata(context, keys) if keys else None
        return await self._dp.infer(request, deadline, metadata, len(body), trace, True)

    def infer_batch(self, server: BatchServer, events: Sequence[tuple[Any, ...]]) -> None:
        """ModelInfer calls from the native front, a batch at a time (gateway/transport/native.py):
        each is parsed, admitted and queued now and answered from a callback when its rows have
        run, with the same statuses and messages as `ModelInfer`. No task per call."""
        dp = self._dp
        tracing = self._tracing
        keys = dp.sticky_keys
        forwards = dp.forwards_trace
        now = asyncio.get_running_loop().time()
        calls: list[Incoming] = []
        ids = []
        for _kind, call_id, _method, body, _key, details in events:
            metadata, _peer, remaining = details
            trace = span = None
            if tracing is not None:
                trace = span = tracing.server_span("ModelInfer", metadata)
                if span is not None and not (span.recording or forwards):
                    trace = None
            elif forwards:
                trace = _forwarded(metadata)
            answer = _Answer(server, call_id, span)
            try:
                request = read_request(body)
            except GatewayError as exc:
                answer(None, exc)
                continue
            deadline = None if remaining is None or remaining >= NO_DEADLINE_S else now + remaining
            picked = {k: v for k, v in metadata if k in keys and isinstance(v, str)} if keys else None
            calls.append((request, deadline, picked, len(body), trace, answer))
            ids.append(call_id)
        for call_id, handle in zip(ids, dp.begin_batch(calls), strict=True):
            if handle is not None:
                server.track(call_id, handle)

    async def _traced_infer(self, trace: Trace, body: bytes, context: Ctx) -> pb.ModelInferResponse | bytes:
        try:
            request = parse_request(body)
            keys = self._dp.sticky_keys
            metadata = _metadata(context, keys) if keys else None
            below = trace if trace.recording or self._dp.forwards_trace else None
            response = await self._dp.infer(request, deadline_of(context), metadata, len(body), below, True)
        except BaseException as exc:
            _failed(trace, exc)
            raise
        _finish(trace, "OK")
        return response

    async def ModelStreamInfer(self, request_iterator: AsyncIterator[bytes], context: Ctx) -> None:
        """Many requests in flight on one stream; each answer is written, tagged by the
        request's `id`, as soon as it is ready. A failed request gets an `error_message` and the
        stream goes on. At most `stream_window` requests are read ahead of the answers written,
        so a client that stops reading stops the server reading too (memory stays bounded)."""
        tracing = self._tracing  # a span per request, all continuing the stream's trace context
        calls = context.invocation_metadata() if tracing is not None else None
        forwarded = _forwarding(context) if tracing is None and self._dp.forwards_trace else None
        keys = self._dp.sticky_keys  # one set of sticky keys for the stream, as for its trace
        metadata = _metadata(context, keys) if keys else None
        window = asyncio.Semaphore(self._stream_window)
        answers: asyncio.Queue[pb.ModelStreamInferResponse | None] = asyncio.Queue()
        tasks: set[asyncio.Task[None]] = set()
        started = 0

        async def answer(body: bytes) -> None:
            request = pb.ModelInferRequest()
            trace = span = forwarded
            if tracing is not None:
                trace = span = tracing.server_span("ModelStreamInfer", calls)
                if span is not None and not (span.recording or self._dp.forwards_trace):
                    trace = None
            try:
                request = parse_request(body)
                response = pb.ModelStreamInferResponse(
                    infer_response=await self._dp.infer(request, None, metadata, len(body), trace)
                )
            except GatewayError as exc:
                response = _stream_error(request, exc.code, exc.message)
                if tracing is not None and span is not None:
                    _failed(span, exc)
            except Exception as exc:
                response = _stream_error(request, "INTERNAL", internal_message("ModelStreamInfer"))
                if tracing is not None and span is not None:
                    _failed(span, exc)
            except BaseException as exc:  # cancelled: the stream ended
                if tracing is not None and span is not None:
                    _failed(span, exc)
                raise
            else:
                if tracing is not None and span is not None:
                    _finish(span, "OK")
            answers.put_nowait(response)

        async def read() -> None:
            nonlocal started
            try:
                async for body in request_iterator:
                    await window.acquire()
                    task = asyncio.create_task(answer(body))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    started += 1
            finally:
                answers.put_nowait(None)  # end of requests

        reader = asyncio.create_task(read())
        reading, written = True, 0
        try:
            while reading or written < started:
                item = await answers.get()
                if item is None:
                    reading = False
                    continue
                await context.write(item)
                written += 1
                window.release()
            await reader
        finally:
            reader.cancel()
            for task in tasks:
                task.cancel()


class _Answer:
    """Answers one batch-path call when the data plane is done with it (`DataPlane.begin`)."""

    __slots__ = ("call_id", "server", "span")

    def __init__(self, server: BatchServer, call_id: int, span: Trace | None) -> None:
        self.server = server
        self.call_id = call_id
        self.span = span

    def __call__(self, response: pb.ModelInferResponse | bytes | None, error: BaseException | None) -> None:
        server, span = self.server, self.span
        if response is not None:  # bytes in the common case: cut from a template
            data = response if response.__class__ is bytes else response.SerializeToString()  # type: ignore[union-attr]
            server.respond(self.call_id, data)
            if span is not None:
                _finish(span, "OK")
            return
        if isinstance(error, GatewayError):
            server.fail(self.call_id, _STATUS_NUMBERS.get(error.code, _INTERNAL), error.message)
        elif isinstance(error, asyncio.CancelledError):  # the client left, or a stop cut the call
            server.forget(self.call_id)
        else:
            server.fail(self.call_id, _INTERNAL, internal_message("ModelInfer", error))
        if span is not None and error is not None:
            _failed(span, error)


def _metadata(context: Ctx, keys: frozenset[str]) -> dict[str, str]:
    """The call's metadata under `keys` (text values only)."""
    return {k: v for k, v in context.invocation_metadata() or () if k in keys and isinstance(v, str)}


def _forwarding(context: Ctx) -> Trace | None:
    """Tracing off: the caller's `traceparent`, to forward to remote backends."""
    return _forwarded(context.invocation_metadata())


def _forwarded(metadata: Sequence[tuple[str, Any]] | None) -> Trace | None:
    for key, value in metadata or ():
        if key == "traceparent":
            return Trace.forwarding(str(value))
    return None


def _finish(trace: Trace, code: str, error_type: str | None = None) -> None:
    """End a server span with the call's gRPC status."""
    span = trace.span
    if span is not None and trace.recording:
        span.set_attribute("rpc.grpc.status_code", _STATUS_NUMBERS.get(code, 2))
        if code != "OK":
            trace.fail(code, error_type)
    trace.end()


def _failed(trace: Trace, exc: BaseException) -> None:
    if isinstance(exc, GatewayError):
        _finish(trace, exc.code)
    elif isinstance(exc, asyncio.CancelledError):
        _finish(trace, "CANCELLED")
    else:
        _finish(trace, "INTERNAL", type(exc).__qualname__)


def _stream_error(request: pb.ModelInferRequest, code: str, message: str) -> pb.ModelStreamInferResponse:
    return pb.ModelStreamInferResponse(
        error_message=f"[{code}] {message}",
        infer_response=pb.ModelInferResponse(
            model_name=request.model_name, model_version=request.model_version, id=request.id
        ),
    )
