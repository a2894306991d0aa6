"""Metrics: plain counters on the hot path, Prometheus text at scrape time.

A request costs a few integer additions and one bisect (`VersionMetrics`); nothing is formatted,
locked or written until Prometheus scrapes. The same counters answer the ModelStatistics RPC.
With `--workers N`, each worker writes a snapshot of its counters to a shared directory every
`flush_s` and at exit; the supervisor serves the sum (counters of a worker that died are kept,
as Prometheus expects of a counter).
"""

from __future__ import annotations

import bisect
import gc
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from ._histogram import BATCH_BOUNDS, LATENCY_BOUNDS, Histogram, buckets, merge_counts
from ._retire import fold
from ._routing import RoutingFamilies, ShadowStats
from .cost import CallCost, Overhead, cost_families

__all__ = [
    "STATISTICS",
    "Histogram",
    "Metrics",
    "SnapshotCollector",
    "VersionMetrics",
    "peer_snapshots",
    "read_snapshots",
    "serve_metrics",
]

_SNAPSHOT_WRITE = threading.Lock()  # Metrics.write_snapshot: one write at a time


class GcPauses:
    """The cyclic garbage collector's passes in this process and the time they took, by
    generation (gc.callbacks): a pass stops the event loop, so SREs see it beside the latency.
    Counting starts with `watch()` (a serving process, once its models are loaded)."""

    def __init__(self) -> None:
        self.passes = [0, 0, 0]
        self.seconds = [0.0, 0.0, 0.0]
        self._began = 0.0

    def watch(self) -> None:
        if self._on_pass not in gc.callbacks:
            gc.callbacks.append(self._on_pass)

    def _on_pass(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
            return
        generation = info["generation"]
        self.passes[generation] += 1
        self.seconds[generation] += time.perf_counter() - self._began

    def snapshot(self) -> dict[str, list[Any]]:
        return {"passes": list(self.passes), "seconds": list(self.seconds)}


GC_PAUSES = GcPauses()


STATISTICS = (
    "model", "version", "ok", "failures", "rows", "executions", "ok_ns", "fail_ns", "queue_ns",
    "input_ns", "infer_ns", "output_ns", "last_ms", "batches",
)  # fmt: skip
"""The keys of `VersionMetrics.statistics()`: what ModelStatistics sums over workers."""


@dataclass(eq=False)
class VersionMetrics:
    """Counters of one model version: what Prometheus exports and what the ModelStatistics RPC
    reports (Triton's split of a request's time: queue, compute input/infer/output)."""

    model: str
    version: str
    inference_count: int = 0  # rows
    execution_count: int = 0  # backend calls
    success_count: int = 0
    success_ns: int = 0
    fail_count: int = 0
    fail_ns: int = 0
    queue_ns: int = 0
    input_ns: int = 0  # decoding and validating the request
    infer_ns: int = 0  # the backend's share, per request
    output_ns: int = 0  # encoding the response
    last_inference_ms: int = 0
    cpu_ns: int = 0  # backend calls' CPU (telemetry/cost.py): in process, where the call ran
    gpu_ns: int = 0  # ... GPU (the wall time of calls the CUDA provider ran)
    wall_ns: int = 0  # ... wall time, as the backend measured it
    cpu_measured: bool = True  # False once a remote backend served: its CPU is not ours to see
    failures: dict[str, int] = field(default_factory=dict)  # status code -> count
    routes: dict[str, int] = field(default_factory=dict)  # route -> requests routed here
    batches: dict[int, list[int]] = field(default_factory=dict)  # batch size -> [count, ns]
    latency: Histogram = field(default_factory=Histogram)
    backend_latency: Histogram = field(default_factory=Histogram)
    queue_latency: Histogram = field(default_factory=Histogram)
    batching: Any = None  # the version's BatchingPolicy (its knobs move in adaptive mode)
    controller: Any = None  # the AdaptiveController, when there is a p99 target
    batcher: Any = None  # the version's Batcher: its queue depth
    upstream: Any = None  # the backend's upstream(): remote endpoints' state and counters
    drift: Any = None  # the version's DriftMonitor (gateway/drift): counts its inputs and outputs

    def executed(self, rows: int, compute_ns: int, cost: CallCost | None = None) -> None:
        """One backend call of `rows` rows took `compute_ns` and cost `cost`."""
        self.execution_count += 1
        if cost is not None:
            self.cpu_ns += cost.cpu_ns
            self.gpu_ns += cost.gpu_ns
            self.wall_ns += cost.wall_ns
            if not cost.cpu_measured:
                self.cpu_measured = False
        self.backend_latency.observe(compute_ns * 1e-9)
        entry = self.batches.get(rows)
        if entry is None:
            self.batches[rows] = [1, compute_ns]
        else:
            entry[0] += 1
            entry[1] += compute_ns

    def succeeded(
        self, rows: int, total_ns: int, input_ns: int, infer_ns: int, output_ns: int, queue_ns: int = 0
    ) -> None:
        """One request answered; its time split as Triton's statistics split it."""
        self.inference_count += rows
        self.success_count += 1
        self.success_ns += total_ns
        self.input_ns += input_ns
        self.infer_ns += infer_ns
        self.output_ns += output_ns
        self.queue_ns += queue_ns
        self.last_inference_ms = time.time_ns() // 1_000_000
        self.latency.observe(total_ns * 1e-9)
        self.queue_latency.observe(queue_ns * 1e-9)

    def succeeded_together(
        self, rows: int, totals_ns: Sequence[int], input_ns: int, infer_ns: int, output_ns: int, queue_ns: int
    ) -> None:
        """Requests of one backend call answered at once (`succeeded` for each, in one step):
        their own total times, their summed input and output times, and the batch's compute
        and queue time (the same for each)."""
        calls = len(totals_ns)
        self.inference_count += rows
        self.success_count += calls
        self.success_ns += sum(totals_ns)
        self.input_ns += input_ns
        self.infer_ns += infer_ns * calls
        self.output_ns += output_ns
        self.queue_ns += queue_ns * calls
        self.last_inference_ms = time.time_ns() // 1_000_000
        observe = self.latency.observe
        for total_ns in totals_ns:
            observe(total_ns * 1e-9)
        self.queue_latency.observe(queue_ns * 1e-9, calls)

    def failed(self, code: str, total_ns: int) -> None:
        self.fail_count += 1
        self.fail_ns += total_ns
        self.failures[code] = self.failures.get(code, 0) + 1

    def statistics(self) -> dict[str, Any]:
        """What the ModelStatistics RPC reports, as numbers that add up over workers."""
        return {
            "model": self.model,
            "version": self.version,
            "ok": self.success_count,
            "failures": dict(self.failures),
            "rows": self.inference_count,
            "executions": self.execution_count,
            "ok_ns": self.success_ns,
            "fail_ns": self.fail_ns,
            "queue_ns": self.queue_ns,
            "input_ns": self.input_ns,
            "infer_ns": self.infer_ns,
            "output_ns": self.output_ns,
            "last_ms": self.last_inference_ms,
            "batches": {str(size): list(entry) for size, entry in list(self.batches.items())},
        }

    def snapshot(self) -> dict[str, Any]:
        return {
            **self.statistics(),
            "routes": dict(self.routes),
            "cost": {
                "cpu_ns": self.cpu_ns,
                "gpu_ns": self.gpu_ns,
                "wall_ns": self.wall_ns,
                "cpu_measured": self.cpu_measured,
            },
            "latency": [list(self.latency.counts), self.latency.total],
            "backend_latency": [list(self.backend_latency.counts), self.backend_latency.total],
            "queue_latency": [list(self.queue_latency.counts), self.queue_latency.total],
            "upstream": dict(self.upstream()) if self.upstream is not None else {},
            "drift": self.drift.snapshot() if self.drift is not None else {},
            "batching": None
            if self.batching is None
            else {
                "max_batch_size": self.batching.max_batch_size,
                "queue_delay_s": self.batching.max_queue_delay_s,
                "target_p99_s": self.controller.target_s if self.controller else None,
                "observed_p99_s": self.controller.last_p99_s if self.controller else None,
                "queued": self.batcher.queued if self.batcher is not None else 0,
            },
        }


class Metrics:
    """Every version's counters plus process-wide ones, and their Prometheus view."""

    def __init__(self) -> None:
        self._versions: dict[tuple[str, str], VersionMetrics] = {}
        self.load_failures: dict[str, int] = {}
        self.inflight = 0
        self.inflight_bytes = 0  # the request messages' bytes of those
        self._shadows: dict[tuple[str, str, str], ShadowStats] = {}
        self.policy_revision = 0
        self.weights: list[tuple[str, str, float]] = []  # (model, version, share): what is served now
        self.models: dict[str, dict[str, Any]] = {}  # name -> state, reason, versions, failed ones
        self.describe_recent: Callable[[ShadowStats], list[dict[str, Any]]] | None = None  # shadow.py's
        self.trace_spans_dropped: Callable[[], int] = lambda: 0  # tracing's count, when it is on
        self.overhead = Overhead()  # the process's CPU outside backend calls (started once serving)

    def for_shadow(self, model: str, primary: str, shadow: str) -> ShadowStats:
        """The comparison counters of one shadow version against one primary version."""
        key = (model, primary, shadow)
        found = self._shadows.get(key)
        if found is None:
            found = self._shadows[key] = ShadowStats(model, primary, shadow)
        return found

    def shadow_stats(self, model: str | None = None) -> list[ShadowStats]:
        return [s for s in list(self._shadows.values()) if model is None or s.model == model]

    def for_version(self, model: str, version: str) -> VersionMetrics:
        """The counters of a version; a reloaded version keeps counting where it left off."""
        key = (model, version)
        found = self._versions.get(key)
        if found is None:
            found = self._versions[key] = VersionMetrics(model, version)
        return found

    def load_failed(self, model: str) -> None:
        self.load_failures[model] = self.load_failures.get(model, 0) + 1

    def overhead_ns(self) -> int:
        """The process's CPU outside backend calls since it began serving."""
        return self.overhead.read(sum(v.cpu_ns for v in list(self._versions.values())))

    def snapshot(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),  # a serving process (a retired sum or the supervisor's have none)
            "models": self.models,
            "versions": [v.snapshot() for v in list(self._versions.values())],
            "load_failures": dict(self.load_failures),
            "inflight": self.inflight,
            "inflight_bytes": self.inflight_bytes,
            "trace_spans_dropped": self.trace_spans_dropped(),
            "overhead_cpu_ns": self.overhead_ns(),
            "gc": GC_PAUSES.snapshot(),
            "routing": {
                "revision": self.policy_revision,
                "weights": list(self.weights),
                "shadows": [s.snapshot(self.describe_recent) for s in list(self._shadows.values())],
            },
        }

    def write_snapshot(self, directory: Path) -> None:
        """Publish this process's counters for the supervisor (atomic rename). One write at a
        time: the periodic one runs on a thread, and the last one, at close, on the loop; the
        two shared the temporary file, and one rename lost it (FileNotFoundError)."""
        path = directory / f"worker-{os.getpid()}.json"
        tmp = path.with_suffix(".tmp")
        with _SNAPSHOT_WRITE:
            tmp.write_text(json.dumps(self.snapshot()))
            tmp.replace(path)

    def registry(self, *others: Callable[[], dict[str, Any]]) -> CollectorRegistry:
        """This process's counters, with `others`' snapshots (the control plane's) beside them."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(SnapshotCollector(lambda: [self.snapshot(), *(o() for o in others)]))
        return registry


def peer_snapshots(directory: Path) -> Iterator[dict[str, Any]]:
    """The other workers' latest snapshots and the retired sum: what a worker adds to its own
    counters to answer for the whole gateway."""
    own = f"worker-{os.getpid()}.json"
    for path in sorted(directory.glob("worker-*.json")):
        if path.name == own:
            continue
        try:
            yield json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # being replaced right now


def read_snapshots(directory: Path) -> Iterator[dict[str, Any]]:
    """The workers' latest snapshots in a directory (a dead one's in the retired sum), and the
    supervisor's own counters."""
    for path in sorted(directory.glob("*.json")):
        try:
            yield json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # being replaced right now; the next read sees it


class SnapshotCollector:
    """A prometheus_client collector over one or more snapshots (one per worker), summed."""

    def __init__(self, snapshots: Any) -> None:
        self._snapshots = snapshots

    @classmethod
    def from_directory(cls, directory: Path) -> SnapshotCollector:
        return cls(lambda: read_snapshots(directory))

    def collect(self) -> Iterable[Any]:
        ok: dict[tuple[str, str, str], int] = {}
        rows: dict[tuple[str, str], int] = {}
        hists: dict[str, dict[tuple[str, str], list[Any]]] = {
            "latency": {}, "backend_latency": {}, "queue_latency": {}}  # fmt: skip
        batch_rows: dict[tuple[str, str], dict[int, int]] = {}
        queued: dict[tuple[str, str], int] = {}
        ready: dict[tuple[str, str], int] = {}
        load_failures: dict[str, int] = {}
        batching: dict[tuple[str, str], dict[str, Any]] = {}
        upstream = _Upstream()
        routing = RoutingFamilies()
        supervisor: dict[str, int] = {}
        drift: dict[str, Any] = {}
        control: dict[str, Any] = {}  # the control plane's snapshot
        cost: dict[tuple[str, str], dict[str, Any]] = {}
        inflight = inflight_bytes = spans_dropped = overhead_ns = 0
        gc_passes: dict[str, Any] | None = None
        for snap in self._snapshots():
            gc_passes = fold(gc_passes, snap.get("gc"))
            inflight += snap.get("inflight", 0)
            overhead_ns += snap.get("overhead_cpu_ns", 0)
            spans_dropped += snap.get("trace_spans_dropped", 0)
            inflight_bytes += snap.get("inflight_bytes", 0)
            drift = snap.get("drift") or drift  # the control plane's
            if "rollouts" in snap:
                control = snap
            routing.add_worker(snap)
            for model, state in (snap.get("models") or {}).items():
                for v in state["versions"]:
                    ready.setdefault((model, v), 1)
                for v in state["failed"]:
                    ready[(model, v)] = 0  # failed in one process is failed
            for model, n in snap.get("load_failures", {}).items():
                load_failures[model] = load_failures.get(model, 0) + n
            if "supervisor" in snap:
                supervisor = snap["supervisor"]
            for v in snap.get("versions", ()):
                key = (v["model"], v["version"])
                for code, n in [("OK", v["ok"]), *v["failures"].items()]:
                    ok[(*key, code)] = ok.get((*key, code), 0) + n
                rows[key] = rows.get(key, 0) + v["rows"]
                if "cost" in v:
                    cost[key] = fold(cost.get(key), v["cost"])
                if v.get("batching"):
                    batching.setdefault(key, v["batching"])
                    queued[key] = queued.get(key, 0) + v["batching"].get("queued", 0)
                sizes = batch_rows.setdefault(key, {})
                for size, (n, _ns) in (v.get("batches") or {}).items():  # [executions, ns]
                    sizes[int(size)] = sizes.get(int(size), 0) + n
                upstream.add(key, v.get("upstream") or {})
                routing.add_version(key, v)
                for name, h in hists.items():
                    if name in v:
                        h[key] = merge_counts(h.get(key), v[name])

        version = ("model", "version")
        for kind, name, help_text, labels, values in (
            (CounterMetricFamily, "modelgate_requests", "Inference requests answered, by status code.",
             (*version, "code"), ok),
            (CounterMetricFamily, "modelgate_inference_rows", "Rows (batch elements) inferred.",
             version, rows),
            (GaugeMetricFamily, "modelgate_batch_queued_requests",
             "Requests waiting in a version's batch queue.", version, queued),
            (GaugeMetricFamily, "modelgate_version_ready",
             "1 while a version is loaded and ready, 0 when its load failed (in any worker).",
             version, ready),
            (CounterMetricFamily, "modelgate_model_load_failures", "Model loads that failed.", ("model",),
             {(model,): n for model, n in load_failures.items()}),
        ):  # fmt: skip
            yield _labelled(kind, name, help_text, labels, values)
        for name, family_name, help_text in (
            ("latency", "modelgate_request_duration_seconds",
             "Time from request received by the data plane to response built."),
            ("backend_latency", "modelgate_backend_duration_seconds", "Time of one backend call."),
            ("queue_latency", "modelgate_queue_duration_seconds",
             "Time a request waited in its version's batch queue (0 when it did not queue)."),
        ):  # fmt: skip
            family = HistogramMetricFamily(family_name, help_text, labels=version)
            for version_labels, (counts, total) in sorted(hists[name].items()):
                family.add_metric(version_labels, buckets(LATENCY_BOUNDS, counts), total)
            yield family
        yield _batch_sizes(batch_rows)
        yield from cost_families(cost, overhead_ns)
        yield from _batching_gauges(batching)
        yield from upstream.families()
        yield from routing.families()
        yield GaugeMetricFamily("modelgate_inflight_requests", "Inference requests being served.", inflight)
        yield GaugeMetricFamily(
            "modelgate_inflight_request_bytes",
            "Bytes of the inference requests being served.",
            inflight_bytes,
        )
        yield CounterMetricFamily(
            "modelgate_trace_spans_dropped",
            "Trace spans dropped before export: the export queue was full, or an export failed.",
            spans_dropped,
        )
        if gc_passes is not None:
            passes = CounterMetricFamily(
                "modelgate_gc_passes",
                "Passes of the cyclic garbage collector in the serving processes, by generation.",
                labels=["generation"],
            )
            paused = CounterMetricFamily(
                "modelgate_gc_pause_seconds",
                "Time the serving processes' loops spent in the cyclic garbage collector.",
                labels=["generation"],
            )
            for generation, n in enumerate(gc_passes["passes"]):
                passes.add_metric([str(generation)], n)
                paused.add_metric([str(generation)], gc_passes["seconds"][generation])
            yield passes
            yield paused
        yield from _drift_families(drift)
        yield from _rollout_families(control)
        if supervisor:  # --workers N
            yield CounterMetricFamily(
                "modelgate_worker_restarts",
                "Workers restarted after dying on their own.",
                supervisor["restarts"],
            )
            yield CounterMetricFamily(
                "modelgate_worker_heartbeats_missed",
                "Workers killed and replaced because they stopped handing over their counters (hung).",
                supervisor.get("heartbeats_missed", 0),
            )
            yield GaugeMetricFamily(
                "modelgate_workers_crash_looping",
                "Workers waiting out a restart backoff after dying young again.",
                supervisor["crash_looping"],
            )


_BATCHING_GAUGES = (
    (
        "max_batch_size",
        "modelgate_batch_max_size",
        "Current largest batch of a version (moves in adaptive mode).",
    ),
    ("queue_delay_s", "modelgate_batch_queue_delay_seconds", "Current queue delay of a version's batcher."),
    ("target_p99_s", "modelgate_batch_target_p99_seconds", "p99 target of the adaptive batcher."),
    (
        "observed_p99_s",
        "modelgate_batch_observed_p99_seconds",
        "Last p99 (queue + compute) the controller saw.",
    ),
)


def _labelled(
    kind: Callable[..., Any], name: str, help_text: str, labels: tuple[str, ...], values: Mapping[Any, float]
) -> Any:
    """A family of one sample per label values (a tuple), in order."""
    family = kind(name, help_text, labels=labels)
    for key, value in sorted(values.items()):
        family.add_metric(key, value)
    return family


def _batch_sizes(batch_rows: dict[tuple[str, str], dict[int, int]]) -> Any:
    """Rows per backend call: counted exactly per size on the hot path, put in buckets here."""
    family = HistogramMetricFamily(
        "modelgate_batch_size",
        "Rows per backend call (the batch a batcher formed).",
        labels=("model", "version"),
    )
    for version_labels, sizes in sorted(batch_rows.items()):
        counts = [0] * (len(BATCH_BOUNDS) + 1)
        for size, n in sizes.items():
            counts[bisect.bisect_left(BATCH_BOUNDS, size)] += n
        total = float(sum(size * n for size, n in sizes.items()))
        family.add_metric(version_labels, buckets(BATCH_BOUNDS, counts), total)
    return family


def _batching_gauges(batching: dict[tuple[str, str], dict[str, Any]]) -> Iterator[Any]:
    """The batchers' current settings (with several workers: one worker's, they move alike)."""
    for key, name, help_text in _BATCHING_GAUGES:
        family = GaugeMetricFamily(name, help_text, labels=("model", "version"))
        for labels, values in sorted(batching.items()):
            if values.get(key) is not None:
                family.add_metric(labels, values[key])
        yield family


class _Upstream:
    """Remote backends' endpoints, summed over workers (a gauge of ejections then counts the
    workers that have the endpoint ejected)."""

    def __init__(self) -> None:
        self.retries: dict[tuple[str, str], int] = {}
        self.calls: dict[tuple[str, str, str, str], int] = {}
        self.per_endpoint: dict[str, dict[tuple[str, str, str], int]] = {
            "ejections": {},
            "ejected": {},
            "outstanding": {},
        }

    def add(self, version: tuple[str, str], snapshot: dict[str, Any]) -> None:
        if not snapshot:
            return
        self.retries[version] = self.retries.get(version, 0) + snapshot.get("retries", 0)
        for ep in snapshot.get("endpoints", ()):
            where = (*version, ep["endpoint"])
            for code, n in ep["calls"].items():
                self.calls[(*where, code)] = self.calls.get((*where, code), 0) + n
            for name, values in self.per_endpoint.items():
                values[where] = values.get(where, 0) + ep[name]

    def families(self) -> Iterator[Any]:
        calls = CounterMetricFamily(
            "modelgate_upstream_calls", "Calls to remote endpoints, by gRPC status code.",
            labels=("model", "version", "endpoint", "code"))  # fmt: skip
        for labels, n in sorted(self.calls.items()):
            calls.add_metric(labels, n)
        yield calls
        retries = CounterMetricFamily(
            "modelgate_upstream_retries", "Calls sent again to another endpoint (never reached the first).",
            labels=("model", "version"))  # fmt: skip
        for version_labels, n in sorted(self.retries.items()):
            retries.add_metric(version_labels, n)
        yield retries
        for name, kind, help_text in (
            ("ejections", CounterMetricFamily, "Times an endpoint was ejected after consecutive failures."),
            ("ejected", GaugeMetricFamily, "1 while an endpoint is ejected (summed over workers)."),
            ("outstanding", GaugeMetricFamily, "Calls in flight to an endpoint."),
        ):
            family = kind(f"modelgate_upstream_{name}", help_text, labels=("model", "version", "endpoint"))
            for endpoint_labels, value in sorted(self.per_endpoint[name].items()):
                family.add_metric(endpoint_labels, value)
            yield family


def serve_metrics(port: int, host: str, registry: CollectorRegistry) -> tuple[Any, int]:
    """Serve Prometheus text on http://host:port/metrics from a daemon thread; returns the
    server (call .shutdown()) and the bound port."""
    server, _thread = start_http_server(port, host, registry=registry)
    return server, server.server_address[1]


def _drift_families(drift: dict[str, Any]) -> Iterator[Any]:
    """The control plane's drift figures (gateway/drift/tracker.py's snapshot)."""
    scores = GaugeMetricFamily(
        "modelgate_drift_score",
        "Each feature's drift score (the model's configured score) over the last ended window.",
        labels=("model", "version", "tensor", "feature"),
    )
    for entry in drift.get("scores", ()):
        for feature, value in entry["features"]:
            scores.add_metric((entry["model"], entry["version"], entry["tensor"], feature), value)
    yield scores
    alert = GaugeMetricFamily(
        "modelgate_drift_alert",
        "1 while a version's worst feature scores above its alert.",
        labels=("model", "version"),
    )
    windows = CounterMetricFamily(
        "modelgate_drift_windows", "Drift windows ended and scored.", labels=("model", "version")
    )
    alerts = CounterMetricFamily(
        "modelgate_drift_alerts", "Drift alerts raised.", labels=("model", "version")
    )
    for v in drift.get("versions", ()):
        labels = (v["model"], v["version"])
        alert.add_metric(labels, v["alert"])
        windows.add_metric(labels, v["windows"])
        alerts.add_metric(labels, v["alerts"])
    yield alert
    yield windows
    yield alerts


def _rollout_families(control: dict[str, Any]) -> Iterator[Any]:
    """The control plane's rollouts: step, state and weight of each, rollbacks by reason."""
    step = GaugeMetricFamily(
        "modelgate_rollout_step", "The rollout's step (1-based).", labels=("model", "canary")
    )
    weight = GaugeMetricFamily(
        "modelgate_rollout_canary_weight", "The canary's share now (percent).", labels=("model", "canary")
    )
    state = GaugeMetricFamily(
        "modelgate_rollout_state",
        "1 for the rollout's state (running, paused, promoted, rolled_back), 0 for the others.",
        labels=("model", "canary", "state"),
    )
    for r in control.get("rollouts", ()):
        labels = (r["model"], r["canary"])
        step.add_metric(labels, r["step"])
        weight.add_metric(labels, r["canary_weight"])
        for s in ("running", "paused", "promoted", "rolled_back"):
            state.add_metric((*labels, s), 1 if r["status"] == s else 0)
    rollbacks = CounterMetricFamily(
        "modelgate_rollbacks",
        "Rollouts rolled back, by reason: error_rate, p99_ratio, shadow_disagreement, drift, operator.",
        labels=("model", "reason"),
    )
    for model, reason, n in control.get("rollbacks", ()):
        rollbacks.add_metric((model, reason), n)
    yield from (step, weight, state, rollbacks)
