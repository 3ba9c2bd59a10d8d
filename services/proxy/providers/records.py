"""What the parsers extract from one request and one upstream response, provider-neutral.

Token convention (both providers): ``input_tokens`` excludes cached tokens, so the whole prompt is
``input_tokens + cache_read_input_tokens + cache_write_input_tokens``. OpenAI: input = prompt_tokens -
cached_tokens, cache_read = cached_tokens, cache_write = 0. Anthropic: the fields of the same names,
cache_write = cache_creation_input_tokens. Anything else the provider reports goes to ``metadata``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson

from aibridge.events import ReasoningKind, Turn


class Provider(StrEnum):
    OPENAI = "openai"
    ANTHROPIC = "anthropic"


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    """A request body that is a JSON object naming a model (and messages)."""

    body: dict[str, Any]
    model: str
    stream: bool
    prompt: str | None
    turn: Turn = Turn.UNKNOWN  # what the last message is: a human prompt, tool results, or not known


@dataclass(slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_write_input_tokens: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ToolCall:
    call_id: str
    name: str
    arguments: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Reasoning:
    """The model's reasoning in one response: a thinking block, a reasoning item's summary, a choice's
    ``reasoning_content``; ``text`` is empty for the kinds the provider sent unreadable (redacted, encrypted)."""

    kind: ReasoningKind
    text: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class ResponseSummary:
    """What one upstream response (blocking or streamed) said about usage, tool calls and reasoning."""

    response_id: str = ""
    model: str = ""
    usage: Usage | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    error: str | None = None
    reasoning: list[Reasoning] = field(default_factory=list)


MAX_COUNT = 2**63 - 1
"""The largest count an event carries (a signed 64-bit integer, what the schema and the store allow)."""

UNRECORDABLE = "[not recorded: nested too deeply or a number out of range]"


def as_int(value: Any) -> int:
    """A token count from JSON: an int in ``[0, MAX_COUNT]``, anything else is 0."""
    if type(value) is int and 0 <= value <= MAX_COUNT:  # the common case, first
        return value
    if isinstance(value, bool) or not isinstance(value, _NUMBERS):
        return 0
    return min(MAX_COUNT, max(0, int(value)))


_NUMBERS = (int, float)


def mapping(value: Any) -> dict[str, Any]:
    """``value`` when it is a JSON object, else an empty one (a provider's field of the wrong type)."""
    return value if isinstance(value, dict) else {}


def type_of(value: dict[str, Any]) -> str:
    """An object's ``type`` when it is a string, else "" (so it can be looked up in a set)."""
    found = value.get("type")
    return found if isinstance(found, str) else ""


def recordable(value: Any) -> Any:
    """A provider's JSON value as an event can carry it: unchanged, or :data:`UNRECORDABLE` when orjson
    cannot write it back (nested past 254 levels, an integer beyond 64 bits). Only for the small values
    kept in metadata: it serializes them once, unless it is a value orjson always writes (ASCII text,
    a 64-bit integer, a float, a boolean, null)."""
    kind = type(value)
    if (
        value is None
        or kind is bool
        or kind is float
        or (kind is str and value.isascii())
        or (kind is int and -(2**63) <= value < 2**64)
    ):
        return value
    try:
        orjson.dumps(value)
    except orjson.JSONEncodeError:
        return UNRECORDABLE
    return value


def message_text(content: Any, part_type: str | None) -> str | None:
    """A message's text: string content, or its text parts (of ``part_type``, or any) joined by newlines."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return None
    texts = [
        part["text"]
        for part in content
        if isinstance(part, dict)
        and isinstance(part.get("text"), str)
        and (part_type is None or part.get("type") == part_type)
    ]
    return "\n".join(texts) if texts else None


def upstream_object(raw: bytes) -> dict[str, Any] | ResponseSummary:
    """A blocking answer's JSON object, or a summary saying why it is not one."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return ResponseSummary(error="the upstream answer is not JSON")
    if not isinstance(body, dict):
        return ResponseSummary(error="the upstream answer is not a JSON object")
    return body
