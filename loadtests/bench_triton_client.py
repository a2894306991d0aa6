"""Which client stack should the Triton backend use? Same server, same requests, one run.

    python loadtests/bench_triton_client.py [--calls 3000] [--concurrency 1,16] [--repeats 3]

Calls ModelInfer on the bare grpc.aio server (harness/bare_server.py: answers at once, so the
client's own cost shows) with (1) modelgate's generated stubs on a grpc.aio channel, as
gateway/backends/triton.py does, and (2) tritonclient.grpc.aio (InferInput / infer / as_numpy).
Both build a 1 x 32 FP32 raw request and decode the 1 x 8 FP32 answer to NumPy. Reports calls/s
and the client process's CPU µs per call (medians over repeats), and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable

import grpc
import numpy as np
import tritonclient.grpc.aio as tc_aio

from gateway._proto import inference_pb2 as pb
from gateway._proto import inference_pb2_grpc as pb_grpc
from harness.bare_server import BareServer
from harness.bench import drive, ints, table
from harness.stats import median

X = np.ones((1, 32), np.float32)
Client = tuple[Callable[[], Awaitable[None]], Callable[[], Awaitable[None]]]  # (one call, close)


async def own_stubs(url: str) -> Client:
    channel = grpc.aio.insecure_channel(url)
    stub = pb_grpc.GRPCInferenceServiceStub(channel)

    async def call() -> None:
        request = pb.ModelInferRequest(model_name="mlp")
        request.inputs.add(name="x", datatype="FP32", shape=X.shape)
        request.raw_input_contents.append(X.tobytes())
        response = await stub.ModelInfer(request)
        out = response.outputs[0]
        np.frombuffer(response.raw_output_contents[0], dtype="<f4").reshape(tuple(out.shape))

    return call, channel.close


async def tritonclient_aio(url: str) -> Client:
    client = tc_aio.InferenceServerClient(url)

    async def call() -> None:
        tensor = tc_aio.InferInput("x", list(X.shape), "FP32")
        tensor.set_data_from_numpy(X)
        result = await client.infer("mlp", [tensor])
        result.as_numpy("y")

    return call, client.close


async def measure(
    factory: Callable[[str], Awaitable[Client]], url: str, calls: int, concurrency: int
) -> tuple[float, float]:
    call, close = await factory(url)
    for _ in range(50):
        await call()
    cpu0 = time.process_time()
    wall = await drive(lambda _: call(), calls, concurrency)
    cpu = time.process_time() - cpu0
    await close()
    return calls / wall, cpu / calls * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--concurrency", default="1,16", type=ints)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    clients = {"modelgate stubs (grpc.aio)": own_stubs, "tritonclient.grpc.aio": tritonclient_aio}
    lines = []
    with BareServer() as bare:
        for concurrency in args.concurrency:
            rows = {}
            for name, factory in clients.items():
                runs = [
                    asyncio.run(measure(factory, bare.address, args.calls, concurrency))
                    for _ in range(args.repeats)
                ]
                rows[name] = (median(r[0] for r in runs) or 0.0, median(r[1] for r in runs) or 0.0)
                lines.append([name, concurrency, f"{rows[name][0]:,.0f}", f"{rows[name][1]:,.0f}"])
            own, tc = rows["modelgate stubs (grpc.aio)"], rows["tritonclient.grpc.aio"]
            lines.append(
                ["ratio own/tritonclient", concurrency, f"{own[0] / tc[0]:.2f}×", f"{own[1] / tc[1]:.2f}×"]
            )
    print(table(["client", "concurrency", "calls/s", "client CPU µs/call"], lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
