"""NVIDIA's perf_analyzer runs against the gateway without errors (behaviour, not speed)."""

from __future__ import annotations

import pytest

from harness.gateway import GatewayProcess, scrape
from harness.perf_analyzer import find_cuda_runtime_lib, run_perf_analyzer

pytestmark = pytest.mark.timeout(180)


@pytest.mark.parametrize("streaming", [False, True], ids=["unary", "streaming"])
def test_perf_analyzer_runs_clean(gateway: GatewayProcess, streaming: bool) -> None:
    assert find_cuda_runtime_lib() is not None, "run `make perf-tools` (harness/setup_perf_tools.sh)"
    before = _answers(gateway)
    rows = run_perf_analyzer(
        gateway.url, "mlp", ["x:32"], [2], measurement_ms=500, streaming=streaming, label="test", max_trials=3
    )
    assert [r["status"] for r in rows] != ["failed"], rows[0]["error"]
    after = _answers(gateway)
    failed = {code: n - before.get(code, 0) for code, n in after.items() if code != "OK"}
    assert not any(failed.values()), failed  # not one call failed
    # every answer perf_analyzer counted in its last window (0.5 s) was served by the gateway
    assert after.get("OK", 0) - before.get("OK", 0) >= 0.5 * rows[0]["throughput_infer_s"] > 0


def _answers(gateway: GatewayProcess) -> dict[str, float]:
    """mlp's answers so far, by status code (every version)."""
    text = scrape(gateway.metrics_port)
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("modelgate_requests_total{") and 'model="mlp"' in line:
            code = line.split('code="')[1].split('"')[0]
            out[code] = out.get(code, 0) + float(line.rsplit(" ", 1)[1])
    return out
