"""The official SDKs through the proxy to the simulated provider; events read back from the real broker."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anthropic
import jwt
import openai
import orjson
import pytest
from proxy_support import ANTHROPIC_KEY, OPENAI_KEY, Proxy, Simulator, of_type

from aibridge.events import Event

pytestmark = pytest.mark.kafka

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
READ_TOOL = {
    "name": "Read",
    "description": "Read a file",
    "input_schema": {"type": "object", "properties": {"file_path": {"type": "string"}}, "required": ["file_path"]},
}
CLAUDE_CODE_HEADERS = {
    "user-agent": "claude-cli/2.1.332 (external, sdk-cli)",
    "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14",
    "x-app": "cli",
}


def openai_client(proxy: Proxy, token: str, **headers: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=proxy.openai_base_url, api_key=token, max_retries=0, timeout=20, default_headers=headers or None
    )


def anthropic_client(proxy: Proxy, token: str, **headers: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        base_url=proxy.anthropic_base_url, api_key=token, max_retries=0, timeout=20, default_headers=headers or None
    )


def single(events: list[Event], kind: str) -> Event:
    matching = of_type(events, kind)
    assert len(matching) == 1, f"expected one {kind}, got {len(matching)}"
    return matching[0]


def check_interception(events: list[Event], token: str, **expected: Any) -> None:
    """One interception: same id everywhere, unique event ids, attributed to the token's user."""
    assert len({e["interception_id"] for e in events}) == 1
    assert len({e["event_id"] for e in events}) == len(events)
    published = orjson.dumps(events).decode()
    for secret in (token, OPENAI_KEY, ANTHROPIC_KEY):
        assert secret not in published, "a bridge token or provider key reached the topic"
    claims = jwt.decode(token, options={"verify_signature": False})
    for event in events:
        assert event["initiator"] == {"id": "user-alice-1", "username": "alice"}
        assert {k: event[k] for k in ("provider", "model", "client")} == {
            k: expected[k] for k in ("provider", "model", "client")
        }
    for kind in ("interception.started", "interception.ended"):
        event = single(events, kind)
        assert event["api_key_id"] == claims["jti"]
        assert event["streaming"] is expected["streaming"]
        assert event["route"] == expected["route"]
    ended = single(events, "interception.ended")
    assert (ended["status"], ended["http_status"], ended["error"]) == ("completed", 200, None)
    assert ended["ended_at"] >= ended["started_at"]


async def test_openai_blocking_records_prompt_and_usage_with_cached_tokens(
    proxy: Proxy, simulator: Simulator, token: str, events_of: Callable[..., Any]
) -> None:
    client = openai_client(proxy, token)
    completion = await client.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello, bridge — ünïcode ✓"}],
        extra_headers={"x-simulator-cache-read-tokens": "1024", "x-simulator-reasoning-tokens": "7"},
    )
    assert (completion.choices[0].message.content or "").startswith("Simulated answer")
    forwarded = simulator.state.requests[-1]
    assert forwarded.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert token not in str(forwarded.headers)

    events = await events_of(1)
    check_interception(
        events,
        token,
        provider="openai",
        model="gpt-4o",
        client="Unknown",
        streaming=False,
        route="/v1/chat/completions",
    )
    assert single(events, "interception.started")["user_agent"].startswith("AsyncOpenAI/Python")
    assert single(events, "prompt")["prompt"] == "Hello, bridge — ünïcode ✓"
    usage = single(events, "token_usage")
    assert completion.usage is not None
    assert usage["provider_response_id"] == completion.id
    assert usage["input_tokens"] == completion.usage.prompt_tokens - 1024
    assert usage["cache_read_input_tokens"] == 1024
    assert usage["cache_write_input_tokens"] == 0
    assert usage["output_tokens"] == completion.usage.completion_tokens
    assert usage["metadata"]["completion_tokens_details"] == {"reasoning_tokens": 7}
    assert usage["metadata"]["service_tier"] == "default"
    assert of_type(events, "tool_usage") == []


async def test_openai_streaming_with_tools_records_assembled_call(
    proxy: Proxy, simulator: Simulator, token: str, events_of: Callable[..., Any]
) -> None:
    client = openai_client(proxy, token, **{"user-agent": "codex_cli_rs/0.87.0 (Mac OS 26.2.0; arm64) ghostty/1.3.0"})
    stream = await client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]}],
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        stream=True,
    )
    chunks = [chunk async for chunk in stream]  # type: ignore[union-attr]
    assert all(len(chunk.choices) == 1 for chunk in chunks), "the usage chunk the client did not ask for leaked"
    call_id = next(c.choices[0].delta.tool_calls[0].id for c in chunks if c.choices[0].delta.tool_calls)
    arguments = "".join(
        call.function.arguments or ""
        for chunk in chunks
        for call in chunk.choices[0].delta.tool_calls or ()
        if call.function is not None
    )
    assert orjson.loads(simulator.state.requests[-1].body)["stream_options"] == {"include_usage": True}

    events = await events_of(1)
    check_interception(
        events,
        token,
        provider="openai",
        model="gpt-4o-mini",
        client="Codex",
        streaming=True,
        route="/v1/chat/completions",
    )
    tool = single(events, "tool_usage")
    assert (tool["tool"], tool["call_id"], tool["input"]) == ("get_weather", call_id, arguments)
    assert orjson.loads(tool["input"]) == {"city": "sample city — ünïcode ✓"}
    assert tool["provider_response_id"] == chunks[0].id
    usage = single(events, "token_usage")
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0


async def test_openai_streaming_with_usage_requested_passes_usage_through(
    proxy: Proxy, token: str, events_of: Callable[..., Any]
) -> None:
    client = openai_client(proxy, token)
    stream = await client.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "count my tokens"}],
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-simulator-cache-read-tokens": "64"},
    )
    chunks = [chunk async for chunk in stream]
    usage_chunks = [chunk for chunk in chunks if chunk.usage is not None]
    assert len(usage_chunks) == 1 and usage_chunks[0].choices == []
    sent = usage_chunks[0].usage
    assert sent is not None
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("Simulated answer ✓")

    usage = single(await events_of(1), "token_usage")
    assert usage["input_tokens"] == sent.prompt_tokens - 64
    assert usage["cache_read_input_tokens"] == 64
    assert usage["output_tokens"] == sent.completion_tokens


async def test_anthropic_blocking_records_cache_reads_and_writes(
    proxy: Proxy, simulator: Simulator, token: str, events_of: Callable[..., Any]
) -> None:
    client = anthropic_client(proxy, token)
    message = await client.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=256,
        messages=[{"role": "user", "content": "Summarise the repository"}],
        extra_headers={
            "x-simulator-cache-read-tokens": "18211",
            "x-simulator-cache-write-tokens": "2048",
            "anthropic-version": "2023-06-01",
        },
    )
    forwarded = simulator.state.requests[-1]
    assert forwarded.headers["x-api-key"] == ANTHROPIC_KEY
    assert "authorization" not in forwarded.headers
    assert forwarded.headers["anthropic-version"] == "2023-06-01"

    events = await events_of(1)
    check_interception(
        events,
        token,
        provider="anthropic",
        model="claude-sonnet-4-5",
        client="Unknown",
        streaming=False,
        route="/v1/messages",
    )
    assert single(events, "prompt")["prompt"] == "Summarise the repository"
    usage = single(events, "token_usage")
    assert usage["provider_response_id"] == message.id
    assert usage["input_tokens"] == message.usage.input_tokens
    assert usage["output_tokens"] == message.usage.output_tokens
    assert usage["cache_read_input_tokens"] == 18211
    assert usage["cache_write_input_tokens"] == 2048
    assert usage["metadata"]["cache_creation"] == {"ephemeral_5m_input_tokens": 2048, "ephemeral_1h_input_tokens": 0}
    assert usage["metadata"]["service_tier"] == "standard"


async def test_anthropic_streaming_like_claude_code_records_tool_use_and_cumulative_usage(
    proxy: Proxy, simulator: Simulator, token: str, events_of: Callable[..., Any]
) -> None:
    client = anthropic_client(proxy, token, **CLAUDE_CODE_HEADERS)
    content = [
        {"type": "text", "text": "<system-reminder>\nAs you answer, use the tools.\n</system-reminder>"},
        {"type": "text", "text": "Read the README please"},
    ]
    async with client.messages.stream(
        model="claude-sonnet-4-5",
        max_tokens=1024,
        messages=[{"role": "user", "content": content}],  # type: ignore[typeddict-item, misc, list-item]
        tools=[READ_TOOL],  # type: ignore[list-item]
        extra_headers={"x-simulator-cache-read-tokens": "500", "x-simulator-cache-write-tokens": "300"},
    ) as stream:
        final = await stream.get_final_message()
    tool_use = next(block for block in final.content if block.type == "tool_use")
    forwarded = simulator.state.requests[-1]
    assert forwarded.headers["anthropic-beta"] == CLAUDE_CODE_HEADERS["anthropic-beta"]
    assert forwarded.headers["user-agent"] == CLAUDE_CODE_HEADERS["user-agent"]

    events = await events_of(1)
    check_interception(
        events,
        token,
        provider="anthropic",
        model="claude-sonnet-4-5",
        client="Claude Code",
        streaming=True,
        route="/v1/messages",
    )
    assert single(events, "prompt")["prompt"] == f"{content[0]['text']}\n{content[1]['text']}"
    tool = single(events, "tool_usage")
    assert (tool["tool"], tool["call_id"]) == ("Read", tool_use.id)  # type: ignore[union-attr]
    assert orjson.loads(tool["input"]) == tool_use.input  # type: ignore[union-attr]
    usage = single(events, "token_usage")
    assert usage["provider_response_id"] == final.id
    assert usage["input_tokens"] == final.usage.input_tokens
    assert usage["output_tokens"] == final.usage.output_tokens, "cumulative usage must not be added up"
    assert (usage["cache_read_input_tokens"], usage["cache_write_input_tokens"]) == (500, 300)


async def test_anthropic_tool_result_turn_has_no_prompt(
    proxy: Proxy, token: str, events_of: Callable[..., Any]
) -> None:
    client = anthropic_client(proxy, token, **CLAUDE_CODE_HEADERS)
    messages: Any = [
        {"role": "user", "content": "Read the README please"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {"file_path": "README.md"}}],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "# AI Bridge"}]},
    ]
    async with client.messages.stream(
        model="claude-sonnet-4-5",
        max_tokens=1024,
        messages=messages,
        tools=[READ_TOOL],  # type: ignore[list-item]
    ) as stream:
        final = await stream.get_final_message()
    assert [block.type for block in final.content] == ["text"]

    events = await events_of(1)
    assert of_type(events, "prompt") == []
    assert of_type(events, "tool_usage") == []
    assert single(events, "token_usage")["output_tokens"] == final.usage.output_tokens


async def test_passthrough_routes_are_forwarded_but_not_interceptions(
    proxy: Proxy, simulator: Simulator, token: str, events_of: Callable[..., Any]
) -> None:
    openai_models = await openai_client(proxy, token).models.list()
    assert "gpt-4o" in [model.id async for model in openai_models]
    assert simulator.state.requests[-1].headers["authorization"] == f"Bearer {OPENAI_KEY}"
    claude = anthropic_client(proxy, token)
    assert "claude-sonnet-4-5" in [model.id async for model in await claude.models.list()]
    assert simulator.state.requests[-1].headers["x-api-key"] == ANTHROPIC_KEY
    counted = await claude.messages.count_tokens(
        model="claude-sonnet-4-5", messages=[{"role": "user", "content": "how many tokens is this?"}]
    )
    assert counted.input_tokens > 0

    await claude.messages.create(model="claude-sonnet-4-5", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    events = await events_of(1)
    assert len({event["interception_id"] for event in events}) == 1
    assert single(events, "interception.started")["route"] == "/v1/messages"
