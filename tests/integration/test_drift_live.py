"""Drift against the real gateway, part two: a reference learned from the baseline's live traffic
(one worker, and two that share one reference), with the report's filling state before it is learned, a canary
whose outputs part from the baseline's alerting and a same-model canary not; and an INT64-input
model whose categorical features alert when a code never seen in the reference arrives."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import yaml

from gateway.drift import load_profile
from gateway.examples import identity, mlp, write_version
from harness.gateway import GatewayProcess, metric, scrape
from tests.integration.test_drift import browse, build
from tests.integration.test_rollout import wait_log

pytestmark = pytest.mark.timeout(240)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=60
    )


def report(proc: GatewayProcess, *args: str) -> str:
    done = cli("drift", "report", "m", "--address", proc.admin_url, *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def send(client: grpcclient.InferenceServerClient, rng: np.random.Generator, requests: int) -> None:
    for _ in range(requests):
        i = grpcclient.InferInput("x", [32, 32], "FP32")
        i.set_data_from_numpy(rng.normal(size=(32, 32)).astype(np.float32))
        client.infer("m", [i])


@pytest.mark.parametrize("workers", [1, 2])
def test_a_live_reference_is_learned_once_for_every_worker_and_judges_the_canaries(
    tmp_path: Path, workers: int
) -> None:
    models = tmp_path / "models"
    for version, seed in {1: 1, 2: 1, 3: 2}.items():  # v2 is v1's model again; v3 another one
        write_version(models, "m", version, mlp(seed=seed))
    drift = {"reference": {"live": "baseline", "rows": 2000}, "window": 1000, "alert": 0.1}
    config = tmp_path / "gateway.yaml"
    config.write_text(
        yaml.safe_dump({"models": {"m": {"traffic": {"1": 50, "2": 25, "3": 25}, "drift": drift}}})
    )
    proc = GatewayProcess(models, "--config", str(config), "--workers", str(workers)).wait_ready(
        lines=workers
    )
    try:
        before = report(proc).splitlines()
        assert before[1].startswith("  reference filling: ") and before[1].endswith(
            " of 2000 rows (baseline) (live)"
        )
        assert before[-1] == "no window has ended yet"
        early = cli("profile", "save", "m", "-o", str(tmp_path / "early.npz"), "--address", proc.admin_url)
        assert early.returncode == 1 and "FAILED_PRECONDITION: model 'm': no reference yet" in early.stderr
        rng = np.random.default_rng(0)
        with grpcclient.InferenceServerClient(proc.url) as client:
            send(client, rng, 40)  # about 640 of version 1's rows: filling
            deadline = time.monotonic() + 30
            while "filling: 0 of" in report(proc):  # the workers dump their rows every second
                assert time.monotonic() < deadline, proc.log()
                time.sleep(0.2)
            filling = report(proc).splitlines()[1]
            assert "rows of version 1 (live)" in filling and " of 2000 rows" in filling, filling
            deadline = time.monotonic() + 60
            while "drift reference learned from" not in proc.log():
                assert time.monotonic() < deadline, proc.log()
                send(client, rng, 10)
            deadline = time.monotonic() + 90
            while "drift alert: model 'm' version 3: output 'y'" not in proc.log():
                assert time.monotonic() < deadline, proc.log()
                send(client, rng, 10)
            deadline = time.monotonic() + 60
            while (
                metric(scrape(proc.metrics_port), "modelgate_drift_windows_total", model="m", version="2") < 1
            ):
                assert time.monotonic() < deadline, proc.log()
                send(client, rng, 10)
        text = scrape(proc.metrics_port)
        assert metric(text, "modelgate_drift_alert", model="m", version="3") == 1
        assert metric(text, "modelgate_drift_alert", model="m", version="2") == 0  # the same model
        assert metric(text, "modelgate_drift_alert", model="m", version="1") == 0
        assert proc.log().count("drift reference learned from") == 1  # one profile for both workers
        frozen = tmp_path / "frozen.npz"
        saved = cli("profile", "save", "m", "-o", str(frozen), "--address", proc.admin_url)
        assert saved.returncode == 0, saved.stderr
        profile = load_profile(frozen)
        assert (
            profile.version == "1"
            and profile.source.startswith("live: ")
            and list(profile.tensors) == ["x", "y"]
        )
        after = report(proc, "--json")
        body = json.loads(after)
        assert body["reference"].startswith("reference: live: ") and "rows of version 1" in body["reference"]
        assert {f["role"] for f in body["features"] if f["version"] == "3"} == {"input", "output"}
    finally:
        assert proc.terminate() == 0, proc.log()


def test_categorical_features_of_an_int64_input_alert_on_a_new_code(tmp_path: Path) -> None:
    models = tmp_path / "models"
    write_version(models, "m", 1, identity(["INT64"], width=3))  # in_INT64 -> out_INT64, [batch, 3]
    rng = np.random.default_rng(4)
    data = tmp_path / "codes.npy"
    np.save(data, rng.integers(0, 5, size=(5000, 3)).astype(np.int64))
    profile = tmp_path / "m.npz"
    described = "input in_INT64 (3 features, 3 categorical), output out_INT64 (3 features, 3 categorical)"
    assert described in build(models, data, profile)
    config = tmp_path / "gateway.yaml"
    drift = {"reference": str(profile), "window": 1000, "alert": 0.1}
    config.write_text(yaml.safe_dump({"models": {"m": {"drift": drift}}}))
    proc = GatewayProcess(models, "--config", str(config)).wait_ready()
    try:
        with grpcclient.InferenceServerClient(proc.url) as client:

            def send_codes(batches: int, new_code: bool) -> None:
                for _ in range(batches):
                    codes = rng.integers(0, 5, size=(50, 3)).astype(np.int64)
                    if new_code:
                        codes[:25, 2] = 9  # never in the reference: "other"
                    i = grpcclient.InferInput("in_INT64", [50, 3], "INT64")
                    i.set_data_from_numpy(codes)
                    client.infer("m", [i])

            send_codes(21, new_code=False)
            deadline = time.monotonic() + 30
            while (
                metric(scrape(proc.metrics_port), "modelgate_drift_windows_total", model="m", version="1") < 1
            ):
                assert time.monotonic() < deadline, proc.log()
                time.sleep(0.2)
            assert metric(scrape(proc.metrics_port), "modelgate_drift_alert", model="m", version="1") == 0
            send_codes(21, new_code=True)
            wait_log(proc, "drift alert: model 'm' version 1: input 'in_INT64' feature 2: psi")
        body = json.loads(report(proc, "--json"))
        worst = body["features"][0]
        assert worst["kind"] == "categorical" and worst["feature"] == "2" and "edges" not in worst
        assert len(worst["reference_counts"]) == 6  # codes 0..4, then other
        assert int(worst["live_counts"][-1]) >= 400  # half the window's rows had code 9
        assert worst["ks"] == worst["wasserstein"]  # both the total variation distance
        assert worst["out_of_range_rate"] > 0.4
        page = tmp_path / "drift.html"
        report(proc, "--html", str(page))
        assert "rendered 6 charts, 72 bars" in browse(page)  # 2 tensors x 3 features x 6 categories x 2
    finally:
        assert proc.terminate() == 0, proc.log()
