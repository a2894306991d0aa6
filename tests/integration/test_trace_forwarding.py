"""The caller's W3C traceparent reaches the remote server of a `backend: triton` version.

The remote is harness/recorder.py, a small KServe v2 server in its own process that logs the
metadata of every ModelInfer it answers (Triton only shows such headers in its OpenTelemetry
export)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from harness.gateway import GatewayProcess
from harness.recorder import RecorderServer

pytestmark = pytest.mark.timeout(60)
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture
def recorder(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    log = tmp_path / "calls.jsonl"
    with RecorderServer(log) as server:
        yield server.address, log
        assert server.stop() == 0


@pytest.mark.parametrize("batching", ["off", "on"])
def test_traceparent_is_forwarded(tmp_path: Path, recorder: tuple[str, Path], batching: str) -> None:
    address, log = recorder
    config = {"models": {"echo": {"versions": {"1": {"backend": "triton", "endpoints": [address]}}}}}
    (tmp_path / "gateway.json").write_text(json.dumps(config))
    (tmp_path / "models").mkdir()
    proc = GatewayProcess(
        tmp_path / "models", "--config", str(tmp_path / "gateway.json"), "--batching", batching
    )
    proc.wait_ready()
    try:
        client = grpcclient.InferenceServerClient(proc.url)
        x = grpcclient.InferInput("x", [1, 4], "FP32")
        x.set_data_from_numpy(np.arange(4, dtype=np.float32).reshape(1, 4))
        result = client.infer("echo", [x], headers={"traceparent": TRACEPARENT}, client_timeout=20)
        np.testing.assert_array_equal(result.as_numpy("y"), np.arange(4, dtype=np.float32).reshape(1, 4))
        client.infer("echo", [x])  # without one, none is invented
    finally:
        assert proc.terminate() == 0
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert calls[-2].get("traceparent") == TRACEPARENT
    assert "traceparent" not in calls[-1]
    # The caller's deadline went along, not a new one. gRPC writes a timeout of 10 to 100 s in
    # units of 100 ms, rounded up, from its own cached clock: the remote may see up to ~0.1 s more.
    assert 15 < calls[-2]["time_remaining"] <= 20.2
    assert calls[-1]["time_remaining"] is None or calls[-1]["time_remaining"] > 1e6  # none: none sent
