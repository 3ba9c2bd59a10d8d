"""The first round of a streamed injection goes to the client as a stream without injection gets it until an
injected tool's name shows: then the editor takes over, knowing the events already sent. Read through
:class:`InjectedRounds` as the proxy reads it, the provider's stream given in chunks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import nullcontext
from typing import Any

import orjson
import pytest
from test_mcp_stream_edits import CHAT_STREAM, anthropic_round, chat_chunk, chat_content, decoded, named

from aibridge.proxy.mcp import echo
from aibridge.proxy.mcp.loop import McpRun
from aibridge.proxy.mcp.shapes import AnthropicShape, ChatShape, ResponsesShape
from aibridge.proxy.mcp.stream_edits import AnthropicStreamEdit, ChatStreamEdit, ResponsesStreamEdit, StreamEdit
from aibridge.proxy.mcp.streamed import InjectedRounds, RoundReader, RoundsTee
from aibridge.proxy.providers.anthropic import MessageStream
from aibridge.proxy.providers.openai import ChatStream
from aibridge.proxy.providers.records import ResponseSummary
from aibridge.proxy.providers.responses import ResponsesStream
from aibridge.proxy.relay import Relay, Tee

ADD = "bmcp_tools_add"
__all__ = ["decoded"]  # the fixture: the events the editor decoded


@pytest.fixture
def echo_decoded(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """What was decoded of every echo event to take the injected tools out (a laid-out event's response)."""
    seen: list[bytes | memoryview | str] = []
    decode = echo._decoded

    def counted(data: bytes | memoryview | str) -> Any:
        seen.append(data)
        return decode(data)

    monkeypatch.setattr(echo, "_decoded", counted)
    return seen


class Chunks:
    """A provider's streamed response, as the upstream client hands it over: these chunks, in order."""

    status = 200
    headers: dict[str, str] = {}

    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = chunks

    def ready(self) -> bytes:
        return b""  # nothing came with the headers

    async def chunks(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            yield chunk

    async def close(self) -> None:
        return None


class OneRound:
    """The injector as the loop sees it at the round cap: no injected call is run, no other round follows."""

    max_rounds = 1


def rounds_over(edit: StreamEdit, shape: Any, chunks: list[bytes]) -> InjectedRounds:
    run = McpRun(OneRound(), shape, {"stream": True}, [], user="u", headers={})  # type: ignore[arg-type]

    async def no_next_round(body: bytes) -> Any:
        raise AssertionError("no second round is due")

    return InjectedRounds(run, edit, Chunks(chunks), no_next_round, nullcontext)


async def client_bytes(rounds: InjectedRounds) -> bytes:
    forwarded = await rounds.read()
    RoundsTee(rounds, lambda raw: ResponseSummary()).close()  # the record's reading, after the answer is out
    return forwarded


def edited(edit: StreamEdit, stream: list[bytes]) -> bytes:
    """What the editor alone makes of a round (the path every event took before)."""
    reader = RoundReader(edit)
    out = b"".join(reader.feed(event) for event in stream) + reader.close()
    return out + edit.release([answer] if (answer := edit.answer()) else [])


def split(stream: bytes, size: int) -> list[bytes]:
    return [stream[i : i + size] for i in range(0, len(stream), size)]


def plain_summary(tee: Tee, chunks: list[bytes]) -> ResponseSummary:
    """What the proxy records of this stream without injection: its tee fed as the relay feeds it."""
    for chunk in chunks:
        tee.feed(chunk)
        tee.settle()
    tee.end()
    tee.close()
    return tee.summary


@pytest.mark.parametrize("size", [7, 64, 100_000])
async def test_anthropic_round_without_injected_call_is_the_providers_bytes(size: int) -> None:
    stream, _ = anthropic_round([], 6)
    rounds = rounds_over(AnthropicStreamEdit(), AnthropicShape(), split(b"".join(stream), size))
    assert await client_bytes(rounds) == b"".join(stream)
    [recorded] = rounds.run.rounds
    assert not recorded.injected
    assert recorded.summary == plain_summary(MessageStream(), stream)
    assert recorded.summary.response_id == "msg_1"
    assert recorded.summary.usage is not None and recorded.summary.usage.output_tokens == 3


@pytest.mark.parametrize("client_usage", [True, False])
@pytest.mark.parametrize("size", [5, 100_000])
async def test_chat_round_without_injected_call_is_what_the_plain_relay_sends(client_usage: bool, size: int) -> None:
    upstream = split(b"".join(CHAT_STREAM), size)
    plain = ChatStream(hide_usage=not client_usage)
    expected = b"".join(plain.feed(chunk) for chunk in upstream) + plain.end()
    rounds = rounds_over(ChatStreamEdit(client_usage=client_usage), ChatShape(), upstream)
    forwarded = await client_bytes(rounds)
    assert forwarded == expected
    assert (b'"usage"' in forwarded) is client_usage
    [recorded] = rounds.run.rounds
    assert recorded.summary == plain_summary(ChatStream(hide_usage=True), upstream)
    assert recorded.summary is not None and recorded.summary.usage is not None
    assert (recorded.summary.usage.input_tokens, recorded.summary.usage.output_tokens) == (5, 4)


def anthropic_with_injected_call() -> list[bytes]:
    """Text, then a call of an injected tool, as the provider writes it."""
    stream, _ = anthropic_round([], 3)
    call = {"type": "tool_use", "id": "toolu_1", "name": ADD, "input": {}}
    tool = [
        named("content_block_start", {"type": "content_block_start", "index": 1, "content_block": call}),
        named(
            "content_block_delta",
            {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{}"}},
        ),
        named("content_block_stop", {"type": "content_block_stop", "index": 1}),
    ]
    tail = [
        named(
            "message_delta",
            {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 3}},
        ),
        named("message_stop", {"type": "message_stop"}),
    ]
    return [*stream[:-2], *tool, *tail]


async def test_anthropic_injected_name_split_across_chunks_is_still_withheld() -> None:
    stream = b"".join(anthropic_with_injected_call())
    cut = stream.index(b"bmcp_") + 2  # "bm" | "cp_tools_add"
    upstream = [*split(stream[:cut], 50), stream[cut:]]
    rounds = rounds_over(AnthropicStreamEdit(), AnthropicShape(), upstream)
    forwarded = await client_bytes(rounds)
    assert b"bmcp_" not in forwarded
    assert forwarded == edited(AnthropicStreamEdit(), anthropic_with_injected_call())
    assert b'"stop_reason":"end_turn"' in forwarded  # only the injected call, not run at the cap
    [recorded] = rounds.run.rounds
    assert [call.name for call in recorded.injected] == [ADD]


async def test_chat_injected_name_split_across_chunks_is_still_withheld() -> None:
    call = '{"index":0,"id":"call_1","type":"function","function":{"name":"' + ADD + '","arguments":""}}'
    stream = [
        *CHAT_STREAM[:3],
        chat_chunk('{"index":0,"delta":{"tool_calls":[' + call + ']},"logprobs":null,"finish_reason":null}'),
        chat_chunk('{"index":0,"delta":{},"logprobs":null,"finish_reason":"tool_calls"}'),
        *CHAT_STREAM[-2:],
    ]
    raw = b"".join(stream)
    cut = raw.index(b"bmcp_") + 3
    rounds = rounds_over(ChatStreamEdit(client_usage=False), ChatShape(), [raw[:cut], raw[cut:]])
    forwarded = await client_bytes(rounds)
    assert b"bmcp_" not in forwarded and b'"usage"' not in forwarded
    assert b'"finish_reason":"stop"' in forwarded and forwarded.endswith(b"data: [DONE]\n\n")
    assert forwarded.startswith(b"".join(ChatStream.hidden_usage(chunk) for chunk in CHAT_STREAM[:3]))
    [recorded] = rounds.run.rounds
    assert [call.name for call in recorded.injected] == [ADD]


async def test_text_that_names_an_injected_tool_is_answered_whole() -> None:
    stream = [
        *CHAT_STREAM[:2],
        chat_content("call bmcp_tools_add yourself"),
        *CHAT_STREAM[2:],
    ]
    rounds = rounds_over(ChatStreamEdit(client_usage=False), ChatShape(), stream)
    forwarded = await client_bytes(rounds)
    texts = []
    for line in forwarded.split(b"\n\n"):
        if line.startswith(b"data: {"):
            chunk = orjson.loads(line[6:])
            texts += [choice["delta"].get("content") or "" for choice in chunk["choices"]]
    words = [f'café "ok" {i}' for i in range(4)]
    assert "".join(texts) == words[0] + "call bmcp_tools_add yourself" + "".join(words[1:])
    assert b'"finish_reason":"stop"' in forwarded and forwarded.endswith(b"data: [DONE]\n\n")
    [recorded] = rounds.run.rounds
    assert not recorded.injected
    assert "bmcp_tools_add yourself" in recorded.answer["choices"][0]["message"]["content"]


CLIENT_TOOL = {"type": "function", "name": "read_file", "description": None, "parameters": None, "strict": True}
INJECTED_TOOL = CLIENT_TOOL | {"name": ADD, "description": "Add two numbers"}


def responses_round(output: list[dict[str, Any]]) -> list[bytes]:
    """A Responses stream as the API writes it: the opening events and the terminal one echo the tools
    (the injected one among them), then each output item's events, numbered from 0."""
    response = {"id": "resp_1", "object": "response", "model": "gpt-5", "tools": [CLIENT_TOOL, INJECTED_TOOL]}
    opening = response | {"status": "in_progress", "output": [], "usage": None}
    events: list[tuple[str, dict[str, Any]]] = [
        ("response.created", {"response": opening}),
        ("response.in_progress", {"response": opening}),
    ]
    for index, item in enumerate(output):
        events.append(("response.output_item.added", {"output_index": index, "item": item | {"status": "in_progress"}}))
        if item["type"] == "message":
            where = {"item_id": item["id"], "output_index": index, "content_index": 0}
            events += [("response.output_text.delta", where | {"delta": f'café "ok" {i} '}) for i in range(4)]
        events.append(("response.output_item.done", {"output_index": index, "item": item}))
    usage = {"input_tokens": 7, "output_tokens": 5, "total_tokens": 12}
    final = response | {"status": "completed", "output": output, "usage": usage}
    events.append(("response.completed", {"response": final}))
    return [named(kind, {"type": kind, "sequence_number": n} | payload) for n, (kind, payload) in enumerate(events)]


MESSAGE_ITEM = {
    "type": "message",
    "id": "msg_1",
    "role": "assistant",
    "content": [{"type": "output_text", "text": "".join(f'café "ok" {i} ' for i in range(4)), "annotations": []}],
}
CLIENT_CALL = {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "read_file", "arguments": "{}"}


def sse_payloads(stream: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(block.split(b"data: ", 1)[1]) for block in stream.split(b"\n\n") if block]


@pytest.mark.parametrize("cut", [False, True], ids=["decoded", "cut"])
@pytest.mark.parametrize("size", [7, 64, 100_000])
async def test_responses_round_without_injected_call_is_the_providers_bytes_less_the_injected_tools(
    decoded: list[bytes],
    echo_decoded: list[bytes | memoryview | str],
    size: int,
    cut: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The echo events cut (or, when the cut cannot account for the injected names, decoded)."""
    monkeypatch.setattr(echo, "_VERIFIED", {})  # no run of injected tools read before
    if not cut:
        monkeypatch.setattr(echo, "injected_span", lambda *args: None)
    stream = responses_round([MESSAGE_ITEM, CLIENT_CALL])
    rounds = rounds_over(ResponsesStreamEdit(), ResponsesShape(), split(b"".join(stream), size))
    forwarded = await rounds.read()
    echoing = {0, 1, len(stream) - 1}  # created, in_progress, completed: the tools taken out
    assert not decoded  # no event went through the editor
    responses = [raw.split(b',"response":', 1)[1][:-3] for raw in (stream[0], stream[-1])]
    assert echo_decoded == ([] if cut else responses)  # in_progress reuses created's edit
    RoundsTee(rounds, lambda raw: ResponseSummary()).close()  # the record's reading, after the answer is out
    assert b"bmcp_" not in forwarded
    sent = sse_payloads(forwarded)
    assert [event["sequence_number"] for event in sent] == list(range(len(stream)))
    for number, (event, raw) in enumerate(zip(sent, stream, strict=True)):
        if number in echoing:
            expected = orjson.loads(raw.split(b"data: ", 1)[1])
            expected["response"]["tools"] = [CLIENT_TOOL]
            assert event == expected
        else:
            assert raw in forwarded  # the provider's bytes, not re-encoded
    [recorded] = rounds.run.rounds
    assert not recorded.injected
    assert recorded.summary == plain_summary(ResponsesStream(), stream)
    assert recorded.summary is not None and recorded.summary.usage is not None
    assert recorded.summary.usage.output_tokens == 5
    assert [call.name for call in recorded.summary.tool_calls] == ["read_file"]


async def test_responses_injected_call_hands_the_round_to_the_editor() -> None:
    """The call's item shows after text was sent: the editor takes over knowing the events already sent,
    and the client gets exactly what the editor alone makes of the round (one stream, numbered on)."""
    injected = CLIENT_CALL | {"id": "fc_2", "call_id": "call_2", "name": ADD}
    stream = responses_round([MESSAGE_ITEM, injected])
    raw = b"".join(stream)
    cut = raw.index(b'"name":"' + ADD.encode()) + 10  # the call's name split across two chunks
    rounds = rounds_over(ResponsesStreamEdit(), ResponsesShape(), [*split(raw[:cut], 50), raw[cut:]])
    forwarded = await client_bytes(rounds)
    assert b"bmcp_" not in forwarded
    assert forwarded == edited(ResponsesStreamEdit(), stream)
    sent = sse_payloads(forwarded)
    assert [event["sequence_number"] for event in sent] == list(range(len(sent)))
    assert [event["type"] for event in sent].count("response.created") == 1
    assert sent[-1]["type"] == "response.completed" and sent[-1]["response"]["tools"] == [CLIENT_TOOL]
    [recorded] = rounds.run.rounds
    assert [call.name for call in recorded.injected] == [ADD]


async def test_a_last_event_without_its_blank_line_naming_an_injected_tool_goes_through_the_editor() -> None:
    """The upstream ends inside an event (no blank line after it) that names an injected tool: the editor
    takes the round over at the end and still delivers the text."""
    last = chat_content("call bmcp_tools_add yourself").rstrip(b"\n")
    stream = [*CHAT_STREAM[:2], last]
    rounds = rounds_over(ChatStreamEdit(client_usage=False), ChatShape(), stream)
    forwarded = await client_bytes(rounds)
    assert forwarded.startswith(b"".join(ChatStream.hidden_usage(chunk) for chunk in CHAT_STREAM[:2]))
    assert b"call bmcp_tools_add yourself" in forwarded
    [recorded] = rounds.run.rounds
    assert not recorded.injected
    assert recorded.answer["choices"][0]["message"]["content"].endswith("call bmcp_tools_add yourself")


async def test_responses_echo_written_otherwise_is_decoded_and_still_loses_the_injected_tools(
    echo_decoded: list[bytes | memoryview | str],
) -> None:
    """An echo event not written compactly (a space after each colon) cannot be cut: it is decoded, the
    injected tools taken out, and written again."""
    stream = responses_round([MESSAGE_ITEM])
    spaced = [
        raw.replace(b'"name":"', b'"name": "') if raw.startswith(b"event: response.created") else raw for raw in stream
    ]
    rounds = rounds_over(ResponsesStreamEdit(), ResponsesShape(), spaced)
    forwarded = await client_bytes(rounds)
    assert b"bmcp_" not in forwarded
    assert echo_decoded == [spaced[0].split(b',"response":', 1)[1][:-3]]  # created's response; completed cut
    sent = sse_payloads(forwarded)
    assert [event["response"]["tools"] for event in sent if "response" in event] == [[CLIENT_TOOL]] * 3


class ReadyChunks(Chunks):
    """A response whose first bytes came with its headers: ``ready`` hands them over, then the chunks."""

    def __init__(self, first: bytes, chunks: list[bytes]) -> None:
        super().__init__(chunks)
        self._first = first

    def ready(self) -> bytes:
        first, self._first = self._first, b""
        return first


async def relayed(rounds: InjectedRounds) -> tuple[bytes, bytes]:
    """As the proxy's relay reads it: ``ready`` right behind the headers, then the chunks; then the record."""
    relay = Relay(rounds, RoundsTee(rounds, lambda raw: ResponseSummary()), not_recorded, no_error, run_now)
    first = relay.ready()
    rest = b"".join([chunk async for chunk in relay.chunks()])
    await relay.finish()  # the tee's close: the rounds read for the record
    return first, rest


def not_recorded(*args: Any) -> None:
    return None


def no_error(exc: Exception) -> bytes:
    raise exc


def run_now(job: Any) -> None:
    job()


async def test_what_came_with_the_headers_goes_right_behind_them_as_without_injection() -> None:
    stream, _ = anthropic_round([], 6)
    run = McpRun(OneRound(), AnthropicShape(), {"stream": True}, [], user="u", headers={})  # type: ignore[arg-type]
    rounds = InjectedRounds(
        run, AnthropicStreamEdit(), ReadyChunks(b"".join(stream[:2]), stream[2:]), no_round, nullcontext
    )
    first, rest = await relayed(rounds)
    assert first == b"".join(stream[:2])
    assert first + rest == b"".join(stream)
    [recorded] = rounds.run.rounds
    assert recorded.summary == plain_summary(MessageStream(), stream)


async def test_an_injected_call_in_what_came_with_the_headers_goes_to_the_editor() -> None:
    stream = anthropic_with_injected_call()
    whole = b"".join(stream)
    run = McpRun(OneRound(), AnthropicShape(), {"stream": True}, [], user="u", headers={})  # type: ignore[arg-type]
    rounds = InjectedRounds(run, AnthropicStreamEdit(), ReadyChunks(whole, []), no_round, nullcontext)
    first, rest = await relayed(rounds)
    assert first == b""  # held: the editor takes the round over
    assert rest == edited(AnthropicStreamEdit(), stream)
    assert b"bmcp_" not in rest
    [recorded] = rounds.run.rounds
    assert [call.name for call in recorded.injected] == [ADD]


async def no_round(body: bytes) -> Any:
    raise AssertionError("no second round is due")
