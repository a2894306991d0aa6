"""Check the Triton peer end to end (runs in the project venv: numpy, onnx, onnxruntime, tritonclient).

    bash tests/peers/setup_triton.sh
    python -m tests.peers.selfcheck            # from the repo root

Builds a small ONNX MLP (x FP32 [-1,32] -> 256 -> 256 -> y FP32 [-1,8], opset 17), serves it with a
real Triton, compares Triton's answers with ONNX Runtime run directly, then checks that kill() and
restart() recover and reports how long start() took.
"""

from __future__ import annotations

import itertools
import statistics
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from tests.peers.triton import TritonServer, make_onnx_python_model


def make_mlp_onnx(
    path: str | Path,
    in_dim: int = 32,
    hidden: Sequence[int] = (256, 256),
    out_dim: int = 8,
    seed: int = 0,
    input_name: str = "x",
    output_name: str = "y",
) -> Path:
    """Write an FP32 MLP (Gemm + Relu layers, opset 17) with random weights to ``path``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    sizes = [in_dim, *hidden, out_dim]
    inits, nodes = [], []
    prev = input_name
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        w = (rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32)
        bias = (rng.standard_normal(b) * 0.1).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"W{i}"), numpy_helper.from_array(bias, f"b{i}")]
        last = i == len(sizes) - 2
        gemm_out = output_name if last else f"h{i}"
        nodes.append(helper.make_node("Gemm", [prev, f"W{i}", f"b{i}"], [gemm_out]))
        if not last:
            nodes.append(helper.make_node("Relu", [gemm_out], [f"a{i}"]))
            prev = f"a{i}"
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [None, in_dim])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [None, out_dim])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = Path(path)
    onnx.save(model, str(path))
    return path


def main() -> int:
    import onnxruntime as ort
    import tritonclient.grpc as grpcclient

    tmp = Path(tempfile.mkdtemp(prefix="triton-selfcheck-"))
    onnx_path = make_mlp_onnx(tmp / "mlp.onnx")
    ref = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    repo = tmp / "models"
    make_onnx_python_model(repo, "mlp", onnx_path, "x", 32, "y", 8)
    rng = np.random.default_rng(1)

    def infer(url: str, x: np.ndarray) -> np.ndarray:
        client = grpcclient.InferenceServerClient(url)
        try:
            inp = grpcclient.InferInput("x", list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            return client.infer("mlp", [inp]).as_numpy("y")
        finally:
            client.close()

    def check(url: str, tag: str) -> None:
        client = grpcclient.InferenceServerClient(url)
        assert client.is_server_ready() and client.is_model_ready("mlp"), tag
        client.close()
        for n in (1, 5, 64):
            x = rng.standard_normal((n, 32)).astype(np.float32)
            got, want = infer(url, x), ref.run(None, {"x": x})[0]
            assert got.shape == (n, 8) and np.allclose(got, want, rtol=1e-5, atol=1e-6), tag
        xs = [rng.standard_normal((k % 4 + 1, 32)).astype(np.float32) for k in range(24)]
        with ThreadPoolExecutor(12) as pool:  # concurrent: dynamic batching concatenates
            outs = list(pool.map(lambda x: infer(url, x), xs))
        for x, got in zip(xs, outs, strict=True):
            assert np.allclose(got, ref.run(None, {"x": x})[0], rtol=1e-5, atol=1e-6), tag
        print(f"{tag}: outputs match ONNX Runtime (single and 24 concurrent requests)")

    starts = []
    server = TritonServer(repo, log_path=tmp / "tritonserver.log")
    with server:
        starts.append(server.startup_seconds)
        print(f"started {server!r}; log {server.log_path}")
        check(server.grpc_url, "fresh")
        port, pid = server.grpc_port, server.pid
        server.kill()
        try:
            infer(server.grpc_url, np.zeros((1, 32), np.float32))
        except Exception:
            print("after kill(): requests fail, as they should")
        else:
            raise AssertionError("Triton still answered after kill()")
        server.restart()
        starts.append(server.startup_seconds)
        assert server.grpc_port == port and server.pid != pid
        check(server.grpc_url, "restart after kill")
        for _ in range(3):
            server.restart()
            starts.append(server.startup_seconds)
        check(server.grpc_url, "graceful restarts")
    print(
        "start() seconds:", ", ".join(f"{s:.2f}" for s in starts), f"(median {statistics.median(starts):.2f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
