"""The gateway with parts of its hot path replaced, one variant per process, for
loadtests/ab_hot_path.py.

    python -m harness.variants MODE REPOSITORY [SETTINGS_JSON]

Serves REPOSITORY's `mlp` on a free loopback port (prints `variants listening on ADDRESS`) until
SIGTERM. MODE is one of :data:`MODES`. The backend is swapped where the gateway makes it: the
registry's backend factory is wrapped, so the batcher and the data plane run the replacement
exactly as they would run the real one. Only `canned-raw` and `canned` replace something else
(the servicer, the data plane). In `real` mode each ONNX Runtime call's thread CPU is summed,
and printed as `ort_us MEAN` on exit.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from gateway.backends.base import Backend
from gateway.backends.onnxruntime import OnnxRuntimeBackend
from gateway.registry import BackendFactory
from gateway.repository import ModelSource
from gateway.server import Gateway, _loop_factory
from gateway.settings import load_settings
from gateway.supervisor import claim_run_dir
from gateway.transport import inference as servicer_module
from harness.inprocess import infer_request
from harness.stopping import until_stopped

__all__ = ["MODES", "FakeBackend", "backend_factory"]

ORT_ALONE_S = 27e-6  # ONNX Runtime's 1-row call alone, in a tight loop (micro_ort.py)
_BLOB = bytes(6000)  # sha256 of 6 kB: about 27 µs here, without the GIL


def _hold_gil() -> None:
    end = time.perf_counter() + ORT_ALONE_S
    while time.perf_counter() < end:
        pass


def _free_gil() -> None:
    hashlib.sha256(_BLOB).digest()


def _nothing() -> None:
    pass


FAKES: dict[str, Callable[[], None]] = {
    "no-ort": _nothing,
    "batched-no-ort": _nothing,
    "fake-hold-gil": _hold_gil,
    "fake-free-gil": _free_gil,
}
MODES = ("canned-raw", "canned", *FAKES, "real", "batched")


class FakeBackend:
    """The real backend's signature and facts; `infer` spends what `spend` does and answers `y`
    of ones, 8 wide."""

    def __init__(self, real: Backend, spend: Callable[[], None]) -> None:
        self.real, self.spend = real, spend
        self.signature, self.concurrency = real.signature, real.concurrency

    @property
    def info(self) -> Mapping[str, str]:
        return self.real.info

    def upstream(self) -> Mapping[str, Any]:
        return self.real.upstream()

    async def infer(
        self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str], deadline: float | None = None
    ) -> dict[str, np.ndarray]:
        self.spend()
        return {"y": np.ones((len(inputs["x"]), 8), np.float32)}

    async def close(self) -> None:
        await self.real.close()


class TimedSession:
    """An ONNX Runtime session whose `run` adds its thread CPU to `spent` = [ns, calls]."""

    def __init__(self, session: Any, spent: list[int]) -> None:
        self.session, self.spent = session, spent

    def run(self, names: Any, feed: Any) -> Any:
        began = time.thread_time_ns()
        try:
            return self.session.run(names, feed)
        finally:
            self.spent[0] += time.thread_time_ns() - began
            self.spent[1] += 1


def backend_factory(mode: str, real: BackendFactory, ort_spent: list[int]) -> BackendFactory:
    """The backend factory of `mode`: the real one's backends, faked or timed."""

    async def make(source: ModelSource, version: str) -> Backend:
        backend = await real(source, version)
        if mode in FAKES:
            return FakeBackend(backend, FAKES[mode])
        if mode == "real" and isinstance(backend, OnnxRuntimeBackend):
            backend._session = TimedSession(backend._session, ort_spent)
        return backend

    return make


def _serve_canned_bytes(canned: list[bytes]) -> None:
    """canned-raw: ModelInfer registered without a response serializer (as the bare server
    does) and answering prebuilt bytes. Must run before the server is made."""
    handler = grpc.unary_unary_rpc_method_handler

    def unary(behavior: Any, request_deserializer: Any = None, response_serializer: Any = None) -> Any:
        if behavior.__name__ == "ModelInfer":
            response_serializer = None
        return handler(
            behavior, request_deserializer=request_deserializer, response_serializer=response_serializer
        )

    async def model_infer(self: Any, request: Any, context: Any) -> bytes:
        return canned[0]

    grpc.unary_unary_rpc_method_handler = unary
    model_infer.__name__ = "ModelInfer"
    servicer_module.InferenceServicer.ModelInfer = model_infer  # type: ignore[method-assign]


async def serve(mode: str, repo: Path, extra: dict[str, Any]) -> None:
    canned_bytes = [b""]
    if mode == "canned-raw":
        _serve_canned_bytes(canned_bytes)
    batching = "on" if mode.startswith("batched") else "off"
    overrides = {"model_repository": repo, "grpc_port": 0, "metrics_port": -1, "batching": {"mode": batching}}
    run_dir = claim_run_dir()
    gateway = Gateway(load_settings(overrides={**overrides, **extra}), run_dir=run_dir)
    ort_spent = [0, 0]
    # the seam: the registry makes every backend through this factory
    gateway.registry._factory = backend_factory(mode, gateway.registry._factory, ort_spent)
    await gateway.start()
    await gateway.load()
    request = infer_request()
    if mode == "canned-raw":
        canned_bytes[0] = (await gateway.dataplane.infer(request)).SerializeToString()
    elif mode == "canned":
        canned = await gateway.dataplane.infer(request)

        async def infer(r: Any, deadline: Any = None, *args: Any, **kwargs: Any) -> Any:
            return canned

        gateway.dataplane.infer = infer  # type: ignore[method-assign,assignment]
    print(f"variants listening on 127.0.0.1:{gateway.port}", flush=True)
    await until_stopped(300)  # the parent stops it sooner
    if ort_spent[1]:
        print(f"ort_us {ort_spent[0] / ort_spent[1] / 1e3:.1f}", flush=True)
    await gateway.close(0)


def main() -> int:
    mode, repo = sys.argv[1], Path(sys.argv[2])
    if mode not in MODES:
        print(f"variants: unknown mode {mode!r}; one of {', '.join(MODES)}", file=sys.stderr)
        return 2
    extra = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(serve(mode, repo, extra))
    return 0


if __name__ == "__main__":
    sys.exit(main())
