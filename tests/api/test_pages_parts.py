"""The sessions pages' pure parts: a thread as steps, the filter form as ``q``, where sign-in may send
a person, and the Origin check of posted forms."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.requests import Request

from aibridge.api import pages, signin, timeline
from aibridge.api.query import parse_q


def interception(turn: str, tools: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "provider": "openai",
        "model": "gpt-4o",
        "turn": turn,
        "status": "completed",
        "error": None,
        "started_at": "2026-11-01T12:00:00.250000Z",
        "ended_at": "2026-11-01T12:00:01.500000Z",
        "tool_usages": [{"tool": name, "input": "{}", "injected": False, "server_url": ""} for name in tools],
        "token_usages": [{"input_tokens": 1200, "output_tokens": 30, "cache_read_input_tokens": 0}],
        **extra,
    }


def test_a_thread_reads_prompt_tool_calls_results_answer() -> None:
    thread = {
        "prompt": "fix the bug",
        "started_at": "2026-11-01T12:00:00.250000Z",
        "interceptions": [
            interception("prompt", ["Read", "Grep"], reasoning=[{"kind": "thinking", "text": "look first"}]),
            interception("tool_result", []),
        ],
    }
    steps = timeline.steps(thread)
    assert [step.kind for step in steps] == ["prompt", "reasoning", "tool_calls", "results", "answer"]
    assert steps[0].text == "fix the bug" and steps[0].at == "2026-11-01T12:00:00Z"
    assert steps[1].text == "look first"
    assert [call.tool for call in steps[2].tools] == ["Read", "Grep"] and steps[2].title == "2 tool calls"
    assert "1,200 in · 30 out · 0 cache read · 0 cache write" in steps[4].detail


def test_encrypted_reasoning_says_so_and_a_failed_round_is_a_failure() -> None:
    failed = interception("prompt", [], status="upstream_error", error="overloaded")
    failed["reasoning"] = [{"kind": "redacted", "text": ""}]
    steps = timeline.steps({"prompt": None, "started_at": failed["started_at"], "interceptions": [failed]})
    assert [step.kind for step in steps] == ["reasoning", "error"]
    assert steps[0].text.startswith("(no text: encrypted by the provider") and steps[1].text == "overloaded"


@pytest.mark.parametrize(
    ("millis", "shown"), [(None, "in flight"), (250, "250 ms"), (6000, "6.0 s"), (125_000, "2 min 5 s")]
)
def test_durations(millis: int | None, shown: str) -> None:
    assert timeline.duration(millis) == shown


def test_the_filter_form_is_the_api_query() -> None:
    fields = {"initiator": "alice", "client": 'Claude "Code"', "started_after": "2026-11-01T00:00:00Z", "model": " "}
    q = pages.as_q(fields)
    filters = parse_q(q)
    assert (filters.initiator, filters.client, filters.model) == ("alice", 'Claude "Code"', None)
    assert filters.started_after is not None and filters.started_after.isoformat() == "2026-11-01T00:00:00+00:00"
    assert pages.as_q({}) is None


@pytest.mark.parametrize(
    ("target", "kept"),
    [
        ("/aibridge/sessions/abc", True),
        ("/aibridge/sessions?initiator=me", True),
        ("https://evil.example/aibridge/", False),
        ("//evil.example/aibridge/x", False),
        ("/aibridge/\\evil.example", False),
        ("/api/v2/aibridge/interceptions", False),
        (None, False),
    ],
)
def test_sign_in_only_returns_to_these_pages(target: str | None, kept: bool) -> None:
    assert signin.safe_next(target, "/aibridge/sessions") == (target if kept else "/aibridge/sessions")


def posted(headers: dict[str, str]) -> Request:
    scope = {
        "type": "http",
        "method": "POST",
        "scheme": "http",
        "server": ("127.0.0.1", 8080),
        "path": "/aibridge/login",
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1:8080")] + [(k.encode(), v.encode()) for k, v in headers.items()],
    }
    return Request(scope)


@pytest.mark.parametrize(
    ("headers", "allowed"),
    [
        ({"origin": "http://127.0.0.1:8080"}, True),
        ({}, True),  # not from a page: browsers send Origin on every cross-site POST
        ({"referer": "http://127.0.0.1:8080/aibridge/login"}, True),
        ({"origin": "http://evil.example"}, False),
        ({"origin": "https://127.0.0.1:8080"}, False),
        ({"origin": "null"}, False),
        ({"referer": "http://evil.example/page"}, False),
    ],
)
def test_a_form_from_another_site_is_refused(headers: dict[str, str], allowed: bool) -> None:
    if allowed:
        signin.check_origin(posted(headers))
    else:
        with pytest.raises(signin.ForeignOrigin):
            signin.check_origin(posted(headers))
