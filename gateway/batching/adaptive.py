"""SLO-adaptive batching: keep the p99 of queue + compute time under a target.

An AIMD controller over the batcher's two knobs, each steered by what it actually affects.
Every `window` requests (or `period_s`, if traffic is thin) it looks at the p99 of the requests'
queue + compute time and of their batches' compute time:

- The queue delay trades latency for batch size: halved when the p99 is over the target (fast
  relief), grown by a step when it is under `headroom` x target (slow probing).
- The batch size is cut (x0.7) only when a batch's own compute p99 takes more than 80% of the
  target, and grows by a step while it takes less than half. Time spent queueing behind
  other batches is not a reason to shrink them: smaller batches drain a queue more slowly. (A
  first version cut both knobs on any excess; a warm-up spike sent it to batch 4, where the
  queueing kept the p99 just under the target, and it stayed there at 0.4-0.5x the throughput of
  the best static setting: loadtests/bench_adaptive.py.)

The delay never exceeds the configured `max_queue_delay_us` nor half the target, and the batch
size never exceeds the model's. (Letting the delay grow past the configured one was tried: with a
closed-loop client population smaller than the batch, every batch then waited out the whole
delay, and throughput fell to half the best static setting.)
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .batcher import BatchingPolicy

__all__ = ["AdaptiveController"]

_SLOW_BATCH = 0.8  # a batch computing longer than this share of the target is too big
_CHEAP_BATCH = 0.5  # one computing shorter than this share may grow


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


class AdaptiveController:
    def __init__(
        self,
        policy: BatchingPolicy,
        target_s: float,
        *,
        window: int = 200,
        period_s: float = 1.0,
        headroom: float = 0.7,
        now: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.policy = policy
        self.target_s = target_s
        self.max_batch_ceiling = policy.max_batch_size
        self.delay_ceiling_s = min(policy.max_queue_delay_s, target_s / 2)
        policy.max_queue_delay_s = self.delay_ceiling_s
        self._delay_step_s = max(self.delay_ceiling_s / 20, 50e-6)
        self._batch_step = max(1, self.max_batch_ceiling // 16)
        self._window = window
        self._period_s = period_s
        self._headroom = headroom
        self._totals: list[float] = []
        self._computes: list[float] = []
        self._now = now
        self._window_start = now()
        self.last_p99_s = 0.0
        self.adjustments = 0

    def observe(self, total_s: float, compute_s: float = 0.0) -> None:
        """One request: its queue + compute time, and the compute time of its batch."""
        self._totals.append(total_s)
        self._computes.append(compute_s)
        if len(self._totals) >= self._window or self._now() - self._window_start >= self._period_s:
            self._adjust()

    def _adjust(self) -> None:
        totals, computes = self._totals, self._computes
        self._totals, self._computes = [], []
        self._window_start = self._now()
        if len(totals) < 20:  # too few to say anything about a p99
            return
        p99 = _p99(totals)
        self.last_p99_s = p99
        policy = self.policy
        before = (policy.max_queue_delay_s, policy.max_batch_size)
        if p99 > self.target_s:
            policy.max_queue_delay_s = policy.max_queue_delay_s / 2
        elif p99 < self.target_s * self._headroom:
            grown = policy.max_queue_delay_s + self._delay_step_s
            policy.max_queue_delay_s = min(self.delay_ceiling_s, grown)
        compute = _p99(computes)
        if compute > self.target_s * _SLOW_BATCH:
            policy.max_batch_size = max(1, int(policy.max_batch_size * 0.7))
        elif compute < self.target_s * _CHEAP_BATCH:
            policy.max_batch_size = min(self.max_batch_ceiling, policy.max_batch_size + self._batch_step)
        if (policy.max_queue_delay_s, policy.max_batch_size) != before:
            self.adjustments += 1
