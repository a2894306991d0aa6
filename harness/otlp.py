"""A real OTLP/gRPC trace receiver for tests: `TraceService/Export` on a loopback port, every span
it receives kept as a plain record.

    with OtlpReceiver() as otlp:          # serving on otlp.endpoint (http://127.0.0.1:PORT)
        ...                               # point the gateway at it (OTEL_EXPORTER_OTLP_ENDPOINT)
        spans = otlp.wait_for(lambda spans: len(spans) >= 3)

It runs grpcio's threaded server in the test's own process; `stop()` takes it down (a collector
that goes away mid-load), and `OtlpReceiver(port=...)` brings one back on the same port.
`OtlpReceiver(delay_s=3)` is a slow collector: it keeps each export's spans when they arrive and
answers `delay_s` later. It also takes OTLP/HTTP (protobuf or JSON, POST /v1/traces on
`http_endpoint`), which is how Triton exports its own spans.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

__all__ = ["OtlpReceiver", "Span"]

KINDS = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}


@dataclass
class Span:
    trace_id: str  # hex, as in a traceparent
    span_id: str
    parent_id: str  # "" for a root span
    name: str
    kind: str
    attributes: dict[str, Any]
    links: list[tuple[str, str]]  # (trace id, span id)
    status: int  # 0 unset, 1 ok, 2 error
    resource: dict[str, Any] = field(default_factory=dict)


def _value(v: AnyValue) -> Any:
    which = v.WhichOneof("value")
    return None if which is None else getattr(v, which)


def _attributes(kvs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in kvs}


def _records(request: Any) -> list[Span]:
    """The spans of an ExportTraceServiceRequest."""
    received = []
    for rs in request.resource_spans:
        resource = _attributes(rs.resource.attributes)
        for ss in rs.scope_spans:
            for s in ss.spans:
                received.append(
                    Span(
                        trace_id=s.trace_id.hex(),
                        span_id=s.span_id.hex(),
                        parent_id=s.parent_span_id.hex(),
                        name=s.name,
                        kind=KINDS.get(s.kind, str(s.kind)),
                        attributes=_attributes(s.attributes),
                        links=[(link.trace_id.hex(), link.span_id.hex()) for link in s.links],
                        status=s.status.code,
                        resource=resource,
                    )
                )
    return received


def _json_value(v: dict[str, Any]) -> Any:
    for key, value in v.items():
        return int(value) if key == "intValue" else value
    return None


def _records_json(doc: dict[str, Any]) -> list[Span]:
    """The spans of an ExportTraceServiceRequest in OTLP/JSON (ids are hex, kinds numbers)."""

    def attributes(kvs: list[dict[str, Any]]) -> dict[str, Any]:
        return {kv["key"]: _json_value(kv.get("value", {})) for kv in kvs}

    received = []
    for rs in doc.get("resourceSpans", ()):
        resource = attributes(rs.get("resource", {}).get("attributes", []))
        for ss in rs.get("scopeSpans", ()):
            for s in ss.get("spans", ()):
                received.append(
                    Span(
                        trace_id=s.get("traceId", ""),
                        span_id=s.get("spanId", ""),
                        parent_id=s.get("parentSpanId", ""),
                        name=s.get("name", ""),
                        kind=KINDS.get(int(s.get("kind", 0)), str(s.get("kind"))),
                        attributes=attributes(s.get("attributes", [])),
                        links=[(link["traceId"], link["spanId"]) for link in s.get("links", [])],
                        status=int(s.get("status", {}).get("code", 0)),
                        resource=resource,
                    )
                )
    return received


class _Service(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self._receiver = receiver

    def Export(self, request: Any, context: Any) -> Any:
        self._receiver._add(_records(request))
        self._receiver._hold()
        return trace_service_pb2.ExportTraceServiceResponse()


def _http_handler(receiver: OtlpReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            kind = self.headers.get("Content-Type", "")
            if kind.startswith("application/json"):
                receiver._add(_records_json(json.loads(body)))
                answer = b"{}"
            else:
                request = trace_service_pb2.ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver._add(_records(request))
                answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            receiver._hold()
            self.send_response(200)
            self.send_header("Content-Type", kind or "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


class OtlpReceiver:
    """`port`: 0 for any free one. `delay_s`: how long each export (gRPC or HTTP) waits, its
    spans already kept, before it is answered; a stop ends the wait."""

    def __init__(self, port: int = 0, delay_s: float = 0.0) -> None:
        self._spans: list[Span] = []
        self._lock = threading.Lock()
        self.exports = 0
        self.delay_s = delay_s
        self._stopping = threading.Event()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        add = trace_service_pb2_grpc.add_TraceServiceServicer_to_server  # generated, untyped
        add(_Service(self), self._server)  # type: ignore[no-untyped-call]
        self.port = self._server.add_insecure_port(f"127.0.0.1:{port}")
        self._server.start()
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _http_handler(self))
        self._http_thread = threading.Thread(target=self._http.serve_forever, daemon=True)
        self._http_thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def http_endpoint(self) -> str:
        """OTLP/HTTP (protobuf) traces URL."""
        return f"http://127.0.0.1:{self._http.server_address[1]}/v1/traces"

    def _add(self, spans: list[Span]) -> None:
        with self._lock:
            self._spans.extend(spans)
            self.exports += 1

    def _hold(self) -> None:
        if self.delay_s > 0:
            self._stopping.wait(self.delay_s)

    def spans(self) -> list[Span]:
        with self._lock:
            return list(self._spans)

    def clear(self) -> None:
        with self._lock:
            self._spans.clear()

    def wait_for(self, done: Callable[[list[Span]], bool], timeout: float = 20.0) -> list[Span]:
        """Poll the spans received until `done(spans)`; AssertionError at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            spans = self.spans()
            if done(spans):
                return spans
            if time.monotonic() > deadline:
                names = sorted({s.name for s in spans})
                raise AssertionError(f"spans not received in {timeout}s: {len(spans)} so far ({names})")
            time.sleep(0.05)

    def stop(self) -> None:
        self._stopping.set()
        self._server.stop(0).wait()
        if self._http_thread.is_alive():
            self._http.shutdown()
            self._http.server_close()

    def __enter__(self) -> OtlpReceiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
