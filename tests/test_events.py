from __future__ import annotations

import copy

import jsonschema
import orjson
import pytest

from aibridge.events import (
    SCHEMA_PATH,
    InterceptionContext,
    InvalidEvent,
    Status,
    decode_event,
    encode_event,
    example_events,
    validate_event,
)

REFERENCE = jsonschema.Draft202012Validator(orjson.loads(SCHEMA_PATH.read_bytes()))


def test_schema_is_valid_draft_2020_12() -> None:
    jsonschema.Draft202012Validator.check_schema(orjson.loads(SCHEMA_PATH.read_bytes()))


def test_there_is_an_example_for_every_record_type() -> None:
    types = {event["type"] for event in example_events().values()}
    assert types == {"interception.started", "prompt", "token_usage", "tool_usage", "reasoning", "interception.ended"}


@pytest.mark.parametrize("name", sorted(example_events()))
def test_examples_validate(name: str) -> None:
    event = example_events()[name]
    REFERENCE.validate(event)
    assert decode_event(encode_event(event)) == event


def test_built_events_validate() -> None:
    ctx = InterceptionContext("u1", "alice", "openai", "gpt-4o", "Codex", True, "/v1/chat/completions", "jti-1")
    built = [
        ctx.started(),
        ctx.prompt("hello"),
        ctx.token_usage(provider_response_id="r", input_tokens=3, output_tokens=4, cache_read_input_tokens=5),
        ctx.tool_usage(provider_response_id="r", tool="exec_command", call_id="call_1", tool_input='{"cmd":"ls"}'),
        ctx.ended(Status.COMPLETED, 200),
    ]
    for event in built:
        REFERENCE.validate(event)
        validate_event(event)
    assert len({event["event_id"] for event in built}) == 5
    assert {event["interception_id"] for event in built} == {ctx.interception_id}


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda e: e.pop("input_tokens"), "input_tokens"),
        (lambda e: e.update(input_tokens=-1), "input_tokens"),
        (lambda e: e.update(schema_version=2), "schema_version"),
        (lambda e: e.update(type="nonsense"), "type"),
        (lambda e: e.update(event_id="not-a-uuid"), "event_id"),
        (lambda e: e.update(occurred_at="yesterday"), "occurred_at"),
        (lambda e: e.update(provider="gemini"), "provider"),
    ],
)
def test_invalid_events_are_rejected_with_a_reason(mutate: object, reason: str) -> None:
    event = copy.deepcopy(example_events()["token_usage"])
    mutate(event)  # type: ignore[operator]
    with pytest.raises(InvalidEvent, match=reason):
        validate_event(event)
    with pytest.raises(jsonschema.ValidationError):
        REFERENCE.validate(event)


def test_undecodable_payload_is_rejected() -> None:
    with pytest.raises(InvalidEvent, match="JSON"):
        decode_event(b"\xff{not json")
