"""Trace context that crosses the gateway, and the spans it makes when tracing is on.

A request carries one `Trace` from the transport down: the tracer and the request's span (sampled
or not), or, with tracing off, only the caller's `traceparent` so that remote backends join the
caller's trace as before. Tracing off, the transport makes no `Trace` unless a remote backend wants
the header, and every stage below asks `trace is None` (one check) before doing anything else.

Span shape (README: Tracing): the server span of each inference call; under it the queue wait and
the batch execution (linked to every request it serves); under the batch the client span of a
call to Triton, whose context is what Triton receives; a shadow copy's span under the request it
copies. The SDK (exporter, processor, sampler) is built in gateway/telemetry/_export.py, in the
serving process only, and never touched by a request: spans end into a bounded queue.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

if TYPE_CHECKING:
    from ..settings import TracingSettings
    from .metrics import Metrics

__all__ = ["CALL", "SERVICE", "Trace", "Tracing", "start_tracing"]

SERVICE = "inference.GRPCInferenceService"

CALL: ContextVar[Trace | None] = ContextVar("modelgate_trace", default=None)
"""The trace a backend call made now belongs to: set by whoever calls a backend (the transport
for an unbatched request, the batcher for a batch, the mirror for a shadow copy); read by the
backends that call out (gateway/backends/triton.py)."""

_PROPAGATOR = TraceContextTextMapPropagator()


class Tracing:
    """One process's tracer and the means to stop it (flush what is queued).

    A call that starts a new trace is sampled here, by `ratio`, before any span exists: one
    that is not costs a look at its metadata and a random number. The SDK's sampler (built in
    _export.py) then takes every such root, and decides for calls that come with a parent."""

    def __init__(self, tracer: Tracer, ratio: float = 1.0, close: Any = None) -> None:
        self.tracer = tracer
        self._ratio = ratio
        self._close = close

    def server_span(self, method: str, metadata: Iterable[tuple[str, Any]] | None) -> Trace | None:
        """Start the span of one inference call, continuing the caller's `traceparent` and
        `tracestate` (gRPC metadata). None: a new trace that is not sampled (nothing to do)."""
        carrier = {
            k: v for k, v in metadata or () if k in ("traceparent", "tracestate") and isinstance(v, str)
        }
        parent = _PROPAGATOR.extract(carrier) if carrier else None
        if parent is None or not trace.get_current_span(parent).get_span_context().is_valid:
            if self._ratio < 1.0 and random.random() >= self._ratio:
                return None
            parent = None
        span = self.tracer.start_span(
            f"{SERVICE}/{method}",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"rpc.system": "grpc", "rpc.service": SERVICE, "rpc.method": method},
        )
        return Trace(self, span)

    def close(self, timeout_s: float) -> None:
        """Export what is queued (at most `timeout_s`), then stop. Blocking: call in a thread."""
        if self._close is not None:
            self._close(timeout_s)


class Trace:
    """What a request carries for tracing. `recording`: its span is sampled (children are made);
    a trace that does not record still forwards its context to remote backends."""

    __slots__ = ("recording", "span", "traceparent", "tracing")

    def __init__(self, tracing: Tracing | None, span: Span | None, traceparent: str | None = None) -> None:
        self.tracing = tracing
        self.span = span
        self.traceparent = traceparent  # tracing off: the caller's header, forwarded as it came
        self.recording = span is not None and span.is_recording()

    @classmethod
    def forwarding(cls, traceparent: str) -> Trace:
        """Tracing off: only the caller's `traceparent`, for remote backends."""
        return cls(None, None, traceparent)

    def child(
        self,
        name: str,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Mapping[str, Any] | None = None,
        links: Sequence[Trace] = (),
    ) -> Trace:
        """A span under this one (call only when `recording`), linked to `links`' spans."""
        assert self.tracing is not None and self.span is not None
        span = self.tracing.tracer.start_span(
            name,
            context=trace.set_span_in_context(self.span),
            kind=kind,
            attributes=attributes,
            links=[Link(t.span.get_span_context()) for t in links if t.span is not None],
        )
        return Trace(self.tracing, span)

    def headers(self) -> tuple[tuple[str, str], ...]:
        """gRPC metadata carrying this trace's context to a remote server."""
        if self.span is None:
            return (("traceparent", self.traceparent),) if self.traceparent else ()
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, trace.set_span_in_context(self.span))
        return tuple(carrier.items())

    def fail(self, code: str, error_type: str | None = None) -> None:
        """Mark the span failed: status ERROR described by the gRPC status name `code`, and
        `error.type` (the exception's type when it was unexpected, else `code`)."""
        if self.span is not None:
            self.span.set_attribute("error.type", error_type or code)
            self.span.set_status(Status(StatusCode.ERROR, code))

    def end(self) -> None:
        if self.span is not None:
            self.span.end()


def start_tracing(settings: TracingSettings, metrics: Metrics) -> Tracing | None:
    """This process's tracing, or None when it is off. Call in the serving process (after any
    fork): the exporter's thread and channel belong to it. Dropped spans count in `metrics`."""
    if not settings.enabled:
        return None
    from ._export import build_provider

    provider, processor = build_provider(settings)
    metrics.trace_spans_dropped = processor.dropped
    return Tracing(provider.get_tracer("modelgate"), settings.sampler_ratio, close=processor.close)
