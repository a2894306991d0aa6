"""Metrics (Prometheus) and per-version statistics."""

from .metrics import Histogram, Metrics, SnapshotCollector, VersionMetrics, read_snapshots, serve_metrics

__all__ = ["Histogram", "Metrics", "SnapshotCollector", "VersionMetrics", "read_snapshots", "serve_metrics"]
