"""Drift against the real gateway: a profile made by `modelgate profile build`, a shifted stream
sent over gRPC alerting on /metrics, in the log and in `modelgate drift report` (one worker and
two), a canary whose outputs part from its baseline's rolled back by the drift gate (and one
whose outputs match promoted), and an unreadable profile refused at start."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import yaml

from gateway.examples import mlp, write_version
from harness.gateway import GatewayProcess, metric, scrape
from tests.integration.test_rollout import wait_log

pytestmark = pytest.mark.timeout(240)


def profiled(tmp_path: Path, seeds: dict[int, int]) -> tuple[Path, Path]:
    """A repository with model m (versions -> mlp seeds) and v1's profile, made by the CLI."""
    models = tmp_path / "models"
    for version, seed in seeds.items():
        write_version(models, "m", version, mlp(seed=seed))
    data = tmp_path / "train.npy"
    np.save(data, np.random.default_rng(3).normal(size=(20_000, 32)).astype(np.float32))
    profile = tmp_path / "m.npz"
    assert "input x (32 features), output y (8 features)" in build(models, data, profile)
    return models, profile


def build(models: Path, data: Path, profile: Path) -> str:
    """`modelgate profile build` of model m version 1 on `data`: what it printed."""
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "profile", "build", str(data), "--model", "m", "--version", "1",
         "-o", str(profile), "--model-repository", str(models)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def browse(page: Path) -> str:
    """The page's DOM after a real headless browser (Debian's chromium: make browser) ran it."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    assert browser is not None, "no chromium: run `make browser` (harness/setup_browser.sh)"
    done = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def send(url: str, batches: int, shift: float = 0.0, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    with grpcclient.InferenceServerClient(url) as c:
        for _ in range(batches):
            x = rng.normal(size=(8, 32)).astype(np.float32)
            x[:, 5] += shift
            i = grpcclient.InferInput("x", [8, 32], "FP32")
            i.set_data_from_numpy(x)
            c.infer("m", [i])


@pytest.mark.parametrize("workers", [1, 2])
def test_a_shifted_stream_alerts_on_metrics_in_the_log_and_in_the_report(
    tmp_path: Path, workers: int
) -> None:
    models, profile = profiled(tmp_path, {1: 1})
    config = tmp_path / "gateway.yaml"
    drift = {"reference": str(profile), "window": 1000, "alert": 0.05}
    config.write_text(yaml.safe_dump({"models": {"m": {"drift": drift}}}))
    proc = GatewayProcess(models, "--config", str(config), "--workers", str(workers)).wait_ready(
        lines=workers
    )
    try:
        send(proc.url, 130)  # a window (at least 1000 rows) of the training distribution
        deadline = time.monotonic() + 30
        while metric(scrape(proc.metrics_port), "modelgate_drift_windows_total", model="m", version="1") < 1:
            assert time.monotonic() < deadline, proc.log()
            time.sleep(0.2)
        assert metric(scrape(proc.metrics_port), "modelgate_drift_alert", model="m", version="1") == 0
        send(proc.url, 130, shift=0.5, seed=1)
        wait_log(proc, "drift alert: model 'm' version 1: input 'x' feature 5: psi")
        deadline = time.monotonic() + 30
        while metric(scrape(proc.metrics_port), "modelgate_drift_alert", model="m", version="1") != 1:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        score = metric(
            scrape(proc.metrics_port),
            "modelgate_drift_score",
            model="m",
            version="1",
            tensor="x",
            feature="5",
        )
        assert score > 0.05
        report = subprocess.run(
            [sys.executable, "-m", "gateway", "drift", "report", "m", "--address", proc.admin_url],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert report.returncode == 0, report.stderr
        lines = report.stdout.splitlines()
        assert lines[0] == "m: alerts when the worst feature's psi is over 0.05"
        assert lines[1] == f"  reference: {profile}"
        assert "version 1:" in lines[2] and "ALERT: input 'x' feature 5" in lines[2]
        worst = lines[4].split()
        assert worst[:3] == ["1", "x", "5"] and worst[-1] == "over", report.stdout
        assert int(worst[3]) >= 1000  # the window holds every worker's rows
        page = tmp_path / "drift.html"
        written = subprocess.run(
            [sys.executable, "-m", "gateway", "drift", "report", "m", "--address", proc.admin_url,
             "--html", str(page)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert written.returncode == 0, written.stderr
        assert "rendered 40 charts, 800 bars" in browse(page)  # x's 32 and y's 8 features, 10 bins each
    finally:
        assert proc.terminate() == 0, proc.log()


@pytest.mark.parametrize(
    ("canary_seed", "outcome"), [(2, "rolled back at step 1 (50.0%): drift"), (1, "promoted")]
)
def test_the_drift_gate_judges_the_canarys_outputs_against_the_baselines(
    tmp_path: Path, canary_seed: int, outcome: str
) -> None:
    models, profile = profiled(tmp_path, {1: 1, 2: canary_seed})
    gates = {"max_error_rate": None, "max_p99_ratio": None, "max_shadow_disagreement": None, "max_drift": 0.1}
    rollout = {"canary": "2", "steps": [50, 100], "interval_s": 1.0, "min_requests": 30, **gates}
    section = {
        "traffic": {"1": 100},
        "rollout": rollout,
        "drift": {"reference": str(profile), "window": 100_000},
    }
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump({"state_dir": str(tmp_path / "state"), "models": {"m": section}}))
    proc = GatewayProcess(models, "--config", str(config)).wait_ready()
    try:
        deadline = time.monotonic() + 60
        while outcome not in proc.log():
            assert time.monotonic() < deadline, proc.log()
            send(proc.url, 20, seed=int(time.monotonic() * 1000) % 10_000)
        line = next(ln for ln in proc.log().splitlines() if outcome in ln)
        if canary_seed == 2:
            assert "against the baseline, output 'y' feature" in line, line
        assert "rolled back" not in proc.log() or canary_seed == 2
    finally:
        assert proc.terminate() == 0, proc.log()


def test_an_unreadable_profile_is_refused_at_start(tmp_path: Path) -> None:
    models = tmp_path / "models"
    write_version(models, "m", 1, mlp(seed=1))
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 not a zip")
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump({"models": {"m": {"drift": {"reference": str(tmp_path / "bad.npz")}}}}))
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--model-repository", str(models), "--config", str(config),
         "--grpc-port", "0", "--metrics-port", "-1", "--admin-port", "-1"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.startswith("modelgate: invalid configuration: models.m.drift: profile")
    assert "is not a readable modelgate profile" in done.stderr and "Traceback" not in done.stderr
