"""The q grammar, as a pure function: what parses, and the message naming the term when it does not."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from aibridge.api.errors import BadRequest
from aibridge.api.export import quote
from aibridge.api.query import Filters, parse_q


def test_empty_q_filters_nothing() -> None:
    assert parse_q(None) == Filters()
    assert parse_q("   ") == Filters()


def test_every_key_and_quoting() -> None:
    filters = parse_q(
        'initiator:me provider:anthropic  model:claude-sonnet-4-5 client:"Claude Code" '
        "started_after:2025-01-01T00:00:00Z started_before:2025-02-01T01:00:00.5+01:00"
    )
    assert filters == Filters(
        initiator="me",
        provider="anthropic",
        model="claude-sonnet-4-5",
        client="Claude Code",
        started_after=datetime(2025, 1, 1, tzinfo=UTC),
        started_before=datetime(2025, 2, 1, 0, 0, 0, 500000, tzinfo=UTC),
    )


def test_keys_are_case_insensitive_and_escapes_work_inside_quotes() -> None:
    assert parse_q('Client:"say \\"hi\\" \\\\ now"') == Filters(client='say "hi" \\ now')


def test_nanosecond_fractions_are_cut_to_microseconds() -> None:
    assert parse_q("started_after:2025-01-01T00:00:00.123456789Z").started_after == datetime(
        2025, 1, 1, 0, 0, 0, 123456, tzinfo=UTC
    )


@pytest.mark.parametrize(
    ("q", "named"),
    [
        ("colour:blue", "'colour'"),
        ("model:gpt-5 bogus", "'bogus'"),
        ("model:", "'model:'"),
        ('client:"Claude Code', "unterminated"),
        ('client:Claude"Code', "'client:Claude\"Code'"),
        ('client:"Claude"Code', "closing quote"),
        ('"client":x', "quote in its key"),
        ("started_after:yesterday", "'started_after:yesterday'"),
        ("started_after:2025-01-01", "'started_after:2025-01-01'"),
        ("started_after:2025-01-01T00:00:00", "time zone"),
        ("started_before:2025-13-01T00:00:00Z", "'started_before:2025-13-01T00:00:00Z'"),
        ("started_after:1900-01-01T00:00:00Z", "supported range"),
        ("model:a model:b", "twice"),
        ("started_after:2025-02-01T00:00:00Z started_before:2025-01-01T00:00:00Z", "earlier than"),
        ("model:" + "x" * 300, "longer than"),
        (":value", "key:value"),
    ],
)
def test_bad_q_names_the_term(q: str, named: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_q(q)
    assert named in caught.value.message


@pytest.mark.parametrize("value", ["plain", "Claude Code", 'a"b', "back\\slash"])
def test_cli_quoting_round_trips_through_the_grammar(value: str) -> None:
    assert parse_q(f"client:{quote(value)}").client == value
