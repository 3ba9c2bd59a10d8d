"""The decode/validate and process stages, without I/O."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from aibridge import store
from aibridge.bus import Message, Partition
from aibridge.events import InterceptionContext, InvalidEvent, Status, example_events, validate_event
from aibridge.recorder.records_log import record_fields
from aibridge.recorder.rows import COLUMNS, process_event
from aibridge.recorder.stages import Decoder, Rejection
from aibridge.recorder.validation import validate

EXAMPLES = example_events()


def _message(value: bytes) -> Message:
    return Message(Partition("t", 0), 7, b"k", value)


def test_columns_match_the_store_schema(store_client: Any) -> None:
    for table, columns in COLUMNS.items():
        described = [row[0] for row in store_client.query(f"DESCRIBE TABLE {table}").result_rows]
        assert list(columns) == described, table


def test_interception_started_and_ended_rows() -> None:
    started = process_event(EXAMPLES["interception_started"]).fields()
    ended = process_event(EXAMPLES["interception_ended"]).fields()
    assert started == {
        "id": "7c9e6679-7425-40de-944b-e07fc1f90ae7",
        "version": 0,
        "initiator_id": "5b1e2a3c-0f3d-5b7e-9a51-2c4f8d6e1a90",
        "initiator_username": "alice",
        "provider": "anthropic",
        "model": "claude-sonnet-4-5",
        "client": "Claude Code",
        "api_key_id": "0d6c2b8e-4f1a-4c3b-9e7d-1a2b3c4d5e6f",
        "route": "/v1/messages",
        "streaming": True,
        "user_agent": "claude-cli/2.1.332 (external, sdk-cli)",
        "status": "",
        "http_status": 0,
        "error": None,
        "metadata": "{}",
        "started_at": datetime(2026, 11, 27, 10, 15, 30, 123456, tzinfo=UTC),
        "ended_at": None,
        "session_id": "3f2a9c1e-8b4d-4e6f-a1c2-7d9e0b5f3a18",
        "turn": "prompt",
    }
    assert ended == started | {
        "version": 1,
        "status": "completed",
        "http_status": 200,
        "ended_at": datetime(2026, 11, 27, 10, 15, 34, tzinfo=UTC),
    }


def test_child_rows_carry_the_interception_context() -> None:
    usage = process_event(EXAMPLES["token_usage"])
    assert usage.table == store.TOKEN_USAGES and usage.record_type == "token_usage"
    fields = usage.fields()
    assert fields["id"] == "33333333-3333-4333-8333-333333333333"
    assert fields["interception_id"] == "7c9e6679-7425-40de-944b-e07fc1f90ae7"
    assert (fields["initiator_id"], fields["initiator_username"]) == ("5b1e2a3c-0f3d-5b7e-9a51-2c4f8d6e1a90", "alice")
    assert (fields["provider"], fields["model"], fields["client"]) == ("anthropic", "claude-sonnet-4-5", "Claude Code")
    assert [fields[k] for k in ("input_tokens", "output_tokens", "cache_read_input_tokens")] == [1204, 356, 18211]
    assert fields["cache_write_input_tokens"] == 2048
    assert orjson.loads(fields["metadata"]) == EXAMPLES["token_usage"]["metadata"]
    assert fields["created_at"] == datetime(2026, 11, 27, 10, 15, 33, 900000, tzinfo=UTC)
    tool = process_event(EXAMPLES["tool_usage"]).fields()
    assert (tool["tool"], tool["call_id"], tool["input"]) == (
        "Read",
        "toolu_01A09q90qw90lq917835lq9",
        '{"file_path": "/src/client.py"}',
    )
    assert (tool["injected"], tool["invocation_error"], tool["server_url"]) == (False, None, None)
    assert (tool["server_name"], tool["duration_ms"]) == (None, None)
    injected = EXAMPLES["tool_usage"] | {"injected": True, "server_url": "http://mcp/mcp", "server_name": "docs"}
    injected_row = process_event(injected | {"duration_ms": 12.5}).fields()
    assert (injected_row["injected"], injected_row["server_name"], injected_row["duration_ms"]) == (True, "docs", 12.5)
    older = {key: value for key, value in injected.items() if key not in {"server_name", "duration_ms"}}
    older_row = process_event(older).fields()  # from a proxy older than the fields
    assert [older_row[key] for key in ("server_url", "server_name", "duration_ms")] == ["http://mcp/mcp", None, None]
    prompt = process_event(EXAMPLES["prompt"]).fields()
    assert prompt["prompt"] == EXAMPLES["prompt"]["prompt"]
    assert prompt["provider_response_id"] == "msg_01XFDUDYJgAACzvnptvVoYEL"


def test_timestamps_with_offsets_and_nanoseconds_are_normalised_to_utc() -> None:
    event = copy.deepcopy(EXAMPLES["prompt"]) | {"occurred_at": "2026-11-27T12:15:30.123456+02:00"}
    assert process_event(event).fields()["created_at"] == datetime(2026, 11, 27, 10, 15, 30, 123456, tzinfo=UTC)


@pytest.mark.parametrize(
    ("payload", "kind"),
    [
        (b"{not json", "invalid_json"),
        (b'"a string"', "schema"),
        (orjson.dumps({k: v for k, v in EXAMPLES["token_usage"].items() if k != "input_tokens"}), "schema"),
        (orjson.dumps(EXAMPLES["prompt"] | {"type": "prompt.v2"}), "schema"),
        (orjson.dumps(EXAMPLES["prompt"] | {"type": ["prompt"]}), "schema"),
        (orjson.dumps(EXAMPLES["tool_usage"] | {"occurred_at": "1960-01-01T00:00:00Z"}), "unstorable"),
        (orjson.dumps(EXAMPLES["interception_started"] | {"started_at": "9999-12-31T23:59:59Z"}), "unstorable"),
    ],
)
def test_decoder_rejects_with_a_kind_and_reason(payload: bytes, kind: str) -> None:
    outcome = Decoder().decode(_message(payload))
    assert isinstance(outcome, Rejection)
    assert outcome.kind == kind and outcome.reason


def test_decoder_accepts_every_schema_example_and_realistic_events() -> None:
    context = InterceptionContext(
        initiator_id="u-1", initiator_username="bob", provider="openai", model="gpt-4o", client="Codex",
        streaming=False, route="/v1/chat/completions", api_key_id="jti-1",
    )  # fmt: skip
    realistic = [
        context.started(),
        context.prompt("hello"),
        context.token_usage(provider_response_id="r", input_tokens=1, output_tokens=2),
        context.tool_usage(provider_response_id="r", tool="shell", call_id="c", tool_input="{}", injected=True),
        context.ended(Status.UPSTREAM_ERROR, 502, error="upstream timed out"),
    ]
    for event in [*EXAMPLES.values(), *realistic]:
        outcome = Decoder().decode(_message(orjson.dumps(event)))
        assert not isinstance(outcome, Rejection), outcome
    ended = Decoder().decode(_message(orjson.dumps(realistic[-1])))
    assert not isinstance(ended, Rejection)
    assert ended.fields()["status"] == "upstream_error" and ended.fields()["error"] == "upstream timed out"


def _mutations() -> list[Any]:
    """Valid and invalid variants of every example, to compare both validators on."""
    variants: list[Any] = [None, [], "x", {}, {"type": "prompt"}]
    for event in EXAMPLES.values():
        variants.append(event)
        for key in event:
            variants.append({k: v for k, v in event.items() if k != key})
            variants.append(event | {key: None})
        for other in EXAMPLES.values():
            variants.append(event | {"type": other["type"]})
    return variants


def test_specialised_validator_agrees_with_the_schema() -> None:
    for variant in _mutations():
        try:
            validate_event(copy.deepcopy(variant))
            expected = True
        except InvalidEvent:
            expected = False
        try:
            validate(copy.deepcopy(variant))
            actual = True
        except InvalidEvent:
            actual = False
        assert actual == expected, variant


def test_log_fields_are_the_stored_columns_only() -> None:
    event = EXAMPLES["interception_started"] | {"authorization": "Bearer bridge-secret-token"}
    fields = record_fields(process_event(event))
    assert "bridge-secret-token" not in orjson.dumps(fields).decode()
    assert fields["record_type"] == "interception_start"
    assert fields["interception_id"] == event["interception_id"]
    assert fields["started_at"] == "2026-11-27T10:15:30.123456Z"
    assert "ended_at" not in fields and "version" not in fields and "id" not in fields
