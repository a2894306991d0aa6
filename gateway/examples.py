"""Small ONNX models built with the `onnx` helpers (nothing is downloaded), and the example
model repository that `make run` serves.

    python -m gateway.examples models/     # or: modelgate example-repository models/
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np

__all__ = ["example_repository", "identity", "mlp", "write_config", "write_version"]

OPSET = 17


def mlp(
    dims: tuple[int, ...] = (32, 256, 256, 8), seed: int = 0, input_name: str = "x", output_name: str = "y"
) -> bytes:
    """A ReLU MLP, FP32, batch dimension dynamic: dims[0] features in, dims[-1] out."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    prev = input_name
    for i, (a, b) in enumerate(itertools.pairwise(dims)):
        w = (rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32)
        bias = (rng.standard_normal(b) * 0.01).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(bias, f"b{i}")]
        last = i == len(dims) - 2
        out = output_name if last else f"h{i}"
        nodes.append(helper.make_node("Gemm", [prev, f"w{i}", f"b{i}"], [out if last else f"g{i}"]))
        if not last:
            nodes.append(helper.make_node("Relu", [f"g{i}"], [out]))
        prev = out
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", dims[0]])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["batch", dims[-1]])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


# ONNX element type per KServe datatype, for models that pass tensors through.
ONNX_TYPES = {
    "BOOL": 9,
    "INT8": 3,
    "INT16": 5,
    "INT32": 6,
    "INT64": 7,
    "UINT8": 2,
    "UINT16": 4,
    "UINT32": 12,
    "UINT64": 13,
    "FP16": 10,
    "FP32": 1,
    "FP64": 11,
    "BYTES": 8,
}


def identity(datatypes: list[str], width: int = 4) -> bytes:
    """One Identity per datatype: input `in_<T>` [batch, width] -> output `out_<T>`."""
    from onnx import helper

    nodes, ins, outs = [], [], []
    for t in datatypes:
        nodes.append(helper.make_node("Identity", [f"in_{t}"], [f"out_{t}"]))
        ins.append(helper.make_tensor_value_info(f"in_{t}", ONNX_TYPES[t], ["batch", width]))
        outs.append(helper.make_tensor_value_info(f"out_{t}", ONNX_TYPES[t], ["batch", width]))
    graph = helper.make_graph(nodes, "identity", ins, outs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def slow(iterations: int = 500, width: int = 256) -> bytes:
    """A deliberately slow model (a Loop of `iterations` MatMuls), FP32 [batch, width] in and
    out: tests use it to have calls in flight. Scaled so each iteration stays bounded."""
    from onnx import TensorProto, helper, numpy_helper

    w = np.eye(width, dtype=np.float32)
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("MatMul", ["acc_in", "w"], ["acc_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, ["batch", width]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, ["batch", width]),
        ],
    )
    graph = helper.make_graph(
        [helper.make_node("Loop", ["trips", "cond", "x"], ["y"], body=body)],
        "slow",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])],
        [
            numpy_helper.from_array(np.array(iterations, dtype=np.int64), "trips"),
            numpy_helper.from_array(np.array(True), "cond"),
            numpy_helper.from_array(w, "w"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


def write_version(repo: Path, name: str, version: int, model: bytes, filename: str = "model.onnx") -> Path:
    path = repo / name / str(version) / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model)
    return path


def write_config(repo: Path, name: str, text: str) -> Path:
    path = repo / name / "config.pbtxt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


MLP_CONFIG = """\
name: "mlp"
backend: "onnxruntime"
max_batch_size: 64
input [ { name: "x", data_type: TYPE_FP32, dims: [ 32 ] } ]
output [ { name: "y", data_type: TYPE_FP32, dims: [ 8 ] } ]
version_policy: { all { } }
dynamic_batching { max_queue_delay_microseconds: 500 }
"""


def example_repository(root: Path) -> Path:
    """`mlp` (32 -> 256 -> 256 -> 8, versions 1, 2 and 3, with config.pbtxt) and `identity` (every
    fixed-size datatype passed through, config derived from the graph)."""
    write_config(root, "mlp", MLP_CONFIG)
    write_version(root, "mlp", 1, mlp(seed=1))
    write_version(root, "mlp", 2, mlp(seed=2))
    write_version(root, "mlp", 3, mlp(seed=3))
    write_version(root, "identity", 1, identity(["BOOL", "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES"]))
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description="Write the example model repository.")
    parser.add_argument("out", type=Path, help="directory to create (e.g. models/)")
    example_repository(parser.parse_args().out)


if __name__ == "__main__":
    main()
