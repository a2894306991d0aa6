"""Metrics (Prometheus) and per-version statistics."""

from .metrics import Metrics, VersionMetrics, serve_metrics

__all__ = ["Metrics", "VersionMetrics", "serve_metrics"]
