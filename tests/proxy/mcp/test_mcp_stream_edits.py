"""The stream editor's fast path: in a round where nothing was withheld, content events go to the client as
the provider's bytes, undecoded, and their text still makes the round's answer; once a block or item was
withheld (a later round renumbers), the same events are rewritten."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from aibridge.proxy.mcp import stream_edits
from aibridge.proxy.mcp.stream_edits import AnthropicStreamEdit, ChatStreamEdit, ResponsesStreamEdit, StreamEdit
from aibridge.proxy.mcp.streamed import RoundReader
from aibridge.proxy.providers.sse import SSEEvent

CAFE = 'caf\\u00e9 \\"ok\\" '  # escaped in the provider's bytes: a re-encoded event would differ


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The raw bytes of every event the editor decoded."""
    seen: list[bytes] = []
    payload = stream_edits._payload

    def counted(event: SSEEvent) -> Any:
        seen.append(event.raw)
        return payload(event)

    monkeypatch.setattr(stream_edits, "_payload", counted)
    return seen


def named(name: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def anthropic_delta(index: int, text: str) -> bytes:
    data = f'{{"type":"content_block_delta","index":{index},"delta":{{"type":"text_delta","text":"{text}"}}}}'
    return b"event: content_block_delta\ndata: " + data.encode() + b"\n\n"


def anthropic_round(blocks: list[dict[str, Any]], words: int) -> tuple[list[bytes], list[bytes]]:
    """A round's events and, of them, the text deltas of its last block."""
    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": "m", "content": [], "usage": {}}
    head = [named("message_start", {"type": "message_start", "message": message})]
    for index, block in enumerate(blocks):
        head.append(
            named("content_block_start", {"type": "content_block_start", "index": index, "content_block": block})
        )
        head.append(named("content_block_stop", {"type": "content_block_stop", "index": index}))
    last = len(blocks)
    start = named(
        "content_block_start",
        {"type": "content_block_start", "index": last, "content_block": {"type": "text", "text": ""}},
    )
    deltas = [anthropic_delta(last, f"{CAFE}{i}") for i in range(words)]
    stop = named("content_block_stop", {"type": "content_block_stop", "index": last})
    tail = [
        named(
            "message_delta",
            {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 3}},
        ),
        named("message_stop", {"type": "message_stop"}),
    ]
    return [*head, start, *deltas, stop, *tail], deltas


def run_round(edit: StreamEdit, raw: list[bytes]) -> dict[bytes, bytes]:
    """What the client gets for each event, read as the proxy reads a round."""
    edit.begin_round()
    reader = RoundReader(edit)
    out = {event: reader.feed(event) for event in raw}
    assert reader.close() == b""
    return out


def test_anthropic_text_deltas_pass_undecoded_in_round_one(decoded: list[bytes]) -> None:
    edit = AnthropicStreamEdit()
    stream, deltas = anthropic_round([], 5)
    out = run_round(edit, stream)
    assert [out[delta] for delta in deltas] == deltas
    assert not set(deltas) & set(decoded)
    answer = edit.answer()
    assert answer is not None
    assert answer["content"] == [{"type": "text", "text": "".join(f'café "ok" {i}' for i in range(5))}]


def test_anthropic_text_deltas_renumbered_after_a_withheld_block(decoded: list[bytes]) -> None:
    edit = AnthropicStreamEdit()
    injected = {"type": "tool_use", "id": "toolu_1", "name": "bmcp_tools_add", "input": {}}
    stream, deltas = anthropic_round([injected], 2)  # the text block is index 1 upstream, 0 for the client
    out = run_round(edit, stream)
    for delta in deltas:
        assert orjson.loads(out[delta].split(b"data: ")[1])["index"] == 0
    assert set(deltas) <= set(decoded)


def chat_chunk(choice: str, usage: str = ',"usage":null') -> bytes:
    head = '{"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m"'  # spaced: not orjson's
    return b"data: " + (head + ',"choices":[' + choice + "]" + usage + "}").encode() + b"\n\n"


def chat_content(text: str) -> bytes:
    return chat_chunk(f'{{"index":0,"delta":{{"content":"{text}"}},"logprobs":null,"finish_reason":null}}')


CHAT_STREAM = [
    chat_chunk('{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}'),
    *[chat_content(f"{CAFE}{i}") for i in range(4)],
    chat_chunk('{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}'),
    chat_chunk("", ',"usage":{"prompt_tokens":5,"completion_tokens":4,"total_tokens":9}'),
    b"data: [DONE]\n\n",
]


@pytest.mark.parametrize("client_usage", [True, False])
def test_chat_content_chunks_pass_undecoded(decoded: list[bytes], client_usage: bool) -> None:
    edit = ChatStreamEdit(client_usage=client_usage)
    out = run_round(edit, CHAT_STREAM)
    content = CHAT_STREAM[1:5]
    expected = content if client_usage else [chunk.replace(b',"usage":null', b"") for chunk in content]
    assert [out[chunk] for chunk in content] == expected
    assert not set(content) & set(decoded)
    answer = edit.answer()
    assert answer is not None
    assert answer["choices"][0]["message"]["content"] == "".join(f'café "ok" {i}' for i in range(4))
    assert answer["usage"] == {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}
    assert out[CHAT_STREAM[5]] == b""  # the finish still waits for the last round


def test_chat_chunk_with_a_call_is_edited(decoded: list[bytes]) -> None:
    edit = ChatStreamEdit(client_usage=False)
    call = '{"index":0,"id":"c1","type":"function","function":{"name":"bmcp_tools_add","arguments":""}}'
    with_call = chat_chunk(f'{{"index":0,"delta":{{"content":"x","tool_calls":[{call}]}},"finish_reason":null}}')
    out = run_round(edit, [CHAT_STREAM[0], with_call])
    assert with_call in decoded
    assert orjson.loads(out[with_call][len(b"data: ") :])["choices"][0]["delta"] == {"content": "x"}


def responses_event(name: str, number: int, payload: str) -> bytes:
    data = f'{{"type":"{name}","sequence_number":{number},{payload}}}'
    return b"event: " + name.encode() + b"\ndata: " + data.encode() + b"\n\n"


def responses_round(items: list[str], first: int) -> tuple[list[bytes], list[bytes]]:
    """Items added at output indexes 0.., then text deltas of the last, numbered from ``first``."""
    raw, number = [], first
    for index, item in enumerate(items):
        raw.append(responses_event("response.output_item.added", number, f'"output_index":{index},"item":{item}'))
        number += 1
    last = len(items) - 1
    deltas = []
    for i in range(3):
        where = f'"item_id":"msg_1","output_index":{last},"content_index":0,"delta":"{CAFE}{i}","logprobs":[]'
        deltas.append(responses_event("response.output_text.delta", number, where))
        number += 1
    return raw + deltas, deltas


MESSAGE = '{"type":"message","id":"msg_1","role":"assistant","content":[]}'


def test_responses_text_deltas_pass_undecoded_in_round_one(decoded: list[bytes]) -> None:
    edit = ResponsesStreamEdit()
    stream, deltas = responses_round([MESSAGE], 0)
    out = run_round(edit, stream)
    assert [out[delta] for delta in deltas] == deltas
    assert not set(deltas) & set(decoded)
    closing = responses_event("response.output_text.done", 4, '"output_index":0,"text":"t"')
    assert orjson.loads(run_round(edit, [closing])[closing].split(b"data: ")[1])["sequence_number"] == 4


def test_responses_deltas_renumbered_after_a_withheld_item(decoded: list[bytes]) -> None:
    edit = ResponsesStreamEdit()
    call = '{"type":"function_call","id":"fc_1","call_id":"c1","name":"bmcp_tools_add","arguments":""}'
    stream, deltas = responses_round([call, MESSAGE], 0)  # the message is output 1 upstream, 0 for the client
    out = run_round(edit, stream)
    sent = [orjson.loads(out[delta].split(b"data: ")[1]) for delta in deltas]
    assert [(event["output_index"], event["sequence_number"]) for event in sent] == [(0, 1), (0, 2), (0, 3)]
    assert sent[0]["delta"] == 'café "ok" 0'
    assert set(deltas) <= set(decoded)


@pytest.mark.parametrize("size", [1, 7, 64, 100_000])
def test_a_round_read_in_any_chunks_gives_the_same_bytes(size: int) -> None:
    whole = ChatStreamEdit(client_usage=False)
    expected = b"".join(run_round(whole, [*CHAT_STREAM, b"\n\n"]).values())
    edit = ChatStreamEdit(client_usage=False)
    reader = RoundReader(edit)
    stream = b"".join([*CHAT_STREAM, b"\n\n"])
    got = b"".join([reader.feed(stream[i : i + size]) for i in range(0, len(stream), size)]) + reader.close()
    assert got == expected
    assert edit.answer() == whole.answer()


def test_cr_line_ends_are_read_by_the_decoder() -> None:
    edit = ChatStreamEdit(client_usage=False)
    reader = RoundReader(edit)
    stream = b"".join(CHAT_STREAM).replace(b"\n", b"\r\n")
    got = reader.feed(stream) + reader.close()
    sent = [orjson.loads(line[len(b"data: ") :]) for line in got.split(b"\n\n") if line.startswith(b"data: {")]
    assert [chunk["choices"][0]["delta"].get("content") for chunk in sent] == [
        "",
        *[f'café "ok" {i}' for i in range(4)],
    ]
    answer = edit.answer()
    assert answer is not None
    assert answer["choices"][0]["message"]["content"] == "".join(f'café "ok" {i}' for i in range(4))
