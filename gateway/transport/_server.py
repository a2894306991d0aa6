"""The two gRPC transports behind one seam.

`native` is pygrpc-native's drop-in `aio.server()`: HTTP/2 and gRPC framing run in Rust (hyper/h2
on tokio) outside the GIL, and Python sees each call as an event. Unary and server-streaming
methods are served natively; bidirectional ones (ModelStreamInfer) and reflection go to a
grpc.aio server behind it on a Unix socket. `grpcio` is grpc.aio itself: for TLS, and for
platforms without the wheel. Both take the same servicers; everything that differs between them
is decided here, so the servicers and the data plane never ask which one they run on.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
from collections.abc import Callable
from typing import Any, Literal

import grpc

__all__ = ["Transport", "deadline_of", "native_available", "new_server", "resolve_transport"]

log = logging.getLogger("gateway.transport")

Transport = Literal["native", "grpcio"]

MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"

NO_DEADLINE_S = 1e9
"""pygrpc-native reports "no deadline" as sys.maxsize seconds, grpcio as None; anything this far
off (about 31 years) is no deadline at all."""


def native_available() -> bool:
    return importlib.util.find_spec("pygrpc_native") is not None


def resolve_transport(choice: str) -> Transport:
    """`auto` is native where the wheel is installed, else grpcio. Asking for native without
    the wheel is an error, not a silent fallback."""
    if choice == "grpcio":
        return "grpcio"
    if native_available():
        return "native"
    if choice == "native":
        raise RuntimeError("transport 'native' needs the pygrpc-native package (pip install pygrpc-native)")
    log.warning("pygrpc-native is not installed: serving on grpcio's transport")
    return "grpcio"


def new_server(
    transport: Transport,
    *,
    max_message_bytes: int,
    reuse_port: bool,
    batch: Callable[[Any, Any], None] | None = None,
) -> Any:
    """An unstarted grpc.aio-compatible server. `reuse_port` only where the supervisor's own
    workers share the port: otherwise a second gateway on the same port fails to bind. `batch`:
    on the native transport, ModelInfer calls go to it in batches (gateway/transport/native.py)."""
    options = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.so_reuseport", int(reuse_port)),
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ]
    if transport == "native":
        from .native import BatchServer, NativeServer

        if batch is not None:
            return BatchServer(MODEL_INFER, batch, options=options)
        return NativeServer(options=options)
    return grpc.aio.server(options=options)


def deadline_of(context: Any) -> float | None:
    """The caller's deadline on the event loop's clock; None when it set none."""
    remaining = context.time_remaining()
    if remaining is None or remaining >= NO_DEADLINE_S:
        return None
    return float(asyncio.get_running_loop().time() + remaining)
