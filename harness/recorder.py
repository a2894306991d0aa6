"""A minimal KServe v2 server that records the metadata of every ModelInfer it answers.

    python -m harness.recorder --port 0 --log calls.jsonl
    with RecorderServer(log) as recorder: ... recorder.address

It serves one model, `echo` (x FP32 [-1,4] -> y, the same values), prints
`recorder listening on 127.0.0.1:PORT` once bound, appends one JSON line of string metadata per
ModelInfer (and the seconds left of its deadline: `time_remaining`, null without one) to --log,
and stops on SIGTERM. A stand-in for a remote Triton where a test must see
what the gateway sent (Triton only shows such headers in its OpenTelemetry export)."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

import grpc
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from harness._child import ChildServer
from harness.stopping import until_stopped


class Recorder(pb_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    def __init__(self, log: Path) -> None:
        self.log = log

    async def ServerReady(self, request: Any, context: Any) -> Any:
        return pb.ServerReadyResponse(ready=True)

    async def ModelReady(self, request: Any, context: Any) -> Any:
        return pb.ModelReadyResponse(ready=True)

    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name="echo",
            versions=["1"],
            platform="recorder",
            inputs=[tensor(name="x", datatype="FP32", shape=[-1, 4])],
            outputs=[tensor(name="y", datatype="FP32", shape=[-1, 4])],
        )

    async def ModelConfig(self, request: Any, context: Any) -> Any:
        return pb.ModelConfigResponse(config=mc.ModelConfig(name="echo", max_batch_size=8))

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        seen: dict[str, Any] = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
        seen["time_remaining"] = context.time_remaining()  # the caller's deadline, as it arrived
        with self.log.open("a") as f:
            f.write(json.dumps(seen) + "\n")
        out = pb.ModelInferResponse(model_name="echo", model_version="1", id=request.id)
        out.outputs.add(name="y", datatype="FP32", shape=request.inputs[0].shape)
        out.raw_output_contents.append(request.raw_input_contents[0])
        return out


class RecorderServer(ChildServer):
    """The recorder in a subprocess, appending to `log`."""

    def __init__(self, log: Path, **kwargs: Any) -> None:
        super().__init__("harness.recorder", "--port", "0", "--log", str(log), **kwargs)


async def serve(port: int, log: Path) -> None:
    server = grpc.aio.server()
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(Recorder(log), server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(f"recorder listening on 127.0.0.1:{bound}", flush=True)
    await until_stopped(600)
    await server.stop(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--log", type=Path, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.log))


if __name__ == "__main__":
    main()
