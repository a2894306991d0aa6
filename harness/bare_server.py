"""Bare KServe-v2 gRPC server: the "transport ceiling" peer for modelgate benchmarks.

It speaks ``inference.GRPCInferenceService`` (tritonclient's generated messages) and answers
``ModelInfer`` / ``ModelStreamInfer`` for one model with a precomputed response: no model, no look
at the input tensors. Whatever modelgate adds on top of this is the cost of the gateway itself.

Per inference call it does only what a client needs to get a well-formed answer:
  * the request is decoded by protobuf (grpc does that before the handler runs);
  * it reads the request ``id`` (perf_analyzer matches async/streamed responses by id) and the
    first input's leading dimension (the batch size, so the output shape matches);
  * the response is a pre-serialised ``ModelInferResponse`` for that batch size with the ``id``
    field spliced in front (protobuf allows fields in any order), returned as raw bytes, so no
    protobuf serialisation happens per call either.

The control RPCs perf_analyzer needs are implemented: ServerLive, ServerReady, ModelReady,
ServerMetadata, ModelMetadata, ModelConfig (Triton extension), ModelStatistics. Anything else
answers UNIMPLEMENTED and is counted; on exit a summary of calls per RPC goes to stderr.

CLI:  python -m harness.bare_server --port 0 [--model mlp] [--input-dim 32] [--output-dim 8]
prints ``bare_server listening on 127.0.0.1:PORT`` on stdout once bound; stops on SIGTERM/SIGINT.

From other scripts:  ``with BareServer() as bare: ... bare.address``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc

from harness._child import ChildServer
from harness.stopping import until_stopped

SERVICE = "inference.GRPCInferenceService"
HOST = "127.0.0.1"
MAX_BATCH_SIZE = 64
MODEL_VERSION = "1"


# --------------------------------------------------------------------------------------------
# wire helpers
# --------------------------------------------------------------------------------------------
def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _len_field(field_number: int, payload: bytes) -> bytes:
    """Serialise one length-delimited protobuf field (wire type 2)."""
    return _varint((field_number << 3) | 2) + _varint(len(payload)) + payload


# field numbers in inference.proto (checked against the descriptors at import time below)
_INFER_RESPONSE_ID_FIELD = 3  # ModelInferResponse.id
_STREAM_RESPONSE_INFER_FIELD = 2  # ModelStreamInferResponse.infer_response


# --------------------------------------------------------------------------------------------
# the servicer
# --------------------------------------------------------------------------------------------
class BareInferenceService:
    """Answers the KServe v2 RPCs for a single fixed FP32 model."""

    def __init__(
        self,
        model: str = "mlp",
        input_dim: int = 32,
        output_dim: int = 8,
        input_name: str = "x",
        output_name: str = "y",
    ) -> None:
        from tritonclient.grpc import model_config_pb2 as mc
        from tritonclient.grpc import service_pb2 as pb

        self.pb = pb
        self.mc = mc
        assert pb.ModelInferResponse.DESCRIPTOR.fields_by_name["id"].number == _INFER_RESPONSE_ID_FIELD
        assert (
            pb.ModelStreamInferResponse.DESCRIPTOR.fields_by_name["infer_response"].number
            == _STREAM_RESPONSE_INFER_FIELD
        )
        self.model = model
        self.input_dim = input_dim
        self.output_dim = output_dim
        self.input_name = input_name
        self.output_name = output_name
        self.calls: collections.Counter[str] = collections.Counter()
        self.infer_requests = 0
        self.infer_rows = 0
        self.last_inference_ms = 0
        self._resp_cache: dict[int, bytes] = {}
        for b in (1, 8, 64):
            self._response_bytes(b)

        self._server_live: bytes = pb.ServerLiveResponse(live=True).SerializeToString()
        self._server_ready: bytes = pb.ServerReadyResponse(ready=True).SerializeToString()
        self._model_ready: bytes = pb.ModelReadyResponse(ready=True).SerializeToString()
        self._model_not_ready: bytes = pb.ModelReadyResponse(ready=False).SerializeToString()
        self._server_metadata: bytes = pb.ServerMetadataResponse(
            name="bare_server",
            version="0.1.0",
            extensions=["model_configuration", "statistics", "binary_tensor_data"],
        ).SerializeToString()
        self._model_metadata: bytes = pb.ModelMetadataResponse(
            name=model,
            versions=[MODEL_VERSION],
            platform="bare",
            inputs=[
                pb.ModelMetadataResponse.TensorMetadata(
                    name=input_name, datatype="FP32", shape=[-1, input_dim]
                )
            ],
            outputs=[
                pb.ModelMetadataResponse.TensorMetadata(
                    name=output_name, datatype="FP32", shape=[-1, output_dim]
                )
            ],
        ).SerializeToString()
        self._model_config: bytes = pb.ModelConfigResponse(
            config=mc.ModelConfig(
                name=model,
                platform="bare",
                backend="bare",
                max_batch_size=MAX_BATCH_SIZE,
                input=[mc.ModelInput(name=input_name, data_type=mc.TYPE_FP32, dims=[input_dim])],
                output=[mc.ModelOutput(name=output_name, data_type=mc.TYPE_FP32, dims=[output_dim])],
            )
        ).SerializeToString()

    # -- precomputed inference responses ---------------------------------------------------
    def _response_bytes(self, batch: int) -> bytes:
        """Serialised ModelInferResponse (without id) for ``batch`` rows of zeros."""
        cached = self._resp_cache.get(batch)
        if cached is None:
            pb = self.pb
            resp = pb.ModelInferResponse(
                model_name=self.model,
                model_version=MODEL_VERSION,
                outputs=[
                    pb.ModelInferResponse.InferOutputTensor(
                        name=self.output_name, datatype="FP32", shape=[batch, self.output_dim]
                    )
                ],
                raw_output_contents=[bytes(4 * batch * self.output_dim)],
            )
            cached = bytes(resp.SerializeToString())
            if len(self._resp_cache) < 4096:  # bounded: a client cannot grow it without limit
                self._resp_cache[batch] = cached
        return cached

    def _answer(self, request: Any) -> bytes:
        batch = 1
        if request.inputs:
            shape = request.inputs[0].shape
            if shape:
                batch = max(int(shape[0]), 1)
        self.infer_requests += 1
        self.infer_rows += batch
        body = self._response_bytes(batch)
        rid = request.id
        if rid:
            return _len_field(_INFER_RESPONSE_ID_FIELD, rid.encode()) + body
        return body

    # -- inference ----------------------------------------------------------------------------
    async def ModelInfer(self, request: Any, context: Any) -> bytes:
        return self._answer(request)

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[Any], context: Any
    ) -> AsyncIterator[bytes]:
        self.calls["ModelStreamInfer(streams)"] += 1
        async for request in request_iterator:
            yield _len_field(_STREAM_RESPONSE_INFER_FIELD, self._answer(request))

    # -- control ------------------------------------------------------------------------------
    async def _check_model(self, name: str, version: str, context: Any) -> None:
        if name != self.model or version not in ("", MODEL_VERSION):
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"Request for unknown model: '{name}' version '{version}'"
            )

    async def ServerLive(self, request: Any, context: Any) -> bytes:
        self.calls["ServerLive"] += 1
        return self._server_live

    async def ServerReady(self, request: Any, context: Any) -> bytes:
        self.calls["ServerReady"] += 1
        return self._server_ready

    async def ModelReady(self, request: Any, context: Any) -> bytes:
        self.calls["ModelReady"] += 1
        ok = request.name == self.model and request.version in ("", MODEL_VERSION)
        return self._model_ready if ok else self._model_not_ready

    async def ServerMetadata(self, request: Any, context: Any) -> bytes:
        self.calls["ServerMetadata"] += 1
        return self._server_metadata

    async def ModelMetadata(self, request: Any, context: Any) -> bytes:
        self.calls["ModelMetadata"] += 1
        await self._check_model(request.name, request.version, context)
        return self._model_metadata

    async def ModelConfig(self, request: Any, context: Any) -> bytes:
        self.calls["ModelConfig"] += 1
        await self._check_model(request.name, request.version, context)
        return self._model_config

    async def ModelStatistics(self, request: Any, context: Any) -> bytes:
        self.calls["ModelStatistics"] += 1
        if request.name:  # "" means all models
            await self._check_model(request.name, request.version, context)
        pb = self.pb
        n, rows = self.infer_requests, self.infer_rows
        zero = pb.StatisticDuration(count=0, ns=0)
        # No queue and no model: every request "succeeds" instantly, one execution per request.
        stats = pb.ModelStatistics(
            name=self.model,
            version=MODEL_VERSION,
            last_inference=int(time.time() * 1000) if n else 0,
            inference_count=rows,
            execution_count=n,
            inference_stats=pb.InferStatistics(
                success=pb.StatisticDuration(count=n, ns=0),
                fail=zero,
                queue=pb.StatisticDuration(count=n, ns=0),
                compute_input=pb.StatisticDuration(count=n, ns=0),
                compute_infer=pb.StatisticDuration(count=n, ns=0),
                compute_output=pb.StatisticDuration(count=n, ns=0),
                cache_hit=zero,
                cache_miss=zero,
            ),
        )
        return bytes(pb.ModelStatisticsResponse(model_stats=[stats]).SerializeToString())

    # -- registration -------------------------------------------------------------------------
    def handlers(self) -> list[Any]:
        """grpc generic handlers: responses go out as pre-serialised bytes (no serializer)."""
        pb = self.pb

        def unary(fn: Any, req_cls: Any) -> Any:
            return grpc.unary_unary_rpc_method_handler(
                fn, request_deserializer=req_cls.FromString, response_serializer=None
            )

        methods = {
            "ServerLive": unary(self.ServerLive, pb.ServerLiveRequest),
            "ServerReady": unary(self.ServerReady, pb.ServerReadyRequest),
            "ModelReady": unary(self.ModelReady, pb.ModelReadyRequest),
            "ServerMetadata": unary(self.ServerMetadata, pb.ServerMetadataRequest),
            "ModelMetadata": unary(self.ModelMetadata, pb.ModelMetadataRequest),
            "ModelConfig": unary(self.ModelConfig, pb.ModelConfigRequest),
            "ModelStatistics": unary(self.ModelStatistics, pb.ModelStatisticsRequest),
            "ModelInfer": unary(self.ModelInfer, pb.ModelInferRequest),
            "ModelStreamInfer": grpc.stream_stream_rpc_method_handler(
                self.ModelStreamInfer,
                request_deserializer=pb.ModelInferRequest.FromString,
                response_serializer=None,
            ),
        }
        service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
        unknown = set(service.methods_by_name) - set(methods)
        return [
            grpc.method_handlers_generic_handler(SERVICE, methods),
            _UnimplementedRecorder(self.calls, unknown),
        ]

    def summary(self) -> str:
        parts = [f"{k}={v}" for k, v in sorted(self.calls.items())]
        parts.append(f"ModelInfer(requests, unary+stream)={self.infer_requests}")
        parts.append(f"rows={self.infer_rows}")
        return "bare_server calls: " + ", ".join(parts)


class _UnimplementedRecorder(grpc.GenericRpcHandler):  # type: ignore[misc]
    """Last-resort handler: counts calls to RPCs this server does not implement."""

    def __init__(self, calls: collections.Counter[str], names: set[str]) -> None:
        self._calls = calls
        self._names = names

    def service(self, handler_call_details: Any) -> Any:
        method = handler_call_details.method  # "/inference.GRPCInferenceService/Name"
        name = method.rsplit("/", 1)[-1]
        label = name if name in self._names else method
        self._calls[f"UNIMPLEMENTED:{label}"] += 1
        return None  # grpc answers UNIMPLEMENTED


# --------------------------------------------------------------------------------------------
# running it
# --------------------------------------------------------------------------------------------
async def serve(
    port: int = 0,
    model: str = "mlp",
    input_dim: int = 32,
    output_dim: int = 8,
    max_seconds: float | None = None,
) -> None:
    service = BareInferenceService(model=model, input_dim=input_dim, output_dim=output_dim)
    server = grpc.aio.server(
        options=[
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
        ]
    )
    server.add_generic_rpc_handlers(service.handlers())
    bound = server.add_insecure_port(f"{HOST}:{port}")
    if bound == 0:
        raise SystemExit(f"bare_server: could not bind {HOST}:{port}")
    await server.start()

    loop = asyncio.get_running_loop()
    print(f"bare_server listening on {HOST}:{bound}", flush=True)
    what = f"model={model} x FP32 [-1,{input_dim}] -> y FP32 [-1,{output_dim}]"
    where = f"loop={type(loop).__module__}.{type(loop).__name__}, pid={os.getpid()}"
    print(f"bare_server: {what}, {where}", file=sys.stderr, flush=True)
    try:
        if not await until_stopped(max_seconds or None):
            print(f"bare_server: --max-seconds {max_seconds} reached, stopping", file=sys.stderr, flush=True)
    finally:
        await server.stop(grace=1.0)
        print(service.summary(), file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: pick a free one)")
    ap.add_argument("--model", default="mlp")
    ap.add_argument("--input-dim", type=int, default=32)
    ap.add_argument("--output-dim", type=int, default=8)
    ap.add_argument("--no-uvloop", action="store_true", help="use asyncio's default loop")
    ap.add_argument(
        "--max-seconds",
        type=float,
        default=None,
        help="stop by itself after this long (a safety net for scripts)",
    )
    args = ap.parse_args(argv)

    loop_factory = None
    if not args.no_uvloop:
        try:
            import uvloop

            loop_factory = uvloop.new_event_loop
        except ImportError:
            pass
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(
            serve(
                port=args.port,
                model=args.model,
                input_dim=args.input_dim,
                output_dim=args.output_dim,
                max_seconds=args.max_seconds,
            )
        )
    return 0


class BareServer(ChildServer):
    """The bare server in a subprocess: ``with BareServer() as bare: ... bare.address``.

    ``max_seconds`` is a safety net: the server stops by itself after that long."""

    def __init__(
        self,
        model: str = "mlp",
        input_dim: int = 32,
        output_dim: int = 8,
        *,
        port: int = 0,
        extra_args: Sequence[str] = (),
        max_seconds: float | None = 1800.0,
        **kwargs: Any,
    ) -> None:
        args = ["--port", str(port), "--model", model, "--input-dim", str(input_dim)]
        args += ["--output-dim", str(output_dim)]
        args += ["--max-seconds", str(max_seconds)] if max_seconds else []
        super().__init__("harness.bare_server", *args, *extra_args, **kwargs)


def start_bare_server_subprocess(
    port: int = 0, model: str = "mlp", input_dim: int = 32, output_dim: int = 8, **kwargs: Any
) -> tuple[subprocess.Popen[str], int]:
    """(process, port) of a started :class:`BareServer`; stop it with :func:`stop_bare_server`."""
    server = BareServer(model, input_dim, output_dim, port=port, **kwargs).start()
    assert server.proc is not None
    return server.proc, server.port


def stop_bare_server(proc: subprocess.Popen[Any], timeout: float = 10.0) -> int | None:
    """SIGTERM the server (by pid), wait, SIGKILL if it hangs. Returns its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
