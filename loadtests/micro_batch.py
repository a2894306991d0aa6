"""The native transport's Python per ModelInfer call, in process: the drop-in's one task per call
against the batch path (gateway/transport/native.py), with the HTTP/2 front replaced by a fake.

    python loadtests/micro_batch.py [--calls 20000] [--concurrency 64] [--repeats 5]
                                    [--batching on|off] [--onnx] [--delay-us N]

For each variant a Gateway (the example repository's `mlp`) is built in this process and its
native server started on a loopback port; then the server's front is swapped for a fake that
records answers, and calls are fed to the server's event handler (`_on_events`) as the front's
dispatch thread feeds them: every answer puts a new call in the next delivery, so --concurrency
calls stay in flight and each delivery holds the calls that arrived since the last one. The
process's CPU time per call is taken over --calls calls. Variants are interleaved, --repeats
rounds, medians. The backend answers from a prebuilt array (--onnx: ONNX Runtime runs the model),
so the figures are the gateway's Python without the HTTP/2 work (Rust, outside the GIL), which
bench_batching.py measures end to end.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from micro_tracing import on_example, parser
from pygrpc_native import EVENT_CALL

from gateway.server import Gateway, settle_gc
from gateway.transport import InferenceServicer, add_inference_service, new_server
from harness.inprocess import in_process_gateway, infer_request

METHOD = "/inference.GRPCInferenceService/ModelInfer"
DETAILS = ((("user-agent", "micro_batch"),), "ipv4:127.0.0.1:1", None)


class FakeFront:
    """Answers land here; each one queues the next call (closed loop, --concurrency in flight)."""

    def __init__(self, server: Any, body: bytes, calls: int, concurrency: int) -> None:
        self.server = server
        self.body = body
        self.left = calls
        self.concurrency = concurrency
        self.method_id = next(i for i, (path, _) in enumerate(server._table) if path == METHOD)
        self.next_id = 1
        self.pending: list[tuple[Any, ...]] = []
        self.answered = 0
        self.failed = 0
        self.finished = asyncio.get_running_loop().create_future()
        self.loop = asyncio.get_running_loop()

    def start(self) -> None:
        for _ in range(min(self.concurrency, self.left)):
            self._queue()
        self.loop.call_soon(self._deliver)

    def _queue(self) -> None:
        self.left -= 1
        self.pending.append((EVENT_CALL, self.next_id, self.method_id, self.body, None, DETAILS))
        self.next_id += 1

    def _deliver(self) -> None:
        events, self.pending = self.pending, []
        if events:
            self.server._on_events(events)

    def _done(self) -> None:
        if self.left > 0:
            if not self.pending:
                self.loop.call_soon(self._deliver)
            self._queue()
        elif self.answered + self.failed == self.next_id - 1 and not self.finished.done():
            self.finished.set_result(None)

    def respond(self, call_id: int, payload: bytes, **_: Any) -> bool:
        self.answered += 1
        self._done()
        return True

    def fail(self, call_id: int, code: int, message: str, **_: Any) -> bool:
        self.failed += 1
        self._done()
        return True

    def close(self) -> None:
        pass


async def build(repo: Path, batch: bool, args: argparse.Namespace) -> tuple[Gateway, Any, Any]:
    """The gateway in process and its native server (started, its front to be swapped)."""
    models = {"mlp": {"batching": {"max_queue_delay_us": args.delay_us}}} if args.delay_us is not None else {}
    gateway = await in_process_gateway(
        repo, fake=not args.onnx, batching={"mode": args.batching}, models=models
    )
    gateway.dataplane.accepting = True
    servicer = InferenceServicer(gateway.dataplane)
    server = new_server(
        "native", max_message_bytes=64 << 20, reuse_port=False, batch=servicer.infer_batch if batch else None
    )
    add_inference_service(servicer, server)
    server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return gateway, server, server._front


async def measure(server: Any, body: bytes, args: argparse.Namespace) -> tuple[float, int]:
    """CPU µs per call over --calls calls, and the calls that failed."""
    front = FakeFront(server, body, args.calls, args.concurrency)
    server._front = front
    began = time.process_time()
    front.start()
    await front.finished
    return (time.process_time() - began) / args.calls * 1e6, front.failed


async def run(repo: Path, args: argparse.Namespace) -> None:
    body = infer_request().SerializeToString()
    variants = {"per call (drop-in)": False, "batch path": True}
    built = {name: await build(repo, batch, args) for name, batch in variants.items()}
    settle_gc()  # the collector as a serving process has it once its models are loaded
    for _gateway, server, _front in built.values():  # warm-up
        await measure(server, body, args)
    cpu: dict[str, list[float]] = {name: [] for name in built}
    failed = 0
    for _ in range(args.repeats):
        for name, (_gateway, server, _front) in built.items():
            us, bad = await measure(server, body, args)
            cpu[name].append(us)
            failed += bad
    backend = "ONNX Runtime" if args.onnx else "faked backend"
    delay = "" if args.delay_us is None else f", max_queue_delay_us {args.delay_us}"
    print(
        f"\nModelInfer through the native server's event handler in process, {backend}, batching "
        f"{args.batching}{delay}, {args.concurrency} in flight, medians of {args.repeats} rounds of "
        f"{args.calls} calls ({failed} failed)\n"
    )
    print("| path | CPU µs/call | × per call |")
    print("|---|---|---|")
    first = statistics.median(next(iter(cpu.values())))
    for name, values in cpu.items():
        us = statistics.median(values)
        print(f"| {name} | {us:.1f} | {us / first:.3f} |")
    for gateway, server, real_front in built.values():
        server._front = real_front
        await server.stop(0)
        await gateway.registry.close()


def main() -> int:
    options = parser(__doc__)
    options.add_argument("--delay-us", type=int, default=None, help="mlp's max_queue_delay_us")
    options.add_argument("--onnx", action="store_true")
    return on_example(run, options.parse_args())


if __name__ == "__main__":
    sys.exit(main())
