"""Dynamic batching: many small requests in, one backend call per batch out.

One `Batcher` per model version. `submit` queues a request's rows and waits for its slice of a
batch's outputs; `enqueue` queues them without waiting (the batch-native path: many calls queued
in one step, each answered from its ticket's future, with no task per call). A scheduler task
forms a batch when the queue holds `max_batch_size` rows, or a preferred batch size, or when the
oldest request has waited `max_queue_delay`; then it concatenates each input once, runs the
backend once, and hands every request a view of its rows.

- Requests are whole: a batch holds only requests whose inputs agree beyond the batch dimension.
- Priority levels (1 = highest) are served in order; within a level, first come first served.
- `max_queue_size` bounds the queued requests: one more is refused at once (RESOURCE_EXHAUSTED).
- A request whose deadline (the caller's, or the default queue timeout) passes while queued gets
  DEADLINE_EXCEEDED at that moment and is never run; a caller that leaves (its task cancelled)
  takes its rows out of the queue; neither disturbs the rest of the batch.
- A backend error fails exactly the requests of that batch.
- `close()` serves what is queued, then stops; later submissions get UNAVAILABLE.
- The queue delay is an upper bound: after a few waits that gathered nobody but the first
  request (one client at a time), batches go at once; every 128th still waits, to notice when
  the load rises (rarely enough that a lone client's p99 does not pay for it). A request that
  would go at once and finds the batcher idle (nobody queued, a batch slot free) runs in its
  caller's task, without passing through the queue.
- Timers have about 1 ms granularity on the event loop, so a delay under 1 ms waits about 1 ms.
- Traced requests (gateway/telemetry/tracing.py) get a `queue` span while they wait; each
  backend call gets a `batch` span under the first sampled request of the batch, linked to every
  sampled one; the backend call belongs to it. Untraced, none of this runs.
- Each backend call gets a `CallCost` (gateway/telemetry/cost.py) for the backend to fill in;
  every request of the batch gets it in its `BatchResult`, with its rows and the batch's, so
  its share is computed only if the request asks for it.
No locks: everything runs on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import DeadlineExceeded, GatewayError, Internal, ResourceExhausted, Unavailable
from ..telemetry.cost import COST, CallCost
from ..telemetry.tracing import CALL, Trace
from .clock import Clock, LoopClock, Timer

__all__ = ["BatchResult", "Batcher", "BatchingPolicy", "Ticket"]

log = logging.getLogger(__name__)

_FUTILE_LIMIT = 3  # waits in a row that gathered nobody: stop waiting ...
_PROBE_EVERY = 128  # ... except every 128th batch, which waits again to notice the load rising

RunBatch = Callable[[Mapping[str, np.ndarray], Sequence[str], float | None], Awaitable[dict[str, np.ndarray]]]


@dataclass
class BatchingPolicy:
    """The knobs of one batcher. `max_batch_size` and `max_queue_delay_s` may be changed while
    it runs (the adaptive controller does); the rest is fixed at start."""

    max_batch_size: int
    max_queue_delay_s: float = 0.0005
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_size: int = 4096
    default_timeout_s: float | None = None
    priority_levels: int = 1
    default_priority: int = 1
    max_inflight_batches: int = 1


@dataclass(frozen=True, slots=True)
class BatchResult:
    outputs: dict[str, np.ndarray]
    queue_ns: int  # time from enqueue to the batch starting
    compute_ns: int  # the batch's backend call
    batch_rows: int
    cost: CallCost | None = None  # the backend call's cost, shared by the batch's requests


@dataclass(eq=False, slots=True)
class Ticket:
    """One queued request. `future` gets its BatchResult (or its error); whoever holds the ticket
    calls `Batcher.release` once the future is done or abandoned."""

    inputs: Mapping[str, np.ndarray]
    rows: int
    key: tuple[Any, ...]
    future: asyncio.Future[BatchResult]
    enqueued_at: float  # on the batcher's clock: when the queue delay runs out
    enqueued_ns: int  # perf_counter_ns: for the queue time reported in statistics
    deadline: float | None = None
    trace: Trace | None = None  # the request's trace, when it is traced or forwarded
    waiting: Trace | None = None  # its queue span, while it waits
    timer: Timer | None = None
    queued: bool = True


class Batcher:
    def __init__(
        self,
        run: RunBatch,
        outputs: Sequence[str],
        policy: BatchingPolicy,
        *,
        clock: Clock | None = None,
        on_batch: Callable[[int, int, CallCost], None] | None = None,
        observe: Callable[[float, float], None] | None = None,
        name: str = "",
    ) -> None:
        self._run = run
        self._outputs = tuple(outputs)
        self.policy = policy
        self._clock = clock or LoopClock()
        self._on_batch = on_batch  # (rows, compute ns, cost) per batch
        self._observe = observe  # (queue + compute, compute) seconds per request: the controller
        self._name = name
        self._levels: list[deque[Ticket]] = [deque() for _ in range(max(1, policy.priority_levels))]
        self._rows: dict[tuple[Any, ...], int] = {}  # queued rows per shape key
        self.queued = 0  # queued requests
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(max(1, policy.max_inflight_batches))
        self._running: set[asyncio.Task[None]] = set()
        self._closing = False
        self._delaying = False  # the scheduler is waiting out the queue delay
        self._waited = False  # the batch being formed has waited out (part of) the queue delay
        self._futile = 0  # consecutive waits after which the batch still held one request
        self._skipped = 0  # batches sent without waiting since waiting last paid off
        self._probing = False  # the batch being formed is a probe: it waits out the delay
        self._scheduler: asyncio.Task[None] | None = None
        self._traced = False  # a traced request was ever submitted: batches look for traces
        self._claimed = 0  # tasks of start_alone that have not taken their batch slot yet

    # -- callers -------------------------------------------------------------------------------

    def start(self) -> None:
        self._scheduler = asyncio.get_running_loop().create_task(
            self._schedule(), name=f"batcher {self._name}"
        )

    async def submit(
        self,
        inputs: Mapping[str, np.ndarray],
        rows: int,
        deadline: float | None = None,
        priority: int = 0,
        trace: Trace | None = None,
    ) -> BatchResult:
        """Queue one request (`rows` rows) and wait for its outputs. `deadline` is on the clock's
        scale; `priority` 0 means the default level; `trace` the request's, if any."""
        deadline = self._admit(deadline)
        if self.idle(rows):
            if trace is not None:
                return await self._run_alone_traced(inputs, rows, deadline, trace)
            return await self._run_alone(inputs, rows, deadline)
        item = self._queue(inputs, rows, deadline, priority, trace)
        try:
            return await item.future
        finally:
            self.release(item)

    def enqueue(
        self,
        inputs: Mapping[str, np.ndarray],
        rows: int,
        deadline: float | None = None,
        priority: int = 0,
        trace: Trace | None = None,
    ) -> Ticket:
        """Queue one request without waiting: its outputs arrive in the ticket's future (cancel
        the future to take the rows out). Errors of admission (queue full, deadline passed,
        closing) raise here, as from `submit`. Call `release(ticket)` once the future is done."""
        return self._queue(inputs, rows, self._admit(deadline), priority, trace)

    def release(self, item: Ticket) -> None:
        """Forget a request whose future is done: a caller that left (cancelled) or expired
        takes its rows out of the queue; its timer and queue span end."""
        if item.queued:
            self._dequeue(item)
        if item.timer is not None:
            item.timer.cancel()
            item.timer = None
        if item.waiting is not None:  # it left the queue without running
            item.waiting.fail("CANCELLED" if item.future.cancelled() else "DEADLINE_EXCEEDED")
            item.waiting.end()
            item.waiting = None

    def resize(self, item: Ticket, inputs: Mapping[str, np.ndarray], rows: int) -> None:
        """Replace a queued request's rows with fewer (the batch path takes a cancelled call's
        rows out of the group of calls it queued as one request)."""
        if item.queued:
            self._rows[item.key] += rows - item.rows
        item.inputs, item.rows = inputs, rows

    def _admit(self, deadline: float | None) -> float | None:
        """Refuse a request the batcher cannot take; its deadline with the default timeout."""
        policy = self.policy
        if self._closing:
            raise Unavailable(f"{self._name}: shutting down")
        if self.queued >= policy.max_queue_size:
            raise ResourceExhausted(f"{self._name}: batch queue full ({policy.max_queue_size} requests)")
        if policy.default_timeout_s is not None or deadline is not None:
            now = self._clock.now()
            if policy.default_timeout_s is not None:
                timeout_at = now + policy.default_timeout_s
                deadline = timeout_at if deadline is None else min(deadline, timeout_at)
            if deadline is not None and deadline <= now:
                raise DeadlineExceeded(f"{self._name}: deadline passed before the request was queued")
        return deadline

    def _queue(
        self,
        inputs: Mapping[str, np.ndarray],
        rows: int,
        deadline: float | None,
        priority: int,
        trace: Trace | None,
    ) -> Ticket:
        policy = self.policy
        level = (priority or policy.default_priority) - 1
        if not 0 <= level < len(self._levels):
            level = len(self._levels) - 1
        key = tuple((name, a.shape[1:], a.dtype) for name, a in inputs.items())
        future: asyncio.Future[BatchResult] = asyncio.get_running_loop().create_future()
        item = Ticket(inputs, rows, key, future, self._clock.now(), time.perf_counter_ns(), deadline, trace)
        if trace is not None:
            self._traced = True
            if trace.recording:
                item.waiting = trace.child("queue")
        if deadline is not None:
            item.timer = self._clock.call_at(deadline, lambda: self._expire(item))
        self._levels[level].append(item)
        self._rows[key] = self._rows.get(key, 0) + rows
        self.queued += 1
        # While the scheduler waits out the queue delay, only an arrival that fills a batch
        # needs to wake it: one wake-up per batch rather than one per request.
        if not self._delaying or self._rows[key] >= self._ready_rows():
            self._wake.set()
        return item

    def idle(self, rows: int) -> bool:
        """Would a request of `rows` rows run at once (nobody queued, a batch slot free and not
        claimed, waiting would not pay)? `submit` then runs it in its caller's task, skipping the
        queue; `start_alone` in a task of its own."""
        return (
            not self.queued and not self._claimed and not self._slots.locked() and not self._should_wait(rows)
        )

    def start_alone(
        self, inputs: Mapping[str, np.ndarray], rows: int, deadline: float | None = None
    ) -> asyncio.Task[BatchResult]:
        """Run a request that found the batcher `idle` at once, in a task of its own (the batch
        path's joined calls). The slot is claimed now, so that requests arriving before the task
        starts are queued behind it rather than sent at once too. Admission errors raise here."""
        deadline = self._admit(deadline)
        self._claimed += 1
        return asyncio.get_running_loop().create_task(self._run_alone(inputs, rows, deadline, claimed=True))

    def _should_wait(self, rows: int) -> bool:
        """For a request that finds the batcher idle: would the scheduler hold it for company?"""
        if self._target(rows) is not None or self.policy.max_queue_delay_s <= 0:
            return False
        return self._worth_waiting()

    async def _run_alone(
        self, inputs: Mapping[str, np.ndarray], rows: int, deadline: float | None, claimed: bool = False
    ) -> BatchResult:
        """Run a request at once in its caller's task: nobody is queued, a batch slot is free and
        waiting would not pay. Skips the queue, the scheduler and the hand-back of results (at
        low load, batching then costs nothing in latency). `claimed`: by `start_alone`."""
        try:
            await self._slots.acquire()  # free (or claimed), so this does not wait
        finally:
            if claimed:
                self._claimed -= 1
        cost = CallCost()
        token = COST.set(cost)
        try:
            start = time.perf_counter_ns()
            outputs = await self._call(inputs, deadline)
            compute_ns = time.perf_counter_ns() - start
        finally:
            COST.reset(token)
            self._slots.release()
        if self._on_batch is not None:
            self._on_batch(rows, compute_ns, cost)
        if self._observe is not None:
            self._observe(compute_ns * 1e-9, compute_ns * 1e-9)
        return BatchResult(outputs, 0, compute_ns, rows, cost)

    async def _run_alone_traced(
        self, inputs: Mapping[str, np.ndarray], rows: int, deadline: float | None, trace: Trace
    ) -> BatchResult:
        """_run_alone, its backend call in the request's trace (under a batch span of one)."""
        batch = self._batch_span([trace], rows, 1) if trace.recording else trace
        token = CALL.set(batch)
        try:
            return await self._run_alone(inputs, rows, deadline)
        except GatewayError as exc:
            batch.fail(exc.code)
            raise
        finally:
            CALL.reset(token)
            if batch is not trace:
                batch.end()

    def _batch_span(self, traces: Sequence[Trace], rows: int, requests: int) -> Trace:
        """The span of one backend call, under the first of the sampled requests it serves."""
        return traces[0].child(
            "batch",
            attributes={
                "modelgate.batcher": self._name,
                "modelgate.batch_size": rows,
                "modelgate.batch_requests": requests,
            },
            links=traces,
        )

    def _dequeue(self, item: Ticket) -> None:
        item.queued = False
        self.queued -= 1
        left = self._rows[item.key] - item.rows
        if left:
            self._rows[item.key] = left
        else:
            del self._rows[item.key]

    def _expire(self, item: Ticket) -> None:
        if not item.future.done():
            item.future.set_exception(DeadlineExceeded(f"{self._name}: deadline passed while queued"))

    # -- the scheduler ------------------------------------------------------------------------

    def _head(self) -> Ticket | None:
        """The oldest live request of the highest priority level (dead ones are dropped)."""
        for items in self._levels:
            while items:
                head = items[0]
                if head.queued and not head.future.done():
                    return head
                items.popleft()
                if head.queued:
                    self._dequeue(head)
        return None

    def _ready_rows(self) -> int:
        """Queued rows (of one shape) that make a batch ready before the delay runs out."""
        preferred = self.policy.preferred_batch_sizes
        return min(preferred[0], self.policy.max_batch_size) if preferred else self.policy.max_batch_size

    def _target(self, available: int) -> int | None:
        """Rows to take now, or None to wait for more."""
        policy = self.policy
        if available >= policy.max_batch_size or self._closing:
            return policy.max_batch_size
        fitting = [p for p in policy.preferred_batch_sizes if p <= available]
        return max(fitting) if fitting else None

    async def _schedule(self) -> None:
        try:
            while True:
                head = self._head()
                if head is None:
                    if self._closing:
                        return
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                target = self._target(self._rows.get(head.key, 0))
                if target is None:
                    due = head.enqueued_at + self.policy.max_queue_delay_s
                    if due > self._clock.now() and self._worth_waiting():
                        self._waited = True
                        await self._sleep_until(due)
                        continue
                    target = self.policy.max_batch_size
                if self._claimed:  # a start_alone task takes the slot first: it came first
                    await asyncio.sleep(0)
                    continue
                await self._slots.acquire()
                items = self._take(head.key, target)
                if not items:
                    self._slots.release()
                    continue
                if self._waited:
                    self._futile = self._futile + 1 if len(items) == 1 else 0
                    self._waited = self._probing = False
                task = asyncio.get_running_loop().create_task(self._execute(items))
                self._running.add(task)
                task.add_done_callback(self._running.discard)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("batcher %s: scheduler failed", self._name)
            raise

    def _worth_waiting(self) -> bool:
        """Waiting pays only if others arrive meanwhile. When the last few waits gathered
        nobody (one client at a time, each waiting for its answer), send at once; every
        _PROBE_EVERY-th batch waits anyway, to notice when the load rises."""
        if self._futile < _FUTILE_LIMIT or self._probing:
            return True
        self._skipped += 1
        if self._skipped >= _PROBE_EVERY:
            self._skipped = 0
            self._probing = True
            return True
        return False

    async def _sleep_until(self, when: float) -> None:
        """Wait for the queue delay, or less if a request arrives (it may fill the batch)."""
        self._wake.clear()
        timer = self._clock.call_at(when, self._wake.set)
        self._delaying = True
        try:
            await self._wake.wait()
        finally:
            self._delaying = False
            timer.cancel()

    def _take(self, key: tuple[Any, ...], target: int) -> list[Ticket]:
        """Pop live requests of `key`, in priority then arrival order, while they fit `target`."""
        taken: list[Ticket] = []
        rows = 0
        for items in self._levels:
            skipped: list[Ticket] = []
            while items and rows < target:
                item = items.popleft()
                if not item.queued or item.future.done():
                    if item.queued:
                        self._dequeue(item)
                    continue
                if item.key != key:
                    skipped.append(item)
                    continue
                if rows + item.rows > target and taken:
                    items.appendleft(item)
                    break
                self._dequeue(item)
                if item.timer is not None:  # the queue timeout ends once it runs
                    item.timer.cancel()
                taken.append(item)
                rows += item.rows
            items.extendleft(reversed(skipped))
            if rows >= target:
                break
        return taken

    async def _execute(self, items: list[Ticket]) -> None:
        batch = None
        try:
            start = time.perf_counter_ns()
            if self._traced:
                batch = self._trace_batch(items)
            if len(items) == 1:
                inputs = items[0].inputs
            else:
                inputs = {name: np.concatenate([it.inputs[name] for it in items]) for name in items[0].inputs}
            try:
                # One remote call for the batch: it may run as long as its most patient request.
                deadlines = [it.deadline for it in items]
                deadline = None if None in deadlines else max(d for d in deadlines if d is not None)
                cost = CallCost()
                COST.set(cost)  # this task's own context: no reset needed
                outputs = await self._call(inputs, deadline)
            except GatewayError as exc:
                if batch is not None:
                    batch.fail(exc.code)
                self._fail(items, exc)
                return
            compute_ns = time.perf_counter_ns() - start
            batch_rows = sum(it.rows for it in items)
            if self._on_batch is not None:
                self._on_batch(batch_rows, compute_ns, cost)
            observe = self._observe
            offset = 0
            for it in items:
                if not it.future.done():
                    end = offset + it.rows
                    queue_ns = start - it.enqueued_ns
                    it.future.set_result(
                        BatchResult(
                            {n: a[offset:end] for n, a in outputs.items()},
                            queue_ns,
                            compute_ns,
                            batch_rows,
                            cost,
                        )
                    )
                    if observe is not None:
                        observe((queue_ns + compute_ns) * 1e-9, compute_ns * 1e-9)
                offset += it.rows
        finally:
            self._slots.release()
            if batch is not None:
                batch.end()

    def _trace_batch(self, items: list[Ticket]) -> Trace | None:
        """End the queue spans of a batch about to run and set the trace its backend call belongs
        to (this task's own context): a batch span when a request is sampled, else the first
        forwarded context. Returns the batch span to end."""
        traces = []
        for it in items:
            if it.waiting is not None:
                it.waiting.end()
                it.waiting = None
            if it.trace is not None:
                traces.append(it.trace)
        if not traces:
            return None
        sampled = [t for t in traces if t.recording]
        batch = self._batch_span(sampled, sum(it.rows for it in items), len(items)) if sampled else None
        CALL.set(batch or traces[0])
        return batch

    async def _call(self, inputs: Mapping[str, np.ndarray], deadline: float | None) -> dict[str, np.ndarray]:
        """The backend call; anything but a GatewayError becomes INTERNAL (and is logged), and so
        does an answer whose outputs do not hold one row per input row (it would be split wrong)."""
        try:
            outputs = await self._run(inputs, self._outputs, deadline)
        except GatewayError:
            raise
        except Exception as exc:
            log.exception("batcher %s: backend call failed", self._name)
            raise Internal(f"{self._name}: backend failed: {type(exc).__name__}") from None
        rows = len(next(iter(inputs.values()))) if inputs else 0
        for name, array in outputs.items():
            if array.ndim == 0 or len(array) != rows:
                found = "a scalar" if array.ndim == 0 else f"{len(array)} rows"
                raise Internal(
                    f"{self._name}: the backend returned {found} of output '{name}' for {rows} rows"
                )
        return outputs

    @staticmethod
    def _fail(items: list[Ticket], error: GatewayError) -> None:
        for it in items:
            if not it.future.done():
                it.future.set_exception(error)

    # -- lifecycle ----------------------------------------------------------------------------

    async def close(self) -> None:
        """Serve everything queued (without waiting for the queue delay), then stop."""
        self._closing = True
        self._wake.set()
        if self._scheduler is not None:
            await asyncio.gather(self._scheduler, return_exceptions=True)
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
