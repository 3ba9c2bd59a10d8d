"""The interception event contract (``schemas/aibridge.interceptions.v1.schema.json``).

The proxy builds events through :class:`InterceptionContext`; sinks decode and validate them with
:func:`decode_event`. Events are JSON objects; the Kafka key is the interception id.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Any, Final

import fastjsonschema
import orjson

from aibridge.redaction import DEFAULT_POLICY, CapturePolicy

SCHEMA_VERSION: Final = 1
SCHEMA_DIR: Final = Path(__file__).resolve().parent / "schemas"
SCHEMA_PATH: Final = SCHEMA_DIR / "aibridge.interceptions.v1.schema.json"
EXAMPLES_DIR: Final = SCHEMA_DIR / "examples"
ERROR_LIMIT: Final = 1000  # characters of an error message an event keeps (after redaction)
SESSION_ID_LIMIT: Final = 256  # characters of a client's session key an event keeps (the schema's maxLength)

Event = dict[str, Any]


class EventType(StrEnum):
    INTERCEPTION_STARTED = "interception.started"
    PROMPT = "prompt"
    TOKEN_USAGE = "token_usage"
    TOOL_USAGE = "tool_usage"
    REASONING = "reasoning"
    INTERCEPTION_ENDED = "interception.ended"


class Status(StrEnum):
    """How an interception ended."""

    COMPLETED = "completed"
    UPSTREAM_ERROR = "upstream_error"
    BRIDGE_ERROR = "bridge_error"
    CLIENT_DISCONNECTED = "client_disconnected"
    REJECTED = "rejected"
    INVALID_REQUEST = "invalid_request"
    BUDGET_EXCEEDED = "budget_exceeded"  # refused before forwarding: the user's budget is spent


class Turn(StrEnum):
    """What an interception's request ends with, which decides its thread (see docs/sessions.md)."""

    PROMPT = "prompt"  # a human prompt: starts a thread
    TOOL_RESULT = "tool_result"  # tool results sent back: continues the session's newest thread
    UNKNOWN = ""


class ReasoningKind(StrEnum):
    """What a ``reasoning`` event holds (see docs/sessions.md)."""

    THINKING = "thinking"  # an Anthropic thinking block's text
    SUMMARY = "summary"  # a Responses reasoning item's summary
    REASONING_CONTENT = "reasoning_content"  # an OpenAI-compatible provider's reasoning_content
    REDACTED = "redacted"  # an Anthropic redacted_thinking block: the provider sent it encrypted, no text
    ENCRYPTED = "encrypted"  # a Responses reasoning item with only encrypted_content: no text


# the types as plain strings, for the builders (an enum's ``.value`` is a property lookup)
_STARTED: Final = EventType.INTERCEPTION_STARTED._value_
_PROMPT: Final = EventType.PROMPT._value_
_TOKEN_USAGE: Final = EventType.TOKEN_USAGE._value_
_TOOL_USAGE: Final = EventType.TOOL_USAGE._value_
_REASONING: Final = EventType.REASONING._value_
_ENDED: Final = EventType.INTERCEPTION_ENDED._value_


class InvalidEvent(ValueError):
    """An event failed to decode or to validate against the schema; the message says why."""


# Each cache is one tuple, read and replaced whole: a thread that formats a time never sees the half
# of another thread's update.
_second: list[tuple[Any, str]] = [(None, "")]  # the last second formatted (its fields), its text up to the "."
_last: list[tuple[Any, str]] = [(None, "")]  # the last time formatted (from utcnow) and its text


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with microseconds, e.g. ``2026-11-27T10:15:30.123456Z``."""
    last = _last[0]
    if moment is last[0]:  # the same object again (the events of one interception's end share its time)
        return last[1]
    if moment.tzinfo is UTC and moment.year >= 1000:  # the common case (utcnow): the second's text is reused
        second = (moment.second, moment.minute, moment.hour, moment.day, moment.month, moment.year)
        known = _second[0]
        if second != known[0]:
            known = _second[0] = (second, moment.replace(microsecond=0, tzinfo=None).isoformat() + ".")
        text = f"{known[1]}{moment.microsecond:06d}Z"
        _last[0] = (moment, text)
        return text
    moment = moment.astimezone(UTC)
    if moment.year < 1000:  # strftime's %Y does not pad there; isoformat (twice as fast) does
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return moment.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


_RANDOM_BATCH = 16 * 256
_random = bytearray()  # os.urandom once per 256 ids, not per id (a syscall each)


def _forget_random() -> None:
    _random.clear()  # a forked child must not hand out its parent's ids


os.register_at_fork(after_in_child=_forget_random)


def new_id() -> str:
    """A random (version 4) UUID in its canonical text, as ``str(uuid.uuid4())`` but three times as fast."""
    if not _random:
        _random.extend(os.urandom(_RANDOM_BATCH))
    raw = _random[-16:]
    del _random[-16:]
    raw[6] = raw[6] & 0x0F | 0x40
    raw[8] = raw[8] & 0x3F | 0x80
    text = raw.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


@dataclass(slots=True)
class InterceptionContext:
    """Everything known about one interception; builds its events.

    Every text that may quote the user passes ``capture`` (:mod:`aibridge.redaction`) here, before any
    event exists: prompts and tool inputs as its mode says, error messages with secrets replaced.
    """

    initiator_id: str
    initiator_username: str
    provider: str
    model: str
    client: str
    streaming: bool
    route: str
    api_key_id: str
    user_agent: str = ""
    interception_id: str = field(default_factory=new_id)
    started_at: datetime = field(default_factory=utcnow)
    metadata: dict[str, Any] = field(default_factory=dict)
    capture: CapturePolicy = DEFAULT_POLICY
    # The client's session key ("" when it sent none) and what the request's last message is (a
    # :class:`Turn`, "" when not known). Both events of the interception carry them, so the stored row
    # (the ended event's replaces the started one's) keeps them.
    session_id: str = ""
    turn: str = ""
    _started_text: str | None = field(default=None, init=False, repr=False, compare=False)

    def _base(self, event_type: str, occurred_at: datetime | None) -> Event:
        """The members every event has, in the contract's order (a new dict per event: sinks may keep it)."""
        return {
            "schema_version": SCHEMA_VERSION,
            "event_id": new_id(),
            "type": event_type,
            "occurred_at": format_time(occurred_at or utcnow()),
            "interception_id": self.interception_id,
            "initiator": {"id": self.initiator_id, "username": self.initiator_username},
            "provider": self.provider,
            "model": self.model,
            "client": self.client,
        }

    def _interception_fields(self, event: Event) -> Event:
        """``event`` with the members both interception events carry (the start time formatted once)."""
        if self._started_text is None:
            self._started_text = format_time(self.started_at)
        event["started_at"] = self._started_text
        event["streaming"] = self.streaming
        event["api_key_id"] = self.api_key_id
        event["route"] = self.route
        event["user_agent"] = self.user_agent
        event["capture"] = self.capture.mode._value_
        event["session_id"] = self.session_id
        event["turn"] = self.turn
        event["metadata"] = self.metadata
        return event

    def started(self, *, session_id: str | None = None, turn: str | None = None) -> Event:
        """The ``interception.started`` event; ``session_id`` and ``turn``, when given, are kept for the
        ended event too."""
        if session_id is not None:
            self.session_id = session_id[:SESSION_ID_LIMIT]
        if turn is not None:
            self.turn = Turn(turn).value
        return self._interception_fields(self._base(_STARTED, self.started_at))

    def prompt(
        self,
        text: str,
        provider_response_id: str = "",
        metadata: dict[str, Any] | None = None,
        *,
        occurred_at: datetime | None = None,
    ) -> Event:
        kept, redactions = self.capture.user_text(text)
        event = self._base(_PROMPT, occurred_at)
        event["provider_response_id"] = provider_response_id
        event["prompt"] = kept
        event["capture"] = self.capture.mode._value_
        event["redactions"] = redactions
        event["metadata"] = metadata or {}
        return event

    def token_usage(
        self,
        *,
        provider_response_id: str,
        input_tokens: int,
        output_tokens: int,
        cache_read_input_tokens: int = 0,
        cache_write_input_tokens: int = 0,
        metadata: dict[str, Any] | None = None,
        occurred_at: datetime | None = None,
    ) -> Event:
        event = self._base(_TOKEN_USAGE, occurred_at)
        event["provider_response_id"] = provider_response_id
        event["input_tokens"] = input_tokens
        event["output_tokens"] = output_tokens
        event["cache_read_input_tokens"] = cache_read_input_tokens
        event["cache_write_input_tokens"] = cache_write_input_tokens
        event["metadata"] = metadata or {}
        return event

    def tool_usage(
        self,
        *,
        provider_response_id: str,
        tool: str,
        call_id: str,
        tool_input: str,
        injected: bool = False,
        invocation_error: str | None = None,
        server_url: str | None = None,
        server_name: str | None = None,
        duration_ms: float | None = None,
        metadata: dict[str, Any] | None = None,
        occurred_at: datetime | None = None,
    ) -> Event:
        kept, redactions = self.capture.user_text(tool_input)
        if invocation_error is not None:
            invocation_error, scrubbed = self.capture.scrub(invocation_error)
            redactions += scrubbed
        return self._base(_TOOL_USAGE, occurred_at) | {
            "provider_response_id": provider_response_id,
            "tool": tool,
            "call_id": call_id,
            "input": kept,
            "capture": self.capture.mode.value,
            "redactions": redactions,
            "injected": injected,
            "invocation_error": invocation_error,
            "server_url": server_url,
            "server_name": server_name,
            "duration_ms": duration_ms,
            "metadata": metadata or {},
        }

    def reasoning(
        self,
        kind: ReasoningKind,
        text: str,
        provider_response_id: str = "",
        metadata: dict[str, Any] | None = None,
        *,
        occurred_at: datetime | None = None,
    ) -> Event:
        """The model's reasoning, captured as a prompt is (empty in ``metadata`` mode, else scrubbed)."""
        kept, redactions = self.capture.user_text(text)
        return self._base(_REASONING, occurred_at) | {
            "provider_response_id": provider_response_id,
            "kind": kind.value,
            "text": kept,
            "capture": self.capture.mode.value,
            "redactions": redactions,
            "metadata": metadata or {},
        }

    def ended(
        self, status: Status, http_status: int, error: str | None = None, ended_at: datetime | None = None
    ) -> Event:
        """``error`` (which may quote the provider, and so the user) with secrets replaced, then cut to
        :data:`ERROR_LIMIT` characters."""
        ended_at = ended_at or utcnow()
        redactions = 0
        if error is not None:
            error, redactions = self.capture.scrub(error)
            error = error[:ERROR_LIMIT]
        event = self._interception_fields(self._base(_ENDED, ended_at))
        event["ended_at"] = event["occurred_at"]
        event["status"] = status._value_
        event["http_status"] = http_status
        event["error"] = error
        event["redactions"] = redactions
        return event


def encode_event(event: Event) -> bytes:
    return orjson.dumps(event)


@cache
def _validator() -> Any:
    return fastjsonschema.compile(orjson.loads(SCHEMA_PATH.read_bytes()))


def validate_event(event: Any) -> Event:
    """Return the event if it satisfies the schema, else raise :class:`InvalidEvent` naming the problem."""
    try:
        _validator()(event)
    except fastjsonschema.JsonSchemaException as exc:
        raise InvalidEvent(f"schema violation: {exc}") from exc
    result: Event = event
    return result


def decode_event(payload: bytes) -> Event:
    """Decode and validate one message value."""
    try:
        event = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(f"not valid JSON: {exc}") from exc
    return validate_event(event)


def example_events() -> dict[str, Event]:
    """The schema's example payloads, by file stem."""
    return {path.stem: orjson.loads(path.read_bytes()) for path in sorted(EXAMPLES_DIR.glob("*.json"))}
