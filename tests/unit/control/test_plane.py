"""The control plane over a real repository on disk and real files: layers (file, admin changes,
rollouts), validation, revisions, persistence across a restart, and the reports it sums from
serving processes' snapshots (made by hand here: the snapshot is the protocol seam)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.control import ControlPlane, read_published
from gateway.control.plane import ADMIN_FILE
from gateway.errors import FailedPrecondition, InvalidArgument, NotFound
from gateway.examples import mlp, write_config, write_version
from gateway.settings import ConfigSource
from gateway.telemetry._histogram import LATENCY_BOUNDS
from gateway.telemetry._routing import DIFF_BOUNDS


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    for v in (1, 2, 3):
        write_version(root, "m", v, mlp(seed=v))
    write_config(root, "m", "max_batch_size: 8\nversion_policy: { specific { versions: [1] } }\n")
    write_version(root, "other", 1, mlp(seed=9))
    return root


class Gateway:
    """A control plane over a config file, as `modelgate serve --config FILE` starts one."""

    def __init__(self, tmp_path: Path, repo: Path, models: dict[str, Any] | None, run: str = "run") -> None:
        """`models` None: the file written before is read as it is (a restart)."""
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.config = tmp_path / "gateway.yaml"
        self.state = tmp_path / "state"
        self.repo = repo
        if models is not None:
            self.write(models)
        self.snapshots: list[dict[str, Any]] = []
        source = ConfigSource(self.config)
        self.plane = ControlPlane(source.load(), source, tmp_path / run, lambda: self.snapshots)

    def write(self, models: dict[str, Any]) -> None:
        body = {"model_repository": str(self.repo), "state_dir": str(self.state), "models": models}
        self.config.write_text(yaml.safe_dump(body))

    def traffic(self, model: str = "m") -> dict[str, float] | None:
        return self.plane.served.models[model].traffic if model in self.plane.served.models else None


def test_start_publishes_revision_one_and_a_restart_goes_on_from_the_last(tmp_path: Path, repo: Path) -> None:
    g = Gateway(tmp_path, repo, {"m": {"traffic": {"1": 100}}})
    published = read_published(tmp_path / "run")
    assert published is not None and (published.revision, published.source) == (1, "start")
    assert published.settings.models["m"].traffic == {"1": 100}
    g.plane.set_traffic("m", {"1": 50, "2": 50})
    again = ControlPlane(g.plane.started, g.plane.source, tmp_path / "run")  # a restarted control process
    assert again.revision == 3 and again.served.models["m"].traffic == {"1": 50, "2": 50}


def test_set_traffic_is_validated_kept_across_a_restart_and_gives_way_to_a_file_edit(
    tmp_path: Path, repo: Path
) -> None:
    g = Gateway(tmp_path, repo, {"m": {"traffic": {"1": 100}}, "other": {}})
    change = g.plane.set_traffic("m", {"2": 10, "1": 90})
    assert change.revision == 2 and change.diff == [
        'models.m.traffic: {"1": 100.0} -> {"1": 90.0, "2": 10.0}'
    ]
    assert g.plane.admin_models == ["m"] and (g.state / ADMIN_FILE).exists()
    for bad, why in (
        ({"7": 100}, "version '7'"),
        ({"1": -1, "2": 1}, "negative weight"),
        ({"1": 0}, "sum to 0"),
    ):
        with pytest.raises(InvalidArgument, match=why):
            g.plane.set_traffic("m", bad)
    with pytest.raises(NotFound, match="unknown model 'nope'"):
        g.plane.set_traffic("nope", {"1": 100})
    assert g.plane.revision == 2 and g.traffic() == {"1": 90, "2": 10}  # refusals changed nothing

    restarted = Gateway(tmp_path, repo, None, run="run2")  # the admin change outlives a restart
    assert restarted.traffic() == {"1": 90, "2": 10}

    g.write({"m": {"traffic": {"1": 100}}, "other": {"traffic": {"1": 100}}})  # m's traffic unchanged
    g.plane.reload("file")
    assert g.traffic() == {"1": 90, "2": 10} and g.plane.admin_models == ["m"]
    g.write({"m": {"traffic": {"3": 100}}, "other": {"traffic": {"1": 100}}})  # the file changes m: it wins
    g.plane.reload("file")
    assert g.traffic() == {"3": 100} and g.plane.admin_models == []


def test_apply_config_lists_every_error_diffs_a_dry_run_and_equals_the_file_path(
    tmp_path: Path, repo: Path
) -> None:
    target = {"m": {"traffic": {"1": 90, "2": 10}, "sticky": {"key": "x-user"}, "shadow": {"3": 0.5}}}
    by_file = Gateway(tmp_path / "a", repo, target)
    by_admin = Gateway(tmp_path / "b", repo, {"m": {"traffic": {"1": 100}}})
    text = yaml.safe_dump({"model_repository": str(repo), "state_dir": str(by_admin.state), "models": target})

    dry = by_admin.plane.apply_config(text, dry_run=True)
    assert not dry.applied and dry.errors == [] and by_admin.plane.revision == 1
    assert 'models.m.shadow: (none) -> {"3": 0.5}' in dry.diff and len(dry.diff) == 3

    bad = {
        "m": {"traffic": {"1": 100, "9": 1}, "batching": {"max_batch_size": 2}},
        "other": {"traffic": {"8": 1}},
    }
    refused = by_admin.plane.apply_config(
        yaml.safe_dump({"model_repository": str(repo), "state_dir": str(by_admin.state), "models": bad})
    )
    assert not refused.applied and by_admin.plane.revision == 1
    assert len(refused.errors) == 3, refused.errors  # every problem, not the first
    assert any("models.m.batching (restart" in e for e in refused.errors)
    assert any("'9'" in e for e in refused.errors) and any("'8'" in e for e in refused.errors)
    assert by_admin.plane.apply_config("models: [a, b").errors[0].startswith("cannot read the config sent")

    applied = by_admin.plane.apply_config(text)
    assert applied.applied and applied.revision == 2
    assert by_admin.plane.served.models == by_file.plane.served.models  # the admin path = the file path
    assert read_published(tmp_path / "b" / "run").settings.models == by_file.plane.served.models  # type: ignore[union-attr]


def test_load_and_unload_a_version_with_no_traffic(tmp_path: Path, repo: Path) -> None:
    g = Gateway(tmp_path, repo, {})
    g.snapshots = [{"pid": 1, "models": {"m": {"state": "READY", "versions": ["1"], "failed": {}}}}]
    assert g.plane.load_version("m", "3").diff == ['models.m.traffic: (none) -> {"1": 100.0, "3": 0.0}']
    assert g.plane.load_version("m", "3").diff == []  # loaded already: nothing changes
    with pytest.raises(FailedPrecondition, match="takes 100 of the traffic"):
        g.plane.unload_version("m", "1")
    g.plane.set_traffic("m", {"1": 100, "3": 0})
    assert g.plane.unload_version("m", "3").diff == [
        'models.m.traffic: {"1": 100.0, "3": 0.0} -> {"1": 100.0}'
    ]
    with pytest.raises(NotFound):
        g.plane.unload_version("m", "2")


def test_operators_drive_a_rollout_and_own_no_weights_while_it_runs(tmp_path: Path, repo: Path) -> None:
    rollout = {"canary": "2", "steps": [10, 50, 100], "interval_s": 3600, "min_requests": 1}
    g = Gateway(tmp_path, repo, {"m": {"traffic": {"1": 100}, "rollout": rollout}})
    assert g.traffic() == {"1": 90, "2": 10}
    with pytest.raises(FailedPrecondition, match="rollout \\(running\\) owns its traffic"):
        g.plane.set_traffic("m", {"1": 100})
    with pytest.raises(FailedPrecondition, match="it is running"):
        g.plane.rollout_command("m", "resume")
    assert g.plane.rollout_command("m", "pause").revision == 2
    assert g.plane.rollout_status("m")[0]["status"] == "paused" and g.traffic() == {"1": 90, "2": 10}
    g.plane.rollout_command("m", "resume")
    g.plane.rollout_command("m", "rollback")
    status = g.plane.rollout_status("m")[0]
    assert status["status"] == "rolled_back" and status["reason"] == "rolled back by an operator"
    assert g.traffic() == {"1": 100, "2": 0}
    g.plane.set_traffic("m", {"1": 100, "2": 0})  # a finished rollout leaves the weights to ops
    again = Gateway(tmp_path, repo, None, run="run2")  # a restart does not escalate it again
    assert again.plane.rollout_status("m")[0]["status"] == "rolled_back"
    with pytest.raises(NotFound, match="has no rollout"):
        g.plane.rollout_command("other", "promote")


def _version(model: str, version: str, ok: int, failed: int, slow_bucket: int) -> dict[str, Any]:
    latency = [0] * (len(LATENCY_BOUNDS) + 1)
    latency[slow_bucket] = ok + failed
    return {
        "model": model,
        "version": version,
        "ok": ok,
        "failures": {"UNAVAILABLE": failed},
        "latency": [latency, 0.0],
    }


def test_reports_sum_every_worker(tmp_path: Path, repo: Path) -> None:
    g = Gateway(tmp_path, repo, {"m": {"traffic": {"1": 75, "2": 25}, "shadow": {"3": 1.0}}})
    models = {"m": {"state": "READY", "reason": "", "versions": ["1", "2", "3"], "failed": {}}}
    shadow = {
        "model": "m", "primary": "1", "shadow": "3",
        "outcomes": {"agree": 3, "disagree": 1}, "argmax": [4, 3],
        "diff": [[0] * (len(DIFF_BOUNDS) + 1), 0.0], "latency": [[0] * (len(LATENCY_BOUNDS) + 1), 0.0],
        "recent": [{"at": 1.0, "input_digest": "ab", "max_abs_diff": 0.5, "outputs": {}}],
    }  # fmt: skip
    routing = {"revision": 1, "weights": [["m", "1", 0.75], ["m", "2", 0.25]], "shadows": [shadow]}
    worker = {"pid": 1, "models": models, "routing": routing, "versions": [_version("m", "1", 90, 10, 3)]}
    retired = {"versions": [_version("m", "1", 100, 0, 3)], "routing": {"shadows": [dict(shadow, recent=[])]}}
    g.snapshots = [worker, dict(worker, pid=2), retired]
    rows = {r["version"]: r for r in g.plane.list_versions("m")}
    assert rows["1"]["requests"] == 300 and rows["1"]["errors"] == 20 and rows["1"]["weight"] == 75.0
    assert LATENCY_BOUNDS[2] * 1e3 < rows["1"]["p99_ms"] <= LATENCY_BOUNDS[3] * 1e3
    assert rows["3"]["role"] == "shadow 100%" and rows["3"]["weight"] == 0.0 and rows["2"]["requests"] == 0
    [pair] = g.plane.shadow_report("m")
    assert (pair["compared"], pair["disagreed"], pair["agreement_rate"]) == (12, 3, 0.75)
    assert len(pair["recent"]) == 2 and pair["argmax_agreement"] == 0.75
    assert g.plane.served_by_all(1) and not g.plane.served_by_all(2)


def cost_snapshot(requests: int) -> dict[str, Any]:
    """A worker's snapshot whose mlp-like version m/1 served `requests`, 1 ms of CPU each."""
    cost = {
        "cpu_ns": requests * 1_000_000,
        "gpu_ns": 0,
        "wall_ns": requests * 2_000_000,
        "cpu_measured": True,
    }
    version = {"model": "m", "version": "1", "ok": requests, "failures": {}, "rows": requests, "cost": cost}
    return {"pid": 1, "versions": [version], "overhead_cpu_ns": requests * 500_000}


def test_the_cost_report_takes_its_period_from_the_kept_sums(tmp_path: Path, repo: Path) -> None:
    now = [1000.0]
    served: list[dict[str, Any]] = [cost_snapshot(10)]
    config = tmp_path / "gateway.yaml"
    body = {
        "model_repository": str(repo),
        "state_dir": str(tmp_path / "state"),
        "cost": {"cpu_core_hour_usd": 3.6},
    }
    config.write_text(yaml.safe_dump(body))
    source = ConfigSource(config)
    plane = ControlPlane(source.load(), source, tmp_path / "run", lambda: served, clock=lambda: now[0])
    plane.tick()  # the first sample: 10 requests at t=1000
    now[0], served[0] = 1010.0, cost_snapshot(30)
    plane.tick()  # 30 at t=1010
    now[0], served[0] = 1015.0, cost_snapshot(50)
    plane.tick()  # not kept: within 10 s of the last sample
    whole, last_10s, last_3s = plane.cost_report(), plane.cost_report("m", 10), plane.cost_report(since_s=3)
    assert [r["versions"][0]["requests"] for r in (whole, last_10s, last_3s)] == [50, 40, 20]
    assert [r["covered_s"] for r in (whole, last_10s, last_3s)] == [15.0, 15.0, 5.0]
    [row] = last_3s["versions"]
    assert row["cpu_seconds"] == pytest.approx(0.02) and last_3s["overhead_cpu_seconds"] == pytest.approx(
        0.01
    )
    assert row["usd"] == pytest.approx(0.03 / 3600 * 3.6)  # (CPU + overhead) at 3.6 $ a core-hour
    assert last_3s["cpu_core_hour_usd"] == 3.6 and last_3s["gpu_hour_usd"] is None
    with pytest.raises(NotFound, match="unknown model 'nope'"):
        plane.cost_report("nope")
