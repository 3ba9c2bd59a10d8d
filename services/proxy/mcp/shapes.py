"""The three intercepted APIs as the injection loop sees them: pure functions over request and answer dicts.

Per API (:class:`Shape`): add the injected tool definitions to a request, find the tool calls in an answer,
build the next round's request (the model's turn and the results of the injected calls, in that API's
shape), and merge the rounds into the one answer the client gets (the injected calls taken out, usage
summed). Anthropic: ``tool_use`` blocks answered by ``tool_result`` blocks in a user message. Chat
completions: ``tool_calls`` answered by ``role: tool`` messages. Responses: ``function_call`` items
answered by ``function_call_output`` items; the round's output items are replayed in ``input`` (never
``previous_response_id``, so ``store: false`` works as well).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from aibridge.proxy.mcp.echo import injected_span, without_injected_tools
from aibridge.proxy.mcp.registry import PREFIX, JsonObject, ToolFormat

_CLOSE_BRACE = ord("}")


@dataclass(frozen=True, slots=True)
class ModelCall:
    """One tool call of a model turn; ``arguments`` as the model wrote them (JSON text)."""

    call_id: str
    name: str
    arguments: str

    @property
    def injected(self) -> bool:
        return self.name.startswith(PREFIX)


@dataclass(frozen=True, slots=True)
class ToolOutput:
    """The result of an injected call, as the model gets it."""

    call_id: str
    content: str
    is_error: bool


class Shape(Protocol):
    tool_format: ToolFormat

    def accepts(self, body: JsonObject) -> bool:
        """Whether injection applies (the client's ``tool_choice`` may forbid tools)."""

    def inject(self, body: JsonObject, tools: list[JsonObject]) -> JsonObject: ...

    def calls(self, answer: JsonObject) -> list[ModelCall]: ...

    def follow_up(self, body: JsonObject, answer: JsonObject, outputs: Sequence[ToolOutput]) -> JsonObject: ...

    def merge(self, answers: Sequence[JsonObject]) -> JsonObject:
        """The client's answer: the last round's, with the earlier rounds' visible content before its own,
        every injected call (and on the Responses API every echoed injected tool) taken out and the usage
        summed over the rounds."""

    def shown(self, raw: bytes, injected: int) -> bytes | None:
        """A blocking answer ``raw`` that holds ``injected`` times ``bmcp_``, as the client gets it when it
        provably calls no injected tool, found without decoding it (a Responses answer's echoed ``tools``
        without the injected ones, cut from the bytes); None: the loop decodes and reads it."""

    def unechoed(self, raw: bytes, answer: JsonObject) -> bytes:
        """The decoded answer ``answer`` (of bytes ``raw``) of a round that called no injected tool, as the
        client gets it: ``raw``, or on the Responses API without the injected tools it echoes."""


def add_usage(total: Any, more: Any) -> Any:
    """Counts added up (nested objects too); anything else takes the latest value."""
    if isinstance(total, dict) and isinstance(more, dict):
        return {key: add_usage(total.get(key), more.get(key)) for key in {**total, **more}}
    if isinstance(total, int) and isinstance(more, int) and not isinstance(total, bool):
        return total + more
    return more if more is not None else total


def summed_usage(answers: Sequence[JsonObject]) -> Any:
    usage: Any = None
    for answer in answers:
        usage = add_usage(usage, answer.get("usage"))
    return usage


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _objects(value: Any) -> list[JsonObject]:
    return [item for item in _list(value) if isinstance(item, dict)]


def _chosen_none(body: JsonObject) -> bool:
    """Whether the client's ``tool_choice`` forbids tools (callers look for the key first: most have none)."""
    choice = body.get("tool_choice")
    return choice == "none" or (isinstance(choice, dict) and choice.get("type") == "none")


def _with_tools(body: JsonObject, tools: list[JsonObject]) -> JsonObject:
    return body | {"tools": _list(body.get("tools")) + tools}


class AnthropicShape:
    tool_format = ToolFormat.ANTHROPIC

    def accepts(self, body: JsonObject) -> bool:
        return "tool_choice" not in body or not _chosen_none(body)

    def inject(self, body: JsonObject, tools: list[JsonObject]) -> JsonObject:
        return _with_tools(body, tools)

    def calls(self, answer: JsonObject) -> list[ModelCall]:
        return [
            ModelCall(str(block.get("id") or ""), str(block.get("name") or ""), _json_text(block.get("input")))
            for block in _objects(answer.get("content"))
            if block.get("type") == "tool_use"
        ]

    def follow_up(self, body: JsonObject, answer: JsonObject, outputs: Sequence[ToolOutput]) -> JsonObject:
        results = [
            {"type": "tool_result", "tool_use_id": out.call_id, "content": out.content, "is_error": out.is_error}
            for out in outputs
        ]
        turn = [{"role": "assistant", "content": _list(answer.get("content"))}, {"role": "user", "content": results}]
        return body | {"messages": _list(body.get("messages")) + turn}

    def merge(self, answers: Sequence[JsonObject]) -> JsonObject:
        content = [block for answer in answers for block in _objects(answer.get("content")) if not _injected(block)]
        merged = answers[-1] | {"content": content, "usage": summed_usage(answers)}
        if merged.get("stop_reason") == "tool_use" and not any(b.get("type") == "tool_use" for b in content):
            merged["stop_reason"] = "end_turn"
        return merged

    def shown(self, raw: bytes, injected: int) -> bytes | None:
        return None

    def unechoed(self, raw: bytes, answer: JsonObject) -> bytes:
        return raw


def _injected(block: JsonObject) -> bool:
    return block.get("type") in {"tool_use", "function_call"} and str(block.get("name") or "").startswith(PREFIX)


class ChatShape:
    tool_format = ToolFormat.OPENAI_CHAT

    def accepts(self, body: JsonObject) -> bool:
        n = body.get("n")
        chosen_none = "tool_choice" in body and _chosen_none(body)
        return not chosen_none and (n is None or n == 1) and "functions" not in body

    def inject(self, body: JsonObject, tools: list[JsonObject]) -> JsonObject:
        return _with_tools(body, tools)

    def calls(self, answer: JsonObject) -> list[ModelCall]:
        return [_chat_call(call) for call in _objects(_message(answer).get("tool_calls"))]

    def follow_up(self, body: JsonObject, answer: JsonObject, outputs: Sequence[ToolOutput]) -> JsonObject:
        message = _message(answer)
        turn: list[JsonObject] = [
            {"role": "assistant", "content": message.get("content"), "tool_calls": _objects(message.get("tool_calls"))}
        ]
        turn += [{"role": "tool", "tool_call_id": out.call_id, "content": out.content} for out in outputs]
        return body | {"messages": _list(body.get("messages")) + turn}

    def merge(self, answers: Sequence[JsonObject]) -> JsonObject:
        texts = [text for answer in answers if isinstance(text := _message(answer).get("content"), str)]
        last = answers[-1]
        choices = _objects(last.get("choices"))
        if not choices:
            return last | {"usage": summed_usage(answers)}
        choice = dict(choices[0])
        message = dict(_message(last))
        message["content"] = "".join(texts) if texts else None
        kept = [call for call in _objects(message.get("tool_calls")) if not _chat_call(call).injected]
        if kept:
            message["tool_calls"] = kept
        else:
            message.pop("tool_calls", None)
            if choice.get("finish_reason") == "tool_calls":
                choice["finish_reason"] = "stop"
        choice["message"] = message
        return last | {"choices": [choice, *choices[1:]], "usage": summed_usage(answers)}

    def shown(self, raw: bytes, injected: int) -> bytes | None:
        return None

    def unechoed(self, raw: bytes, answer: JsonObject) -> bytes:
        return raw


def _message(answer: JsonObject) -> JsonObject:
    choices = _objects(answer.get("choices"))
    message = choices[0].get("message") if choices else None
    return message if isinstance(message, dict) else {}


def _chat_call(call: JsonObject) -> ModelCall:
    function = call.get("function")
    function = function if isinstance(function, dict) else {}
    return ModelCall(str(call.get("id") or ""), str(function.get("name") or ""), str(function.get("arguments") or ""))


class ResponsesShape:
    tool_format = ToolFormat.OPENAI_RESPONSES

    def accepts(self, body: JsonObject) -> bool:
        return "tool_choice" not in body or not _chosen_none(body)

    def inject(self, body: JsonObject, tools: list[JsonObject]) -> JsonObject:
        return _with_tools(body, tools)

    def calls(self, answer: JsonObject) -> list[ModelCall]:
        return [
            ModelCall(str(item.get("call_id") or ""), str(item.get("name") or ""), str(item.get("arguments") or ""))
            for item in _objects(answer.get("output"))
            if item.get("type") == "function_call"
        ]

    def follow_up(self, body: JsonObject, answer: JsonObject, outputs: Sequence[ToolOutput]) -> JsonObject:
        items = body.get("input")
        earlier = [{"role": "user", "content": items}] if isinstance(items, str) else _list(items)
        results = [{"type": "function_call_output", "call_id": out.call_id, "output": out.content} for out in outputs]
        return body | {"input": earlier + _objects(answer.get("output")) + results}

    def merge(self, answers: Sequence[JsonObject]) -> JsonObject:
        output = [item for answer in answers for item in _objects(answer.get("output")) if not _injected(item)]
        return without_injected_tools(answers[-1] | {"output": output, "usage": summed_usage(answers)})

    def shown(self, raw: bytes, injected: int) -> bytes | None:
        """Cut as a stream's echo events are (:func:`.echo.injected_span`), when the answer is written
        compactly and the injected tools, the last of an array, hold every ``bmcp_`` in it."""
        end = len(raw.rstrip(b" \t\r\n")) - 1
        if end < 1 or raw[end] != _CLOSE_BRACE:
            return None
        span = injected_span(raw, injected, 0, end)
        if span is None:
            return None
        view = memoryview(raw)
        return b"".join([view[: span[0]], view[span[1] :]])

    def unechoed(self, raw: bytes, answer: JsonObject) -> bytes:
        kept = without_injected_tools(answer)
        return raw if kept is answer else orjson.dumps(kept)


def _json_text(value: Any) -> str:
    try:
        return orjson.dumps(value if value is not None else {}).decode()
    except orjson.JSONEncodeError:
        return ""


# one of each (a shape holds no state): a request takes its API's, none is made per request
SHAPES: dict[ToolFormat, Shape] = {
    ToolFormat.ANTHROPIC: AnthropicShape(),
    ToolFormat.OPENAI_CHAT: ChatShape(),
    ToolFormat.OPENAI_RESPONSES: ResponsesShape(),
}
