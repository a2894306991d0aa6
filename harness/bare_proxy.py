"""Bare gRPC proxy: the floor for what any grpc.aio gateway adds in front of a remote server.

    python -m harness.bare_proxy --upstream 127.0.0.1:8001 [--port 0]

Every unary call of any service is forwarded to --upstream as raw bytes over one persistent
grpc.aio channel (uvloop), with the caller's remaining deadline; the answer, or the upstream's
status, comes back as is. No parsing, no routing, no batching: what is left is the cost of a
grpc.aio server plus a grpc.aio client call in one Python process. bench_triton.py puts it
between perf_analyzer and Triton to show how much of the gateway's hop is the transport's.

Prints ``bare_proxy listening on 127.0.0.1:PORT`` once bound; stops on SIGTERM/SIGINT or after
--max-seconds.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import grpc

from harness._child import ChildServer
from harness.stopping import until_stopped

HOST = "127.0.0.1"


class _Forward(grpc.GenericRpcHandler):  # type: ignore[misc]
    """Answers any unary method by calling the same method upstream with the same bytes."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._channel = channel
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}

    def service(self, handler_call_details: Any) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        handler = self._handlers.get(method)
        if handler is None:
            upstream = self._channel.unary_unary(method)  # no (de)serializers: bytes both ways

            async def forward(request: bytes, context: Any) -> bytes:
                try:
                    reply: bytes = await upstream(request, timeout=context.time_remaining())
                    return reply
                except grpc.aio.AioRpcError as exc:
                    await context.abort(exc.code(), exc.details() or "")
                    raise

            handler = self._handlers[method] = grpc.unary_unary_rpc_method_handler(forward)
        return handler


async def serve(upstream: str, port: int, max_seconds: float) -> None:
    options = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
    # no transparent retries: the client then keeps no copy of each request for a replay
    channel = grpc.aio.insecure_channel(upstream, options=[*options, ("grpc.enable_retries", 0)])
    server = grpc.aio.server(options=[*options, ("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((_Forward(channel),))
    bound = server.add_insecure_port(f"{HOST}:{port}")
    await server.start()
    print(f"bare_proxy listening on {HOST}:{bound}", flush=True)
    await until_stopped(max_seconds)
    await server.stop(1)
    await channel.close()


class BareProxy(ChildServer):
    """The proxy in a subprocess: ``with BareProxy(upstream) as proxy: ... proxy.address``."""

    def __init__(self, upstream: str, **kwargs: Any) -> None:
        super().__init__("harness.bare_proxy", "--upstream", upstream, **kwargs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--max-seconds", type=float, default=1800.0)
    args = parser.parse_args()
    import uvloop

    uvloop.run(serve(args.upstream, args.port, args.max_seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
