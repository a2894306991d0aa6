"""The cost report: what each model version's backend calls, and the gateway around them, cost
over a period, from the serving processes' counters (gateway/telemetry/cost.py).

Counters only grow, so a period's cost is the difference of two sums over the workers (a dead
worker's stay in the retired sum). The control plane keeps the sums of the last hours in a
bounded ring (`CostHistory`, one sample every SAMPLE_S), so `--since` needs nothing outside the
gateway; the report itself is a pure function of two sums and the prices.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["KEEP", "SAMPLE_S", "CostHistory", "Totals", "cost_report", "totals"]

SAMPLE_S = 10.0  # how often the sums are kept
KEEP = 2160  # samples kept: 6 hours at SAMPLE_S


@dataclass(frozen=True)
class Totals:
    """Cumulative figures summed over the serving processes: per (model, version) requests
    answered, rows, backend CPU, GPU and wall ns and whether CPU was measured; the gateway's own
    CPU outside backend calls."""

    versions: Mapping[tuple[str, str], tuple[int, int, int, int, int, bool]] = field(default_factory=dict)
    overhead_ns: int = 0


def totals(snapshots: Iterable[Mapping[str, Any]]) -> Totals:
    """The sums of the workers' snapshots (and the retired sum) that the report needs."""
    sums: dict[tuple[str, str], list[int]] = {}
    measured: dict[tuple[str, str], bool] = {}
    overhead = 0
    for snap in snapshots:
        overhead += snap.get("overhead_cpu_ns", 0)
        for v in snap.get("versions", ()):
            key = (v["model"], v["version"])
            cost = v.get("cost") or {}
            into = sums.setdefault(key, [0, 0, 0, 0, 0])
            into[0] += v["ok"] + sum(v["failures"].values())
            into[1] += v["rows"]
            into[2] += cost.get("cpu_ns", 0)
            into[3] += cost.get("gpu_ns", 0)
            into[4] += cost.get("wall_ns", 0)
            measured[key] = measured.get(key, True) and cost.get("cpu_measured", True)
    versions = {k: (v[0], v[1], v[2], v[3], v[4], measured[k]) for k, v in sums.items()}
    return Totals(versions, overhead)


class CostHistory:
    """The sums every SAMPLE_S, the last KEEP of them (on the control plane's monotonic clock)."""

    def __init__(self, sample_s: float = SAMPLE_S, keep: int = KEEP) -> None:
        self._sample_s = sample_s
        self._ring: deque[tuple[float, Totals]] = deque(maxlen=keep)

    def due(self, now: float) -> bool:
        return not self._ring or now - self._ring[-1][0] >= self._sample_s

    def add(self, now: float, sums: Totals) -> None:
        self._ring.append((now, sums))

    def at(self, when: float) -> tuple[float, Totals] | None:
        """The newest sample taken at or before `when`; the oldest one when every sample is
        newer (the history is shorter than asked); None when there is none yet."""
        if not self._ring:
            return None
        found = self._ring[0]
        for sample in self._ring:
            if sample[0] > when:
                break
            found = sample
        return found


def _usd(cpu_s: float, gpu_s: float, prices: tuple[float | None, float | None]) -> float | None:
    cpu_price, gpu_price = prices
    if cpu_price is None and gpu_price is None:
        return None
    return cpu_s / 3600 * (cpu_price or 0.0) + gpu_s / 3600 * (gpu_price or 0.0)


def cost_report(
    now: Totals,
    then: Totals | None,
    prices: tuple[float | None, float | None],
    model: str = "",
) -> dict[str, Any]:
    """`overhead_cpu_seconds`: the gateway's own CPU in the period, and `versions`: per
    (model, version) (of `model`, or all), what the period between `then` (None: the start) and `now` cost:
    requests, rows, backend CPU / GPU / wall seconds, the gateway's overhead CPU split by
    requests, CPU seconds per 1,000 requests (backend + overhead) and, with `prices` ($ per
    core-hour, $ per GPU-hour; None: no price), dollars in all and per 1,000 requests."""
    before = then.versions if then is not None else {}
    deltas = {}
    for key, figures in now.versions.items():
        old = before.get(key, (0, 0, 0, 0, 0, True))
        deltas[key] = [a - b for a, b in zip(figures[:5], old[:5], strict=True)] + [figures[5]]
    overhead_s = (now.overhead_ns - (then.overhead_ns if then is not None else 0)) / 1e9
    all_requests = sum(d[0] for d in deltas.values())
    rows = []
    for (name, version), (requests, n_rows, cpu, gpu, wall, measured) in sorted(
        deltas.items(), key=lambda i: (i[0][0], int(i[0][1]) if i[0][1].isdigit() else 0)
    ):
        if model and name != model:
            continue
        overhead = overhead_s * requests / all_requests if all_requests else 0.0
        cpu_s, gpu_s = cpu / 1e9, gpu / 1e9
        usd = _usd(cpu_s + overhead, gpu_s, prices)
        rows.append(
            {
                "model": name,
                "version": version,
                "requests": requests,
                "rows": n_rows,
                "cpu_seconds": cpu_s,
                "gpu_seconds": gpu_s,
                "wall_seconds": wall / 1e9,
                "cpu_measured": measured,
                "overhead_cpu_seconds": overhead,
                "cpu_seconds_per_1k": (cpu_s + overhead) * 1000 / requests if requests else 0.0,
                "usd": usd,
                "usd_per_1k": usd * 1000 / requests if usd is not None and requests else None,
            }
        )
    return {"overhead_cpu_seconds": overhead_s, "versions": rows}
