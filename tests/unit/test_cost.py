"""Cost accounting without a server: a batch's cost shared by rows, the version's totals, the
gateway's overhead clock, the history ring behind `--since`, the report's arithmetic, and the
CLI's durations."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Mapping, Sequence

import numpy as np
import pytest

from gateway.batching import Batcher, BatchingPolicy, ManualClock
from gateway.control.cost import CostHistory, Totals, cost_report, totals
from gateway.cost_cli import parse_duration
from gateway.telemetry import Metrics, fold
from gateway.telemetry.cost import COST, CallCost, Overhead


class CostlyBackend:
    """Says each call cost 1,000 ns of CPU and 3,000 ns of wall per row (as a backend would
    measure it where it runs)."""

    async def __call__(
        self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str], deadline: float | None = None
    ) -> dict[str, np.ndarray]:
        cost = COST.get()
        assert cost is not None, "every backend call has a CallCost to fill in"
        rows = len(inputs["x"])
        cost.cpu_ns += 1_000 * rows
        cost.wall_ns += 3_000 * rows
        return {"y": inputs["x"]}


@pytest.mark.asyncio
async def test_a_batch_cost_is_shared_by_rows_and_counted_once() -> None:
    metrics = Metrics().for_version("m", "1")
    batcher = Batcher(
        CostlyBackend(),
        ["y"],
        BatchingPolicy(max_batch_size=6, max_queue_delay_s=10),
        clock=ManualClock(),
        on_batch=metrics.executed,
        name="m/1",
    )
    batcher.start()
    sizes = [1, 2, 3]
    results = await asyncio.gather(*(batcher.submit({"x": np.zeros((n, 2), np.float32)}, n) for n in sizes))
    await batcher.close()
    assert {id(r.cost) for r in results} == {id(results[0].cost)}  # one call, one cost
    shares = [r.cost.share(n, r.batch_rows) for r, n in zip(results, sizes, strict=True) if r.cost]
    assert [s[0] for s in shares] == pytest.approx([1.0, 2.0, 3.0])  # µs of CPU, by rows
    assert sum(s[1] for s in shares) == pytest.approx(18.0)  # the whole wall time, shared out
    assert (metrics.execution_count, metrics.cpu_ns, metrics.wall_ns) == (1, 6_000, 18_000)


@pytest.mark.asyncio
async def test_a_request_run_alone_gets_the_whole_call() -> None:
    batcher = Batcher(CostlyBackend(), ["y"], BatchingPolicy(max_batch_size=6, max_queue_delay_s=0))
    batcher.start()
    result = await batcher.submit({"x": np.zeros((2, 2), np.float32)}, 2)
    await batcher.close()
    assert result.cost is not None and result.cost.share(2, result.batch_rows) == (2.0, 6.0, 0.0)
    assert COST.get() is None  # the caller's context is left as it was


def test_a_remote_call_marks_the_version_cpu_as_not_measured() -> None:
    metrics = Metrics().for_version("m", "1")
    metrics.executed(4, 10, CallCost(wall_ns=5_000, cpu_measured=False))
    snap = metrics.snapshot()["cost"]
    assert snap == {"cpu_ns": 0, "gpu_ns": 0, "wall_ns": 5_000, "cpu_measured": False}


def test_overhead_counts_from_start_and_never_goes_back() -> None:
    overhead = Overhead()
    assert overhead.read(0) == 0  # not serving yet: loading is not overhead
    overhead.start()
    sum(range(200_000))  # some CPU
    spent = overhead.read(0)
    assert spent > 0
    assert overhead.read(10**15) == spent  # a backend figure arriving late cannot pull it back


def test_the_sum_of_snapshots_keeps_the_latest_moment() -> None:
    a = {"ok": 2, "last_ms": 1_000, "batches": {"4": [1, 50]}}
    b = {"ok": 3, "last_ms": 900, "batches": {"4": [2, 70], "1": [1, 9]}}
    assert fold(a, b) == {"ok": 5, "last_ms": 1_000, "batches": {"4": [3, 120], "1": [1, 9]}}


def snapshot(requests: int, cpu_ns: int, overhead_ns: int, version: str = "1") -> dict[str, object]:
    cost = {"cpu_ns": cpu_ns, "gpu_ns": 0, "wall_ns": 2 * cpu_ns, "cpu_measured": True}
    v = {"model": "m", "version": version, "ok": requests, "failures": {}, "rows": 2 * requests, "cost": cost}
    return {"versions": [v], "overhead_cpu_ns": overhead_ns}


def test_totals_sum_workers_and_the_report_takes_differences() -> None:
    then = totals([snapshot(10, 1_000_000_000, 0)])
    now = totals(
        [snapshot(60, 4_000_000_000, 1_000_000_000), snapshot(40, 2_000_000_000, 1_000_000_000, "2")]
    )
    report = cost_report(now, then, (0.36, None))
    assert report["overhead_cpu_seconds"] == 2.0
    v1, v2 = report["versions"]
    assert (v1["requests"], v1["rows"], v1["cpu_seconds"], v1["wall_seconds"]) == (50, 100, 3.0, 6.0)
    assert v1["overhead_cpu_seconds"] == pytest.approx(2.0 * 50 / 90)  # split by requests
    assert v1["cpu_seconds_per_1k"] == pytest.approx((3.0 + 2.0 * 50 / 90) * 1000 / 50)
    assert v1["usd"] == pytest.approx((3.0 + 2.0 * 50 / 90) / 3600 * 0.36)
    assert v2["requests"] == 40 and v2["usd_per_1k"] == pytest.approx(v2["usd"] * 1000 / 40)
    assert cost_report(now, None, (None, None), model="x")["versions"] == []
    assert cost_report(now, None, (None, None))["versions"][0]["usd"] is None  # no rates: no price


def test_history_answers_the_newest_sample_at_or_before_a_time() -> None:
    history = CostHistory(sample_s=10, keep=3)
    assert history.at(100.0) is None and history.due(0.0)
    for t in (0.0, 10.0, 20.0, 30.0):  # the first is pushed out
        assert history.due(t)
        history.add(t, Totals(overhead_ns=int(t)))
    assert not history.due(35.0)
    assert [history.at(w)[0] for w in (25.0, 30.0, 99.0)] == [20.0, 30.0, 30.0]  # type: ignore[index]
    assert history.at(0.0)[0] == 10.0  # type: ignore[index]  # older than kept: the oldest


def test_durations() -> None:
    assert [parse_duration(t) for t in ("90", "90s", "15m", "2h", "1d", "1.5h")] == [
        90, 90, 900, 7200, 86400, 5400,
    ]  # fmt: skip
    with pytest.raises(argparse.ArgumentTypeError, match="'soon' is not a duration"):
        parse_duration("soon")
