"""The sans-io parsers on recorded streams, fed in every chunking (mid-line, mid-UTF-8 character)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from aibridge.proxy.errors import InvalidRequestBody
from aibridge.proxy.providers import anthropic, openai
from aibridge.proxy.providers.records import ToolCall
from aibridge.proxy.providers.sse import SSEDecoder, SSEEvent
from aibridge.redaction import ProviderMessage

FIXTURES = Path(__file__).parent / "fixtures"
ANTHROPIC_STREAM = (FIXTURES / "anthropic_stream_tool_use.sse").read_bytes()
OPENAI_STREAM = (FIXTURES / "openai_stream_tool_calls.sse").read_bytes()


def chunkings(raw: bytes, seed: int = 7) -> Iterator[list[bytes]]:
    """Whole, byte by byte, split inside every multi-byte character, and random splits."""
    yield [raw]
    yield [raw[i : i + 1] for i in range(len(raw))]
    multibyte = [i for i, byte in enumerate(raw) if byte & 0xC0 == 0x80]
    yield [raw[a:b] for a, b in zip([0, *multibyte], [*multibyte, len(raw)], strict=True)]
    rng = random.Random(seed)
    for _ in range(20):
        cuts = sorted(rng.sample(range(1, len(raw)), 12))
        yield [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]


def decode_all(chunks: list[bytes]) -> list[SSEEvent]:
    decoder = SSEDecoder()
    events = [event for chunk in chunks for event in decoder.feed(chunk)]
    return events + decoder.close()


def test_sse_decoder_gives_the_same_events_for_any_chunking() -> None:
    expected = decode_all([ANTHROPIC_STREAM])
    assert [e.event for e in expected if e.data is not None][:3] == ["message_start", "content_block_start", "ping"]
    assert "☀️" in expected[3].data  # type: ignore[operator]
    for chunks in chunkings(ANTHROPIC_STREAM):
        events = decode_all(chunks)
        assert events == expected
        assert b"".join(e.raw for e in events) == ANTHROPIC_STREAM


@pytest.mark.parametrize("newline", [b"\r\n", b"\r"])
def test_sse_decoder_accepts_every_line_ending(newline: bytes) -> None:
    raw = ANTHROPIC_STREAM.replace(b"\n", newline)
    expected = [(e.event, e.data) for e in decode_all([ANTHROPIC_STREAM])]
    for chunks in chunkings(raw):
        events = decode_all(chunks)
        assert [(e.event, e.data) for e in events] == expected
        assert b"".join(e.raw for e in events) == raw


def test_sse_decoder_fields_comments_and_unterminated_last_event() -> None:
    raw = b": keep-alive\n\nevent: a\ndata:first\ndata: second\nid: 1\nretry: 10\n\ndata: tail"
    events = decode_all([raw])
    assert [(e.event, e.data) for e in events] == [("", None), ("a", "first\nsecond"), ("", "tail")]
    assert b"".join(e.raw for e in events) == raw


def test_anthropic_stream_usage_is_cumulative_and_tool_input_is_assembled() -> None:
    for chunks in chunkings(ANTHROPIC_STREAM):
        tee = anthropic.MessageStream()
        forwarded = b"".join(tee.feed(chunk) for chunk in chunks) + tee.close()
        assert forwarded == ANTHROPIC_STREAM
        summary = tee.summary
        assert summary.response_id == "msg_014p7gG3wDgGV9EUtLvnow3U"
        assert summary.usage is not None
        assert (summary.usage.input_tokens, summary.usage.output_tokens) == (472, 89)
        assert (summary.usage.cache_read_input_tokens, summary.usage.cache_write_input_tokens) == (18211, 2048)
        assert summary.usage.metadata == {
            "cache_creation": {"ephemeral_5m_input_tokens": 2048, "ephemeral_1h_input_tokens": 0},
            "service_tier": "standard",
        }
        arguments = '{"location": "San Francisco, CA — ünï", "unit": "fahrenheit"}'
        assert summary.tool_calls == [ToolCall("toolu_01T1x1fJ34qAmk2tNTrN7Up6", "get_weather", arguments)]


def test_anthropic_stream_with_usage_only_at_start_keeps_it() -> None:
    raw = ANTHROPIC_STREAM.replace(
        b',"usage":{"input_tokens":472,"cache_creation_input_tokens":2048,'
        b'"cache_read_input_tokens":18211,"output_tokens":89}',
        b"",
    )
    tee = anthropic.MessageStream()
    tee.feed(raw)
    tee.close()
    assert tee.summary.usage is not None
    assert (tee.summary.usage.input_tokens, tee.summary.usage.output_tokens) == (472, 2)


def test_a_streamed_error_is_the_providers_message_with_its_type_and_code() -> None:
    """It can quote the request: recorded as text, or in metadata capture mode as its kind alone."""
    message = anthropic.MessageStream()
    message.feed(b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n')
    message.settle()
    chat = openai.ChatStream(hide_usage=False)
    chat.feed(b'data: {"error":{"message":"quota","type":"insufficient_quota","code":"insufficient_quota"}}\n\n')
    chat.settle()
    errors = [message.summary.error, chat.summary.error]
    assert errors == ["overloaded_error: Overloaded", "quota"]
    assert [error.kind for error in errors if isinstance(error, ProviderMessage)] == [
        "overloaded_error",
        "insufficient_quota",
    ]


def test_openai_stream_hides_added_usage_and_assembles_tool_calls() -> None:
    expected_client = b"".join(
        block.replace(b',"usage":null', b"") + b"\n\n"
        for block in OPENAI_STREAM.split(b"\n\n")[:-1]
        if b'"choices":[]' not in block
    )
    for chunks in chunkings(OPENAI_STREAM):
        tee = openai.ChatStream(hide_usage=True)
        forwarded = b"".join(tee.feed(chunk) for chunk in chunks) + tee.close()
        assert forwarded == expected_client
        summary = tee.summary
        assert summary.usage is not None
        assert (summary.usage.input_tokens, summary.usage.cache_read_input_tokens) == (1117 - 1024, 1024)
        assert (summary.usage.output_tokens, summary.usage.cache_write_input_tokens) == (46, 0)
        assert summary.usage.metadata == {
            "completion_tokens_details": {"reasoning_tokens": 12},
            "service_tier": "default",
        }
        assert summary.tool_calls == [
            ToolCall("call_DdmO9pD3xa9XTPNJ32zg2hcA", "get_weather", '{"location":"Paris, Île-de-France 🇫🇷"}'),
            ToolCall("call_second0000000000000000", "get_time", "{}"),
        ]


@pytest.mark.parametrize("hide_usage", [True, False])
@pytest.mark.parametrize("tail", [b"", b"data: [DONE]"], ids=["ends-with-blank-line", "unterminated-last-event"])
def test_end_gives_the_tail_without_parsing_and_close_then_completes_the_record(hide_usage: bool, tail: bytes) -> None:
    """What the relay does: forward (feed), send the last bytes (end), record later (close)."""
    raw = OPENAI_STREAM + tail
    for chunks in chunkings(raw):
        reference = openai.ChatStream(hide_usage=hide_usage)
        expected = b"".join(reference.feed(chunk) for chunk in chunks) + reference.close()
        tee = openai.ChatStream(hide_usage=hide_usage)
        forwarded = b"".join(tee.feed(chunk) for chunk in chunks) + tee.end()
        assert forwarded == expected
        assert tee.summary.usage is None and tee.summary.tool_calls == [], "end() parses nothing"
        assert tee.end() == b"" and tee.close() == b"", "the tail is given once"
        assert tee.summary == reference.summary
        assert tee.summary.usage is not None and len(tee.summary.tool_calls) == 2
    for stream in (anthropic.MessageStream(), openai.ChatStream(hide_usage=False)):
        assert stream.feed(ANTHROPIC_STREAM) == ANTHROPIC_STREAM and stream.end() == b""


def test_openai_stream_forwards_unchanged_when_client_asked_for_usage() -> None:
    for chunks in chunkings(OPENAI_STREAM):
        tee = openai.ChatStream(hide_usage=False)
        forwarded = [tee.feed(chunk) for chunk in chunks]
        assert forwarded == chunks
        assert tee.close() == b""
        assert tee.summary.usage is not None and len(tee.summary.tool_calls) == 2


def test_openai_stream_hides_added_usage_written_with_spaces() -> None:
    spaced = (
        b'data: {"id": "chatcmpl-s", "model": "gpt-4o", "choices": [{"index": 0, "delta": {"content": "Hi"}}], '
        b'"usage": null}\n\n'
        b'data: {"id": "chatcmpl-s", "model": "gpt-4o", "choices": [], "usage": {"prompt_tokens": 7, '
        b'"completion_tokens": 1, "total_tokens": 8}}\n\n'
        b"data: [DONE]\n\n"
    )
    expected = (
        b'data: {"id": "chatcmpl-s", "model": "gpt-4o", "choices": [{"index": 0, "delta": {"content": "Hi"}}]}\n\n'
        b"data: [DONE]\n\n"
    )
    for chunks in chunkings(spaced):
        tee = openai.ChatStream(hide_usage=True)
        assert b"".join(tee.feed(chunk) for chunk in chunks) + tee.close() == expected
        assert tee.summary.usage is not None
        assert (tee.summary.usage.input_tokens, tee.summary.usage.output_tokens) == (7, 1)
        assert tee.summary.response_id == "chatcmpl-s"


def test_openai_stream_with_crlf_line_ends_hides_added_usage_the_same() -> None:
    crlf = OPENAI_STREAM.replace(b"\n", b"\r\n")
    expected = b"".join(
        block.replace(b',"usage":null', b"") + b"\r\n\r\n"
        for block in crlf.split(b"\r\n\r\n")[:-1]
        if b'"choices":[]' not in block
    )
    reference = openai.ChatStream(hide_usage=True)
    reference.feed(OPENAI_STREAM)
    reference.close()
    for chunks in chunkings(crlf):
        tee = openai.ChatStream(hide_usage=True)
        assert b"".join(tee.feed(chunk) for chunk in chunks) + tee.close() == expected
        assert tee.summary == reference.summary


def test_openai_stream_switching_to_crlf_midway_loses_nothing() -> None:
    blocks = OPENAI_STREAM.split(b"\n\n")[:-1]
    half = len(blocks) // 2
    mixed = b"".join(b + b"\n\n" for b in blocks[:half]) + b"".join(
        b.replace(b"\n", b"\r\n") + b"\r\n\r\n" for b in blocks[half:]
    )
    reference = openai.ChatStream(hide_usage=True)
    reference.feed(OPENAI_STREAM)
    reference.close()
    for chunks in chunkings(mixed):
        tee = openai.ChatStream(hide_usage=True)
        forwarded = b"".join(tee.feed(chunk) for chunk in chunks) + tee.close()
        assert b'"usage"' not in forwarded
        assert forwarded.count(b"data: ") == len(blocks) - 1  # every event but the usage-only one
        assert tee.summary == reference.summary


def test_content_deltas_are_skipped_but_nothing_recorded_is_lost() -> None:
    """Content deltas are not decoded; text that merely mentions the recorded names changes nothing."""
    chunks = [
        b'data: {"id":"c1","model":"m","choices":[{"index":0,"delta":{"content":"say \\"error\\": no"}}]}\n\n',
        b'data: {"id":"c1","model":"m","choices":[{"index":0,"delta":{"content":"\\"usage\\":{\\"x\\":1}"}}]}\n\n',
        b'data: {"id":"c1","model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1",'
        b'"type":"function","function":{"name":"f","arguments":"{\\"a\\""}}]}}]}\n\n',
        b'data: {"id":"c1","model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,'
        b'"function":{"arguments":":1}"}}]}}]}\n\n',
        b'data: {"id":"c1","model":"m","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}\n\n',
        b"data: [DONE]\n\n",
    ]
    for hide in (True, False):
        tee = openai.ChatStream(hide_usage=hide)
        for chunk in chunks:
            tee.feed(chunk)
            tee.settle()
        tee.close()
        assert tee.summary.response_id == "c1" and tee.summary.model == "m" and tee.summary.error is None
        assert tee.summary.usage is not None
        assert (tee.summary.usage.input_tokens, tee.summary.usage.output_tokens) == (3, 4)
        assert tee.summary.tool_calls == [ToolCall("call_1", "f", '{"a":1}')]
    without_ids = b"".join(chunk.replace(b'"id":"c1",', b"") for chunk in chunks)
    tee = openai.ChatStream(hide_usage=False)
    tee.feed(without_ids)
    tee.close()
    assert tee.summary.usage is not None and tee.summary.tool_calls == [ToolCall("call_1", "f", '{"a":1}')]


def test_stream_parsing_waits_for_settle_and_records_the_same() -> None:
    """The relay forwards a chunk, then settles: parsing never delays the client's bytes."""
    tee = openai.ChatStream(hide_usage=False)
    for chunk in OPENAI_STREAM.split(b"\n\n"):
        tee.feed(chunk + b"\n\n")
    assert tee.summary.response_id == "" and tee.summary.usage is None  # nothing parsed yet
    tee.settle()
    assert tee.summary.response_id and tee.summary.usage is not None
    settled_each_time = openai.ChatStream(hide_usage=False)
    for chunk in OPENAI_STREAM.split(b"\n\n"):
        settled_each_time.feed(chunk + b"\n\n")
        settled_each_time.settle()
    tee.close()
    settled_each_time.close()
    assert tee.summary == settled_each_time.summary

    message = anthropic.MessageStream()
    message.feed(ANTHROPIC_STREAM)
    assert message.summary.response_id == ""
    message.settle()
    assert message.summary.response_id


def test_openai_blocking_response() -> None:
    body = {
        "id": "chatcmpl-1",
        "model": "gpt-4o",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "ls", "arguments": "{}"}}],
                },
            }
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": 4}},
    }
    summary = openai.parse_response(orjson.dumps(body))
    assert summary.tool_calls == [ToolCall("call_1", "ls", "{}")]
    assert summary.usage is not None and (summary.usage.input_tokens, summary.usage.cache_read_input_tokens) == (6, 4)
    assert openai.parse_response(b"<html>").error is not None


def test_anthropic_blocking_response_records_server_tools_with_their_type() -> None:
    body = {
        "id": "msg_1",
        "content": [
            {"type": "text", "text": "hi"},
            {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "ünï"}},
            {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "ls"}},
        ],
        "usage": {"input_tokens": 5, "output_tokens": 7, "cache_read_input_tokens": None},
    }
    summary = anthropic.parse_response(orjson.dumps(body))
    assert summary.tool_calls == [
        ToolCall("srvtoolu_1", "web_search", '{"query":"ünï"}', {"block_type": "server_tool_use"}),
        ToolCall("toolu_1", "Bash", '{"command":"ls"}'),
    ]
    assert summary.usage is not None and summary.usage.cache_read_input_tokens == 0


@pytest.mark.parametrize(
    ("messages", "prompt"),
    [
        ([{"role": "user", "content": "plain"}], "plain"),
        (
            [
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "a"}, {"type": "image_url"}, {"type": "text", "text": "b"}],
                }
            ],
            "a\nb",
        ),
        ([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], None),
        ([{"role": "user", "content": "q"}, {"role": "tool", "tool_call_id": "c", "content": "out"}], None),
        ([], None),
    ],
)
def test_openai_last_user_prompt(messages: list[object], prompt: str | None) -> None:
    assert openai.last_user_prompt(messages) == prompt


@pytest.mark.parametrize(
    ("messages", "prompt"),
    [
        ([{"role": "user", "content": "plain"}], "plain"),
        (
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "<system-reminder>x</system-reminder>"},
                        {"type": "text", "text": "fix it"},
                    ],
                }
            ],
            "<system-reminder>x</system-reminder>\nfix it",
        ),
        ([{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "ok"}]}], None),
        (
            [
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": "t"}, {"type": "text", "text": "go on"}],
                }
            ],
            "go on",
        ),
        ([{"role": "assistant", "content": "a"}], None),
    ],
)
def test_anthropic_last_user_prompt(messages: list[object], prompt: str | None) -> None:
    assert anthropic.last_user_prompt(messages) == prompt


@pytest.mark.parametrize(
    "body", [b"", b"nope", b"[]", b'"text"', b'{"messages": []}', b'{"model": "m"}', b'{"model": 3, "messages": []}']
)
def test_requests_without_model_and_messages_are_invalid(body: bytes) -> None:
    with pytest.raises(InvalidRequestBody):
        openai.parse_request(body)
    with pytest.raises(InvalidRequestBody):
        anthropic.parse_request(body)


def test_openai_streaming_request_asks_upstream_for_usage_once() -> None:
    raw = b'{"model":"m","messages":[],"stream":true,"stream_options":{"include_obfuscation":false}}'
    body, hidden = openai.upstream_body(openai.parse_request(raw), raw)
    assert hidden and orjson.loads(body)["stream_options"] == {"include_obfuscation": False, "include_usage": True}
    asked = b'{"model":"m","messages":[],"stream":true,"stream_options":{"include_usage":true}}'
    assert openai.upstream_body(openai.parse_request(asked), asked) == (asked, False)
    blocking = b'{"model":"m","messages":[]}'
    assert openai.upstream_body(openai.parse_request(blocking), blocking) == (blocking, False)
    for plain in (
        b'{"model":"m","messages":[{"role":"user","content":"{not json}"}],"stream":true}',
        b' \n\t{ "model" : "m", "messages" : [], "stream" : true }',
    ):
        body, hidden = openai.upstream_body(openai.parse_request(plain), plain)
        assert hidden and orjson.loads(body) == orjson.loads(plain) | {"stream_options": {"include_usage": True}}
        assert body.endswith(plain.lstrip()[1:])  # spliced in: the client's bytes otherwise kept as sent
