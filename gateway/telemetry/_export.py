"""The OpenTelemetry SDK side of tracing: sampler, resource, exporter and a bounded batch queue
whose drops are counted.

The SDK's BatchSpanProcessor drops the oldest queued span silently when its queue is full. Here
a span is only handed to it while fewer than `max_queue_size` spans are waiting (ended, not yet
handed to the exporter), so its own queue never overflows and every span that does not fit is
counted; so is every span of an export that failed (collector down or too slow). Both counts are
exact. Not counted: spans still queued when the process stops and the flush runs out of time, and
spans that end after the stop (shadow copies cancelled by it).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased, Sampler, TraceIdRatioBased

from ..settings import TracingSettings

__all__ = ["CountingProcessor", "build_provider", "sampler_of"]

log = logging.getLogger("gateway.tracing")


def sampler_of(settings: TracingSettings) -> Sampler:
    """Roots: sampled (Tracing.server_span made the ratio's choice before starting them); a
    local parent (a request's span, for its queue, batch and client spans): its choice; a
    caller's parent: its choice when parent-based, else the ratio on the trace id."""
    if settings.parent_based:
        return ParentBased(ALWAYS_ON)
    ratio = settings.sampler_ratio
    by_id: Sampler = ALWAYS_ON if ratio >= 1 else ALWAYS_OFF if ratio <= 0 else TraceIdRatioBased(ratio)
    return ParentBased(ALWAYS_ON, remote_parent_sampled=by_id, remote_parent_not_sampled=by_id)


class _NoExport(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


class _CountingExporter(SpanExporter):
    """Counts the spans handed over for export and those whose export failed."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.handed = 0  # written by the export thread only
        self.failed = 0
        self._warned = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.handed += len(spans)
        try:
            result = self.inner.export(spans)
        except Exception:
            result = SpanExportResult.FAILURE
        if result is not SpanExportResult.SUCCESS:
            self.failed += len(spans)
            if not self._warned:
                self._warned = True
                log.warning("trace export failed; dropped spans count in modelgate_trace_spans_dropped_total")
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class CountingProcessor(SpanProcessor):
    """A BatchSpanProcessor behind a bound it can count (see the module's docstring)."""

    def __init__(self, exporter: SpanExporter, max_queue_size: int, export_timeout_s: float) -> None:
        self._exporter = _CountingExporter(exporter)
        self._max = max_queue_size
        self._batch = BatchSpanProcessor(
            self._exporter,
            max_queue_size=max_queue_size,
            max_export_batch_size=min(512, max_queue_size),
            export_timeout_millis=export_timeout_s * 1000,
        )
        self._ended = 0  # sampled spans that ended (the event loop's thread)
        self._overflow = 0

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        context = span.context
        if context is None or not context.trace_flags.sampled:
            return
        if self._ended - self._exporter.handed >= self._max:
            self._overflow += 1
            return
        self._ended += 1
        self._batch.on_end(span)

    def dropped(self) -> int:
        """Spans dropped so far: over the queue's bound, or in a failed export."""
        return self._overflow + self._exporter.failed

    def shutdown(self) -> None:
        self._batch.shutdown()  # type: ignore[no-untyped-call]

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._batch.force_flush(timeout_millis)

    def close(self, timeout_s: float) -> None:
        """Flush and stop within `timeout_s` (a collector that is down must not hold a stop up):
        the SDK's shutdown runs in a daemon thread that is left behind when time runs out."""
        stopper = threading.Thread(target=self._batch.shutdown, name="trace-shutdown", daemon=True)
        stopper.start()
        stopper.join(timeout_s)
        if stopper.is_alive():
            log.warning("traces not all exported within %.1fs of the stop", timeout_s)


def _exporter(settings: TracingSettings) -> SpanExporter:
    if settings.exporter == "console":
        return ConsoleSpanExporter()
    if settings.exporter == "none":
        return _NoExport()
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    kwargs: dict[str, Any] = {"timeout": settings.export_timeout_s}
    if settings.endpoint:
        kwargs["endpoint"] = settings.endpoint
    return OTLPSpanExporter(**kwargs)


def build_provider(settings: TracingSettings) -> tuple[TracerProvider, CountingProcessor]:
    resource = Resource.create({**settings.resource_attributes, "service.name": settings.service_name})
    provider = TracerProvider(sampler=sampler_of(settings), resource=resource, shutdown_on_exit=False)
    processor = CountingProcessor(_exporter(settings), settings.max_queue_size, settings.export_timeout_s)
    provider.add_span_processor(processor)
    return provider, processor
