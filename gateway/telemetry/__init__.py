"""Metrics (Prometheus) and per-version statistics."""

from ._retire import retire_worker
from .metrics import Histogram, Metrics, SnapshotCollector, VersionMetrics, read_snapshots, serve_metrics

__all__ = [
    "Histogram",
    "Metrics",
    "SnapshotCollector",
    "VersionMetrics",
    "read_snapshots",
    "retire_worker",
    "serve_metrics",
]
