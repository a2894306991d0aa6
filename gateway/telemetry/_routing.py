"""Counters of traffic routing and shadow comparison, and their Prometheus families.

Like the version counters, they are plain numbers on the hot path, handed to the supervisor in
the worker's snapshot and summed there. The last disagreements of each (model, primary, shadow)
are kept in memory (bounded) for the admin API.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from ._histogram import LATENCY_BOUNDS, Histogram, buckets, merge_counts

__all__ = ["DIFF_BOUNDS", "RoutingFamilies", "ShadowStats"]

DIFF_BOUNDS = (1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0)
RECENT = 100  # disagreements kept per (model, primary, shadow)
OUTCOMES = ("agree", "disagree", "failed", "dropped", "unpaired")


@dataclass(eq=False)
class ShadowStats:
    """What one shadow version did for one primary version of a model."""

    model: str
    primary: str
    shadow: str
    outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    failures: dict[str, int] = field(default_factory=dict)  # the shadow's status codes
    argmax_rows: int = 0
    argmax_agree: int = 0
    diff: Histogram = field(default_factory=lambda: Histogram(DIFF_BOUNDS))
    latency: Histogram = field(default_factory=Histogram)  # the shadow's own call
    recent: deque[tuple[Any, ...]] = field(default_factory=lambda: deque(maxlen=RECENT))
    """The last disagreements as (time, inputs, primary's outputs, shadow's, Comparison);
    gateway/shadow.py's disagreements() describes them, when a snapshot is taken."""
    described: list[dict[str, Any]] = field(default_factory=list)  # `recent`, described
    described_at: int = 0  # the disagreement count when `described` was made

    def failed(self, code: str) -> None:
        self.outcomes["failed"] += 1
        self.failures[code] = self.failures.get(code, 0) + 1

    def compared(self, agree: bool, max_abs_diff: float, argmax_rows: int, argmax_agree: int) -> None:
        self.outcomes["agree" if agree else "disagree"] += 1
        self.argmax_rows += argmax_rows
        self.argmax_agree += argmax_agree
        self.diff.observe(max_abs_diff)

    def snapshot(
        self, describe: Callable[[ShadowStats], list[dict[str, Any]]] | None = None
    ) -> dict[str, Any]:
        """The counters; with `describe`, also the last disagreements (described again only
        when there were new ones)."""
        if describe is not None and self.described_at != self.outcomes["disagree"]:
            self.described, self.described_at = describe(self), self.outcomes["disagree"]
        finite = self.diff.total if self.diff.total != float("inf") else 0.0
        return {
            "model": self.model,
            "primary": self.primary,
            "shadow": self.shadow,
            "outcomes": dict(self.outcomes),
            "failures": dict(self.failures),
            "argmax": [self.argmax_rows, self.argmax_agree],
            "diff": [list(self.diff.counts), finite],
            "latency": [list(self.latency.counts), self.latency.total],
            "recent": self.described,
        }


class RoutingFamilies:
    """Sums routing and shadow snapshots over workers and yields their metric families."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str, str], int] = {}
        self.weights: dict[tuple[str, str], float] = {}
        self.revision = 0
        self.shadow: dict[tuple[str, str, str], dict[str, Any]] = {}

    def add_version(self, key: tuple[str, str], snapshot: dict[str, Any]) -> None:
        for route, n in (snapshot.get("routes") or {}).items():
            self.routes[(*key, route)] = self.routes.get((*key, route), 0) + n

    def add_worker(self, snapshot: dict[str, Any]) -> None:
        routing = snapshot.get("routing") or {}
        self.revision = max(self.revision, routing.get("revision", 0))
        for model, version, weight in routing.get("weights", ()):
            self.weights[(model, version)] = weight  # every worker serves the same policy
        for s in routing.get("shadows", ()):
            key = (s["model"], s["primary"], s["shadow"])
            into = self.shadow.setdefault(key, {"outcomes": {}, "failures": {}, "argmax": [0, 0]})
            for name in ("outcomes", "failures"):
                for k, n in s[name].items():
                    into[name][k] = into[name].get(k, 0) + n
            into["argmax"] = [a + b for a, b in zip(into["argmax"], s["argmax"], strict=True)]
            for name in ("diff", "latency"):
                into[name] = merge_counts(into.get(name), s[name])

    def families(self) -> Iterator[Any]:
        routed = CounterMetricFamily(
            "modelgate_routed_requests",
            "Requests by the version that served them and how it was chosen "
            "(pinned, sticky, weighted, default).",
            labels=("model", "version", "route"),
        )
        for route_labels, n in sorted(self.routes.items()):
            routed.add_metric(route_labels, n)
        yield routed
        weights = GaugeMetricFamily(
            "modelgate_traffic_weight",
            "Each ready version's share of unpinned traffic (0-1), as configured and adjusted for readiness.",
            labels=("model", "version"),
        )
        for version_labels, w in sorted(self.weights.items()):
            weights.add_metric(version_labels, w)
        yield weights
        yield GaugeMetricFamily(
            "modelgate_policy_revision", "Revision of the traffic policy being served.", self.revision
        )
        labels = ("model", "primary", "shadow")
        copies = CounterMetricFamily(
            "modelgate_shadow_requests",
            "Shadow copies by outcome: agree, disagree (with the primary's answer), failed (the shadow "
            "erred), dropped (over the in-flight cap), unpaired (the primary failed: nothing to compare).",
            labels=(*labels, "outcome"),
        )
        failures = CounterMetricFamily(
            "modelgate_shadow_failures",
            "Shadow copies that failed, by status code.",
            labels=(*labels, "code"),
        )
        agreement = GaugeMetricFamily(
            "modelgate_shadow_agreement_ratio",
            "Compared shadow answers within tolerance (0-1).",
            labels=labels,
        )
        argmax = GaugeMetricFamily(
            "modelgate_shadow_argmax_agreement_ratio",
            "Rows of 2-D outputs whose argmax agrees with the primary's (0-1).",
            labels=labels,
        )
        diff = HistogramMetricFamily(
            "modelgate_shadow_max_abs_diff",
            "Largest absolute difference between a shadow's answer and the primary's, per request.",
            labels=labels,
        )
        latency = HistogramMetricFamily(
            "modelgate_shadow_duration_seconds", "Time of a shadow copy's own inference.", labels=labels
        )
        for key, s in sorted(self.shadow.items()):
            for outcome in OUTCOMES:
                copies.add_metric((*key, outcome), s["outcomes"].get(outcome, 0))
            for code, n in sorted(s["failures"].items()):
                failures.add_metric((*key, code), n)
            compared = s["outcomes"].get("agree", 0) + s["outcomes"].get("disagree", 0)
            if compared:
                agreement.add_metric(key, s["outcomes"].get("agree", 0) / compared)
            rows, agree = s["argmax"]
            if rows:
                argmax.add_metric(key, agree / rows)
            diff.add_metric(key, buckets(DIFF_BOUNDS, s["diff"][0]), s["diff"][1])
            latency.add_metric(key, buckets(LATENCY_BOUNDS, s["latency"][0]), s["latency"][1])
        yield from (copies, failures, agreement, argmax, diff, latency)
