"""Prometheus metrics and the Triton-style per-version statistics, fed from one place.

`VersionMetrics` is created once per loaded version and keeps the label-bound children, so the
hot path pays one method call per request, never a label lookup. With `--workers N` the
supervisor sets prometheus_client's multiprocess directory before any worker starts and serves
the merged view; a single process serves its own registry.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

__all__ = ["Metrics", "VersionMetrics", "serve_metrics"]

_LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    10.0,
)


class Metrics:
    """The gateway's metric families, registered in `registry`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        labels = ("model", "version")
        self.requests = Counter(
            "modelgate_requests",
            "Inference requests answered, by status code.",
            (*labels, "code"),
            registry=self.registry,
        )
        self.rows = Counter(
            "modelgate_inference_rows", "Rows (batch elements) inferred.", labels, registry=self.registry
        )
        self.latency = Histogram(
            "modelgate_request_duration_seconds",
            "Time from request decoded to response built.",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.backend_latency = Histogram(
            "modelgate_backend_duration_seconds",
            "Time of one backend call.",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.inflight = Gauge(
            "modelgate_inflight_requests",
            "Inference requests being served.",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.load_failures = Counter(
            "modelgate_model_load_failures", "Model loads that failed.", ("model",), registry=self.registry
        )

    def for_version(self, model: str, version: str) -> VersionMetrics:
        return VersionMetrics(
            self,
            model,
            version,
            ok=self.requests.labels(model, version, "OK"),
            rows=self.rows.labels(model, version),
            latency=self.latency.labels(model, version),
            backend=self.backend_latency.labels(model, version),
        )


@dataclass(eq=False)
class VersionMetrics:
    """Counters of one model version: Prometheus children plus the plain integers that the
    ModelStatistics RPC reports (Triton's names: success, fail, queue, compute_infer)."""

    parent: Metrics
    model: str
    version: str
    ok: Any
    rows: Any
    latency: Any
    backend: Any
    inference_count: int = 0
    execution_count: int = 0
    success_count: int = 0
    success_ns: int = 0
    fail_count: int = 0
    fail_ns: int = 0
    queue_ns: int = 0
    input_ns: int = 0  # decoding and validating the request
    infer_ns: int = 0  # the backend's share, per request
    output_ns: int = 0  # encoding the response
    last_inference_ms: int = 0
    batches: dict[int, list[int]] = field(default_factory=dict)  # batch size -> [count, ns]

    def executed(self, rows: int, compute_ns: int) -> None:
        """One backend call of `rows` rows took `compute_ns`."""
        self.execution_count += 1
        self.backend.observe(compute_ns * 1e-9)
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
        self.ok.inc()
        self.rows.inc(rows)
        self.latency.observe(total_ns * 1e-9)

    def failed(self, code: str, total_ns: int) -> None:
        self.fail_count += 1
        self.fail_ns += total_ns
        self.parent.requests.labels(self.model, self.version, code).inc()


def serve_metrics(port: int, host: str, registry: Any) -> tuple[Any, int]:
    """Serve Prometheus text on http://host:port/metrics from a daemon thread; returns the
    server (call .shutdown()) and the bound port."""
    server, _thread = start_http_server(port, host, registry=registry)
    return server, server.server_address[1]
