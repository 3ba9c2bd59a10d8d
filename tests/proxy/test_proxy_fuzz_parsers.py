"""Property tests of the proxy's parsers: whatever a client sends and whatever a provider streams, the
parsers answer (a 400 in the provider's shape, or a summary) and what they extract can be recorded.

Request bodies: arbitrary bytes, arbitrary JSON, and the right keys holding the wrong JSON types. Provider
answers: arbitrary JSON for blocking answers; for streams, realistic events of each provider (with
wrong types in their fields) mangled as a faulty provider or network would: cut anywhere, invalid UTF-8,
giant lines, events out of order, any chunking, CR line ends. Bounded for CI: ``max_examples`` below.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aibridge.events import InterceptionContext, Status, encode_event, validate_event
from aibridge.proxy.errors import InvalidRequestBody, error_body
from aibridge.proxy.providers import anthropic, compaction, openai, responses
from aibridge.proxy.providers.records import ParsedRequest, Provider, ResponseSummary
from aibridge.proxy.providers.spec import anthropic_spec, compaction_spec, openai_spec, responses_spec
from aibridge.proxy.relay import Tee

PARSERS = settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

SPECS = [
    openai_spec("http://upstream/v1", "k"),
    responses_spec("http://upstream/v1", "k"),
    compaction_spec("http://upstream/v1", "k"),
    anthropic_spec("http://upstream", "k"),
]
REQUEST_PARSERS = [openai.parse_request, responses.parse_request, compaction.parse_request, anthropic.parse_request]
RESPONSE_PARSERS = [openai.parse_response, responses.parse_response, anthropic.parse_response]

# JSON as a provider or client might send it, including what orjson reads but cannot write back:
# two markers become, in the bytes, an array nested 600 levels deep and an integer beyond 64 bits.
DEEP = b"[" * 600 + b"]" * 600
BIG = b"1" * 40
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(["<deep>", "<big>"])
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)


def to_json(value: Any) -> bytes:
    return orjson.dumps(value).replace(b'"<deep>"', DEEP).replace(b'"<big>"', BIG)


def keyed(keys: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects with the keys a parser looks for, each holding any JSON at all."""
    return st.fixed_dictionaries({}, optional=dict.fromkeys(keys, json_values))


REQUEST_KEYS = ["model", "messages", "input", "stream", "stream_options", "max_tokens", "tools"]
request_bodies = (
    st.binary(max_size=200)
    | json_values.map(to_json)
    | keyed(REQUEST_KEYS).map(lambda body: to_json({"model": "m", "messages": []} | body))
    | keyed(REQUEST_KEYS).map(lambda body: to_json(body | {"model": "m", "messages": body.get("messages", [])}))
    | keyed(REQUEST_KEYS).map(to_json)
)


def context() -> InterceptionContext:
    return InterceptionContext("u", "alice", "openai", "m", "Unknown", True, "/v1/chat/completions", "tok")


def recordable(parsed: ParsedRequest | None, summary: ResponseSummary, status: Status = Status.COMPLETED) -> None:
    """Every event the interceptor would build from these results encodes and satisfies the schema."""
    ctx = context()
    events = [ctx.started()]
    if parsed is not None and parsed.prompt is not None:
        events.append(ctx.prompt(parsed.prompt, summary.response_id))
    if summary.usage is not None:
        usage = summary.usage
        events.append(
            ctx.token_usage(
                provider_response_id=summary.response_id,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cache_read_input_tokens=usage.cache_read_input_tokens,
                cache_write_input_tokens=usage.cache_write_input_tokens,
                metadata=usage.metadata,
            )
        )
    for call in summary.tool_calls:
        events.append(
            ctx.tool_usage(
                provider_response_id=summary.response_id,
                tool=call.name or "unknown",
                call_id=call.call_id,
                tool_input=call.arguments,
                metadata=call.metadata,
            )
        )
    events.append(ctx.ended(status, 200, summary.error))
    for event in events:
        validate_event(orjson.loads(encode_event(event)))


@PARSERS
@given(raw=request_bodies)
def test_any_request_body_is_parsed_or_refused_with_a_400_in_the_providers_shape(raw: bytes) -> None:
    for spec in SPECS:
        try:
            parsed = spec.parse_request(raw)
            body, _ = spec.prepare(parsed, raw)
        except InvalidRequestBody as exc:
            assert exc.status == 400 and str(exc)
            answer = orjson.loads(error_body(spec.provider, 400, str(exc)))
            if spec.provider is Provider.OPENAI:
                assert answer["error"]["type"] == "invalid_request_error"
            else:
                assert answer["error"]["type"] == "invalid_request_error" and answer["type"] == "error"
            continue
        assert isinstance(parsed.model, str) and parsed.model
        assert isinstance(orjson.loads(body), dict)
        recordable(parsed, ResponseSummary())


def test_json_nested_past_the_parsers_limit_is_a_400_that_says_so() -> None:
    raw = b'{"model":"m","messages":[' + b"[" * 2000 + b"]" * 2000 + b"]}"
    for parse in REQUEST_PARSERS:
        try:
            parse(raw)
        except InvalidRequestBody as exc:
            assert "nested deeper than" in str(exc)
        else:
            raise AssertionError("a body nested 2000 levels deep was accepted")


def test_a_body_only_a_rewrite_cannot_write_back_is_refused_not_failed() -> None:
    """A streamed chat request with its own stream_options is re-serialized to add usage: nesting that
    orjson reads (up to 1024) but cannot write (past 254) must be a 400, not an exception."""
    nested = b"[" * 600 + b"]" * 600
    raw = b'{"model":"m","stream":true,"stream_options":{},"messages":[{"role":"user","content":' + nested + b"}]}"
    try:
        openai.parse_request(raw)  # refused here, while a 400 can still be answered and recorded
    except InvalidRequestBody as exc:
        assert "nested deeper than" in str(exc)
    else:
        raise AssertionError("the rewrite was expected to be refused")


RESPONSE_KEYS = ["id", "model", "usage", "choices", "content", "output", "error", "service_tier"]
COUNT_KEYS = ["input_tokens", "output_tokens", "prompt_tokens", "completion_tokens", "cache_creation_input_tokens"]
DETAIL_KEYS = ["prompt_tokens_details", "input_tokens_details", "output_tokens_details", "cache_creation"]
TOOL_KEYS = ["type", "id", "call_id", "name", "input", "arguments", "function"]


def with_tools(items: list[Any]) -> bytes:
    return to_json({"id": "r", "choices": [{"message": {"tool_calls": items}}], "content": items, "output": items})


answers = (
    st.binary(max_size=200)
    | json_values.map(to_json)
    | keyed(RESPONSE_KEYS).map(to_json)
    | st.builds(lambda a, b: to_json({"id": "r", "usage": a | b}), keyed(COUNT_KEYS), keyed(DETAIL_KEYS))
    | st.lists(keyed(TOOL_KEYS) | json_values, max_size=3).map(with_tools)
)


@PARSERS
@given(raw=answers)
def test_any_blocking_answer_gives_a_summary_that_can_be_recorded(raw: bytes) -> None:
    for parse in RESPONSE_PARSERS:
        summary = parse(raw)
        recordable(None, summary, Status.COMPLETED if summary.error is None else Status.UPSTREAM_ERROR)


# ---- streams ----------------------------------------------------------------------------------------

ANTHROPIC_EVENTS = [
    "message_start",
    "content_block_start",
    "content_block_delta",
    "content_block_stop",
    "message_delta",
    "message_stop",
    "ping",
    "error",
]
RESPONSES_EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.function_call_arguments.delta",
    "response.function_call_arguments.done",
    "response.custom_tool_call_input.delta",
    "response.output_item.done",
    "response.completed",
    "response.failed",
    "error",
]
PAYLOAD_KEYS = [
    "message", "content_block", "delta", "index", "usage", "error", "id", "model", "choices", "item",
    "output_index", "response", "arguments", "input", "sequence_number", "partial_json", "tool_calls",
]  # fmt: skip


def sse_event(name: str | None, payload: bytes) -> bytes:
    head = b"event: " + name.encode() + b"\n" if name else b""
    return head + b"data: " + payload + b"\n\n"


def payloads(kinds: list[str]) -> st.SearchStrategy[bytes]:
    typed = st.builds(lambda kind, body: to_json(body | {"type": kind}), st.sampled_from(kinds), keyed(PAYLOAD_KEYS))
    return typed | json_values.map(to_json) | st.sampled_from([b"[DONE]", b"{", b'{"type":"error"}', b""])


def stream_of(kinds: list[str], named: bool) -> st.SearchStrategy[bytes]:
    event = st.builds(sse_event, st.sampled_from(kinds) if named else st.none(), payloads(kinds))
    return st.lists(event, max_size=8).map(b"".join)


@st.composite
def mangled(draw: st.DrawFn, stream: bytes) -> list[bytes]:
    """``stream`` as a faulty provider sends it, in arbitrary chunks."""
    raw = stream
    if draw(st.booleans()):
        raw = raw[: draw(st.integers(0, len(raw)))]  # cut anywhere
    if draw(st.booleans()):
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.sampled_from([b"\xff\xfe", b"\xc3", b"\xed\xa0\x80", b"data: \x80\n\n"])) + raw[at:]
    if draw(st.booleans()):
        raw += b"data: " + b"x" * draw(st.integers(64 * 1024, 1024 * 1024)) + b"\n\n"  # a giant line
    if draw(st.booleans()):
        raw = raw.replace(b"\n", b"\r\n")
    cuts = sorted(draw(st.lists(st.integers(0, len(raw)), max_size=10)))
    return [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]


@st.composite
def provider_streams(draw: st.DrawFn) -> tuple[str, list[bytes]]:
    provider = draw(st.sampled_from(["chat", "chat_hidden_usage", "responses", "anthropic"]))
    if provider == "anthropic":
        stream = draw(stream_of(ANTHROPIC_EVENTS, named=True))
    elif provider == "responses":
        stream = draw(stream_of(RESPONSES_EVENTS, named=True))
    else:
        stream = draw(stream_of(["chat.completion.chunk"], named=False))
    return provider, draw(mangled(stream))


TEES: dict[str, Callable[[], Tee]] = {
    "chat": lambda: openai.ChatStream(hide_usage=False),
    "chat_hidden_usage": lambda: openai.ChatStream(hide_usage=True),
    "responses": responses.ResponsesStream,
    "anthropic": anthropic.MessageStream,
}


@settings(PARSERS, max_examples=200)
@given(stream=provider_streams())
def test_a_malformed_stream_is_relayed_and_summarized_without_an_exception(stream: tuple[str, list[bytes]]) -> None:
    kind, chunks = stream
    tee = TEES[kind]()
    forwarded = []
    for chunk in chunks:
        forwarded.append(tee.feed(chunk))
        tee.settle()
    forwarded.append(tee.end())
    forwarded.append(tee.close())
    if kind != "chat_hidden_usage":
        assert b"".join(forwarded) == b"".join(chunks)  # forwarded unchanged, however broken
    recordable(None, tee.summary, Status.COMPLETED if tee.summary.error is None else Status.UPSTREAM_ERROR)


ENDLESS = {
    "chat": b'data: {"id":"c1","choices":[{"delta":{"content":"hi"}}]}\n\n',
    "responses": b'event: response.created\ndata: {"type":"response.created","response":{"id":"r1"}}\n\n',
    "anthropic": b'event: message_start\ndata: {"type":"message_start","message":{"id":"m1"}}\n\n',
}


def test_a_stream_cut_before_its_final_event_is_summarized_with_an_error() -> None:
    """A provider that closes the stream cleanly but early (no ``[DONE]``, ``message_stop`` or terminal
    response event) did not finish the answer: the record says so instead of ``completed``."""
    for kind, raw in ENDLESS.items():
        tee = TEES[kind]()
        tee.feed(raw)
        tee.close()
        assert tee.summary.error is not None and "ended before" in tee.summary.error, kind
