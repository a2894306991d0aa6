"""The Prometheus view of several workers' snapshots: counters summed, labels kept apart."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from gateway.telemetry.metrics import SnapshotCollector, VersionMetrics


def worker_snapshot(ok: int, upstream: dict[str, Any]) -> dict[str, Any]:
    version = VersionMetrics("fraud", "1")
    for _ in range(ok):
        version.succeeded(1, 1_000_000, 0, 0, 0)
    version.failed("UNAVAILABLE", 1_000)
    version.upstream = lambda: upstream
    return {"versions": [version.snapshot()], "load_failures": {}, "inflight": 0}


def exposition(*snapshots: dict[str, Any]) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(lambda: list(snapshots)))
    return generate_latest(registry).decode()


def endpoint(address: str, calls: dict[str, int], ejected: int = 0, outstanding: int = 0) -> dict[str, Any]:
    return {
        "endpoint": address,
        "calls": calls,
        "ejections": ejected,
        "ejected": ejected,
        "outstanding": outstanding,
    }


def test_workers_counters_and_upstream_endpoints_are_summed() -> None:
    one = worker_snapshot(
        3,
        {
            "retries": 1,
            "endpoints": [endpoint("a:1", {"OK": 5}, outstanding=2), endpoint("b:1", {"UNAVAILABLE": 2}, 1)],
        },
    )
    two = worker_snapshot(
        4, {"retries": 2, "endpoints": [endpoint("a:1", {"OK": 7}), endpoint("b:1", {"OK": 1})]}
    )
    text = exposition(one, two)
    labels = 'model="fraud",version="1"'
    assert f'modelgate_requests_total{{code="OK",{labels}}} 7.0' in text
    assert f'modelgate_requests_total{{code="UNAVAILABLE",{labels}}} 2.0' in text
    assert f'modelgate_upstream_calls_total{{code="OK",endpoint="a:1",{labels}}} 12.0' in text
    assert f'modelgate_upstream_calls_total{{code="OK",endpoint="b:1",{labels}}} 1.0' in text
    assert f'modelgate_upstream_calls_total{{code="UNAVAILABLE",endpoint="b:1",{labels}}} 2.0' in text
    assert f"modelgate_upstream_retries_total{{{labels}}} 3.0" in text
    assert f'modelgate_upstream_ejected{{endpoint="b:1",{labels}}} 1.0' in text  # one worker ejected it
    assert f'modelgate_upstream_ejected{{endpoint="a:1",{labels}}} 0.0' in text
    assert f'modelgate_upstream_ejections_total{{endpoint="b:1",{labels}}} 1.0' in text
    assert f'modelgate_upstream_outstanding{{endpoint="a:1",{labels}}} 2.0' in text


def test_in_process_versions_export_no_upstream_series() -> None:
    text = exposition(worker_snapshot(1, {}))
    assert "modelgate_upstream_calls_total{" not in text
    assert "modelgate_upstream_ejected{" not in text


def test_a_dead_workers_counters_fold_into_the_retired_sum_and_its_gauges_go(tmp_path: Any) -> None:
    import json

    from gateway.telemetry import Metrics, read_snapshots, retire_worker

    live = worker_snapshot(
        3, {"retries": 1, "endpoints": [endpoint("a:1", {"OK": 3}, ejected=1, outstanding=2)]}
    )
    dead = []
    for pid, ok in ((101, 5), (102, 7)):
        metrics = Metrics()
        version = metrics.for_version("fraud", "1")
        for _ in range(ok):
            version.succeeded(1, 1_000_000, 0, 0, 0)
        version.routes["weighted"] = ok
        shadow = metrics.for_shadow("fraud", "1", "2")
        shadow.compared(True, 0.0, 2, 2)
        metrics.inflight = 4  # it died with calls in flight
        metrics.weights = [("fraud", "1", 1.0)]
        snapshot = metrics.snapshot()
        (tmp_path / f"worker-{pid}.json").write_text(json.dumps(snapshot))
        dead.append(snapshot)
    (tmp_path / "worker-7.json").write_text(json.dumps(live))
    before = exposition(*read_snapshots(tmp_path))
    for pid in (101, 102):
        retire_worker(tmp_path, pid)
    assert sorted(p.name for p in tmp_path.glob("*.json")) == ["worker-7.json", "worker-retired.json"]
    after = exposition(*read_snapshots(tmp_path))
    for line in (
        'modelgate_requests_total{code="OK",model="fraud",version="1"} 15.0',  # 3 live + 5 + 7 dead
        'modelgate_routed_requests_total{model="fraud",route="weighted",version="1"} 12.0',
        'modelgate_shadow_requests_total{model="fraud",outcome="agree",primary="1",shadow="2"} 2.0',
        'modelgate_request_duration_seconds_count{model="fraud",version="1"} 15.0',
    ):
        assert line in before and line in after, line
    assert "modelgate_inflight_requests 8.0" in before and "modelgate_inflight_requests 0.0" in after
    assert 'modelgate_traffic_weight{model="fraud",version="1"} 1.0' not in after


def test_batch_sizes_queue_times_queue_depth_and_readiness_over_workers() -> None:
    class Queue:
        queued = 3

    snapshots = []
    for failed in ({}, {"2": "not a model"}):
        version = VersionMetrics("fraud", "1")
        for rows in (1, 3, 3, 200):
            version.executed(rows, 1_000)
        version.succeeded(1, 2_000_000, 0, 0, 0, queue_ns=300_000)
        version.batching = type("Policy", (), {"max_batch_size": 8, "max_queue_delay_s": 0.001})()
        version.batcher = Queue()
        models = {"fraud": {"state": "READY", "reason": "", "versions": ["1", "2"], "failed": {}}}
        if failed:  # this worker's load of version 2 failed
            models["fraud"].update(versions=["1"], failed=failed)
        snapshots.append({"versions": [version.snapshot()], "models": models})
    lines = set(exposition(*snapshots).splitlines())
    one = 'model="fraud",version="1"'
    assert {
        f'modelgate_batch_size_bucket{{le="1.0",{one}}} 2.0',
        f'modelgate_batch_size_bucket{{le="4.0",{one}}} 6.0',
        f'modelgate_batch_size_bucket{{le="128.0",{one}}} 6.0',
        f'modelgate_batch_size_bucket{{le="256.0",{one}}} 8.0',
        f"modelgate_batch_size_sum{{{one}}} 414.0",
        f'modelgate_queue_duration_seconds_bucket{{le="0.00025",{one}}} 0.0',
        f'modelgate_queue_duration_seconds_bucket{{le="0.0005",{one}}} 2.0',
        f"modelgate_batch_queued_requests{{{one}}} 6.0",  # summed over workers
        f"modelgate_version_ready{{{one}}} 1.0",
        'modelgate_version_ready{model="fraud",version="2"} 0.0',  # failed in one worker
    } <= lines


def test_calls_counted_together_count_as_each_counted_alone() -> None:
    """The batch path counts a group's calls in one step (`succeeded_together`): every statistic
    and both histograms come out as when each call is counted with `succeeded`."""
    totals = [120_000, 480_000, 2_600_000, 90_000_000]  # ns: four latency buckets
    rows = [1, 2, 1, 4]
    inputs = [1_000, 2_000, 3_000, 4_000]
    alone, together = VersionMetrics("m", "1"), VersionMetrics("m", "1")
    for total, n, input_ns in zip(totals, rows, inputs, strict=True):
        alone.succeeded(n, total, input_ns, 700_000, 5_000, 300_000)
    together.succeeded_together(sum(rows), totals, sum(inputs), 700_000, 5_000 * 4, 300_000)
    a, b = alone.snapshot(), together.snapshot()
    a.pop("last_ms"), b.pop("last_ms")
    assert a == b
    assert sum(together.latency.counts) == 4 and sum(together.queue_latency.counts) == 4


def test_snapshot_writes_from_a_thread_and_the_loop_never_collide(tmp_path: Path) -> None:
    """The worker writes its snapshot every second on a thread and a last time at close on the
    loop: both at once lost the shared temporary file (FileNotFoundError, and a close that never
    finished)."""
    from gateway.telemetry import Metrics

    metrics = Metrics()
    metrics.for_version("m", "1").succeeded(1, 1_000, 0, 0, 0)
    errors: list[BaseException] = []

    def write() -> None:
        try:
            for _ in range(300):
                metrics.write_snapshot(tmp_path)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert json.loads(next(tmp_path.glob("worker-*.json")).read_text())["versions"]
