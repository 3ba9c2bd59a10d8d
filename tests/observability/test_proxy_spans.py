"""The proxy's spans: the exact tree of a streamed answer with two tool calls, every event's Kafka headers
carrying its Record… span, a client's traceparent continued, Passthrough, trace logs, and no tracing
work at all while tracing is off."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import orjson
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from telemetry_support import OPENAI_CHAT, OPENAI_MODELS, named, one, parent_of, running_proxy, wait_until

from aibridge import telemetry
from aibridge.auth import TokenVerifier
from aibridge.bus import InProcessBus, Message
from aibridge.settings import DEFAULT_TOPIC
from aibridge.testing.server import serve_in_thread

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
RECORD = {
    "interception.started": "Intercept.RecordInterception",
    "prompt": "Intercept.RecordPromptUsage",
    "token_usage": "Intercept.RecordTokenUsage",
    "tool_usage": "Intercept.RecordToolUsage",
    "interception.ended": "Intercept.RecordInterceptionEnded",
}


def _chunk(delta: dict[str, object], finish: str | None = None) -> dict[str, object]:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return {
        "id": "chatcmpl-two",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o",
        "choices": [choice],
    }


def _call(index: int, call_id: str, name: str, arguments: str) -> dict[str, object]:
    function = {"name": name, "arguments": arguments}
    return {"tool_calls": [{"index": index, "id": call_id, "type": "function", "function": function}]}


# A provider answering with two parallel tool calls, streamed, and its usage last (a fake upstream).
TWO_TOOL_CALLS = [
    _chunk({"role": "assistant", "content": None} | _call(0, "call_read", "read_file", '{"path":')),
    _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"a.py"}'}}]}),
    _chunk(_call(1, "call_test", "run_tests", "{}")),
    _chunk({}, "tool_calls"),
    {"id": "chatcmpl-two", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o", "choices": []}
    | {"usage": {"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150}},
]


# The W3C trace context each request reached the fake upstream with, newest last.
UPSTREAM_TRACEPARENTS: list[str | None] = []


async def _stream(request: Request) -> Response:
    UPSTREAM_TRACEPARENTS.append(request.headers.get("traceparent"))

    async def body() -> AsyncIterator[bytes]:
        for chunk in TWO_TOOL_CALLS:
            yield b"data: " + orjson.dumps(chunk) + b"\n\n"
        yield b"data: [DONE]\n\n"

    return StreamingResponse(body(), media_type="text/event-stream")


async def _models(request: Request) -> Response:
    UPSTREAM_TRACEPARENTS.append(request.headers.get("traceparent"))
    return JSONResponse({"object": "list", "data": [{"id": "gpt-4o", "object": "model"}]})


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    app = Starlette(routes=[Route("/v1/chat/completions", _stream, methods=["POST"]), Route("/v1/models", _models)])
    with serve_in_thread(app) as url:
        yield url


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    telemetry.configure(True, trace_logs=True, exporter=exporter)
    yield exporter
    telemetry.configure(False)


def _messages(bus: InProcessBus, count: int) -> list[Message]:
    wait_until(lambda: bus.pending(DEFAULT_TOPIC) >= count, what=f"{count} events on the bus")
    return bus.take(DEFAULT_TOPIC, 1000)


def _streamed_request(url: str, token: str) -> None:
    body = {
        "model": "gpt-4o",
        "stream": True,
        "messages": [{"role": "user", "content": "fix the failing test"}],
        "tools": [{"type": "function", "function": {"name": "read_file", "parameters": {"type": "object"}}}],
    }
    headers = {"authorization": f"Bearer {token}", "traceparent": f"00-{TRACE_ID}-{CLIENT_SPAN}-01"}
    with httpx.stream("POST", f"{url}{OPENAI_CHAT}", json=body, headers=headers, timeout=30) as answer:
        assert answer.status_code == 200
        assert b"call_test" in answer.read()


def test_a_streamed_answer_with_two_tool_calls_makes_the_exact_span_tree(
    spans: InMemorySpanExporter, upstream: str, verifier: TokenVerifier, make_token: Callable[..., str]
) -> None:
    bus = InProcessBus()
    with running_proxy(upstream, bus.producer(), verifier) as (url, _):
        _streamed_request(url, make_token("alice", user_id="user-alice"))
        messages = _messages(bus, 6)  # started, prompt, token usage, two tool usages, ended
    finished = spans.get_finished_spans()
    intercept = one(finished, "Intercept")
    assert f"{intercept.context.trace_id:032x}" == TRACE_ID and f"{parent_of(intercept):016x}" == CLIENT_SPAN
    assert {f"{s.context.trace_id:032x}" for s in finished} == {TRACE_ID}
    process = one(finished, "Intercept.ProcessRequest")
    children = sorted(s.name for s in finished if parent_of(s) == intercept.context.span_id)
    assert children == sorted(["Intercept.CreateInterceptor", "Intercept.ProcessRequest", *RECORD.values(),
                               "Intercept.RecordToolUsage"])  # fmt: skip
    grandchildren = sorted(s.name for s in finished if parent_of(s) == process.context.span_id)
    assert grandchildren == ["Intercept.ProcessRequest.ToolCall"] * 2 + ["Intercept.ProcessRequest.Upstream"]
    assert len(finished) == 1 + 2 + 6 + 3

    tool_calls = {s.attributes["aibridge.tool.call_id"]: s.attributes["aibridge.tool.name"] for s in
                  named(finished, "Intercept.ProcessRequest.ToolCall") if s.attributes}  # fmt: skip
    assert tool_calls == {"call_read": "read_file", "call_test": "run_tests"}
    _check_intercept_attributes(intercept, messages)
    upstream_span = one(finished, "Intercept.ProcessRequest.Upstream")
    assert [event.name for event in upstream_span.events] == ["first byte"]
    # The provider was asked under the Upstream span, not under the client's span.
    assert UPSTREAM_TRACEPARENTS[-1] == f"00-{TRACE_ID}-{upstream_span.context.span_id:016x}-01"
    assert intercept.start_time is not None and intercept.end_time is not None
    assert all(
        intercept.start_time <= (s.start_time or 0) and (s.end_time or 0) <= intercept.end_time for s in finished
    )

    # Each event travelled with the context of the span that recorded it.
    by_span = {s.context.span_id: s for s in finished}
    for message in messages:
        event = orjson.loads(message.value)
        traceparent = dict(message.headers)["traceparent"].decode()
        _version, trace_id, span_id, _flags = traceparent.split("-")
        recorded = by_span[int(span_id, 16)]
        assert (trace_id, recorded.name) == (TRACE_ID, RECORD[event["type"]])
        assert recorded.attributes is not None and recorded.attributes["aibridge.event.type"] == event["type"]


def _check_intercept_attributes(intercept: ReadableSpan, messages: list[Message]) -> None:
    started = orjson.loads(messages[0].value)
    assert intercept.kind is SpanKind.SERVER and intercept.status.status_code is StatusCode.UNSET
    assert intercept.attributes is not None
    assert {key: intercept.attributes[key] for key in intercept.attributes if key != "aibridge.client"} == {
        "aibridge.interception_id": started["interception_id"],
        "aibridge.user_id": "user-alice",
        "aibridge.username": "alice",
        "aibridge.provider": "openai",
        "aibridge.model": "gpt-4o",
        "aibridge.streaming": True,
        "aibridge.status": "completed",
        "http.route": "/v1/chat/completions",
        "http.request.method": "POST",
        "http.response.status_code": 200,
        "url.path": OPENAI_CHAT,
    }
    # --trace-logs: the interception's log line is an event of its span.
    assert any(event.name.startswith("alice (") for event in intercept.events), intercept.events


def test_passthrough_and_refused_requests_have_spans(
    spans: InMemorySpanExporter, upstream: str, verifier: TokenVerifier, make_token: Callable[..., str]
) -> None:
    with running_proxy(upstream, InProcessBus().producer(), verifier) as (url, _):
        listed = httpx.get(f"{url}{OPENAI_MODELS}", headers={"authorization": f"Bearer {make_token()}"}, timeout=30)
        refused = httpx.post(f"{url}{OPENAI_CHAT}", json={"model": "gpt-4o", "messages": []}, timeout=30)
    assert (listed.status_code, refused.status_code) == (200, 401)
    finished = spans.get_finished_spans()
    passthrough = one(finished, "Passthrough")
    assert passthrough.attributes is not None and passthrough.kind is SpanKind.SERVER
    own = passthrough.context
    assert UPSTREAM_TRACEPARENTS[-1] == f"00-{own.trace_id:032x}-{own.span_id:016x}-{own.trace_flags:02x}"
    assert passthrough.attributes["http.route"] == "/v1/models"
    assert passthrough.attributes["http.response.status_code"] == 200
    intercept = one(finished, "Intercept")
    assert intercept.attributes is not None and intercept.attributes["http.response.status_code"] == 401
    assert [s.name for s in finished if parent_of(s) == intercept.context.span_id] == ["Intercept.CreateInterceptor"]


def test_tracing_off_builds_no_spans_and_no_headers(
    upstream: str, verifier: TokenVerifier, make_token: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    telemetry.configure(False)

    def no_tracer(service: str) -> None:
        raise AssertionError(f"a tracer was asked for ({service}) with tracing off")

    monkeypatch.setattr(telemetry, "tracer", no_tracer)
    bus = InProcessBus()
    with running_proxy(upstream, bus.producer(), verifier) as (url, _):
        _streamed_request(url, make_token())
        messages = _messages(bus, 6)
    assert all(message.headers == () for message in messages)
    # A transparent proxy: the client's own trace context reaches the provider untouched.
    assert UPSTREAM_TRACEPARENTS[-1] == f"00-{TRACE_ID}-{CLIENT_SPAN}-01"


@pytest.fixture(autouse=True)
def _interception_logs_at_info() -> Iterator[None]:
    logger = logging.getLogger("aibridge.interceptions")
    level = logger.level
    logger.setLevel(logging.INFO)
    yield
    logger.setLevel(level)
