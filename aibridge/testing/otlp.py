"""A real OTLP trace receiver for tests: gRPC and HTTP/protobuf on loopback, in this process.

It decodes what an OpenTelemetry exporter sends (``ExportTraceServiceRequest``) into
:class:`ReceivedSpan` values, so a test can point the standard ``OTEL_EXPORTER_OTLP_*`` settings at it
and assert on the spans a collector would see: service names, trace and parent ids, attributes.

    with OtlpReceiver() as receiver:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.grpc_endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}
        ...
        spans = receiver.wait_for(2)
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

ExportRequest = trace_service_pb2.ExportTraceServiceRequest
ExportResponse = trace_service_pb2.ExportTraceServiceResponse


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any] = field(default_factory=dict)
    events: tuple[str, ...] = ()
    protocol: str = ""


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    return getattr(value, kind) if kind else None


def _attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs if isinstance(pair, KeyValue)}


def decode(request: Any, protocol: str) -> list[ReceivedSpan]:
    """The spans of one ``ExportTraceServiceRequest``."""
    spans = []
    for resource_spans in request.resource_spans:
        service = str(_attributes(resource_spans.resource.attributes).get("service.name", ""))
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    ReceivedSpan(
                        service=service,
                        name=span.name,
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        attributes=_attributes(span.attributes),
                        events=tuple(event.name for event in span.events),
                        protocol=protocol,
                    )
                )
    return spans


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
    def __init__(self, record: Callable[[list[ReceivedSpan]], None]) -> None:
        self._record = record

    def Export(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._record(decode(request, "grpc"))
        return ExportResponse()


def _http_handler(record: Callable[[list[ReceivedSpan]], None]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            if self.headers.get("content-encoding") == "gzip":
                body = gzip.decompress(body)
            if self.path != "/v1/traces":
                self.send_error(404)
                return
            record(decode(ExportRequest.FromString(body), "http/protobuf"))
            answer = ExportResponse().SerializeToString()
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


class OtlpReceiver:
    """Receives OTLP traces over gRPC (:attr:`grpc_endpoint`) and HTTP/protobuf (:attr:`http_endpoint`)."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self._changed = threading.Condition()
        self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(self._record), self._grpc)  # type: ignore[no-untyped-call]
        grpc_port = self._grpc.add_insecure_port("127.0.0.1:0")
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), _http_handler(self._record))
        self.grpc_endpoint = f"http://127.0.0.1:{grpc_port}"
        self.http_endpoint = f"http://127.0.0.1:{self._http.server_port}"
        self._http_thread = threading.Thread(target=self._http.serve_forever, name="otlp-http", daemon=True)

    def start(self) -> OtlpReceiver:
        self._grpc.start()
        self._http_thread.start()
        return self

    def stop(self) -> None:
        self._grpc.stop(grace=1).wait(5)
        self._http.shutdown()
        self._http.server_close()

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()

    def _record(self, spans: list[ReceivedSpan]) -> None:
        with self._changed:
            self.spans.extend(spans)
            self._changed.notify_all()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[ReceivedSpan]:
        """At least ``count`` spans received so far (raises ``TimeoutError`` after ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self.spans) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"received {len(self.spans)} of {count} spans in {timeout}s")
                self._changed.wait(left)
            return list(self.spans)
