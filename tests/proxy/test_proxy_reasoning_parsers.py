"""Turns and reasoning from the parsers alone (sans-io): bodies and SSE bytes in, a summary out."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from aibridge.events import ReasoningKind, Turn
from aibridge.proxy.providers import anthropic, openai, responses
from aibridge.proxy.providers.records import Reasoning

TOOL_RESULT = {"type": "tool_result", "tool_use_id": "t1", "content": "ok"}
REMINDER = {"type": "text", "text": "<system-reminder>x</system-reminder>"}


@pytest.mark.parametrize(
    ("messages", "turn"),
    [
        ([{"role": "user", "content": "hi"}], Turn.PROMPT),
        ([{"role": "user", "content": [REMINDER, {"type": "text", "text": "fix it"}]}], Turn.PROMPT),
        ([{"role": "user", "content": [TOOL_RESULT]}], Turn.TOOL_RESULT),
        ([{"role": "user", "content": [TOOL_RESULT, REMINDER]}], Turn.TOOL_RESULT),
        ([{"role": "assistant", "content": "prefill"}], Turn.UNKNOWN),
        ([], Turn.UNKNOWN),
    ],
)
def test_anthropic_turn(messages: list[Any], turn: Turn) -> None:
    assert anthropic.turn_of(messages) is turn


@pytest.mark.parametrize(
    ("role", "turn"),
    [("user", Turn.PROMPT), ("tool", Turn.TOOL_RESULT), ("function", Turn.TOOL_RESULT), ("assistant", Turn.UNKNOWN)],
)
def test_chat_turn(role: str, turn: Turn) -> None:
    assert openai.turn_of([{"role": role, "content": "x"}]) is turn


@pytest.mark.parametrize(
    ("items", "turn"),
    [
        ("hi", Turn.PROMPT),
        ([{"role": "user", "content": [{"type": "input_text", "text": "hi"}]}], Turn.PROMPT),
        ([{"type": "message", "role": "user", "content": "hi"}], Turn.PROMPT),
        ([{"type": "function_call_output", "call_id": "c", "output": "ok"}], Turn.TOOL_RESULT),
        ([{"type": "custom_tool_call_output", "call_id": "c", "output": "ok"}], Turn.TOOL_RESULT),
        ([{"type": "message", "role": "developer", "content": "rules"}], Turn.UNKNOWN),
        ([{"type": "reasoning", "summary": []}], Turn.UNKNOWN),
    ],
)
def test_responses_turn(items: Any, turn: Turn) -> None:
    assert responses.turn_of(items) is turn


def test_compaction_has_no_turn() -> None:
    from aibridge.proxy.providers import compaction

    assert compaction.parse_request(b'{"model": "gpt-5", "input": "hi"}').turn is Turn.UNKNOWN


def sse(name: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def anthropic_delta(index: int, delta: dict[str, Any]) -> bytes:
    return sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})


def test_anthropic_stream_thinking_split_across_chunks_and_redacted() -> None:
    start = {"type": "message_start", "message": {"id": "msg_1", "model": "m", "usage": {"input_tokens": 1}}}
    thinking = {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}
    redacted = {"type": "content_block_start", "index": 1, "content_block": {"type": "redacted_thinking", "data": "E"}}
    text = {"type": "content_block_start", "index": 2, "content_block": {"type": "text", "text": ""}}
    body = b"".join(
        [
            sse("message_start", start),
            sse("content_block_start", thinking),
            anthropic_delta(0, {"type": "thinking_delta", "thinking": "Let me "}),
            anthropic_delta(0, {"type": "thinking_delta", "thinking": "think ✓"}),
            anthropic_delta(0, {"type": "signature_delta", "signature": "sig"}),
            sse("content_block_start", redacted),
            sse("content_block_start", text),
            anthropic_delta(2, {"type": "text_delta", "text": "not reasoning"}),
            sse("message_stop", {"type": "message_stop"}),
        ]
    )
    stream = anthropic.MessageStream()
    for cut in range(0, len(body), 7):  # a multi-byte character split across chunks too
        stream.feed(body[cut : cut + 7])
    stream.close()
    assert stream.summary.reasoning == [
        Reasoning(ReasoningKind.THINKING, "Let me think ✓"),
        Reasoning(ReasoningKind.REDACTED),
    ]


def test_responses_stream_summary_from_deltas_when_the_item_never_completes() -> None:
    where = {"item_id": "rs_1", "output_index": 0}
    body = b"".join(
        [
            sse("response.created", {"type": "response.created", "response": {"id": "resp_1"}}),
            sse("response.output_item.added", {"type": "response.output_item.added", "output_index": 0,
                                               "item": {"id": "rs_1", "type": "reasoning", "summary": []}}),
            sse("d", {"type": "response.reasoning_summary_text.delta", **where, "summary_index": 0, "delta": "Plan"}),
            sse("d", {"type": "response.reasoning_summary_text.delta", **where, "summary_index": 0, "delta": "ning"}),
            sse("d", {"type": "response.reasoning_summary_text.done", **where, "summary_index": 1, "text": "Check"}),
        ]
    )  # fmt: skip
    stream = responses.ResponsesStream()
    stream.feed(body)
    stream.close()
    assert stream.summary.reasoning == [Reasoning(ReasoningKind.SUMMARY, "Planning\n\nCheck")]


def test_responses_reasoning_items() -> None:
    assert responses.reasoning_of({"type": "reasoning", "summary": []}) is None
    assert responses.reasoning_of({"type": "reasoning", "summary": [], "encrypted_content": "gA"}) == Reasoning(
        ReasoningKind.ENCRYPTED
    )
    both = {"type": "reasoning", "summary": [{"type": "summary_text", "text": "S"}], "encrypted_content": "gA"}
    assert responses.reasoning_of(both) == Reasoning(ReasoningKind.SUMMARY, "S", {"encrypted_content": True})


def test_chat_stream_reasoning_content_and_null_deltas() -> None:
    def chunk(delta: dict[str, Any]) -> bytes:
        payload = {"id": "c1", "model": "deepseek-reasoner", "choices": [{"index": 0, "delta": delta}]}
        return b"data: " + orjson.dumps(payload) + b"\n\n"

    body = b"".join(
        [
            chunk({"role": "assistant", "content": None, "reasoning_content": ""}),
            chunk({"content": None, "reasoning_content": "Think"}),
            chunk({"content": None, "reasoning_content": "ing"}),
            chunk({"content": "Answer", "reasoning_content": None}),
            b"data: [DONE]\n\n",
        ]
    )
    stream = openai.ChatStream(hide_usage=False)
    stream.feed(body)
    stream.close()
    assert stream.summary.reasoning == [Reasoning(ReasoningKind.REASONING_CONTENT, "Thinking")]


def test_chat_blocking_reasoning_content() -> None:
    answer = {"id": "c1", "choices": [{"index": 0, "message": {"content": "A", "reasoning_content": "R"}}]}
    assert openai.parse_response(orjson.dumps(answer)).reasoning == [Reasoning(ReasoningKind.REASONING_CONTENT, "R")]
