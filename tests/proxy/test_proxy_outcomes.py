"""How an interception ends, seen from outside: a client that leaves (mid-stream, or while the provider
works), and the log line."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from proxy_support import Proxy, of_type, wait_for

from aibridge.events import parse_time

pytestmark = pytest.mark.kafka

ANTHROPIC_PATH = "/api/v2/aibridge/anthropic/v1/messages"
MESSAGE = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 64,
    "messages": [{"role": "user", "content": "a secret prompt that must not be logged"}],
}
READ_TOOL = {
    "name": "Read",
    "description": "Read a file",
    "input_schema": {"type": "object", "properties": {"file_path": {"type": "string"}}, "required": ["file_path"]},
}


async def test_a_client_leaving_a_silent_stream_closes_the_upstream_at_once_and_keeps_known_tokens(
    proxy: Proxy, token: str, events_of: Callable[..., Any]
) -> None:
    # The simulator sends message_start at once and then one chunk every 3 s: without listening for the
    # disconnect, the proxy would notice the client left only when the next chunk comes, 3 s later.
    headers = {"x-api-key": token, "x-simulator-chunk-delay-ms": "3000", "x-simulator-cache-read-tokens": "11"}
    async with (
        httpx.AsyncClient(base_url=proxy.url, timeout=10, headers=headers) as client,
        client.stream("POST", ANTHROPIC_PATH, json=MESSAGE | {"stream": True}) as response,
    ):
        first = await anext(response.aiter_raw())
    assert first.startswith(b"event: message_start")
    events = await events_of(1, timeout=10)
    ended = of_type(events, "interception.ended")[0]
    assert (ended["status"], ended["http_status"]) == ("client_disconnected", 200)
    lasted = (parse_time(ended["ended_at"]) - parse_time(ended["started_at"])).total_seconds()
    assert lasted < 2.0, f"the disconnect was noticed only after {lasted:.2f}s"
    usage = of_type(events, "token_usage")
    assert len(usage) == 1, "the tokens known from message_start are recorded"
    assert usage[0]["input_tokens"] > 0 and usage[0]["cache_read_input_tokens"] == 11
    assert usage[0]["metadata"]["partial"] is True
    assert proxy.component.in_flight.count == 0


@pytest.mark.parametrize("stream", [False, True], ids=["blocking", "streaming-before-headers"])
async def test_a_client_leaving_while_the_provider_works_is_noticed_at_once(
    proxy: Proxy, token: str, events_of: Callable[..., Any], stream: bool
) -> None:
    # The simulator answers only after 3 s; the client gives up after 0.3 s. Without watching for the
    # disconnect, the proxy would wait for the whole answer and record it as completed.
    headers = {"x-api-key": token, "x-simulator-stall-ms": "3000"}
    async with httpx.AsyncClient(base_url=proxy.url, timeout=0.3, headers=headers) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post(ANTHROPIC_PATH, json=MESSAGE | {"stream": stream})
    events = await events_of(1, timeout=10)
    ended = of_type(events, "interception.ended")[0]
    assert (ended["status"], ended["http_status"]) == ("client_disconnected", 499)
    assert ended["error"] == "the client went away before the answer"
    lasted = (parse_time(ended["ended_at"]) - parse_time(ended["started_at"])).total_seconds()
    assert lasted < 2.0, f"the disconnect was noticed only after {lasted:.2f}s"
    assert [event["type"] for event in events] == ["interception.started", "prompt", "interception.ended"]
    assert proxy.component.in_flight.count == 0


@pytest.mark.parametrize("stream", [False, True], ids=["blocking", "streaming"])
async def test_every_event_is_queued_from_the_proxy_event_loop(
    proxy: Proxy, token: str, events_of: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, stream: bool
) -> None:
    # The emitter's queue is an asyncio.Queue of the proxy's loop: an event queued from a worker thread
    # (as Starlette runs a plain function given to BackgroundTask) would wake the publisher late.
    emitter = proxy.component.emitter
    emit, threads = emitter.emit, []

    def watched(event: Any, headers: Any = ()) -> None:
        try:
            asyncio.get_running_loop()
            threads.append("loop")
        except RuntimeError:
            threads.append(threading.current_thread().name)
        emit(event, headers)

    monkeypatch.setattr(emitter, "emit", watched)
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10, headers={"x-api-key": token}) as client:
        answer = await client.post(ANTHROPIC_PATH, json=MESSAGE | {"stream": stream})
        assert answer.status_code == 200
    events = await events_of(1, timeout=10)
    assert len(threads) == len(events) >= 4  # started, prompt, token usage, ended
    assert set(threads) == {"loop"}, threads


async def test_one_log_line_per_interception_without_secrets_or_prompt(
    proxy: Proxy, token: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aibridge.interceptions")
    headers = {
        "x-api-key": token,
        "user-agent": "claude-cli/2.1.332 (external, sdk-cli)",
        "x-simulator-cache-read-tokens": "7",
        "x-simulator-cache-write-tokens": "3",
    }
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10, headers=headers) as client:
        answer = await client.post(ANTHROPIC_PATH, json=MESSAGE | {"tools": [READ_TOOL]})
        assert answer.status_code == 200
        invalid = await client.post(ANTHROPIC_PATH, content=b"{not json")
        assert invalid.status_code == 400

    def lines() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == "aibridge.interceptions"]

    await wait_for(lambda: len(lines()) == 2)
    by_status = {record.status: record for record in lines()}  # type: ignore[attr-defined]
    completed, refused = (by_status[status].getMessage() for status in ("completed", "invalid_request"))
    usage = answer.json()["usage"]
    pattern = (
        rf"alice \(Claude Code\) anthropic/claude-sonnet-4-5 completed 200 in={usage['input_tokens']} "
        rf"out={usage['output_tokens']} cache_read=7 cache_write=3 tools=1 \d+\.\d{{3}}s"
    )
    assert re.fullmatch(pattern, completed), completed
    assert re.fullmatch(r"alice \(Claude Code\) anthropic/- invalid_request 400 in=0 out=0 .* tools=0 \S+s", refused)
    record = by_status["completed"]
    assert (record.levelno, record.user_id, record.tool_calls) == (logging.INFO, "user-alice-1", 1)  # type: ignore[attr-defined]
    everything = " ".join(f"{r.getMessage()} {vars(r)}" for r in lines())
    assert token not in everything and "secret prompt" not in everything and "sk-ant" not in everything
