"""Spans leave through aibridge.telemetry's own OTLP exporters (no override), configured only by the
standard ``OTEL_EXPORTER_OTLP_*`` variables, and reach a real OTLP receiver with the right service names,
one trace across the Kafka-header hop, and their attributes and log events."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from aibridge import telemetry
from aibridge.testing.otlp import OtlpReceiver


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running
    telemetry.configure(False)


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_spans_reach_a_real_otlp_receiver(
    receiver: OtlpReceiver, protocol: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint = receiver.grpc_endpoint if protocol == "grpc" else receiver.http_endpoint
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    telemetry.configure(True, trace_logs=True)

    proxy = telemetry.tracer(telemetry.PROXY_SERVICE)
    with proxy.start_as_current_span("Intercept", attributes={"aibridge.provider": "anthropic"}) as intercept:
        logging.getLogger("aibridge.test").warning("upstream is slow")
        headers = telemetry.inject_headers()
    recorder = telemetry.tracer(telemetry.RECORDER_SERVICE)
    with recorder.start_as_current_span("Recorder.Insert", context=telemetry.extract_context(headers)):
        pass
    telemetry.shutdown()  # flushes the batch processors

    spans = {span.name: span for span in receiver.wait_for(2)}
    assert set(spans) == {"Intercept", "Recorder.Insert"}
    sent, stored = spans["Intercept"], spans["Recorder.Insert"]
    assert (sent.service, stored.service) == ("aibridge-proxy", "aibridge-recorder")
    assert {sent.protocol, stored.protocol} == {protocol}
    assert sent.trace_id == stored.trace_id == f"{intercept.get_span_context().trace_id:032x}"
    assert stored.parent_span_id == sent.span_id and sent.parent_span_id == ""
    assert sent.attributes == {"aibridge.provider": "anthropic"}
    assert sent.events == ("upstream is slow",)
