"""The admin API and `modelgate admin` against the real gateway: traffic, versions, rollouts and
shadow reports; every change reaching every worker; the admin path serving exactly what the
file path serves; swaps by the admin API under load with no failed request."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import yaml

from gateway._proto import admin_pb2 as pb
from gateway._proto import admin_pb2_grpc
from harness.gateway import GatewayProcess, metric, scrape
from tests.integration.test_updates import Load, one, repo, serve, wait_revision, write

pytestmark = pytest.mark.timeout(240)


def cli(proc: GatewayProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "admin", "--address", proc.admin_url, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def admin(proc: GatewayProcess) -> admin_pb2_grpc.AdminServiceStub:
    return admin_pb2_grpc.AdminServiceStub(grpc.insecure_channel(proc.admin_url))


def test_the_cli_sets_traffic_loads_and_unloads_versions_and_reports(tmp_path: Path) -> None:
    proc, config = serve(tmp_path, {"traffic": {"1": 100}, "shadow": {"3": 1.0}})
    try:
        for _ in range(10):
            assert one(proc.url) == ("1", 1)
        done = cli(proc, "traffic", "m", "2=100")
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines() == ["revision 2", '  models.m.traffic: {"1": 100.0} -> {"2": 100.0}']
        assert one(proc.url) == ("2", 2)  # the call returned once it was served: no waiting here

        status = cli(proc, "status")
        assert status.returncode == 0, status.stderr
        lines = status.stdout.splitlines()
        assert lines[0] == f"revision 2 (config {config}; admin changes: m)", status.stdout
        assert lines[1].split()[:4] == ["MODEL", "VERSION", "STATE", "WEIGHT"]
        rows = {line.split()[1]: line.split() for line in lines[2:]}
        assert rows["1"][:7] == ["m", "1", "READY", "0%", "-", "10", "0"], status.stdout
        assert rows["2"][:7] == ["m", "2", "READY", "100%", "-", "1", "0"], status.stdout
        assert rows["3"][:6] == ["m", "3", "READY", "0%", "shadow", "100%"], status.stdout

        as_json = json.loads(cli(proc, "--json", "status").stdout)
        assert {v["version"]: v.get("weight", 0) for v in as_json["versions"]} == {"1": 0, "2": 100, "3": 0}

        refused = cli(proc, "traffic", "m", "9=100")
        assert refused.returncode == 1 and "INVALID_ARGUMENT" in refused.stderr and "'9'" in refused.stderr
        busy = cli(proc, "unload", "m", "2")
        assert busy.returncode == 1 and "FAILED_PRECONDITION" in busy.stderr, busy.stderr
        unknown = cli(proc, "traffic", "nope", "1=1")
        assert unknown.stderr.strip() == "modelgate admin: NOT_FOUND: unknown model 'nope'"
        assert cli(proc, "traffic", "m", "two").returncode != 0
        assert one(proc.url) == ("2", 2)  # refusals changed nothing

        report = json.loads(cli(proc, "--json", "shadow-report", "m").stdout)
        [pair] = [p for p in report["pairs"] if p["primary"] == "1"]
        assert (
            pair["shadow"] == "3" and int(pair["disagreed"]) == 10 and pair["recent"]
        )  # v3 is another model

        assert cli(proc, "unload", "m", "3").returncode == 0  # the shadow goes, and v3 with it
        with grpcclient.InferenceServerClient(proc.url) as c:  # v1: the version policy keeps it
            assert [m.version for m in c.get_model_repository_index().models] == ["1", "2"]
        assert cli(proc, "load", "m", "3").returncode == 0  # back beside them, without traffic
        with grpcclient.InferenceServerClient(proc.url) as c:
            assert [m.version for m in c.get_model_repository_index().models] == ["1", "2", "3"]
        assert one(proc.url)[0] == "2"
    finally:
        assert proc.terminate() == 0, proc.log()


def test_apply_refuses_with_every_error_and_a_dry_run_changes_nothing(tmp_path: Path) -> None:
    proc, _ = serve(tmp_path, {"traffic": {"1": 100}})
    try:
        bad = tmp_path / "bad.yaml"
        bad.write_text(yaml.safe_dump({"models": {"m": {"traffic": {"1": -1, "7": 1}, "shadow": {"1": 2}}}}))
        done = cli(proc, "apply", str(bad))
        assert done.returncode == 1 and done.stderr.startswith("refused, nothing changed:"), done.stderr
        assert "negative weight" in done.stderr and "share must be in (0, 1]" in done.stderr
        good = tmp_path / "good.yaml"
        good.write_text(yaml.safe_dump({"models": {"m": {"traffic": {"1": 50, "2": 50}}}}))
        dry = cli(proc, "apply", str(good), "--dry-run")
        assert dry.returncode == 0 and "dry run: valid; it would change:" in dry.stdout, dry.stdout
        assert one(proc.url) == ("1", 1)
        applied = cli(proc, "--json", "apply", str(good))
        body = json.loads(applied.stdout)
        assert applied.returncode == 0 and body["applied"] and body["served"] and body["revision"] == "2"
        assert wait_revision(proc.url, 2)[1] == 2
    finally:
        assert proc.terminate() == 0, proc.log()


def test_the_admin_path_serves_what_the_file_path_serves(tmp_path: Path) -> None:
    models = repo(tmp_path)
    target = {"traffic": {"1": 70, "2": 30}, "sticky": {"key": "x-user"}, "shadow": {"3": 0.5}}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    write(tmp_path / "a" / "gateway.yaml", target)
    write(tmp_path / "b" / "gateway.yaml", {"traffic": {"1": 100}})
    by_file = GatewayProcess(models, "--config", str(tmp_path / "a" / "gateway.yaml")).wait_ready()
    by_admin = GatewayProcess(models, "--config", str(tmp_path / "b" / "gateway.yaml")).wait_ready()
    try:
        change = admin(by_admin).ApplyConfig(
            pb.ApplyConfigRequest(yaml=yaml.safe_dump({"models": {"m": target}}))
        )
        assert change.applied and change.served, change
        configs = [
            yaml.safe_load(admin(p).GetConfig(pb.GetConfigRequest()).yaml) for p in (by_file, by_admin)
        ]
        assert configs[0]["models"] == configs[1]["models"]
        served = [admin(p).ListVersions(pb.ListVersionsRequest(model="m")) for p in (by_file, by_admin)]
        assert [(v.version, v.state, v.weight, v.role) for v in served[0].versions] == [
            (v.version, v.state, v.weight, v.role) for v in served[1].versions
        ]
        keys = [f"user-{i}" for i in range(40)]  # the same keys land on the same versions
        picks = []
        for proc in (by_file, by_admin):
            with grpcclient.InferenceServerClient(proc.url) as c:
                x = grpcclient.InferInput("x", [1, 32], "FP32")
                x.set_data_from_numpy(np.zeros((1, 32), np.float32))
                picks.append(
                    [c.infer("m", [x], headers={"x-user": k}).get_response().model_version for k in keys]
                )
        assert picks[0] == picks[1] and set(picks[0]) == {"1", "2"}
    finally:
        assert by_file.terminate() == 0, by_file.log()
        assert by_admin.terminate() == 0, by_admin.log()


def test_admin_changes_reach_every_worker_and_reports_sum_them(tmp_path: Path) -> None:
    proc, _ = serve(tmp_path, {"traffic": {"1": 100}}, "--workers", "2", lines=2)
    try:
        for _ in range(30):  # a new connection each: both workers
            assert one(proc.url) == ("1", 1)
        change = admin(proc).SetTraffic(pb.SetTrafficRequest(model="m", weights={"2": 1}))
        assert change.revision == 2 and change.served
        assert {one(proc.url) for _ in range(30)} == {("2", 2)}
        deadline = time.monotonic() + 30
        while True:  # snapshots reach the control process every second
            rows = {
                v.version: v for v in admin(proc).ListVersions(pb.ListVersionsRequest(model="m")).versions
            }
            if rows["1"].requests + rows["2"].requests >= 60 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert (rows["1"].requests, rows["2"].requests) == (30, 30)
        assert (rows["1"].weight, rows["2"].weight) == (0.0, 100.0)
        with pytest.raises(grpc.RpcError) as refused:
            admin(proc).SetTraffic(pb.SetTrafficRequest(model="m"))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        assert proc.terminate() == 0, proc.log()


def test_a_killed_control_process_is_restarted_and_goes_on_from_the_last_revision(tmp_path: Path) -> None:
    """With --workers 2 the control plane is its own process: SIGKILL it, and the workers serve
    on, the supervisor restarts it, and the admin API comes back at the next revision with the
    admin changes made before."""
    proc, _ = serve(tmp_path, {"traffic": {"1": 100}}, "--workers", "2", lines=2)
    try:
        assert admin(proc).SetTraffic(pb.SetTrafficRequest(model="m", weights={"2": 100})).revision == 2
        control = [p for p in children(proc.proc.pid) if comm(p) == "modelgate-ctl"]
        assert len(control) == 1, proc.log()
        os.kill(control[0], signal.SIGKILL)
        assert {one(proc.url) for _ in range(10)} == {("2", 2)}  # the workers serve on meanwhile
        deadline = time.monotonic() + 30
        while True:  # restarted after 1 s (port 0 here: a new port, which proc.admin_url follows)
            try:
                config = admin(proc).GetConfig(pb.GetConfigRequest(), timeout=2)
                break
            except grpc.RpcError:
                assert time.monotonic() < deadline, proc.log()
                time.sleep(0.2)
        assert config.revision == 3 and list(config.admin_models) == ["m"]  # "start" again, same traffic
        assert "the control process" in proc.log() and "restarting in 1 s" in proc.log()
        change = admin(proc).SetTraffic(pb.SetTrafficRequest(model="m", weights={"1": 100}))
        assert change.revision == 4 and change.served
        assert {one(proc.url) for _ in range(10)} == {("1", 4)}
    finally:
        assert proc.terminate() == 0, proc.log()


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def test_swaps_by_the_admin_api_under_load_fail_no_request(tmp_path: Path) -> None:
    """v1 -> v2 -> v1 -> v2 by SetTraffic, under 20 s of load from 8 clients (unary and
    ModelStreamInfer); every answer matches the version it names."""
    proc, _ = serve(tmp_path, {"traffic": {"1": 100}})
    load = Load(proc.url)
    began = time.monotonic()
    try:
        time.sleep(1)
        for revision, target in enumerate(("2", "1", "2"), start=2):
            change = admin(proc).SetTraffic(pb.SetTrafficRequest(model="m", weights={target: 100}))
            assert change.revision == revision and change.served
            assert one(proc.url) == (target, revision)
            time.sleep(max(0.0, (revision - 1) * 6 - (time.monotonic() - began)))
        time.sleep(max(0.0, 20 - (time.monotonic() - began)))
    finally:
        load.finish()
    assert load.failures == []
    assert {v for v, _ in load.seen} == {"1", "2"} and sum(load.seen.values()) > 1000
    assert load.seen[("2", 4)] > 0
    assert proc.terminate() == 0, proc.log()


def test_operators_pause_resume_and_roll_back_a_rollout(tmp_path: Path) -> None:
    models = repo(tmp_path)
    config = tmp_path / "gateway.yaml"
    rollout = {"canary": "2", "steps": [25, 100], "interval_s": 3600, "min_requests": 1}
    config.write_text(
        yaml.safe_dump(
            {
                "state_dir": str(tmp_path / "state"),
                "models": {"m": {"traffic": {"1": 100}, "rollout": rollout}},
            }
        )
    )
    proc = GatewayProcess(models, "--config", str(config)).wait_ready()
    try:
        status = cli(proc, "rollout", "m")
        assert status.returncode == 0 and status.stdout.splitlines()[1].split()[:6] == [
            "m",
            "2",
            "1",
            "running",
            "1/2",
            "25%",
        ], status.stdout
        assert cli(proc, "pause", "m").returncode == 0
        assert admin(proc).GetRollout(pb.ModelRequest(model="m")).rollouts[0].status == "paused"
        again = cli(proc, "pause", "m")
        assert (
            again.returncode == 1 and "FAILED_PRECONDITION" in again.stderr and "it is paused" in again.stderr
        )
        owned = cli(proc, "traffic", "m", "1=100")
        assert owned.returncode == 1 and "owns its traffic" in owned.stderr
        assert cli(proc, "resume", "m").returncode == 0
        back = cli(proc, "rollback", "m")
        assert back.returncode == 0, back.stderr
        assert {one(proc.url)[0] for _ in range(20)} == {"1"}
        [r] = admin(proc).GetRollout(pb.ModelRequest(model="m")).rollouts
        assert (r.status, r.canary_weight, r.reason) == ("rolled_back", 0.0, "rolled back by an operator")
        assert "rollout of m version 2: rolled_back at step 1 by an operator" in proc.log()
        text = scrape(proc.metrics_port)
        assert metric(text, "modelgate_rollbacks_total", model="m", reason="operator") == 1
        missing = cli(proc, "promote", "nope")
        assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr
    finally:
        assert proc.terminate() == 0, proc.log()


def test_a_busy_admin_port_stops_the_start_with_one_line(tmp_path: Path) -> None:
    models = repo(tmp_path)
    first = GatewayProcess(models).wait_ready()
    try:
        for workers in ("1", "2"):
            second = subprocess.run(
                [sys.executable, "-m", "gateway", "serve", "--model-repository", str(models),
                 "--grpc-port", "0", "--metrics-port", "-1", "--admin-port", str(first.admin_port),
                 "--workers", workers],
                capture_output=True, text=True, timeout=120, cwd=tmp_path,
            )  # fmt: skip
            assert second.returncode == 2, second.stderr
            assert "admin" in second.stderr and "Traceback" not in second.stderr, second.stderr
    finally:
        assert first.terminate() == 0
