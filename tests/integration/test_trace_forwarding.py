"""The caller's W3C traceparent reaches the remote server of a `backend: triton` version.

The remote is tests/peers/recorder.py, a small KServe v2 server in its own process that logs the
metadata of every ModelInfer it answers (Triton only shows such headers in its OpenTelemetry
export)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from tests.peers.gateway import GatewayProcess

pytestmark = pytest.mark.timeout(60)
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def recorder(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    log = tmp_path / "calls.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.peers.recorder", "--port", "0", "--log", str(log)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"listening on (127\.0\.0\.1:\d+)", line)
    assert match, line
    yield match.group(1), log
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    proc.stdout.close()


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
    assert 15 < calls[-2]["time_remaining"] <= 20  # the caller's deadline went along, not a new one
    assert calls[-1]["time_remaining"] is None or calls[-1]["time_remaining"] > 1e6  # none: none sent
