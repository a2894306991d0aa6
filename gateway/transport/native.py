"""The native transport with a batch path: pygrpc-native's drop-in server, except that calls of
one method (ModelInfer, the call that carries the traffic) reach Python as the batches the front
receives them in, rather than as one asyncio task each.

The drop-in server turns every call into a `_Call`, a `_Context` and a task that awaits the
handler; for a small model that bookkeeping is a large part of the loop thread's work. Here the
events of one `recv_batch` for the batch method go to a handler in one step: it decodes, routes
and queues every call, and answers each from a callback when its batch has run
(`DataPlane.begin`). Everything else (metadata RPCs, health, repository RPCs, ModelStreamInfer
through the grpcio fallback) stays on the drop-in's per-call path.

This hooks the drop-in's event dispatch (`Server._on_events`, its method table, its calls and its
stopping flag); pyproject pins pygrpc-native to 0.5.x for that reason, and every ModelInfer test
on the native transport runs through it. A batch call is registered among the drop-in's calls as
its `Handle` (gateway/dataplane.py), so a client's cancellation (EVENT_CANCEL) and the drain of
`stop(grace)` treat it as they treat any call: cancel takes its rows out of the batcher's queue,
and stop waits for it within the grace period, then cuts it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import grpc
import pygrpc_native.aio
from pygrpc_native import EVENT_CANCEL

from ..dataplane import Handle

__all__ = ["BatchServer", "Events", "NativeServer"]

Events = Sequence[tuple[Any, ...]]
"""pygrpc-native's detailed events: (kind, call_id, method_id, payload, client_key, details),
details = (metadata, peer, time_remaining)."""

BatchHandler = Callable[["BatchServer", Events], None]

_RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]


_FLUSH_S = 1.0  # at most this long, at stop, for answers already given to reach their clients


class NativeServer(pygrpc_native.aio.Server):
    """The drop-in server, with a stop that lets the answers already given reach their clients.

    `respond` hands an answer to the front, which writes it on its own threads; the drop-in's
    stop closes the front as soon as the last call is answered, and closing drops the answers
    not yet written (20 fronts closed right after answering 8 calls each lost 112 of the 160
    answers; test_sigterm_drains_the_batch_queue_and_exits_zero lost some in half its runs). So the
    front counts the calls it finished (its `metrics`), and the close waits, up to _FLUSH_S,
    until every call it started is finished."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._front_args["metrics"] = True

    async def stop(self, grace: float | None) -> None:
        front = self._front
        if front is not None and not self._stopping:
            self._front = _Flushing(front)  # type: ignore[assignment]
        await super().stop(grace)


class _Flushing:
    """The front, for the drain: its methods as they are, and a `close` that flushes first."""

    def __init__(self, front: Any) -> None:
        self._front = front

    def __getattr__(self, name: str) -> Any:  # the drain's few calls: respond, fail, stream_*
        return getattr(self._front, name)

    def flushed(self) -> bool:
        methods = self._front.metrics()["methods"].values()
        return all(sum(s["count"] for s in m["status"].values()) >= m["started"] for m in methods)

    def close(self) -> None:  # on an executor thread
        deadline = time.monotonic() + _FLUSH_S
        while not self.flushed() and time.monotonic() < deadline:
            time.sleep(0.002)
        self._front.close()


class BatchServer(NativeServer):
    """The drop-in `pygrpc_native.aio.Server`, with `method`'s calls handed to `handle` in batches.
    `handle(server, events)` must answer each call once, with `respond` or `fail`, and `track`
    the calls it answers later."""

    def __init__(self, method: str, handle: BatchHandler, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._batch_method = method
        self._batch_handle = handle
        self._batch_id = -1

    async def start(self) -> None:
        await super().start()
        for method_id, (path, _handler) in enumerate(self._table):
            if path == self._batch_method:
                self._batch_id = method_id

    def _on_events(self, events: list[tuple[Any, ...]]) -> None:
        batch_id = self._batch_id
        if self._stopping or batch_id < 0:  # the drop-in refuses new calls while stopping
            super()._on_events(events)
            return
        mine = [e for e in events if e[2] == batch_id and e[0] != EVENT_CANCEL]
        if not mine:
            super()._on_events(events)
            return
        limit = self._receive_limit
        if limit is not None and any(len(e[3]) > limit for e in mine):
            mine = [e for e in mine if self._receivable(e, limit)]
        self._batch_handle(self, mine)  # before any cancel of these calls in the same events
        if len(mine) < len(events):
            super()._on_events([e for e in events if e[2] != batch_id or e[0] == EVENT_CANCEL])

    def _receivable(self, event: tuple[Any, ...], limit: int) -> bool:
        size = len(event[3])
        if size <= limit:
            return True
        message = f"SERVER: Received message larger than max ({size} vs. {limit})"  # as the drop-in says
        self.fail(event[1], _RESOURCE_EXHAUSTED, message)
        return False

    # -- for the handler ---------------------------------------------------------------------

    def track(self, call_id: int, handle: Handle) -> None:
        """A call answered later: cancelled with it on EVENT_CANCEL, waited for by `stop`."""
        self._calls[call_id] = handle  # type: ignore[assignment]

    def respond(self, call_id: int, data: bytes) -> None:
        self._calls.pop(call_id, None)
        limit = self._send_limit
        if limit is not None and len(data) > limit:
            self.fail(call_id, _RESOURCE_EXHAUSTED, f"response of {len(data)} bytes over the limit ({limit})")
            return
        self._front.respond(call_id, data)  # type: ignore[union-attr]

    def fail(self, call_id: int, code: int, message: str) -> None:
        self._calls.pop(call_id, None)
        self._front.fail(call_id, code, message)  # type: ignore[union-attr]

    def forget(self, call_id: int) -> None:
        """A tracked call that ends unanswered (cancelled: its client left, or a stop cut it)."""
        self._calls.pop(call_id, None)
