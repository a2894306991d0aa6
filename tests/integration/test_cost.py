"""Cost accounting against the real gateway: each request's `cost_us` (asked with `cost: true`)
adds up to the backend's totals on /metrics, batched or not, with one worker or two; `modelgate
cost report --json` says what /metrics says; a `cost` parameter of the wrong type is refused."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from tritonclient.utils import InferenceServerException

from harness.gateway import GatewayProcess, metric, new_connection, scrape

pytestmark = pytest.mark.timeout(120)


def mlp_input(rows: int, module: Any = grpcclient) -> Any:
    x = module.InferInput("x", [rows, 32], "FP32")
    x.set_data_from_numpy(np.random.default_rng(rows).random((rows, 32), np.float32))
    return x


def cost_of(result: Any) -> tuple[float, float]:
    params = result.get_response().parameters
    return params["cost_us"].double_param, params["cost_wall_us"].double_param


async def concurrent_requests(url: str, sizes: list[int]) -> list[tuple[float, float]]:
    """Requests of several rows in flight together, so that batches hold several of them."""
    async with aioclient.InferenceServerClient(url) as client:
        results = await asyncio.gather(
            *(
                client.infer("mlp", [mlp_input(n, aioclient)], model_version="1", parameters={"cost": True})
                for n in sizes
            )
        )
    return [cost_of(r) for r in results]


def cost_report(proc: GatewayProcess, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "cost", "report", "--address", proc.admin_url, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout)) if "--json" in args else {"text": done.stdout}


def backend_us(text: str, kind: str) -> float:
    return metric(text, f"modelgate_backend_{kind}_seconds_total", model="mlp", version="1") * 1e6


def test_request_costs_add_up_to_the_backend_totals_and_the_report(repo: Path) -> None:
    proc = GatewayProcess(repo, "--batching", "on").wait_ready()
    try:
        sizes = [1, 2, 3, 1, 2, 3, 4, 1] * 8
        costs = asyncio.run(concurrent_requests(proc.url, sizes))
        text = scrape(proc.metrics_port)
        assert metric(text, "modelgate_requests_total", model="mlp", version="1", code="OK") == len(sizes)
        with grpcclient.InferenceServerClient(proc.url) as client:
            [stats] = client.get_inference_statistics("mlp", "1").model_stats
            assert stats.execution_count < len(sizes), "no batch held two requests: nothing was shared"
            plain = client.infer("mlp", [mlp_input(1)], model_version="2")
            assert "cost_us" not in plain.get_response().parameters  # not asked for
        cpu, wall = backend_us(text, "cpu"), backend_us(text, "wall")
        assert cpu > 0 and wall >= cpu * 0.5
        assert sum(c for c, _ in costs) == pytest.approx(cpu, rel=0.01)
        assert sum(w for _, w in costs) == pytest.approx(wall, rel=0.01)
        assert metric(text, "modelgate_backend_gpu_seconds_total", model="mlp", version="1") == 0  # no GPU
        overhead = metric(text, "modelgate_gateway_overhead_cpu_seconds_total")
        assert overhead > 0

        report = cost_report(proc, "--json")
        [row] = [v for v in report["versions"] if (v["model"], v["version"]) == ("mlp", "1")]
        assert (int(row["requests"]), int(row["rows"])) == (len(sizes), sum(sizes))
        assert row["cpu_seconds"] * 1e6 == pytest.approx(cpu, rel=1e-6)  # the same counters
        assert row["wall_seconds"] * 1e6 == pytest.approx(wall, rel=1e-6)
        assert row["cpu_measured"] and "usd" not in row  # no rates configured: no price
        assert report["overhead_cpu_seconds"] >= overhead
        since = cost_report(proc, "mlp", "--since", "1h", "--json")
        assert since["covered_s"] < 3600 and {v["model"] for v in since["versions"]} == {"mlp"}
        table = cost_report(proc)["text"]
        assert "CPU S/1K REQ" in table and "no rates configured" in table
    finally:
        assert proc.terminate() == 0, proc.log()


def test_a_cost_parameter_of_another_type_is_refused(repo: Path) -> None:
    proc = GatewayProcess(repo).wait_ready()
    try:
        with grpcclient.InferenceServerClient(proc.url) as client:
            for value, kind in ((1, "int64_param"), ("yes", "string_param")):
                with pytest.raises(InferenceServerException) as err:
                    client.infer("mlp", [mlp_input(1)], parameters={"cost": value})
                assert err.value.status() == "StatusCode.INVALID_ARGUMENT"
                assert f"parameter 'cost' must be a bool, got {kind}" in str(err.value.message())
            result = client.infer("mlp", [mlp_input(2)], parameters={"cost": True})  # unbatched
            cpu, wall = cost_of(result)
            assert 0 < cpu and 0 < wall
            assert "cost_cpu_measured" not in result.get_response().parameters  # only when false
        text = scrape(proc.metrics_port)
        assert cpu == pytest.approx(metric(text, "modelgate_backend_cpu_seconds_total", model="mlp") * 1e6)
        for args, says in (
            (["--since", "soon"], "'soon' is not a duration"),
            (["nope"], "unknown model 'nope'"),
        ):
            done = subprocess.run(
                [sys.executable, "-m", "gateway", "cost", "report", "--address", proc.admin_url, *args],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode in (1, 2) and says in done.stderr and "Traceback" not in done.stderr
    finally:
        assert proc.terminate() == 0, proc.log()


def test_two_workers_costs_are_summed(repo: Path) -> None:
    proc = GatewayProcess(repo, "--workers", "2").wait_ready(lines=2)
    try:
        costs = []
        for _ in range(24):  # a new connection each time, so both workers serve some
            with new_connection(proc.url) as client:
                costs.append(
                    cost_of(client.infer("mlp", [mlp_input(2)], model_version="1", parameters={"cost": True}))
                )
        deadline = time.monotonic() + 20
        while True:  # the workers hand their counters over every second
            text = scrape(proc.metrics_port)
            if metric(text, "modelgate_requests_total", model="mlp", version="1", code="OK") == len(costs):
                break
            assert time.monotonic() < deadline, text
            time.sleep(0.2)
        assert sum(c for c, _ in costs) == pytest.approx(backend_us(text, "cpu"), rel=0.01)
        assert sum(w for _, w in costs) == pytest.approx(backend_us(text, "wall"), rel=0.01)
        assert metric(text, "modelgate_gateway_overhead_cpu_seconds_total") > 0
        report = cost_report(proc, "--json")
        [row] = [v for v in report["versions"] if (v["model"], v["version"]) == ("mlp", "1")]
        assert int(row["requests"]) == len(costs) and int(row["rows"]) == 2 * len(costs)
        assert row["cpu_seconds"] * 1e6 == pytest.approx(backend_us(text, "cpu"), rel=1e-6)
    finally:
        assert proc.terminate() == 0, proc.log()
