"""Anthropic messages, parsed on the side: pure functions over bytes and dicts.

Streaming usage is cumulative: ``message_start`` carries the first counts and every ``message_delta``
carries the totals so far, so later values replace earlier ones and nothing is added up.

Reasoning: ``thinking`` content blocks (their text; streamed as ``thinking_delta`` events, whose
``signature_delta`` is not kept) and ``redacted_thinking`` blocks (encrypted by the provider: noted,
no text). A stream's text deltas are still skipped undecoded; only once a thinking block has started
are deltas searched for ``"thinking_delta"``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from aibridge.events import ReasoningKind, Turn
from aibridge.proxy.providers.openai import load_object, require_model_and_messages
from aibridge.proxy.providers.records import (
    UNRECORDABLE,
    ParsedRequest,
    Reasoning,
    ResponseSummary,
    ToolCall,
    Usage,
    as_int,
    mapping,
    message_text,
    recordable,
    type_of,
    upstream_object,
)
from aibridge.proxy.providers.sse import ForwardingTee, SSEEvent
from aibridge.redaction import ProviderMessage

TOOL_BLOCKS = frozenset({"tool_use", "server_tool_use", "mcp_tool_use"})
_EXTRAS = ("cache_creation", "service_tier", "server_tool_use", "output_tokens_details", "inference_geo", "speed")


def parse_request(raw: bytes) -> ParsedRequest:
    body = load_object(raw)
    model = require_model_and_messages(body)
    messages = body["messages"]
    return ParsedRequest(body, model, body.get("stream") is True, last_user_prompt(messages), turn_of(messages))


def last_user_prompt(messages: list[Any]) -> str | None:
    """The text parts of the last message when its role is user, joined by newlines.

    Claude Code sends ``<system-reminder>`` parts first and the person's prompt last. A message of
    only ``tool_result`` parts is the client returning a tool's output, not a prompt.
    """
    if not messages or not isinstance(messages[-1], dict) or messages[-1].get("role") != "user":
        return None
    return message_text(messages[-1].get("content"), "text")


def turn_of(messages: list[Any]) -> Turn:
    """A last user message holding ``tool_result`` parts returns tools' output (Claude Code may add
    ``<system-reminder>`` text parts to it); any other user message is a person's prompt."""
    if not messages or not isinstance(messages[-1], dict) or messages[-1].get("role") != "user":
        return Turn.UNKNOWN
    content = messages[-1].get("content")
    if isinstance(content, list) and any(isinstance(part, dict) and type_of(part) == "tool_result" for part in content):
        return Turn.TOOL_RESULT
    return Turn.PROMPT


def reasoning_of(block: dict[str, Any]) -> Reasoning | None:
    """A ``thinking`` block's text, or a ``redacted_thinking`` block noted; None for other blocks."""
    kind = type_of(block)
    if kind == "thinking":
        return Reasoning(ReasoningKind.THINKING, str(block.get("thinking") or ""))
    if kind == "redacted_thinking":
        return Reasoning(ReasoningKind.REDACTED)
    return None


def usage_from(usage: dict[str, Any]) -> Usage:
    return Usage(
        input_tokens=as_int(usage.get("input_tokens")),
        output_tokens=as_int(usage.get("output_tokens")),
        cache_read_input_tokens=as_int(usage.get("cache_read_input_tokens")),
        cache_write_input_tokens=as_int(usage.get("cache_creation_input_tokens")),
        metadata={key: recordable(usage[key]) for key in _EXTRAS if usage.get(key) is not None},
    )


def _tool_call(block: dict[str, Any], arguments: str | None = None) -> ToolCall:
    kind = str(block.get("type"))
    if arguments is None:
        try:
            arguments = orjson.dumps(block.get("input") or {}).decode()
        except orjson.JSONEncodeError:  # nested past what orjson writes, or an integer beyond 64 bits
            arguments = UNRECORDABLE
    metadata = {} if kind == "tool_use" else {"block_type": kind}
    return ToolCall(str(block.get("id") or ""), str(block.get("name") or ""), arguments, metadata)


def parse_response(raw: bytes) -> ResponseSummary:
    """A blocking message."""
    body = upstream_object(raw)
    if isinstance(body, ResponseSummary):
        return body
    summary = ResponseSummary(response_id=str(body.get("id") or ""), model=str(body.get("model") or ""))
    if isinstance(body.get("usage"), dict):
        summary.usage = usage_from(body["usage"])
    content = body.get("content")
    for block in content if isinstance(content, list) else ():
        if not isinstance(block, dict):
            continue
        if type_of(block) in TOOL_BLOCKS:
            summary.tool_calls.append(_tool_call(block))
        elif (reasoning := reasoning_of(block)) is not None:
            summary.reasoning.append(reasoning)
    return summary


@dataclass(slots=True)
class _PendingBlock:
    block: dict[str, Any]
    partial_json: list[str] = field(default_factory=list)


_NOTHING_RECORDED = frozenset({"ping", "content_block_stop", "message_stop"})


class MessageStream(ForwardingTee):
    """Tees a streamed message: ``feed`` returns the chunk unchanged; ``settle`` (after the send) parses it."""

    def __init__(self) -> None:
        super().__init__()
        self.summary = ResponseSummary()
        self._usage: dict[str, Any] = {}
        self._blocks: dict[int, _PendingBlock] = {}
        self._thinking: dict[int, Reasoning | list[str]] = {}  # by index: a block noted, or thinking text
        self._stopped = False  # ``message_stop`` seen: the provider finished the message

    def _complete(self) -> None:
        if self._usage:
            self.summary.usage = usage_from(self._usage)
        self.summary.tool_calls = [
            _tool_call(pending.block, "".join(pending.partial_json) if pending.partial_json else None)
            for pending in self._blocks.values()
        ]
        self.summary.reasoning = [
            found if isinstance(found, Reasoning) else Reasoning(ReasoningKind.THINKING, "".join(found))
            for _, found in sorted(self._thinking.items())
        ]
        if not self._stopped and self.summary.error is None:
            self.summary.error = "the stream ended before its final event (message_stop)"

    def _observe(self, event: SSEEvent) -> None:
        if event.event == "message_stop":
            self._stopped = True
        if event.data is None or event.event in _NOTHING_RECORDED:
            return
        if (
            event.event == "content_block_delta"
            and b'"input_json_delta"' not in event.raw
            and not (self._thinking and b'"thinking_delta"' in event.raw)
        ):
            return  # text or a signature: nothing in it is recorded (most events of a stream)
        try:
            payload = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            return
        if isinstance(payload, dict):
            self._take(payload)

    def _take(self, payload: dict[str, Any]) -> None:
        kind = payload.get("type")
        if kind == "content_block_delta":
            delta = mapping(payload.get("delta"))
            pending = self._blocks.get(as_int(payload.get("index")))
            if pending is not None and delta.get("type") == "input_json_delta":
                pending.partial_json.append(str(delta.get("partial_json") or ""))
            elif delta.get("type") == "thinking_delta":
                self._take_thinking(as_int(payload.get("index")), delta.get("thinking"))
        elif kind == "content_block_start":
            self._take_block(as_int(payload.get("index")), mapping(payload.get("content_block")))
        elif kind == "message_start":
            message = mapping(payload.get("message"))
            self.summary.response_id = str(message.get("id") or "")
            self.summary.model = str(message.get("model") or "")
            self._merge_usage(message.get("usage"))
        elif kind == "message_delta":
            self._merge_usage(payload.get("usage"))
        elif kind == "error":
            error = mapping(payload.get("error"))
            text = f"{error.get('type', 'error')}: {error.get('message', '')}"
            self.summary.error = ProviderMessage(text, error.get("type"))

    def _take_block(self, index: int, block: dict[str, Any]) -> None:
        if type_of(block) in TOOL_BLOCKS:
            self._blocks[index] = _PendingBlock(block)
        elif (reasoning := reasoning_of(block)) is not None:
            self._thinking[index] = reasoning if reasoning.kind is ReasoningKind.REDACTED else [reasoning.text]

    def _take_thinking(self, index: int, text: Any) -> None:
        found = self._thinking.get(index)
        if isinstance(found, list) and isinstance(text, str):
            found.append(text)

    def _merge_usage(self, usage: Any) -> None:
        if isinstance(usage, dict):
            self._usage.update({key: value for key, value in usage.items() if value is not None})
