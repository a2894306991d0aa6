"""Shadow traffic: sampled copies of requests to other versions, compared with the primary's
answer and discarded, off the caller's path.

A copy leaves once the primary request is admitted (decoded and routed) and goes through the
shadow version's own batcher at its lowest priority. The primary's answer never waits for it: the
copy is a task of its own, and the primary only hands over its outputs (or "none", when it
failed) through a future. Copies in flight are capped per model; over the cap they are dropped
and counted, so a slow, failing or overloaded shadow costs the primary a counter increment.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .errors import GatewayError
from .registry import Model, ModelVersion
from .routing import TrafficPolicy, compare
from .telemetry import Metrics
from .telemetry._routing import ShadowStats
from .telemetry.cost import COST, CallCost
from .telemetry.tracing import CALL, Trace

__all__ = ["Mirror", "disagreements"]

log = logging.getLogger(__name__)

LOWEST = 1 << 30  # a priority past every level: the batcher's last one
Outputs = Mapping[str, np.ndarray]


class Mirror:
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        metrics.describe_recent = disagreements  # snapshots carry them to the admin API
        self._inflight: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self._warned: set[tuple[str, str, str]] = set()

    def send(
        self,
        model: Model,
        primary: ModelVersion,
        inputs: Mapping[str, np.ndarray],
        rows: int,
        names: Sequence[str],
        trace: Trace | None = None,
    ) -> asyncio.Future[Outputs | None] | None:
        """Start the sampled copies of one request. Returns the future the primary must resolve
        with its outputs (None if it failed), or None when no copy was sent. A sampled `trace`
        (the primary's) gets a `shadow` span per copy, under and linked to the primary's span."""
        router = model.router
        policy = router.policy
        answer: asyncio.Future[Outputs | None] | None = None
        for version, share, target in router.shadows:
            if target is primary or (share < 1.0 and random.random() >= share):
                continue
            stats = self._metrics.for_shadow(model.name, primary.version, version)
            if target.signature.inputs != primary.signature.inputs:
                stats.failed("INVALID_ARGUMENT")  # it cannot take the primary's inputs
                self._warn(model.name, version, "takes other inputs than the primary version")
                continue
            inflight = self._inflight.get(model.name, 0)
            if self._closing or inflight >= policy.shadow_max_inflight:
                stats.outcomes["dropped"] += 1
                continue
            loop = asyncio.get_running_loop()
            if answer is None:
                answer = loop.create_future()
            self._inflight[model.name] = inflight + 1
            copy = trace  # not sampled: the context to forward, if any
            if trace is not None and trace.recording:
                copy = trace.child(
                    "shadow",
                    attributes={"modelgate.model": model.name, "modelgate.version": version},
                    links=(trace,),
                )
            task = loop.create_task(
                self._copy(model.name, target, stats, policy, inputs, rows, names, answer, copy)
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return answer

    async def _copy(
        self,
        model: str,
        target: ModelVersion,
        stats: ShadowStats,
        policy: TrafficPolicy,
        inputs: Mapping[str, np.ndarray],
        rows: int,
        names: Sequence[str],
        answer: asyncio.Future[Outputs | None],
        trace: Trace | None,
    ) -> None:
        start = time.perf_counter_ns()
        if trace is not None:
            CALL.set(trace)  # this task's own context: an unbatched backend call is the copy's
        try:
            if target.batcher is not None:
                outputs: Outputs = (await target.batcher.submit(inputs, rows, None, LOWEST, trace)).outputs
            else:  # the copy's backend call counts as the shadow version's, cost included
                cost = CallCost()
                COST.set(cost)  # this task's own context, as CALL above
                outputs = await target.run(inputs, names, None)
                target.metrics.executed(rows, time.perf_counter_ns() - start, cost)
        except GatewayError as exc:
            stats.failed(exc.code)
            if trace is not None:
                trace.fail(exc.code)
            return
        except Exception as exc:
            self._warn(model, target.version, f"failed unexpectedly: {exc!r}")
            stats.failed("INTERNAL")
            if trace is not None:
                trace.fail("INTERNAL", type(exc).__qualname__)
            return
        finally:
            self._inflight[model] -= 1
            if trace is not None:
                trace.end()
        stats.latency.observe((time.perf_counter_ns() - start) * 1e-9)
        expected = await answer
        if expected is None:
            stats.outcomes["unpaired"] += 1
            return
        result = compare(expected, outputs, names, policy.atol, policy.rtol)
        stats.compared(result.agree, result.max_abs_diff, result.argmax_rows, result.argmax_agree)
        if not result.agree:  # kept as they are (bounded); described only when someone reads them
            stats.recent.append((time.time(), inputs, expected, outputs, result))

    def _warn(self, model: str, version: str, what: str) -> None:
        """One log line per shadow and kind of problem; the counters say how often."""
        if (model, version, what) not in self._warned:
            self._warned.add((model, version, what))
            log.warning(
                "shadow version %s of model '%s' %s (counted in modelgate_shadow_failures)",
                version,
                model,
                what,
            )

    def close(self) -> None:
        """Send no more copies; cancel those in flight (nobody waits for their answers)."""
        self._closing = True
        for task in self._tasks:
            task.cancel()

    async def settle(self) -> None:
        """Wait for the copies in flight now (all of them, after close())."""
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _summary(array: np.ndarray | None) -> dict[str, Any]:
    if array is None:
        return {"missing": True}
    out: dict[str, Any] = {"shape": list(array.shape), "dtype": str(array.dtype)}
    if array.size and array.dtype.kind in "fiu":
        values = array.astype(np.float64, copy=False)
        out.update(min=float(np.nanmin(values)), max=float(np.nanmax(values)), mean=float(np.nanmean(values)))
        if array.ndim == 2 and array.shape[1] > 1:
            out["argmax"] = np.argmax(array, axis=1)[:8].tolist()
    return out


def disagreements(stats: ShadowStats) -> list[dict[str, Any]]:
    """The last disagreements of a shadow with its primary, newest last: when, which input (a
    digest of its tensors), the largest difference and a summary of both answers per output
    that disagreed."""
    out = []
    for at, inputs, primary, shadow, result in list(stats.recent):
        digest = hashlib.blake2b(digest_size=8)
        for name in sorted(inputs):
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(inputs[name]).tobytes())
        out.append(
            {
                "at": at,
                "input_digest": digest.hexdigest(),
                "max_abs_diff": result.max_abs_diff,
                "outputs": {
                    n: {"primary": _summary(primary.get(n)), "shadow": _summary(shadow.get(n))}
                    for n in result.outputs
                },
            }
        )
    return out
