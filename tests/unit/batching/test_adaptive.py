"""The SLO-adaptive controller: multiplicative decrease over the target, additive increase under."""

from __future__ import annotations

from gateway.batching import AdaptiveController, BatchingPolicy


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def make(target_s: float = 0.02, delay_s: float = 0.005) -> tuple[AdaptiveController, BatchingPolicy, Clock]:
    policy = BatchingPolicy(max_batch_size=64, max_queue_delay_s=delay_s)
    clock = Clock()
    return AdaptiveController(policy, target_s, window=100, now=clock), policy, clock


def feed(controller: AdaptiveController, seconds: float, n: int = 100, compute: float | None = None) -> None:
    for _ in range(n):
        controller.observe(seconds, seconds if compute is None else compute)


def test_delay_starts_capped_at_half_the_target() -> None:
    _, policy, _ = make(target_s=0.004, delay_s=0.005)
    assert policy.max_queue_delay_s == 0.002


def test_delay_never_grows_past_the_configured_one() -> None:
    controller, policy, _ = make(target_s=0.1, delay_s=0.001)
    for _ in range(50):
        feed(controller, 0.001)
    assert policy.max_queue_delay_s == 0.001


def test_over_the_target_with_slow_batches_cuts_both_knobs() -> None:
    controller, policy, _ = make()
    feed(controller, 0.05)  # p99 50 ms over a 20 ms target, all of it computing
    assert policy.max_batch_size == int(64 * 0.7)
    assert policy.max_queue_delay_s == 0.005 / 2
    assert controller.last_p99_s == 0.05


def test_over_the_target_from_queueing_grows_the_batch_size() -> None:
    """Time lost queueing behind other batches: bigger batches drain the queue faster."""
    controller, policy, _ = make()
    feed(controller, 0.05)  # slow batches: cut to 44
    feed(controller, 0.05, compute=0.008)  # now the time is queueing: grow again
    assert policy.max_batch_size == 44 + 4
    assert policy.max_queue_delay_s == 0.005 / 4


def test_well_under_the_target_grows_slowly_up_to_the_ceilings() -> None:
    controller, policy, _ = make()
    feed(controller, 0.05)
    cut_batch, cut_delay = policy.max_batch_size, policy.max_queue_delay_s
    feed(controller, 0.001)
    assert policy.max_batch_size == cut_batch + 4  # 64 // 16
    assert cut_delay < policy.max_queue_delay_s <= 0.005
    for _ in range(100):
        feed(controller, 0.001)
    assert policy.max_batch_size == 64
    assert policy.max_queue_delay_s == 0.005  # back to the configured delay, never beyond


def test_near_the_target_holds_still() -> None:
    controller, policy, _ = make()
    feed(controller, 0.017, compute=0.013)  # between 70% and 100% of the target; batches moderate
    assert (policy.max_batch_size, policy.max_queue_delay_s, controller.adjustments) == (64, 0.005, 0)


def test_cheap_batches_grow_even_while_queueing_holds_the_p99_near_the_target() -> None:
    controller, policy, _ = make()
    feed(controller, 0.05)  # slow batches: cut
    for _ in range(3):
        feed(controller, 0.017, compute=0.005)  # the p99 in the hold band, batches cheap
    assert policy.max_batch_size == 44 + 3 * 4
    assert policy.max_queue_delay_s == 0.005 / 2  # the delay holds


def test_p99_is_the_tail_not_the_mean() -> None:
    controller, policy, _ = make()
    for i in range(100):
        controller.observe(0.05 if i < 2 else 0.001, 0.05 if i < 2 else 0.001)  # 2% slow: the p99 is slow
    assert policy.max_batch_size < 64


def test_thin_traffic_adjusts_on_time_and_ignores_tiny_samples() -> None:
    controller, policy, clock = make()
    for _ in range(5):
        controller.observe(0.05, 0.05)
    clock.t = 2.0
    controller.observe(0.05, 0.05)  # a second has passed, but 6 samples say nothing about a p99
    assert controller.adjustments == 0
    for _ in range(30):
        controller.observe(0.05, 0.05)
    clock.t = 4.0
    controller.observe(0.05, 0.05)
    assert controller.adjustments == 1 and policy.max_batch_size < 64
