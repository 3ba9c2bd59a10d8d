from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from aibridge import telemetry


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    telemetry.configure(True, trace_logs=True, exporter=exporter)
    yield exporter
    telemetry.configure(False)


def test_disabled_tracing_is_a_no_op() -> None:
    telemetry.configure(False)
    assert isinstance(telemetry.tracer("aibridge-proxy"), trace.NoOpTracer)
    with telemetry.tracer("aibridge-proxy").start_as_current_span("Intercept"):
        assert telemetry.inject_headers() == []


def test_context_crosses_message_headers_and_services(spans: InMemorySpanExporter) -> None:
    with telemetry.tracer(telemetry.PROXY_SERVICE).start_as_current_span("Intercept") as parent:
        headers = telemetry.inject_headers()
        logging.getLogger("aibridge.test").warning("upstream answered 529")
    assert [name for name, _ in headers] == ["traceparent"]
    context = telemetry.extract_context(headers)
    with telemetry.tracer(telemetry.RECORDER_SERVICE).start_as_current_span("Recorder.Insert", context=context):
        pass
    proxy_span, recorder_span = spans.get_finished_spans()
    assert recorder_span.context.trace_id == parent.get_span_context().trace_id
    assert recorder_span.parent is not None and recorder_span.parent.span_id == parent.get_span_context().span_id
    assert proxy_span.resource.attributes["service.name"] == "aibridge-proxy"
    assert recorder_span.resource.attributes["service.name"] == "aibridge-recorder"
    assert [event.name for event in proxy_span.events] == ["upstream answered 529"]
    assert proxy_span.events[0].attributes["log.severity"] == "WARNING"


def test_incoming_traceparent_is_honoured(spans: InMemorySpanExporter) -> None:
    traceparent = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    context = telemetry.extract_from_http([(b"traceparent", traceparent), (b"host", b"x")])
    with telemetry.tracer(telemetry.API_SERVICE).start_as_current_span("GET", context=context):
        pass
    (span,) = spans.get_finished_spans()
    assert f"{span.context.trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"
