"""The OpenAI Responses API (``POST /v1/responses``, what Codex speaks), parsed on the side: pure functions.

Request: ``input`` is a string or a list of items (messages with ``input_text`` parts, ``function_call``,
``function_call_output``, ``reasoning``, ...). The prompt is the string, or the text parts of the last item
when it is a user message; an agent loop's follow-up turn ends with a ``function_call_output`` item and
has no prompt.

Usage (``response.usage``) follows the convention of :mod:`aibridge.proxy.providers.records`: ``input_tokens`` of the
record excludes the cache, so input = input_tokens - cached_tokens - cache_write_tokens (both are a
breakdown of input_tokens), cache read = cached_tokens, cache write = cache_write_tokens. The other details
(reasoning tokens, cache-write TTLs) and the service tier go to metadata.

Streaming: each event is ``event: <type>`` and ``data: {"type": <type>, "sequence_number": n, ...}``, with no
``[DONE]``. The response id and model come with ``response.created``; usage with the terminal event
(``response.completed``, ``response.incomplete`` or ``response.failed``). Tool calls are output items of type
``function_call`` (and ``custom_tool_call``, Codex's ``apply_patch``), assembled from
``response.output_item.added``, the argument deltas and their ``.done`` events, and ``response.output_item.done``
(whose full item is authoritative). The stream is forwarded unchanged: it always carries its usage.

Reasoning: output items of type ``reasoning``. Their ``summary`` parts (``summary_text``; streamed as
``response.reasoning_summary_text.delta`` and ``.done``) are recorded as a summary; an item with only
``encrypted_content`` (asked for with ``include: ["reasoning.encrypted_content"]``, as Codex does) is
noted as encrypted; an item with neither (the summary was not asked for) is not recorded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import orjson

from aibridge.events import ReasoningKind, Turn
from aibridge.proxy.errors import InvalidRequestBody, ProxyError, openai_error
from aibridge.proxy.providers.openai import load_object
from aibridge.proxy.providers.records import (
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

ROUTE = "/v1/responses"
TOOL_ITEMS = frozenset({"function_call", "custom_tool_call"})
TERMINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})
_OPENING_EVENTS = frozenset({"response.created", "response.in_progress", "response.queued"})
_DELTA_EVENTS = frozenset({"response.function_call_arguments.delta", "response.custom_tool_call_input.delta"})
_CACHE_DETAILS = ("cached_tokens", "cache_write_tokens")
_SUMMARY_EVENTS = frozenset({"response.reasoning_summary_text.delta", "response.reasoning_summary_text.done"})


def parse_request(raw: bytes) -> ParsedRequest:
    body = load_object(raw)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequestBody("you must provide a model parameter")
    items = body.get("input")
    if items is not None and not isinstance(items, str | list):
        raise InvalidRequestBody("'input' must be a string or an array of input items")
    return ParsedRequest(body, model, body.get("stream") is True, last_user_prompt(items), turn_of(items))


def last_user_prompt(items: Any) -> str | None:
    """A string input, or the ``input_text`` parts of the last item when it is a user message."""
    if isinstance(items, str):
        return items
    if not isinstance(items, list) or not items or not isinstance(items[-1], dict):
        return None
    last = items[-1]
    if last.get("role") != "user" or last.get("type", "message") != "message":
        return None
    return message_text(last.get("content"), "input_text")


def turn_of(items: Any) -> Turn:
    """A string input or a last user message is a prompt; a last tool output item
    (``function_call_output``, ``custom_tool_call_output``, ...) returns a tool's result."""
    if isinstance(items, str):
        return Turn.PROMPT
    if not isinstance(items, list) or not items or not isinstance(items[-1], dict):
        return Turn.UNKNOWN
    kind = items[-1].get("type", "message")
    if isinstance(kind, str) and kind.endswith("_call_output"):
        return Turn.TOOL_RESULT
    return Turn.PROMPT if kind == "message" and items[-1].get("role") == "user" else Turn.UNKNOWN


def reasoning_of(item: dict[str, Any]) -> Reasoning | None:
    """A ``reasoning`` output item's summary, or the item noted as encrypted; None when it has neither."""
    parts = item.get("summary")
    texts = [
        part["text"]
        for part in (parts if isinstance(parts, list) else ())
        if isinstance(part, dict) and isinstance(part.get("text"), str) and part["text"]
    ]
    encrypted = bool(item.get("encrypted_content"))
    if texts:
        return Reasoning(ReasoningKind.SUMMARY, "\n\n".join(texts), {"encrypted_content": True} if encrypted else {})
    return Reasoning(ReasoningKind.ENCRYPTED) if encrypted else None


def usage_from(usage: dict[str, Any], service_tier: Any = None) -> Usage:
    input_details = mapping(usage.get("input_tokens_details"))
    cached = as_int(input_details.get("cached_tokens"))
    written = as_int(input_details.get("cache_write_tokens"))
    metadata: dict[str, Any] = {}
    extra_input = {k: recordable(v) for k, v in input_details.items() if k not in _CACHE_DETAILS and v}
    if extra_input:
        metadata["input_tokens_details"] = extra_input
    output_details = {k: recordable(v) for k, v in mapping(usage.get("output_tokens_details")).items() if v}
    if output_details:
        metadata["output_tokens_details"] = output_details
    if service_tier:
        metadata["service_tier"] = recordable(service_tier)
    return Usage(
        input_tokens=max(0, as_int(usage.get("input_tokens")) - cached - written),
        output_tokens=as_int(usage.get("output_tokens")),
        cache_read_input_tokens=cached,
        cache_write_input_tokens=written,
        metadata=metadata,
    )


def tool_call(item: dict[str, Any], arguments: str | None = None) -> ToolCall:
    """A ``function_call`` (arguments) or ``custom_tool_call`` (free-form input) output item."""
    kind = item.get("type")
    if arguments is None:
        arguments = str(item.get("arguments" if kind == "function_call" else "input") or "")
    metadata = {} if kind == "function_call" else {"item_type": kind}
    return ToolCall(str(item.get("call_id") or ""), str(item.get("name") or ""), arguments, metadata)


def summarize(response: dict[str, Any]) -> ResponseSummary:
    """What a response object says: id, model, usage, tool calls, error."""
    summary = ResponseSummary(response_id=str(response.get("id") or ""), model=str(response.get("model") or ""))
    if isinstance(response.get("usage"), dict):
        summary.usage = usage_from(response["usage"], response.get("service_tier"))
    summary.tool_calls = [tool_call(item) for _, item in _tool_items(response)]
    summary.reasoning = [found for _, item in _items(response, "reasoning") if (found := reasoning_of(item))]
    summary.error = _error_text(response.get("error"))
    return summary


def parse_response(raw: bytes) -> ResponseSummary:
    """A blocking response object."""
    body = upstream_object(raw)
    if isinstance(body, ResponseSummary):
        return body
    return summarize(body)


def prepare(request: ParsedRequest, raw: bytes) -> tuple[bytes, ResponsesStream]:
    """The request goes upstream byte for byte: a streamed response always ends with its usage."""
    return raw, ResponsesStream()


@dataclass(slots=True)
class _PendingCall:
    """A tool call being streamed; once its ``output_item.done`` arrived, ``item`` is complete."""

    item: dict[str, Any]
    deltas: list[str] = field(default_factory=list)
    arguments: str | None = None
    complete: bool = False

    def call(self) -> ToolCall:
        if self.complete:
            return tool_call(self.item)
        return tool_call(self.item, self.arguments if self.arguments is not None else "".join(self.deltas))


@dataclass(slots=True)
class _PendingReasoning:
    """A reasoning item being streamed: its summary parts' deltas by summary index; once its
    ``output_item.done`` arrived, ``item`` is complete."""

    parts: dict[int, list[str]] = field(default_factory=dict)
    item: dict[str, Any] | None = None

    def reasoning(self) -> Reasoning | None:
        if self.item is not None:
            return reasoning_of(self.item)
        texts = [{"text": "".join(self.parts[index])} for index in sorted(self.parts)]
        return reasoning_of({"summary": texts})


class ResponsesStream(ForwardingTee):
    """Tees a streamed response: ``feed`` returns the chunk unchanged; ``settle`` (after the send) parses it."""

    def __init__(self) -> None:
        super().__init__()
        self.summary = ResponseSummary()
        self._calls: dict[int, _PendingCall] = {}
        self._reasoning: dict[int, _PendingReasoning] = {}  # by output index
        self._last_sequence = -1
        self._terminated = False  # a terminal event seen: the provider finished the response

    def _complete(self) -> None:
        self.summary.tool_calls = [self._calls[index].call() for index in sorted(self._calls)]
        found = (self._reasoning[index].reasoning() for index in sorted(self._reasoning))
        self.summary.reasoning = [reasoning for reasoning in found if reasoning is not None]
        if not self._terminated and self.summary.error is None:
            self.summary.error = "the stream ended before its final event (response.completed, .incomplete or .failed)"

    def error_event(self, exc: ProxyError) -> bytes:
        """The ``error`` event that ends a stream the bridge could not finish.

        Fields flat as the API reference documents them, and nested under ``error`` as the API sends
        them at run time (the official SDK raises ``APIError`` on the nested form).
        """
        self.settle()  # numbered after every event forwarded so far
        error = cast("dict[str, Any]", openai_error(exc.status, str(exc))["error"])
        event = {
            "type": "error",
            "code": error["code"] or error["type"],
            "message": error["message"],
            "param": None,
            "sequence_number": self._last_sequence + 1,
            "error": error,
        }
        return b"event: error\ndata: " + orjson.dumps(event) + b"\n\n"

    def _observe(self, event: SSEEvent) -> None:
        if event.data is None:
            return
        try:
            payload = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            return
        if isinstance(payload, dict):
            if isinstance(payload.get("sequence_number"), int):
                self._last_sequence = max(self._last_sequence, payload["sequence_number"])
            self._take(str(payload.get("type") or event.event), payload)

    def _take(self, kind: str, payload: dict[str, Any]) -> None:
        if kind.startswith("response.output_item."):
            self._take_item(payload, done=kind.endswith(".done"))
        elif kind in _DELTA_EVENTS:
            self._pending(payload).deltas.append(str(payload.get("delta") or ""))
        elif kind == "response.function_call_arguments.done":
            self._pending(payload).arguments = str(payload.get("arguments") or "")
        elif kind == "response.custom_tool_call_input.done":
            self._pending(payload).arguments = str(payload.get("input") or "")
        elif kind in _SUMMARY_EVENTS:
            self._take_summary(payload, done=kind.endswith(".done"))
        elif kind in _OPENING_EVENTS or kind in TERMINAL_EVENTS:
            self._terminated = self._terminated or kind in TERMINAL_EVENTS
            self._take_response(mapping(payload.get("response")), terminal=kind in TERMINAL_EVENTS)
        elif kind == "error":
            nested = mapping(payload.get("error"))
            self.summary.error = _error_text(nested or payload) or "error in stream"

    def _take_item(self, payload: dict[str, Any], *, done: bool) -> None:
        item = mapping(payload.get("item"))
        index = as_int(payload.get("output_index"))
        if type_of(item) == "reasoning":
            pending_reasoning = self._reasoning.setdefault(index, _PendingReasoning())
            pending_reasoning.item = item if done else pending_reasoning.item
            return
        if type_of(item) not in TOOL_ITEMS:
            return
        if done:
            self._calls[index] = _PendingCall(item, complete=True)
        elif (pending := self._calls.get(index)) is not None:
            pending.item = item
        else:
            self._calls[index] = _PendingCall(item)

    def _take_summary(self, payload: dict[str, Any], *, done: bool) -> None:
        pending = self._reasoning.setdefault(as_int(payload.get("output_index")), _PendingReasoning())
        index = as_int(payload.get("summary_index"))
        if done:
            pending.parts[index] = [str(payload.get("text") or "")]
        elif isinstance(delta := payload.get("delta"), str):
            pending.parts.setdefault(index, []).append(delta)

    def _pending(self, payload: dict[str, Any]) -> _PendingCall:
        index = as_int(payload.get("output_index"))
        return self._calls.setdefault(index, _PendingCall({"type": "function_call", "id": payload.get("item_id")}))

    def _take_response(self, response: dict[str, Any], *, terminal: bool) -> None:
        if response.get("id"):
            self.summary.response_id = str(response["id"])
        if response.get("model"):
            self.summary.model = str(response["model"])
        if not terminal:
            return
        final = summarize(response)
        self.summary.usage = final.usage or self.summary.usage
        self.summary.error = final.error or self.summary.error
        for index, item in _tool_items(response):
            self._calls[index] = _PendingCall(item, complete=True)
        for index, item in _items(response, "reasoning"):
            self._reasoning[index] = _PendingReasoning(item=item)


def _items(response: dict[str, Any], kind: str) -> list[tuple[int, dict[str, Any]]]:
    """The output items of type ``kind`` with their output index."""
    output = response.get("output")
    if not isinstance(output, list):
        return []
    return [(i, item) for i, item in enumerate(output) if isinstance(item, dict) and type_of(item) == kind]


def _tool_items(response: dict[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    """The tool-call output items with their output index."""
    output = response.get("output")
    if not isinstance(output, list):
        return []
    return [(i, item) for i, item in enumerate(output) if isinstance(item, dict) and type_of(item) in TOOL_ITEMS]


def _error_text(error: Any) -> str | None:
    if not isinstance(error, dict) or not error:
        return None
    text = f"{error.get('code') or error.get('type') or 'error'}: {error.get('message') or ''}"
    return ProviderMessage(text, error.get("type"), error.get("code"))
