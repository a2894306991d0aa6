"""Batching semantics with an injected clock: no sleeps, time moves when the test says so."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest

from gateway.batching import Batcher, BatchingPolicy, ManualClock
from gateway.batching.batcher import _PROBE_EVERY
from gateway.batching.clock import settle
from gateway.errors import DeadlineExceeded, Internal, InvalidArgument, ResourceExhausted, Unavailable

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(10)]


class FakeBackend:
    """Doubles its input; records every batch; can be held to keep a batch in flight."""

    def __init__(self) -> None:
        self.batches: list[np.ndarray] = []
        self.hold: asyncio.Event | None = None
        self.fail_with: Exception | None = None

    async def __call__(
        self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str], deadline: float | None = None
    ) -> dict[str, np.ndarray]:
        self.batches.append(inputs["x"])
        if self.hold is not None:
            await self.hold.wait()
        if self.fail_with is not None:
            raise self.fail_with
        return {"y": inputs["x"] * 2}


def rows(values: list[float], width: int = 2) -> dict[str, np.ndarray]:
    return {"x": np.array([[v] * width for v in values], dtype=np.float32)}


async def make(
    policy: BatchingPolicy, backend: FakeBackend | None = None
) -> tuple[Batcher, FakeBackend, ManualClock]:
    backend = backend or FakeBackend()
    clock = ManualClock()
    batcher = Batcher(backend, ["y"], policy, clock=clock, name="m/1")
    batcher.start()
    return batcher, backend, clock


def submit(batcher: Batcher, values: list[float], **kw: Any) -> asyncio.Task[Any]:
    data = rows(values, kw.pop("width", 2))
    return asyncio.ensure_future(batcher.submit(data, len(values), **kw))


async def test_full_batch_goes_at_once_without_waiting_for_the_delay() -> None:
    batcher, backend, _ = await make(BatchingPolicy(max_batch_size=4, max_queue_delay_s=10))
    tasks = [submit(batcher, [i]) for i in range(4)]
    await settle()
    assert len(backend.batches) == 1 and backend.batches[0].shape == (4, 2)
    results = await asyncio.gather(*tasks)
    for i, r in enumerate(results):
        np.testing.assert_array_equal(r.outputs["y"], [[2 * i, 2 * i]])
        assert r.batch_rows == 4
    await batcher.close()


async def test_partial_batch_waits_for_the_queue_delay() -> None:
    batcher, backend, clock = await make(BatchingPolicy(max_batch_size=8, max_queue_delay_s=0.001))
    tasks = [submit(batcher, [1]), submit(batcher, [2])]
    await settle()
    assert backend.batches == []
    await clock.advance(0.0009)
    assert backend.batches == []
    await clock.advance(0.0002)
    assert [b.shape[0] for b in backend.batches] == [2]
    await asyncio.gather(*tasks)
    await batcher.close()


async def test_preferred_batch_size_goes_at_once() -> None:
    batcher, backend, _ = await make(
        BatchingPolicy(max_batch_size=8, max_queue_delay_s=10, preferred_batch_sizes=(3,))
    )
    tasks = [submit(batcher, [i]) for i in range(3)]
    await settle()
    assert [b.shape[0] for b in backend.batches] == [3]
    await asyncio.gather(*tasks)
    await batcher.close()


async def test_multi_row_requests_are_merged_and_split_back() -> None:
    batcher, backend, _ = await make(BatchingPolicy(max_batch_size=6, max_queue_delay_s=10))
    a, b, c = submit(batcher, [1, 2]), submit(batcher, [3]), submit(batcher, [4, 5, 6])
    results = await asyncio.gather(a, b, c)
    assert [x.shape[0] for x in backend.batches] == [6]
    np.testing.assert_array_equal(results[0].outputs["y"][:, 0], [2, 4])
    np.testing.assert_array_equal(results[1].outputs["y"][:, 0], [6])
    np.testing.assert_array_equal(results[2].outputs["y"][:, 0], [8, 10, 12])
    await batcher.close()


async def test_a_request_is_never_split_across_batches() -> None:
    batcher, backend, clock = await make(BatchingPolicy(max_batch_size=4, max_queue_delay_s=0.001))
    tasks = [submit(batcher, [1, 1, 1]), submit(batcher, [2, 2])]
    await settle()
    await clock.advance(0.002)
    await asyncio.gather(*tasks)
    assert [b.shape[0] for b in backend.batches] == [3, 2]
    await batcher.close()


async def test_incompatible_shapes_are_not_mixed() -> None:
    batcher, backend, clock = await make(BatchingPolicy(max_batch_size=8, max_queue_delay_s=0.001))
    tasks = [submit(batcher, [1], width=2), submit(batcher, [2], width=3), submit(batcher, [3], width=2)]
    await settle()
    await clock.advance(0.002)
    await clock.advance(0.002)
    await asyncio.gather(*tasks)
    assert sorted(b.shape for b in backend.batches) == [(1, 3), (2, 2)]
    await batcher.close()


async def test_full_queue_refuses_at_once() -> None:
    batcher, _, clock = await make(BatchingPolicy(max_batch_size=8, max_queue_delay_s=1, max_queue_size=2))
    tasks = [submit(batcher, [1]), submit(batcher, [2])]
    await settle()
    with pytest.raises(ResourceExhausted, match="queue full"):
        await batcher.submit(rows([3]), 1)
    await clock.advance(1.0)
    await asyncio.gather(*tasks)
    again = submit(batcher, [4])  # the queue has room again
    await settle()
    await clock.advance(1.0)
    assert (await again).outputs["y"][0, 0] == 8
    await batcher.close()


async def test_deadline_in_queue_fails_then_and_never_runs() -> None:
    backend = FakeBackend()
    backend.hold = asyncio.Event()
    batcher, _, clock = await make(BatchingPolicy(max_batch_size=1, max_queue_delay_s=0), backend)
    first = submit(batcher, [1])  # occupies the only batch slot
    await settle()
    late = submit(batcher, [2], deadline=clock.now() + 0.005)
    await clock.advance(0.004)
    assert not late.done()
    await clock.advance(0.002)
    assert late.done()
    with pytest.raises(DeadlineExceeded, match="while queued"):
        late.result()
    backend.hold.set()
    await first
    await settle()
    assert [b[0, 0] for b in backend.batches] == [1]  # the expired request never ran
    assert batcher.queued == 0
    await batcher.close()


async def test_default_timeout_applies_without_a_deadline() -> None:
    backend = FakeBackend()
    backend.hold = asyncio.Event()
    batcher, _, clock = await make(
        BatchingPolicy(max_batch_size=1, max_queue_delay_s=0, default_timeout_s=0.01), backend
    )
    first = submit(batcher, [1])
    await settle()
    queued = submit(batcher, [2])
    await clock.advance(0.011)
    with pytest.raises(DeadlineExceeded):
        await queued
    backend.hold.set()
    await first  # the one already running is not cut short by the queue timeout
    await batcher.close()


async def test_past_deadline_is_refused_before_queueing() -> None:
    batcher, _backend, clock = await make(BatchingPolicy(max_batch_size=4))
    await clock.advance(1.0)
    with pytest.raises(DeadlineExceeded):
        await batcher.submit(rows([1]), 1, deadline=0.5)
    assert batcher.queued == 0
    await batcher.close()


async def test_cancelled_caller_leaves_without_breaking_the_batch() -> None:
    batcher, backend, clock = await make(BatchingPolicy(max_batch_size=8, max_queue_delay_s=0.001))
    keep1, gone, keep2 = submit(batcher, [1]), submit(batcher, [2]), submit(batcher, [3])
    await settle()
    assert batcher.queued == 3
    gone.cancel()
    await settle()
    assert batcher.queued == 2
    await clock.advance(0.002)
    r1, r2 = await asyncio.gather(keep1, keep2)
    assert [b[:, 0].tolist() for b in backend.batches] == [[1, 3]]
    assert (r1.outputs["y"][0, 0], r2.outputs["y"][0, 0]) == (2, 6)
    await batcher.close()


async def test_backend_error_fails_exactly_that_batch() -> None:
    backend = FakeBackend()
    batcher, _, _clock = await make(BatchingPolicy(max_batch_size=2, max_queue_delay_s=0.001), backend)
    backend.fail_with = InvalidArgument("bad batch")
    failing = [submit(batcher, [1]), submit(batcher, [2])]
    results = await asyncio.gather(*failing, return_exceptions=True)
    assert all(isinstance(r, InvalidArgument) for r in results)
    backend.fail_with = RuntimeError("boom with a secret")
    crashed = await asyncio.gather(submit(batcher, [3]), submit(batcher, [4]), return_exceptions=True)
    assert all(isinstance(r, Internal) and "secret" not in r.message for r in crashed)
    backend.fail_with = None
    ok = await asyncio.gather(submit(batcher, [5]), submit(batcher, [6]))
    assert [r.outputs["y"][0, 0] for r in ok] == [10, 12]
    await batcher.close()


async def test_priority_levels_are_served_in_order() -> None:
    backend = FakeBackend()
    backend.hold = asyncio.Event()
    batcher, _, _clock = await make(
        BatchingPolicy(max_batch_size=1, max_queue_delay_s=0, priority_levels=2, default_priority=2), backend
    )
    blocker = submit(batcher, [0])
    await settle()
    low = submit(batcher, [1])  # default level 2
    high = submit(batcher, [2], priority=1)
    await settle()
    backend.hold.set()
    await asyncio.gather(blocker, low, high)
    assert [b[0, 0] for b in backend.batches] == [0, 2, 1]
    await batcher.close()


async def test_batches_in_flight_bounded_and_queue_grows_meanwhile() -> None:
    backend = FakeBackend()
    backend.hold = asyncio.Event()
    batcher, _, _clock = await make(BatchingPolicy(max_batch_size=4, max_queue_delay_s=0), backend)
    first = submit(batcher, [0])
    await settle()
    rest = [submit(batcher, [i]) for i in range(1, 4)]
    await settle()
    assert len(backend.batches) == 1  # one slot: the others wait and coalesce
    backend.hold.set()
    await asyncio.gather(first, *rest)
    assert [b.shape[0] for b in backend.batches] == [1, 3]
    await batcher.close()


async def test_close_serves_the_queue_then_refuses() -> None:
    batcher, _backend, _ = await make(BatchingPolicy(max_batch_size=8, max_queue_delay_s=60))
    queued = [submit(batcher, [i]) for i in range(3)]
    await settle()
    await batcher.close()
    assert [r.outputs["y"][0, 0] for r in await asyncio.gather(*queued)] == [0, 2, 4]
    with pytest.raises(Unavailable):
        await batcher.submit(rows([1]), 1)


async def test_no_task_left_behind() -> None:
    before = asyncio.all_tasks()
    batcher, _, clock = await make(BatchingPolicy(max_batch_size=2, max_queue_delay_s=0.001))
    await asyncio.gather(
        submit(batcher, [1]), submit(batcher, [2]), submit(batcher, [3]), clock.advance(0.002)
    )
    await batcher.close()
    await settle()
    assert asyncio.all_tasks() - before == set()


async def test_waits_that_gather_nobody_stop_and_probes_continue() -> None:
    batcher, backend, clock = await make(BatchingPolicy(max_batch_size=8, max_queue_delay_s=0.001))
    waited = []
    for i in range(3 + 2 * _PROBE_EVERY):  # one client at a time: nobody ever joins a waiting request
        task = submit(batcher, [i])
        await clock.advance(0.0)
        waited.append(not task.done())
        await clock.advance(0.002)
        await task
    assert waited[:3] == [True, True, True]  # the first waits are honoured
    assert waited[3 : 3 + _PROBE_EVERY].count(True) == 1  # then only a probe now and then waits
    assert waited[3 + _PROBE_EVERY :].count(True) == 1
    assert all(b.shape[0] == 1 for b in backend.batches)
    await batcher.close()


async def test_waiting_resumes_when_it_pays_again() -> None:
    batcher, backend, clock = await make(BatchingPolicy(max_batch_size=8, max_queue_delay_s=0.001))
    for i in range(4):  # futile waits: from now on only probes wait
        task = submit(batcher, [i])
        await clock.advance(0.002)
        await task
    for _ in range(_PROBE_EVERY + 4):  # load rises: two at a time; a probe finds company, waiting resumes
        pair = [submit(batcher, [1]), submit(batcher, [2])]
        await clock.advance(0.002)
        await asyncio.gather(*pair)
    assert [b.shape[0] for b in backend.batches][-3:] == [2, 2, 2]
    await batcher.close()


async def test_dense_arrivals_still_wait_and_coalesce() -> None:
    batcher, backend, clock = await make(BatchingPolicy(max_batch_size=8, max_queue_delay_s=0.001))
    tasks = []
    for i in range(4):
        tasks.append(submit(batcher, [i]))
        await clock.advance(0.0001)  # 0.1 ms apart: the next one comes well within the delay
    await clock.advance(0.001)
    await asyncio.gather(*tasks)
    assert [b.shape[0] for b in backend.batches] == [4]
    await batcher.close()


async def test_idle_batcher_runs_a_request_that_would_go_at_once_in_its_callers_task() -> None:
    batcher, backend, clock = await make(BatchingPolicy(max_batch_size=8, max_queue_delay_s=0.001))
    for i in range(3):  # three futile waits: from now on a lone request goes at once
        task = submit(batcher, [i])
        await clock.advance(0.002)
        await task
    scheduler_calls = len(backend.batches)
    result = await batcher.submit(rows([7]), 1)  # no clock advance, no settle: it ran inline
    assert result.queue_ns == 0 and result.batch_rows == 1
    np.testing.assert_array_equal(result.outputs["y"], [[14, 14]])
    assert len(backend.batches) == scheduler_calls + 1 and batcher.queued == 0
    await batcher.close()


async def test_requests_arriving_during_an_inline_run_queue_and_batch_after_it() -> None:
    backend = FakeBackend()
    backend.hold = asyncio.Event()
    batcher, _, _clock = await make(BatchingPolicy(max_batch_size=8, max_queue_delay_s=0), backend)
    alone = submit(batcher, [1])
    await settle()
    later = [submit(batcher, [i]) for i in (2, 3)]
    await settle()
    assert batcher.queued == 2 and len(backend.batches) == 1  # the slot is taken: they wait
    backend.hold.set()
    results = await asyncio.gather(alone, *later)
    assert [b[:, 0].tolist() for b in backend.batches] == [[1], [2, 3]]
    assert [r.outputs["y"][0, 0] for r in results] == [2, 4, 6]
    await batcher.close()


async def test_inline_run_errors_and_cancellation_free_the_slot() -> None:
    backend = FakeBackend()
    batcher, _, _clock = await make(BatchingPolicy(max_batch_size=8, max_queue_delay_s=0), backend)
    backend.fail_with = RuntimeError("boom with a secret")
    with pytest.raises(Internal) as crashed:
        await batcher.submit(rows([1]), 1)
    assert "secret" not in crashed.value.message
    backend.fail_with = InvalidArgument("bad request")
    with pytest.raises(InvalidArgument):
        await batcher.submit(rows([2]), 1)
    backend.fail_with = None
    backend.hold = asyncio.Event()
    gone = submit(batcher, [3])
    await settle()
    gone.cancel()  # the caller leaves while its call runs
    await settle()
    backend.hold.set()
    assert (await batcher.submit(rows([4]), 1)).outputs["y"][0, 0] == 8  # the slot came back
    await batcher.close()


async def test_enqueued_requests_share_a_batch_and_a_cancelled_one_takes_its_rows_out() -> None:
    backend = FakeBackend()
    backend.hold = asyncio.Event()
    batcher, _, _ = await make(BatchingPolicy(max_batch_size=8, max_queue_delay_s=0), backend)
    busy = submit(batcher, [9])  # holds the one batch slot
    await settle()
    tickets = [batcher.enqueue(rows([i]), 1) for i in range(3)]
    tickets[1].future.cancel()
    batcher.release(tickets[1])
    backend.hold.set()
    await busy
    results = [await t.future for t in (tickets[0], tickets[2])]
    for t in tickets:
        batcher.release(t)
    assert [b.shape[0] for b in backend.batches] == [1, 2]  # the cancelled row never ran
    np.testing.assert_array_equal(results[1].outputs["y"], [[4, 4]])
    assert batcher.queued == 0
    await batcher.close()


async def test_a_queued_request_can_be_resized_and_start_alone_claims_the_slot() -> None:
    backend = FakeBackend()
    backend.hold = asyncio.Event()
    batcher, _, _ = await make(BatchingPolicy(max_batch_size=8, max_queue_delay_s=0), backend)
    assert batcher.idle(1)
    alone = batcher.start_alone(rows([5]), 1)
    assert not batcher.idle(1)  # claimed before its task has run: the next one queues
    ticket = batcher.enqueue(rows([1, 2, 3]), 3)
    batcher.resize(ticket, rows([1, 3]), 2)
    backend.hold.set()
    assert (await alone).outputs["y"].tolist() == [[10, 10]]
    result = await ticket.future
    batcher.release(ticket)
    assert result.outputs["y"].tolist() == [[2, 2], [6, 6]]
    assert [b.shape[0] for b in backend.batches] == [1, 2]
    await batcher.close()


async def test_outputs_without_one_row_per_input_row_fail_the_batch() -> None:
    """A backend (a remote one, say) that answers a batch with the wrong number of rows fails
    that batch with INTERNAL: its rows could not be split among the requests."""

    class Short(FakeBackend):
        async def __call__(
            self, inputs: Mapping[str, np.ndarray], outputs: Sequence[str], deadline: float | None = None
        ) -> dict[str, np.ndarray]:
            answer = await super().__call__(inputs, outputs, deadline)
            return {"y": answer["y"][:-1]}

    batcher, _, clock = await make(BatchingPolicy(max_batch_size=2, max_queue_delay_s=0.001), Short())
    results = await asyncio.gather(submit(batcher, [1]), submit(batcher, [2]), return_exceptions=True)
    expected = "returned 1 rows of output 'y' for 2 rows"
    assert all(isinstance(r, Internal) and expected in r.message for r in results), results
    alone = submit(batcher, [3])  # a partial batch: sent when the delay runs out
    await clock.advance(0.002)
    with pytest.raises(Internal, match="0 rows of output 'y' for 1 rows"):
        await alone
    await batcher.close()
