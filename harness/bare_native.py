"""The floor of the native transport: a bare loop on pygrpc-native's NativeGrpcFront, no gateway.

Two modes, for the benchmarks' "what is left to win" rows (loadtests/bench_h2load.py):
  canned  each ModelInfer is parsed (its id, its rows) and answered with precomputed bytes, as
          the bare grpc.aio server does (harness/bare_server.py): the front's own cost and the
          least Python a call can take
  ort     each `recv_batch` of ModelInfer calls is parsed, its rows stacked, run in ONE ONNX
          Runtime call, and each answer cut from the outputs: the least a batching server on
          this front can do (no routing, validation, queue, counters or deadlines)
ModelStatistics answers the count of ModelInfer calls served (success), so a load generator's
count can be checked; nothing else is served.

CLI:  python -m harness.bare_native --port 0 --mode canned|ort [--onnx FILE] [--model mlp] [--input-dim 32]
      [--output-dim 8] [--max-seconds 1800]
prints ``bare_native listening on 127.0.0.1:PORT`` once bound; stops on SIGTERM/SIGINT.
From other scripts: ``with BareNative("ort", onnx_file) as bare: ... bare.address``.
"""

from __future__ import annotations

import argparse
import signal
import time
from typing import Any

import numpy as np
from pygrpc_native import EVENT_CALL, NativeGrpcFront

from harness._child import ChildServer
from harness.bare_server import BareInferenceService

__all__ = ["BareNative", "serve"]

INFER = "/inference.GRPCInferenceService/ModelInfer"
STATISTICS = "/inference.GRPCInferenceService/ModelStatistics"


class BareNative(ChildServer):
    def __init__(
        self, mode: str, onnx_file: str = "", model: str = "mlp", input_dim: int = 32, output_dim: int = 8
    ) -> None:
        args = ["--port", "0", "--mode", mode, "--model", model]
        args += ["--input-dim", str(input_dim), "--output-dim", str(output_dim)]
        super().__init__("harness.bare_native", *args, *(["--onnx", onnx_file] if onnx_file else []))


def serve(args: argparse.Namespace) -> None:
    service = BareInferenceService(args.model, input_dim=args.input_dim, output_dim=args.output_dim)
    pb = service.pb
    session: Any = None
    if args.mode == "ort":
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(args.onnx, options, providers=["CPUExecutionProvider"])
    front = NativeGrpcFront(f"127.0.0.1:{args.port}", [(INFER, False), (STATISTICS, False)])
    front.start()
    print(f"bare_native listening on 127.0.0.1:{front.bound_port}", flush=True)
    stopping = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.append(True))
    until = time.monotonic() + args.max_seconds
    while not stopping and time.monotonic() < until:
        events = front.recv_batch(64, 100)
        if events is None:
            break
        calls = []
        for kind, call_id, method_id, payload, _key in events:
            if kind != EVENT_CALL or payload is None:
                continue
            if method_id == 1:  # ModelStatistics
                request = pb.ModelStatisticsRequest.FromString(payload)
                front.respond(call_id, _run(service.ModelStatistics(request, None)))
                continue
            calls.append((call_id, pb.ModelInferRequest.FromString(payload)))
        if session is None:
            for call_id, request in calls:
                front.respond(call_id, service._answer(request))
        elif calls:
            _infer(front, service, session, calls, args.input_dim)
    front.close()


def _infer(front: Any, service: BareInferenceService, session: Any, calls: list[Any], width: int) -> None:
    """One ONNX Runtime call for a recv_batch of calls; each answer its rows, as bytes."""
    parts = [np.frombuffer(r.raw_input_contents[0], np.float32).reshape(-1, width) for _, r in calls]
    y = session.run(None, {"x": np.concatenate(parts) if len(parts) > 1 else parts[0]})[0]
    pb = service.pb
    offset = 0
    for (call_id, request), part in zip(calls, parts, strict=True):
        rows = part.shape[0]
        response = pb.ModelInferResponse(model_name=request.model_name, model_version="1", id=request.id)
        response.outputs.add(name="y", datatype="FP32", shape=[rows, y.shape[1]])
        response.raw_output_contents.append(y[offset : offset + rows].tobytes())
        front.respond(call_id, response.SerializeToString())
        service.infer_requests += 1
        service.infer_rows += rows
        offset += rows


def _run(coroutine: Any) -> bytes:
    """Run one of BareInferenceService's handlers, which never wait, to its answer."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return bytes(done.value)
    raise RuntimeError("the handler waited")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--mode", choices=("canned", "ort"), default="canned")
    parser.add_argument("--model", default="mlp")
    parser.add_argument("--onnx", default="")
    parser.add_argument("--input-dim", type=int, default=32)
    parser.add_argument("--output-dim", type=int, default=8)
    parser.add_argument("--max-seconds", type=float, default=1800)
    serve(parser.parse_args())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
