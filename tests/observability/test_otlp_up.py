"""``aibridge up --trace --trace-logs`` as a subprocess exports to a real OTLP receiver (only the standard
``OTEL_EXPORTER_OTLP_*`` settings): one trace from the client's traceparent through the proxy, the
in-process bus and the recorder, the API's server span continuing its caller, and log records as span
events."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from test_promtool import wait_until_ready

from aibridge.auth import issue_token, load_private_key
from aibridge.testing.broker import free_port
from aibridge.testing.otlp import OtlpReceiver, ReceivedSpan

TRACE_ID = "5bf92f3577b34da6a3ce929d0e0e4737"
CLIENT_SPAN = "10f067aa0ba902b7"
API_TRACE_ID = "6bf92f3577b34da6a3ce929d0e0e4738"


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


def _up(data_dir: Path, port: int, receiver: OtlpReceiver) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIBRIDGE_", "OTEL_"))}
    env |= {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.http_endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}
    command = [sys.executable, "-m", "aibridge.cli", "up", "--listen", f"127.0.0.1:{port}"]
    command += ["--data-dir", str(data_dir), "--trace", "--trace-logs"]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)


def test_aibridge_up_exports_one_trace_per_request(receiver: OtlpReceiver, tmp_path: Path) -> None:
    port = free_port()
    process = _up(tmp_path / "data", port, receiver)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, process)
        token = issue_token(load_private_key(tmp_path / "data" / "keys" / "signing_key.pem"), "alice")
        headers = {"authorization": f"Bearer {token}", "traceparent": f"00-{TRACE_ID}-{CLIENT_SPAN}-01"}
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
        assert httpx.post(f"{url}/api/v2/aibridge/openai/v1/chat/completions", json=body, headers=headers).is_success
        headers["traceparent"] = f"00-{API_TRACE_ID}-{CLIENT_SPAN}-01"
        assert httpx.get(f"{url}/api/v2/aibridge/models", headers=headers, timeout=30).is_success
    finally:
        process.send_signal(signal.SIGINT)  # the recorder stores what is queued; the spans are flushed
        assert process.wait(60) == 0

    spans = receiver.wait_for(1)
    services = {span.service for span in spans if span.trace_id == TRACE_ID}
    assert services == {"aibridge-proxy", "aibridge-recorder"}
    by_name = _by_name(spans, TRACE_ID)
    intercept = by_name["Intercept"][0]
    assert intercept.parent_span_id == CLIENT_SPAN and intercept.protocol == "http/protobuf"
    assert intercept.attributes["aibridge.username"] == "alice"
    assert any(event.startswith("alice (") for event in intercept.events)  # the interception's log line
    assert len(by_name["Recorder.Consume"]) == 4  # started, prompt, token usage, ended
    assert by_name["Recorder.Insert"]
    api = [span for span in spans if span.trace_id == API_TRACE_ID]
    assert {span.service for span in api} == {"aibridge-api"}
    server = next(span for span in api if span.parent_span_id == CLIENT_SPAN)
    assert server.name == "GET /api/v2/aibridge/models"


def _by_name(spans: list[ReceivedSpan], trace_id: str) -> dict[str, list[ReceivedSpan]]:
    found: dict[str, list[ReceivedSpan]] = {}
    for span in spans:
        if span.trace_id == trace_id:
            found.setdefault(span.name, []).append(span)
    return found
