"""Tracing settings from YAML and OpenTelemetry's standard variables, and the export queue's
drop count (gateway/telemetry/_export.py) against a real BatchSpanProcessor."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from gateway.settings import SettingsError, TracingSettings, load_settings
from gateway.telemetry import Metrics
from gateway.telemetry._export import CountingProcessor, sampler_of
from gateway.telemetry.tracing import Trace, start_tracing


def tracing(tmp_path: Path, yaml_text: str = "", **environ: str) -> TracingSettings:
    config = None
    if yaml_text:
        config = tmp_path / "gateway.yaml"
        config.write_text(yaml_text)
    return load_settings(config, {"model_repository": tmp_path}, environ=environ).telemetry.tracing


def test_off_by_default(tmp_path: Path) -> None:
    s = tracing(tmp_path)
    assert not s.enabled
    assert (s.exporter, s.endpoint, s.sampler_ratio, s.parent_based) == ("otlp", None, 1.0, True)
    assert (s.service_name, s.max_queue_size) == ("modelgate", 2048)
    assert start_tracing(s, Metrics()) is None


def test_yaml_section(tmp_path: Path) -> None:
    s = tracing(
        tmp_path,
        "telemetry: {tracing: {enabled: true, exporter: console, sampler_ratio: 0.25, "
        "service_name: gw, resource_attributes: {team: ml}, max_queue_size: 10}}\n",
    )
    assert s.enabled and s.exporter == "console" and s.sampler_ratio == 0.25
    assert (s.service_name, s.resource_attributes, s.max_queue_size) == ("gw", {"team": "ml"}, 10)


@pytest.mark.parametrize(
    ("environ", "enabled"),
    [
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4317"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_SERVICE_NAME": "gw"}, False),  # a name alone does not turn it on
    ],
)
def test_env_turns_it_on_or_off(tmp_path: Path, environ: dict[str, str], enabled: bool) -> None:
    assert tracing(tmp_path, **environ).enabled is enabled


def test_env_over_yaml(tmp_path: Path) -> None:
    s = tracing(
        tmp_path,
        "telemetry: {tracing: {enabled: true, endpoint: http://yaml:4317, service_name: a, "
        "resource_attributes: {team: ml, region: eu}}}\n",
        OTEL_EXPORTER_OTLP_ENDPOINT="http://general:4317",
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT="http://traces:4317",
        OTEL_SERVICE_NAME="b",
        OTEL_RESOURCE_ATTRIBUTES="region=us,deployment.environment=prod%20east",
    )
    assert s.endpoint == "http://traces:4317"  # the traces-specific one wins
    assert s.service_name == "b"
    assert s.resource_attributes == {"team": "ml", "region": "us", "deployment.environment": "prod east"}


def test_yaml_can_turn_off_what_no_variable_asks_for(tmp_path: Path) -> None:
    s = tracing(tmp_path, "telemetry: {tracing: {enabled: false}}\n", OTEL_SERVICE_NAME="b")
    assert not s.enabled and s.service_name == "b"


@pytest.mark.parametrize(
    ("sampler", "arg", "parent_based", "ratio"),
    [
        ("parentbased_traceidratio", "0.01", True, 0.01),
        ("traceidratio", "0.5", False, 0.5),
        ("parentbased_traceidratio", None, True, 1.0),
        ("always_on", "0.3", False, 1.0),
        ("always_off", None, False, 0.0),
        ("parentbased_always_off", None, True, 0.0),
        ("PARENTBASED_ALWAYS_ON", None, True, 1.0),
    ],
)
def test_sampler_variables(
    tmp_path: Path, sampler: str, arg: str | None, parent_based: bool, ratio: float
) -> None:
    environ = {"OTEL_TRACES_SAMPLER": sampler, **({"OTEL_TRACES_SAMPLER_ARG": arg} if arg else {})}
    s = tracing(tmp_path, **environ)
    assert (s.parent_based, s.sampler_ratio) == (parent_based, ratio)
    assert sampler_of(s) is not None


@pytest.mark.parametrize(
    ("environ", "fragment"),
    [
        ({"OTEL_TRACES_SAMPLER": "jaeger_remote"}, "OTEL_TRACES_SAMPLER=jaeger_remote"),
        ({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"}, "sampler_ratio"),
        ({"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "x"}, "sampler_ratio"),
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "exporter"),
    ],
)
def test_bad_variables_are_named(tmp_path: Path, environ: dict[str, str], fragment: str) -> None:
    with pytest.raises(SettingsError, match=fragment):
        tracing(tmp_path, **environ)


class _Held(SpanExporter):
    """An exporter that holds each export until released, then succeeds (or fails)."""

    def __init__(self, ok: bool = True) -> None:
        self.release = threading.Event()
        self.exported = 0
        self.ok = ok

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.release.wait(10)
        self.exported += len(spans)
        return SpanExportResult.SUCCESS if self.ok else SpanExportResult.FAILURE


def _end_spans(processor: CountingProcessor, count: int) -> None:
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("test")
    for _ in range(count):
        tracer.start_span("s").end()


@pytest.mark.parametrize("ok", [True, False])
def test_every_span_is_exported_or_counted_dropped(ok: bool) -> None:
    exporter = _Held(ok)
    processor = CountingProcessor(exporter, max_queue_size=8, export_timeout_s=1)
    _end_spans(processor, 100)  # the exporter holds the first batch: the queue fills up
    assert processor.dropped() >= 100 - 2 * 8
    exporter.release.set()
    processor.close(5)
    if ok:
        assert exporter.exported + processor.dropped() == 100
    else:
        assert processor.dropped() == 100


def test_close_does_not_wait_for_a_stuck_exporter() -> None:
    exporter = _Held()
    processor = CountingProcessor(exporter, max_queue_size=8, export_timeout_s=1)
    _end_spans(processor, 20)
    start = time.monotonic()
    processor.close(0.2)
    assert time.monotonic() - start < 2
    exporter.release.set()


def test_a_trace_that_forwards_only() -> None:
    trace = Trace.forwarding("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    assert not trace.recording
    assert trace.headers() == (("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),)
    trace.fail("INTERNAL")  # nothing to mark
    trace.end()


def test_started_tracing_counts_into_metrics(tmp_path: Path) -> None:
    s = tracing(tmp_path, "telemetry: {tracing: {enabled: true, exporter: none}}\n")
    metrics = Metrics()
    started = start_tracing(s, metrics)
    assert started is not None
    trace = started.server_span("ModelInfer", [("traceparent", "00-" + "1" * 32 + "-" + "2" * 16 + "-01")])
    assert trace.recording
    assert trace.span is not None and trace.span.get_span_context().trace_id == int("1" * 32, 16)
    child = trace.child("queue")
    (name, value), *_ = child.headers()
    assert name == "traceparent" and value.startswith("00-" + "1" * 32)
    child.end()
    trace.end()
    started.close(5)
    assert metrics.snapshot()["trace_spans_dropped"] == 0


SAMPLED = [("traceparent", "00-" + "1" * 32 + "-" + "2" * 16 + "-01")]
UNSAMPLED = [("traceparent", "00-" + "1" * 32 + "-" + "2" * 16 + "-00")]


@pytest.mark.parametrize(
    ("yaml_ratio", "parent_based", "metadata", "expect"),
    [
        (0.0, True, [], None),  # a new trace, not sampled: no span at all
        (0.0, True, [("traceparent", "garbage")], None),  # an invalid parent starts a new trace
        (1.0, True, [], True),
        (0.0, True, SAMPLED, True),  # parent-based: the caller decides
        (1.0, True, UNSAMPLED, False),  # a span that does not record, to forward the context
        (0.0, False, SAMPLED, False),  # not parent-based: the ratio decides
        (1.0, False, UNSAMPLED, True),
    ],
)
def test_sampling(
    tmp_path: Path,
    yaml_ratio: float,
    parent_based: bool,
    metadata: list[tuple[str, str]],
    expect: bool | None,
) -> None:
    s = tracing(
        tmp_path,
        f"telemetry: {{tracing: {{enabled: true, exporter: none, sampler_ratio: {yaml_ratio}, "
        f"parent_based: {str(parent_based).lower()}}}}}\n",
    )
    started = start_tracing(s, Metrics())
    assert started is not None
    trace = started.server_span("ModelInfer", metadata)
    if expect is None:
        assert trace is None
    else:
        assert trace is not None and trace.recording is expect
        if trace.recording:  # children follow their request
            child = trace.child("queue")
            assert child.recording
            child.end()
        trace.end()
    started.close(5)
