"""The Grafana dashboard (deploy/grafana/modelgate.json) against a real Prometheus scraping a real
gateway, and the README's metric table against what the gateway exports.

One gateway (two workers, so the supervisor's own families are on /metrics too) serves model `m`:
versions 1 and 2 local under a running rollout (50/50), version 3 on a real Triton as a shadow
of every other request, version 4 a file that is not a model (a failed load), batching in
SLO-adaptive mode, drift against v1's profile. A few seconds of load, a few bad requests, then
an operator rollback; Prometheus (harness/prometheus.py) scrapes it every second. Every
PromQL expression of the dashboard, its variables' too, must then return samples.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import yaml
from tritonclient.utils import InferenceServerException

from gateway.examples import mlp, write_version
from harness.gateway import GatewayProcess, scrape
from harness.prometheus import PrometheusServer
from harness.triton import TritonServer, make_onnx_python_model
from tests.integration.test_drift import profiled

# No skip: a missing Triton or Prometheus fails these tests (`make test` sets both up; by hand:
# `make triton-peer prometheus-peer`).
pytestmark = pytest.mark.timeout(240)

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "modelgate.json"
SCRAPE_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"

# Grafana's variables as the test evaluates them: every model and version, a rate window that
# holds the load (Prometheus scrapes every second here), a range that holds the whole test.
VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "1h",
    "$model": ".*",
    "$version": ".*",
}


class Load:
    """Clients calling `m` until stopped: 1-4 rows of the training distribution, a pin now and
    then, and every 50th request malformed (INVALID_ARGUMENT); counts every answer."""

    def __init__(self, url: str, threads: int = 3) -> None:
        self.stop = threading.Event()
        self.answered = 0
        self.codes: dict[str, int] = {}
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(url, i)) for i in range(threads)]
        for t in self.threads:
            t.start()

    def _run(self, url: str, seed: int) -> None:
        rng = np.random.default_rng(seed)
        with grpcclient.InferenceServerClient(url) as c:
            n = 0
            while not self.stop.is_set():
                n += 1
                width = 31 if n % 50 == 0 else 32
                x = rng.normal(size=(int(rng.integers(1, 5)), width)).astype(np.float32)
                tensor = grpcclient.InferInput("x", list(x.shape), "FP32")
                tensor.set_data_from_numpy(x)
                try:
                    c.infer("m", [tensor], model_version="1" if n % 20 == 0 else "")
                    code = "OK"
                except InferenceServerException as exc:
                    code = str(exc.status())
                with self._lock:
                    self.answered += 1
                    self.codes[code] = self.codes.get(code, 0) + 1

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, transport: str
) -> Iterator[tuple[GatewayProcess, PrometheusServer]]:
    """The gateway after its load, and a Prometheus that has scraped all of it (one per
    transport: the fixture asks for it, so pytest does not share one gateway between both)."""
    tmp = tmp_path_factory.mktemp("dashboard")
    models, profile = profiled(tmp, {1: 1, 2: 2})
    write_version(models, "m", 4, b"not an onnx model")  # the newest: loaded, and fails
    onnx = tmp / "shadow.onnx"
    onnx.write_bytes(mlp(seed=3))
    make_onnx_python_model(tmp / "triton", "mlp", onnx, "x", 32, "y", 8)
    triton = TritonServer(tmp / "triton", log_path=tmp / "triton.log").start()
    config = {
        "models": {
            "m": {
                "versions": {"3": {"backend": "triton", "endpoints": [triton.grpc_url], "model": "mlp"}},
                "batching": {"mode": "on", "max_queue_delay_us": 2000, "target_p99_ms": 50},
                "traffic": {"1": 100},
                "shadow": {"3": 0.5},
                "rollout": {"canary": "2", "baseline": "1", "steps": [50, 100], "interval_s": 3600,
                            "min_requests": 1_000_000},
                "drift": {"reference": str(profile), "window": 200, "alert": 0.2},
            }
        },
        "triton": {"probe_interval_s": 0.5},
    }  # fmt: skip
    (tmp / "gateway.yaml").write_text(yaml.safe_dump(config))
    proc = GatewayProcess(models, "--config", str(tmp / "gateway.yaml"), "--workers", "2")
    prom: PrometheusServer | None = None
    try:
        proc.wait_ready(lines=2)
        assert f"({transport} transport)" in proc.log()
        prom = PrometheusServer([f"127.0.0.1:{proc.metrics_port}"], interval_s=1.0).start()
        load = Load(proc.url)
        try:
            prom.wait_for("sum(modelgate_requests_total) > 0")
            deadline = time.monotonic() + 4
            while time.monotonic() < deadline and load.answered < 2000:
                time.sleep(0.1)
        finally:
            load.finish()
        assert set(load.codes) == {"OK", "StatusCode.INVALID_ARGUMENT"}, load.codes
        rollback = subprocess.run(
            [sys.executable, "-m", "gateway", "admin", "--address", proc.admin_url, "rollback", "m"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert rollback.returncode == 0, rollback.stderr
        # Prometheus holds every answer and the rollback (workers hand counters over every second).
        prom.wait_for(f"sum(modelgate_requests_total) >= {load.answered}")
        prom.wait_for('modelgate_rollbacks_total{reason="operator"} == 1')
        yield proc, prom
    finally:
        if prom is not None:
            prom.close()
        code = proc.terminate()
        triton.close()
    assert code == 0, proc.log()


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", ())  # a collapsed row holds its panels


def substitute(expr: str) -> str:
    for name, value in sorted(VARIABLES.items(), key=lambda kv: -len(kv[0])):
        expr = expr.replace(name, value).replace("${" + name[1:] + "}", value)
    return expr


def test_every_dashboard_query_returns_samples(served: tuple[GatewayProcess, PrometheusServer]) -> None:
    _, prom = served
    queries = [
        (panel["title"], target["expr"])
        for panel in panels(dashboard())
        for target in panel.get("targets", ())
    ]
    assert len(queries) > 40
    # A rate needs two scrapes of a series: what has no samples yet is asked again, a while.
    deadline = time.monotonic() + 15
    while True:
        empty = []
        for title, expr in queries:
            found = prom.query(substitute(expr))
            values = [float(sample["value"][1]) for sample in found]
            if not any(np.isfinite(values)):
                empty.append((title, expr, values))
        if not empty or time.monotonic() > deadline:
            break
        queries = [(title, expr) for title, expr, _ in empty]
        time.sleep(prom.interval_s)
    assert not empty, "\n".join(f"{title}: {expr}: {values}" for title, expr, values in empty)
    # The variables: label_values(METRIC, LABEL) is Grafana's; Prometheus answers it as the
    # label's values over the series METRIC selects.
    for var in dashboard()["templating"]["list"]:
        if var["type"] != "query":
            continue
        m = re.fullmatch(r"label_values\((.+), (\w+)\)", var["query"]["query"])
        assert m, var
        values = prom.api(f"label/{m.group(2)}/values", **{"match[]": substitute(m.group(1))})
        assert values, var["name"]
    assert "m" in prom.api("label/model/values", **{"match[]": "modelgate_requests_total"})


def test_every_exported_metric_is_in_the_readme(served: tuple[GatewayProcess, PrometheusServer]) -> None:
    proc, _ = served
    exported = set(re.findall(r"^# HELP (\w+) ", scrape(proc.metrics_port), re.MULTILINE))
    assert {"modelgate_requests_total", "modelgate_worker_restarts_total", "modelgate_drift_score",
            "modelgate_rollout_state", "modelgate_upstream_calls_total"} <= exported  # fmt: skip
    documented = set(re.findall(r"^\| `(modelgate_\w+)`", (ROOT / "README.md").read_text(), re.MULTILINE))
    assert exported - documented == set(), "exported, not in README's metric table"


def test_the_dashboard_is_well_formed() -> None:
    board = dashboard()
    assert board["title"] and board["uid"] and board["schemaVersion"] >= 36
    names = {v["name"] for v in board["templating"]["list"]}
    assert {"datasource", "model", "version"} <= names
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    rows = [p for p in board["panels"] if p["type"] == "row"]
    assert len(rows) >= 8
    for panel in panels(board):
        assert panel.get("title"), panel
        grid = panel["gridPos"]
        assert {"h", "w", "x", "y"} <= set(grid) and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"] and target["expr"].strip()
            used = set(re.findall(r"\$\{?(\w+)", target["expr"]))
            assert used <= names | {"__rate_interval", "__interval", "__range"}, (panel["title"], used)


def test_the_example_scrape_config_is_valid() -> None:
    done = subprocess.run(
        ["promtool", "check", "config", str(SCRAPE_CONFIG)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    assert config["scrape_configs"][0]["static_configs"][0]["targets"] == ["modelgate:8002"]
