"""The Responses API parsers on a recorded Codex-shaped stream, fed in every chunking (mid-line, mid-UTF-8)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pydantic
import pytest
from openai.types.responses import Response, ResponseErrorEvent, ResponseStreamEvent
from test_proxy_parsers import chunkings, decode_all

from aibridge.proxy.errors import InvalidRequestBody, UpstreamTimeout, UpstreamUnreachable
from aibridge.proxy.providers import compaction, responses
from aibridge.proxy.providers.records import ToolCall
from aibridge.redaction import ProviderMessage

STREAM = (Path(__file__).parent / "fixtures" / "openai_responses_stream_codex.sse").read_bytes()
RESPONSE_ID = "resp_68d2f1c0a4b88190b2e3f0c1d9a7e6f50c6c1e2b3a4d5e6f"
EXEC_ARGUMENTS = '{"cmd":"ls -la ~/Île-de-France 🇫🇷","workdir":"/work"}'
PATCH = "*** Begin Patch\n*** Update File: README.md\n@@\n-Bonjour\n+Grüß Gott ✓\n*** End Patch"
EXPECTED_CALLS = [
    ToolCall("call_Xk3vQ9mP2sR7tY1uW5zA8bC4", "exec_command", EXEC_ARGUMENTS),
    ToolCall("call_Pq8rS2tU6vW0xY4zA7bC1dE5", "apply_patch", PATCH, {"item_type": "custom_tool_call"}),
]


def stream_payloads(raw: bytes = STREAM) -> list[dict[str, Any]]:
    return [orjson.loads(event.data) for event in decode_all([raw]) if event.data is not None]


def completed_response() -> dict[str, Any]:
    response: dict[str, Any] = stream_payloads()[-1]["response"]
    return response


def run(chunks: list[bytes]) -> tuple[bytes, responses.ResponsesStream]:
    tee = responses.ResponsesStream()
    forwarded = b"".join(tee.feed(chunk) for chunk in chunks) + tee.close()
    return forwarded, tee


def cut_after(kind: str, occurrence: int = 1) -> bytes:
    """The stream up to and including the ``occurrence``-th event of type ``kind``."""
    blocks = STREAM.split(b"\n\n")
    seen = 0
    for index, block in enumerate(blocks):
        seen += block.startswith(f"event: {kind}\n".encode())
        if seen == occurrence:
            return b"\n\n".join(blocks[: index + 1]) + b"\n\n"
    raise AssertionError(f"no {kind} #{occurrence}")


def test_fixture_is_what_the_official_sdk_parses() -> None:
    adapter: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(ResponseStreamEvent)
    events = decode_all([STREAM])
    for number, event in enumerate(events):
        payload = adapter.validate_python(orjson.loads(event.data or "null"))
        assert (payload.type, payload.sequence_number) == (event.event, number)


def test_stream_is_forwarded_unchanged_and_parsed_in_any_chunking() -> None:
    for chunks in chunkings(STREAM):
        forwarded, tee = run(chunks)
        assert forwarded == STREAM
        summary = tee.summary
        assert (summary.response_id, summary.model, summary.error) == (RESPONSE_ID, "gpt-5-codex", None)
        assert summary.usage is not None
        usage = summary.usage
        assert (usage.input_tokens, usage.cache_read_input_tokens, usage.cache_write_input_tokens) == (
            1280,
            18176,
            1024,
        )
        assert usage.output_tokens == 389
        assert usage.metadata == {
            "input_tokens_details": {"cache_write_tokens_details": {"ttl_30m_tokens": 1024, "ttl_12h_tokens": 0}},
            "output_tokens_details": {"reasoning_tokens": 256},
            "service_tier": "default",
        }
        assert summary.tool_calls == EXPECTED_CALLS


@pytest.mark.parametrize(
    ("cut", "expected"),
    [
        (
            ("response.function_call_arguments.delta", 2),
            [ToolCall(EXPECTED_CALLS[0].call_id, "exec_command", '{"cmd":"ls -la ~/Île-de')],
        ),
        (("response.function_call_arguments.done", 1), EXPECTED_CALLS[:1]),
        (
            ("response.custom_tool_call_input.delta", 1),
            [
                EXPECTED_CALLS[0],
                ToolCall(EXPECTED_CALLS[1].call_id, "apply_patch", PATCH[:40], {"item_type": "custom_tool_call"}),
            ],
        ),
        (("response.output_item.done", 4), EXPECTED_CALLS),
    ],
)
def test_a_stream_cut_short_keeps_what_was_assembled(cut: tuple[str, int], expected: list[ToolCall]) -> None:
    raw = cut_after(*cut)
    for chunks in list(chunkings(raw))[:4]:
        _, tee = run(chunks)
        assert tee.summary.tool_calls == expected
        assert tee.summary.usage is None, "usage comes only with the terminal event"
        assert tee.summary.response_id == RESPONSE_ID


def test_terminal_event_alone_gives_usage_and_calls() -> None:
    """A stream reduced to its last event (the terminal response object) still yields everything."""
    raw = STREAM[STREAM.rindex(b"event: response.completed") :]
    _, tee = run([raw])
    assert tee.summary.response_id == RESPONSE_ID
    assert tee.summary.tool_calls == EXPECTED_CALLS
    assert tee.summary.usage is not None and tee.summary.usage.input_tokens == 1280


def test_data_only_events_are_understood_by_their_type_field() -> None:
    raw = b"".join(b"data: " + orjson.dumps(payload) + b"\n\n" for payload in stream_payloads())
    _, tee = run([raw])
    assert tee.summary.tool_calls == EXPECTED_CALLS
    assert tee.summary.usage is not None


def test_failed_and_incomplete_responses() -> None:
    failed = completed_response() | {
        "status": "failed",
        "error": {"code": "server_error", "message": "The model failed to generate a response."},
    }
    raw = (
        b"event: response.failed\ndata: "
        + orjson.dumps({"type": "response.failed", "sequence_number": 7, "response": failed})
        + b"\n\n"
    )
    _, tee = run([cut_after("response.in_progress"), raw])
    assert tee.summary.error == "server_error: The model failed to generate a response."
    assert tee.summary.usage is not None and tee.summary.usage.output_tokens == 389

    incomplete = completed_response() | {"status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}}
    raw = (
        b"event: response.incomplete\ndata: "
        + orjson.dumps({"type": "response.incomplete", "sequence_number": 7, "response": incomplete})
        + b"\n\n"
    )
    _, tee = run([raw])
    assert tee.summary.error is None and tee.summary.usage is not None


@pytest.mark.parametrize(
    "payload",
    [
        {"type": "error", "sequence_number": 2, "code": "rate_limit_exceeded", "message": "Slow down", "param": None},
        {
            "type": "error",
            "sequence_number": 2,
            "error": {"type": "tokens", "code": "rate_limit_exceeded", "message": "Slow down"},
        },
    ],
)
def test_error_events_flat_as_documented_or_nested_as_sent(payload: dict[str, Any]) -> None:
    _, tee = run([cut_after("response.in_progress"), b"event: error\ndata: " + orjson.dumps(payload) + b"\n\n"])
    assert tee.summary.error == "rate_limit_exceeded: Slow down"
    assert isinstance(tee.summary.error, ProviderMessage) and tee.summary.error.kind.endswith("/rate_limit_exceeded")


def test_the_bridges_own_error_event_continues_the_numbering_and_parses_both_ways() -> None:
    tee = responses.ResponsesStream()
    tee.feed(cut_after("response.output_text.delta", 2))
    raw = tee.error_event(UpstreamUnreachable("the upstream closed the connection"))
    assert raw.startswith(b"event: error\ndata: ") and raw.endswith(b"\n\n")
    payload = orjson.loads(raw.removeprefix(b"event: error\ndata: "))
    documented = ResponseErrorEvent.model_validate(payload)
    assert (documented.sequence_number, documented.code) == (8, "upstream_unreachable")
    assert documented.message == "the upstream closed the connection"
    assert payload["error"] == {
        "message": "the upstream closed the connection",
        "type": "server_error",
        "param": None,
        "code": "upstream_unreachable",
    }
    assert orjson.loads(responses.ResponsesStream().error_event(UpstreamTimeout("slow"))[19:])["sequence_number"] == 0


def test_blocking_response() -> None:
    summary = responses.parse_response(orjson.dumps(completed_response()))
    Response.model_validate(completed_response())
    assert (summary.response_id, summary.model, summary.error) == (RESPONSE_ID, "gpt-5-codex", None)
    assert summary.tool_calls == EXPECTED_CALLS
    assert summary.usage is not None
    assert (summary.usage.input_tokens, summary.usage.cache_read_input_tokens) == (1280, 18176)
    assert responses.parse_response(b"<html>").error == "the upstream answer is not JSON"
    assert responses.parse_response(b"[]").error == "the upstream answer is not a JSON object"
    bare = responses.parse_response(b'{"id":"resp_1","output":"odd","usage":{"input_tokens":5,"output_tokens":2}}')
    assert bare.tool_calls == [] and bare.usage is not None
    assert (bare.usage.input_tokens, bare.usage.output_tokens, bare.usage.metadata) == (5, 2, {})


def test_usage_convention_input_excludes_cache_reads_and_writes() -> None:
    usage = responses.usage_from(
        {
            "input_tokens": 100,
            "input_tokens_details": {"cached_tokens": 60, "cache_write_tokens": 30},
            "output_tokens": 9,
            "output_tokens_details": {"reasoning_tokens": 0},
        }
    )
    assert (usage.input_tokens, usage.cache_read_input_tokens, usage.cache_write_input_tokens) == (10, 60, 30)
    assert usage.metadata == {}
    odd = responses.usage_from({"input_tokens": 3, "input_tokens_details": {"cached_tokens": 5}, "output_tokens": -1})
    assert (odd.input_tokens, odd.cache_read_input_tokens, odd.output_tokens) == (0, 5, 0)


CODEX_INPUT: list[dict[str, Any]] = [
    {
        "type": "message",
        "role": "developer",
        "content": [{"type": "input_text", "text": "<permissions>…</permissions>"}],
    },
    {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "<environment_context>…"}]},
    {
        "type": "message",
        "role": "user",
        "content": [
            {"type": "input_text", "text": "List the files"},
            {"type": "input_image", "image_url": "data:image/png;base64,AAAA"},
            {"type": "input_text", "text": "in Île-de-France ✓"},
        ],
    },
]
FOLLOW_UP = [
    *CODEX_INPUT,
    {"type": "function_call", "name": "exec_command", "arguments": "{}", "call_id": "call_1"},
    {"type": "function_call_output", "call_id": "call_1", "output": "README.md"},
]


@pytest.mark.parametrize(
    ("items", "prompt"),
    [
        ("Explain this repo", "Explain this repo"),
        (CODEX_INPUT, "List the files\nin Île-de-France ✓"),
        (FOLLOW_UP, None),
        ([{"role": "user", "content": "plain string content"}], "plain string content"),
        ([{"role": "assistant", "content": "I answered"}], None),
        ([{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}], None),
        ([{"type": "item_reference", "id": "msg_1"}], None),
        ([], None),
        (None, None),
    ],
)
def test_prompt_is_the_last_item_when_it_is_a_user_message(items: Any, prompt: str | None) -> None:
    body = {"model": "gpt-5", "stream": True} | ({} if items is None else {"input": items})
    parsed = responses.parse_request(orjson.dumps(body))
    assert (parsed.model, parsed.stream, parsed.prompt) == ("gpt-5", True, prompt)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b'"input"', "JSON object"),
        (b'{"input": "hi"}', "model"),
        (b'{"model": "", "input": "hi"}', "model"),
        (b'{"model": "gpt-5", "input": {"role": "user"}}', "'input'"),
    ],
)
def test_malformed_requests_are_refused(raw: bytes, message: str) -> None:
    with pytest.raises(InvalidRequestBody, match=message):
        responses.parse_request(raw)


def test_compaction_request_is_a_responses_request_that_cannot_stream() -> None:
    raw = orjson.dumps({"model": "gpt-5", "input": [{"role": "user", "content": "go on"}], "stream": False})
    parsed = compaction.parse_request(raw)
    assert (parsed.model, parsed.stream, parsed.prompt) == ("gpt-5", False, "go on")
    with pytest.raises(InvalidRequestBody, match="'stream' is not supported"):
        compaction.parse_request(orjson.dumps({"model": "gpt-5", "input": "hi", "stream": True}))
    with pytest.raises(InvalidRequestBody, match="model"):
        compaction.parse_request(b'{"input": "hi"}')


def test_compacted_response_gives_its_id_and_usage_and_no_tool_calls() -> None:
    compacted = {
        "id": "resp_001",
        "object": "response.compaction",
        "created_at": 1764967971,
        "output": [
            {"id": "msg_000", "type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
            {"id": "cmp_001", "type": "compaction", "encrypted_content": "gAAAAABpM0Yj-...="},
        ],
        "usage": {
            "input_tokens": 139,
            "input_tokens_details": {"cached_tokens": 100},
            "output_tokens": 438,
            "output_tokens_details": {"reasoning_tokens": 64},
            "total_tokens": 577,
        },
    }
    summary = responses.parse_response(orjson.dumps(compacted))
    assert (summary.response_id, summary.tool_calls, summary.error) == ("resp_001", [], None)
    assert summary.usage is not None
    assert (summary.usage.input_tokens, summary.usage.cache_read_input_tokens, summary.usage.output_tokens) == (
        39,
        100,
        438,
    )
    assert summary.usage.metadata == {"output_tokens_details": {"reasoning_tokens": 64}}
