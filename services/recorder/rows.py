"""Process stage: one validated event becomes one row of one table (pure, no I/O).

``interception.started`` → ``interceptions`` row with version 0; ``interception.ended`` → the same
interception's row with version 1 (``ReplacingMergeTree(version)`` keeps the highest). ``prompt``,
``token_usage`` and ``tool_usage`` → a row of their own table keyed by the event id, carrying the
interception context (initiator, provider, model, client) so summaries need no join. Metadata is
stored as JSON text. A token usage is priced here, at the prices known when it is recorded (a later
price change does not re-price history); its cost is None when the model has no price.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from aibridge import pricing, store
from aibridge.events import Event, EventType, InvalidEvent, parse_time

_CONTEXT: Final = ("initiator_id", "initiator_username", "provider", "model", "client")

COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    store.INTERCEPTIONS: (
        "id", "version", *_CONTEXT, "api_key_id", "route", "streaming", "user_agent",
        "status", "http_status", "error", "metadata", "started_at", "ended_at", "session_id", "turn",
    ),
    store.USER_PROMPTS: (
        "id", "interception_id", *_CONTEXT, "provider_response_id", "prompt", "metadata", "created_at",
        "capture", "redactions",
    ),
    store.TOKEN_USAGES: (
        "id", "interception_id", *_CONTEXT, "provider_response_id", "input_tokens", "output_tokens",
        "cache_read_input_tokens", "cache_write_input_tokens", "metadata", "created_at", "cost",
    ),
    store.TOOL_USAGES: (
        "id", "interception_id", *_CONTEXT, "provider_response_id", "call_id", "server_url", "tool",
        "input", "injected", "invocation_error", "metadata", "created_at", "capture", "redactions",
        "server_name", "duration_ms",
    ),
    store.REASONING: (
        "id", "interception_id", *_CONTEXT, "provider_response_id", "kind", "text", "capture", "redactions",
        "metadata", "created_at",
    ),
}  # fmt: skip

RECORD_TYPES: Final[dict[str, str]] = {
    EventType.INTERCEPTION_STARTED: "interception_start",
    EventType.INTERCEPTION_ENDED: "interception_end",
    EventType.PROMPT: "prompt_usage",
    EventType.TOKEN_USAGE: "token_usage",
    EventType.TOOL_USAGE: "tool_usage",
    EventType.REASONING: "reasoning",
}

# Beyond this range the TTL expression (DateTime) and DateTime64 cannot represent a timestamp; such an
# event would make every insert of its batch fail, so it is rejected here and dead-lettered instead.
_EARLIEST: Final = datetime(1970, 1, 2, tzinfo=UTC)
_LATEST: Final = datetime(2105, 12, 31, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Row:
    """One row for ``table``, values in :data:`COLUMNS` order; ``record_type`` names it in logs."""

    table: str
    record_type: str
    values: tuple[Any, ...]

    def fields(self) -> dict[str, Any]:
        return dict(zip(COLUMNS[self.table], self.values, strict=True))


def process_event(event: Event, prices: pricing.PriceTable | None = None) -> Row:
    """Turn a schema-valid event into its row; raise :class:`InvalidEvent` if it cannot be stored.
    Token usages are priced by ``prices`` (default: the built-in table)."""
    kind = event["type"]
    if kind in (EventType.INTERCEPTION_STARTED, EventType.INTERCEPTION_ENDED):
        return Row(store.INTERCEPTIONS, RECORD_TYPES[kind], _interception(event, kind))
    if kind == EventType.PROMPT:
        values = (
            event["provider_response_id"],
            event["prompt"],
            _json(event),
            _time(event["occurred_at"]),
            *_capture(event),
        )
        return Row(store.USER_PROMPTS, RECORD_TYPES[kind], _child(event) + values)
    if kind == EventType.TOKEN_USAGE:
        values = _child(event) + _token_usage(event, prices or pricing.builtin())
        return Row(store.TOKEN_USAGES, RECORD_TYPES[kind], values)
    if kind == EventType.TOOL_USAGE:
        return Row(store.TOOL_USAGES, RECORD_TYPES[kind], _child(event) + _tool_usage(event))
    if kind == EventType.REASONING:
        return Row(store.REASONING, RECORD_TYPES[kind], _child(event) + _reasoning(event))
    raise InvalidEvent(f"unknown event type {kind!r}")


def _interception(event: Event, kind: str) -> tuple[Any, ...]:
    ended = kind == EventType.INTERCEPTION_ENDED
    initiator = event["initiator"]
    return (
        event["interception_id"],
        1 if ended else 0,
        initiator["id"],
        initiator["username"],
        event["provider"],
        event["model"],
        event["client"],
        event["api_key_id"],
        event["route"],
        event["streaming"],
        event.get("user_agent", ""),
        event["status"] if ended else "",
        event["http_status"] if ended else 0,
        event.get("error") if ended else None,
        _json(event),
        _time(event["started_at"]),
        _time(event["ended_at"]) if ended else None,
        event.get("session_id", ""),  # both absent in events from a proxy older than the fields
        event.get("turn", ""),
    )


def _child(event: Event) -> tuple[Any, ...]:
    initiator = event["initiator"]
    return (
        event["event_id"],
        event["interception_id"],
        initiator["id"],
        initiator["username"],
        event["provider"],
        event["model"],
        event["client"],
    )


def _token_usage(event: Event, prices: pricing.PriceTable) -> tuple[Any, ...]:
    tokens = pricing.Tokens(
        event["input_tokens"],
        event["output_tokens"],
        event["cache_read_input_tokens"],
        event["cache_write_input_tokens"],
    )
    return (
        event["provider_response_id"],
        tokens.input_tokens,
        tokens.output_tokens,
        tokens.cache_read_input_tokens,
        tokens.cache_write_input_tokens,
        _json(event),
        _time(event["occurred_at"]),
        prices.cost(event["provider"], event["model"], tokens),
    )


def _tool_usage(event: Event) -> tuple[Any, ...]:
    return (
        event["provider_response_id"],
        event["call_id"],
        event["server_url"],
        event["tool"],
        event["input"],
        event["injected"],
        event["invocation_error"],
        _json(event),
        _time(event["occurred_at"]),
        *_capture(event),
        event.get("server_name"),  # absent from a proxy older than the fields
        event.get("duration_ms"),
    )


def _capture(event: Event) -> tuple[str, int]:
    """How the proxy captured the event's text ('' from a proxy older than the field) and the secrets it replaced."""
    return event.get("capture", ""), event.get("redactions", 0)


def _json(event: Event) -> str:
    return orjson.dumps(event.get("metadata") or {}).decode()


def _time(text: str) -> datetime:
    try:
        moment = parse_time(text)
    except ValueError as exc:
        raise InvalidEvent(f"unreadable timestamp {text!r}") from exc
    if not _EARLIEST <= moment <= _LATEST:
        raise InvalidEvent(f"timestamp {text!r} is outside the storable range 1970-01-02..2105-12-31")
    return moment


def _reasoning(event: Event) -> tuple[Any, ...]:
    return (
        event["provider_response_id"],
        event["kind"],
        event["text"],
        event.get("capture", ""),
        event.get("redactions", 0),
        _json(event),
        _time(event["occurred_at"]),
    )
