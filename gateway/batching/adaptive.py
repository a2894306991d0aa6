"""SLO-adaptive batching: keep the p99 of queue + compute time under a target.

An AIMD controller over the batcher's two knobs. Every `window` requests (or `period_s`, if
traffic is thin) it takes the p99 of what it saw: above the target, both knobs are cut
multiplicatively (fast relief); comfortably below (under `headroom` x target), they grow
additively (slow probing toward bigger, cheaper batches). The queue delay never exceeds half the
target (waiting longer than that cannot pay) and the batch size never exceeds the model's.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .batcher import BatchingPolicy

__all__ = ["AdaptiveController"]


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
        self.delay_ceiling_s = target_s / 2
        policy.max_queue_delay_s = min(policy.max_queue_delay_s, self.delay_ceiling_s)
        self._delay_step_s = max(self.delay_ceiling_s / 20, 50e-6)
        self._batch_step = max(1, self.max_batch_ceiling // 16)
        self._window = window
        self._period_s = period_s
        self._headroom = headroom
        self._samples: list[float] = []
        self._now = now
        self._window_start = now()
        self.last_p99_s = 0.0
        self.adjustments = 0

    def observe(self, seconds: float) -> None:
        """One request's queue + compute time."""
        samples = self._samples
        samples.append(seconds)
        if len(samples) >= self._window or self._now() - self._window_start >= self._period_s:
            self._adjust()

    def _adjust(self) -> None:
        samples = sorted(self._samples)
        self._samples = []
        self._window_start = self._now()
        if len(samples) < 20:  # too few to say anything about a p99
            return
        p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
        self.last_p99_s = p99
        policy = self.policy
        if p99 > self.target_s:
            policy.max_queue_delay_s = policy.max_queue_delay_s / 2
            policy.max_batch_size = max(1, int(policy.max_batch_size * 0.7))
        elif p99 < self.target_s * self._headroom:
            policy.max_queue_delay_s = min(
                self.delay_ceiling_s, policy.max_queue_delay_s + self._delay_step_s
            )
            policy.max_batch_size = min(self.max_batch_ceiling, policy.max_batch_size + self._batch_step)
        else:
            return
        self.adjustments += 1
