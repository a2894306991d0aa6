"""Metrics (Prometheus) and per-version statistics."""

from ._retire import fold, retire_worker
from .metrics import (
    STATISTICS,
    Histogram,
    Metrics,
    SnapshotCollector,
    VersionMetrics,
    peer_snapshots,
    read_snapshots,
    serve_metrics,
)

__all__ = [
    "STATISTICS",
    "Histogram",
    "Metrics",
    "SnapshotCollector",
    "VersionMetrics",
    "fold",
    "peer_snapshots",
    "read_snapshots",
    "retire_worker",
    "serve_metrics",
]
