"""The gateway built in this process, without its gRPC server, for the in-process benchmarks
(loadtests/micro_*.py): settings from overrides only, a model loaded, the backend optionally
replaced by one that answers from a prebuilt array, and the 1 x 32 FP32 request they all send."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gateway._proto import inference_pb2 as pb
from gateway.server import Gateway
from gateway.settings import load_settings
from gateway.supervisor import claim_run_dir

__all__ = ["fake_backend", "in_process_gateway", "infer_request"]


def infer_request(model: str = "mlp", rows: int = 1, width: int = 32) -> pb.ModelInferRequest:
    """A ModelInfer request of `rows` x `width` FP32 ones in raw bytes, input `x`."""
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="x", datatype="FP32", shape=[rows, width])
    request.raw_input_contents.append(np.ones((rows, width), np.float32).tobytes())
    return request


def fake_backend(gateway: Gateway, model: str = "mlp", width: int = 8) -> None:
    """Every served version of `model` answers `y` from a prebuilt array: the gateway's Python
    alone, no model run."""
    answer = np.ones((64, width), np.float32)

    async def fake(
        inputs: Mapping[str, np.ndarray], outputs: Sequence[str], deadline: float | None = None
    ) -> dict[str, np.ndarray]:
        return {"y": answer[: len(inputs["x"])]}

    for served in gateway.registry.model(model).versions.values():
        served.run = fake
        if served.batcher is not None:
            served.batcher._run = fake


async def in_process_gateway(
    repo: Path, *, fake: bool = False, model: str = "mlp", **overrides: Any
) -> Gateway:
    """A Gateway on `repo` with these settings (no environment), `model` loaded."""
    settings = load_settings(
        overrides={"model_repository": repo, "grpc_port": 0, "metrics_port": -1, **overrides}, environ={}
    )
    gateway = Gateway(settings, run_dir=claim_run_dir())
    await gateway.registry.load(model)
    if fake:
        fake_backend(gateway, model)
    return gateway
