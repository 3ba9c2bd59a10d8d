"""The Responses API end to end: the official openai SDK through the proxy to the simulated provider, in
Codex's agent-loop shape; events read back from the real broker (validated against the schema there)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

import httpx
import openai
import orjson
import pytest
from openai.types.responses import ResponseFunctionToolCall, ResponseUsage
from proxy_support import OPENAI_KEY, Proxy, ProxyFactory, Simulator, of_type
from test_proxy_errors import assert_openai_error
from test_proxy_sdk import check_interception, openai_client, single

from aibridge.events import Event
from aibridge.testing.broker import free_port

pytestmark = pytest.mark.kafka

PATH = "/api/v2/aibridge/openai/v1/responses"
CODEX_AGENT = "codex_exec/0.171.0 (Debian 12.0.0; x86_64) xterm (codex_exec; 0.171.0)"
EXEC_TOOL: Any = {
    "type": "function",
    "name": "exec_command",
    "description": "Runs a command in a PTY, returning output or a session ID for ongoing interaction.",
    "strict": False,
    "parameters": {
        "type": "object",
        "properties": {"cmd": {"type": "string"}, "workdir": {"type": "string"}},
        "required": ["cmd"],
        "additionalProperties": False,
    },
}
PROMPT = "List the files — in Île-de-France ✓"
CODEX_INPUT: Any = [
    {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "<permissions>…"}]},
    {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "<environment_context>…"}]},
    {"type": "message", "role": "user", "content": [{"type": "input_text", "text": PROMPT}]},
]
REQUEST = {"model": "gpt-5", "input": "hi"}


def check_usage(event: Event, usage: ResponseUsage | None, cache_read: int = 0, cache_write: int = 0) -> None:
    """The recorded counts follow the convention: input excludes cache reads and writes."""
    assert usage is not None
    assert usage.input_tokens_details.cached_tokens == cache_read
    assert usage.input_tokens_details.cache_write_tokens == cache_write
    assert event["input_tokens"] == usage.input_tokens - cache_read - cache_write > 0
    assert (event["cache_read_input_tokens"], event["cache_write_input_tokens"]) == (cache_read, cache_write)
    assert event["output_tokens"] == usage.output_tokens > 0


def by_interception(events: list[Event]) -> list[list[Event]]:
    """The events grouped per interception, in the order the interceptions started."""
    groups: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        groups[event["interception_id"]].append(event)
    return sorted(groups.values(), key=lambda group: single(group, "interception.started")["started_at"])


async def test_blocking_response_records_prompt_usage_and_forwards_the_body_unchanged(
    proxy: Proxy, simulator: Simulator, token: str, events_of: Callable[..., Any]
) -> None:
    response = await openai_client(proxy, token).responses.create(
        model="gpt-5",
        input="Explain the bridge — ünïcode ✓",
        instructions="Be brief.",
        extra_headers={
            "x-simulator-cache-read-tokens": "1024",
            "x-simulator-cache-write-tokens": "256",
            "x-simulator-reasoning-tokens": "7",
        },
    )
    assert response.output_text.startswith("Simulated answer ✓")
    forwarded = simulator.state.requests[-1]
    assert (forwarded.method, forwarded.path) == ("POST", "/v1/responses")
    assert forwarded.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert token not in str(forwarded.headers)
    assert orjson.loads(forwarded.body) == {
        "model": "gpt-5",
        "input": "Explain the bridge — ünïcode ✓",
        "instructions": "Be brief.",
    }

    events = await events_of(1)
    check_interception(
        events, token, provider="openai", model="gpt-5", client="Unknown", streaming=False, route="/v1/responses"
    )
    prompt = single(events, "prompt")
    assert (prompt["prompt"], prompt["provider_response_id"]) == ("Explain the bridge — ünïcode ✓", response.id)
    usage = single(events, "token_usage")
    assert usage["provider_response_id"] == response.id
    check_usage(usage, response.usage, cache_read=1024, cache_write=256)
    assert usage["metadata"] == {"output_tokens_details": {"reasoning_tokens": 7}, "service_tier": "default"}
    assert of_type(events, "tool_usage") == []


async def test_codex_agent_loop_streams_a_function_call_then_its_output(
    proxy: Proxy, simulator: Simulator, token: str, events_of: Callable[..., Any]
) -> None:
    client = openai_client(proxy, token, **{"user-agent": CODEX_AGENT})
    options: Any = {
        "model": "gpt-5",
        "instructions": "You are Codex.",
        "tools": [EXEC_TOOL],
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "store": False,
        "include": ["reasoning.encrypted_content"],
        "extra_headers": {"x-simulator-reasoning-tokens": "64", "x-simulator-cache-read-tokens": "2048"},
    }
    stream = await client.responses.create(input=CODEX_INPUT, stream=True, **options)
    events = [event async for event in stream]
    first = events[-1].response
    assert events[-1].type == "response.completed"
    call = first.output[-1]
    assert isinstance(call, ResponseFunctionToolCall)
    streamed_arguments = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert streamed_arguments == call.arguments
    assert simulator.state.requests[-1].headers["user-agent"] == CODEX_AGENT
    assert orjson.loads(simulator.state.requests[-1].body)["stream"] is True
    assert "stream_options" not in orjson.loads(simulator.state.requests[-1].body), "sent upstream unchanged"

    follow_up = [
        *CODEX_INPUT,
        {"type": "function_call", "name": call.name, "arguments": call.arguments, "call_id": call.call_id},
        {"type": "function_call_output", "call_id": call.call_id, "output": "README.md\nservices\n"},
    ]
    async with client.responses.stream(input=follow_up, **options) as second_stream:
        second = await second_stream.get_final_response()
    assert [item.type for item in second.output] == ["reasoning", "message"]

    calling, answering = by_interception(await events_of(2))
    expected = {"provider": "openai", "model": "gpt-5", "client": "Codex", "streaming": True, "route": "/v1/responses"}
    check_interception(calling, token, **expected)
    check_interception(answering, token, **expected)
    assert single(calling, "interception.started")["user_agent"] == CODEX_AGENT
    assert single(calling, "prompt")["prompt"] == PROMPT
    tool = single(calling, "tool_usage")
    assert (tool["tool"], tool["call_id"], tool["input"]) == ("exec_command", call.call_id, call.arguments)
    assert orjson.loads(tool["input"]) == {"cmd": "sample cmd — ünïcode ✓"}
    assert (tool["provider_response_id"], tool["injected"], tool["metadata"]) == (first.id, False, {})
    check_usage(single(calling, "token_usage"), first.usage, cache_read=2048)
    assert single(calling, "token_usage")["metadata"]["output_tokens_details"] == {"reasoning_tokens": 64}

    assert of_type(answering, "prompt") == [], "a function_call_output turn is not a prompt"
    assert of_type(answering, "tool_usage") == []
    assert single(answering, "token_usage")["provider_response_id"] == second.id
    check_usage(single(answering, "token_usage"), second.usage, cache_read=2048)


async def test_bad_requests_and_upstream_errors_in_openai_shape_and_recorded(
    proxy: Proxy, simulator: Simulator, token: str, events_of: Callable[..., Any]
) -> None:
    seen = len(simulator.state.requests)
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as http:
        unauthenticated = await http.post(PATH, json=REQUEST)
        assert_openai_error(unauthenticated, 401, "invalid_request_error")
        assert unauthenticated.json()["error"]["code"] == "invalid_api_key"
        http.headers["authorization"] = f"Bearer {token}"
        for body, message in [(b"{nope", "not valid JSON"), (b'{"input": "hi"}', "model")]:
            invalid = await http.post(PATH, content=body, headers={"content-type": "application/json"})
            assert_openai_error(invalid, 400, "invalid_request_error")
            assert message in invalid.json()["error"]["message"]
        assert len(simulator.state.requests) == seen, "a refused request reached the upstream"
        limited = await http.post(PATH, json=REQUEST, headers={"x-simulator-status": "429"})
        assert_openai_error(limited, 429, "rate_limit_error")
        assert limited.json()["error"]["message"] == "simulated rate limit: slow down"

    events = await events_of(3)
    ended = of_type(events, "interception.ended")
    assert sorted((e["status"], e["http_status"]) for e in ended) == [
        ("invalid_request", 400),
        ("invalid_request", 400),
        ("upstream_error", 429),
    ]
    assert {e["route"] for e in of_type(events, "interception.started")} == {"/v1/responses"}
    assert [e["prompt"] for e in of_type(events, "prompt")] == ["hi"]
    assert of_type(events, "token_usage") == []


async def test_upstream_failing_mid_stream_ends_with_an_error_event_the_sdk_raises(
    proxy: Proxy, token: str, events_of: Callable[..., Any]
) -> None:
    client = openai_client(proxy, token, **{"x-simulator-fail-after-chunks": "5"})
    received: list[Any] = []
    with pytest.raises(openai.APIError) as raised:
        stream = await client.responses.create(model="gpt-5", input="hi", stream=True)
        async for event in stream:
            received.append(event)
    assert [event.sequence_number for event in received] == [0, 1, 2, 3, 4]
    assert raised.value.body == {
        "message": str(raised.value.message),
        "type": "server_error",
        "param": None,
        "code": "upstream_unreachable",
    }

    async with (
        httpx.AsyncClient(base_url=proxy.url, timeout=10) as http,
        http.stream(
            "POST",
            PATH,
            json=REQUEST | {"stream": True},
            headers={"authorization": f"Bearer {token}", "x-simulator-fail-after-chunks": "3"},
        ) as answer,
    ):
        raw = b"".join([chunk async for chunk in answer.aiter_raw()])
    last = raw.rstrip(b"\n").rsplit(b"\n\n", 1)[-1]
    assert last.startswith(b"event: error\ndata: ")
    error = orjson.loads(last.removeprefix(b"event: error\ndata: "))
    assert (error["type"], error["code"], error["sequence_number"]) == ("error", "upstream_unreachable", 3)

    for ended in of_type(await events_of(2), "interception.ended"):
        assert (ended["status"], ended["http_status"], ended["streaming"]) == ("upstream_error", 200, True)
        assert ended["error"]


async def test_unreachable_upstream_is_502_and_timeout_is_504(
    start_proxy: ProxyFactory, token: str, events_of: Callable[..., Any]
) -> None:
    dead = start_proxy(openai_base_url=f"http://127.0.0.1:{free_port()}/v1")
    slow = start_proxy(upstream_read_timeout=0.3)
    async with httpx.AsyncClient(timeout=10, headers={"authorization": f"Bearer {token}"}) as http:
        assert_openai_error(await http.post(dead.url + PATH, json=REQUEST), 502, "server_error")
        stalled = await http.post(slow.url + PATH, json=REQUEST, headers={"x-simulator-stall-ms": "1500"})
        assert_openai_error(stalled, 504, "server_error")
    ended = of_type(await events_of(2), "interception.ended")
    assert sorted((e["status"], e["http_status"], e["route"]) for e in ended) == [
        ("upstream_error", 502, "/v1/responses"),
        ("upstream_error", 504, "/v1/responses"),
    ]
