"""A dead worker's counters, kept: its snapshot with the gauges zeroed, folded into one sum.

Prometheus counters must not go backwards when a worker dies, and its gauges (requests in
flight, endpoints ejected, calls outstanding) must not stay on /metrics as if it still served.
The supervisor folds each reaped worker's snapshot into `worker-retired.json`, which the
collector sums with the live workers' snapshots like any other.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["RETIRED", "fold", "retire_worker", "zero_gauges"]

RETIRED = "worker-retired.json"
_MOMENTS = frozenset({"last_ms"})  # times, not counts: the sum keeps the latest


def zero_gauges(snapshot: dict[str, Any]) -> dict[str, Any]:
    """The counters of a snapshot, its gauges at rest."""
    out = dict(snapshot, inflight=0, inflight_bytes=0)
    out.pop("pid", None)  # no longer serving: its models, revision and recent samples go
    out.pop("models", None)
    versions = []
    for v in snapshot.get("versions", ()):
        v = dict(v, batching=None)
        upstream = dict(v.get("upstream") or {})
        if upstream.get("endpoints"):
            upstream["endpoints"] = [dict(ep, ejected=0, outstanding=0) for ep in upstream["endpoints"]]
        v["upstream"] = upstream
        versions.append(v)
    out["versions"] = versions
    routing = dict(snapshot.get("routing") or {})
    routing.update(revision=0, weights=[])
    routing["shadows"] = [dict(s, recent=[]) for s in routing.get("shadows", ())]
    out["routing"] = routing
    return out


def _identity(item: dict[str, Any]) -> tuple[Any, ...]:
    """What names an entry of a list of records: its text fields (model, version, endpoint...)."""
    return tuple(sorted((k, v) for k, v in item.items() if isinstance(v, str)))


def fold(a: Any, b: Any) -> Any:
    """The sum of two snapshots: numbers add (but moments, such as the last inference's time,
    keep the latest), mappings merge key by key, lists of records merge by their text fields,
    lists of numbers (histogram buckets) add element by element."""
    if a is None:
        return b
    if b is None:
        return a
    if isinstance(a, bool) or isinstance(a, str):
        return a
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a + b
    if isinstance(a, dict) and isinstance(b, dict):
        return {
            k: max(a.get(k) or 0, b.get(k) or 0) if k in _MOMENTS else fold(a.get(k), b.get(k))
            for k in a.keys() | b.keys()
        }
    if isinstance(a, list) and isinstance(b, list):
        if all(isinstance(x, dict) for x in (*a, *b)):
            merged = {_identity(x): x for x in a}
            for x in b:
                key = _identity(x)
                merged[key] = fold(merged.get(key), x)
            return list(merged.values())
        if len(a) == len(b):
            return [fold(x, y) for x, y in zip(a, b, strict=True)]
    return b


def retire_worker(directory: Path, pid: int) -> None:
    """Fold a reaped worker's last snapshot into the retired sum and drop its own file."""
    path = directory / f"worker-{pid}.json"
    try:
        snapshot = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    retired = directory / RETIRED
    try:
        total = json.loads(retired.read_text())
    except (OSError, ValueError):
        total = None
    tmp = retired.with_suffix(".tmp")
    tmp.write_text(json.dumps(fold(total, zero_gauges(snapshot))))
    tmp.replace(retired)
    os.unlink(path)
