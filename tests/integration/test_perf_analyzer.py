"""NVIDIA's perf_analyzer runs against the gateway without errors (behaviour, not speed)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.peers.gateway import GatewayProcess

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "loadtests"))
from perf_analyzer import find_cuda_runtime_lib, run_perf_analyzer

pytestmark = pytest.mark.timeout(180)


@pytest.mark.parametrize("streaming", [False, True], ids=["unary", "streaming"])
def test_perf_analyzer_runs_clean(gateway: GatewayProcess, streaming: bool) -> None:
    assert find_cuda_runtime_lib() is not None, "run `make perf-tools` (loadtests/setup_perf_tools.sh)"
    rows = run_perf_analyzer(
        gateway.url, "mlp", ["x:32"], [2], measurement_ms=500, streaming=streaming, label="test", max_trials=3
    )
    assert [r["status"] for r in rows] != ["failed"], rows[0]["error"]
    assert rows[0]["throughput_infer_s"] > 0
