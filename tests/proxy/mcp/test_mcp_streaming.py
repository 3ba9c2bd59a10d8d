"""The injection loop on streamed requests, through the real proxy: the rounds' streams joined into one stream
that the official SDKs parse (indexes contiguous, no injected call shown, usage summed), the events read back
from the broker."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from proxy_support import Proxy, ProxyFactory, wait_for
from test_mcp_loop import (
    ADD,
    anthropic_client,
    mcp_proxy,
    of_type,
    openai_client,
    round_caps,
    sent_bodies,
    servers_file,
)

from aibridge.testing.mcp_server import McpTestServer

__all__ = ["mcp_proxy"]  # the fixture, shared with the blocking tests

ROUNDS = {"x-simulator-mcp-tools": ADD, "x-simulator-mcp-rounds": "2"}
READ_FILE = {
    "name": "read_file",
    "description": "Read",
    "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}},
}
CHAT_READ_FILE = {
    "type": "function",
    "function": {"name": "read_file", "parameters": {"type": "object", "properties": {"path": {"type": "string"}}}},
}


def no_injected(value: Any) -> None:
    assert "bmcp_" not in orjson.dumps(value, default=str).decode()


async def test_anthropic_stream_final_message_sums_usage(
    mcp_proxy: Proxy, token: str, events_of: Callable[..., Any], simulator: Any
) -> None:
    client = anthropic_client(mcp_proxy, token, **ROUNDS)
    with client.messages.stream(
        model="claude-sonnet-4-5", max_tokens=200, messages=[{"role": "user", "content": "add 1 and 1"}]
    ) as stream:
        message = stream.get_final_message()
    assert message.stop_reason == "end_turn"
    assert message.content and all(block.type == "text" for block in message.content)
    assert "Simulated answer" in message.content[-1].text  # type: ignore[union-attr]
    bodies = sent_bodies(simulator, "/v1/messages")
    assert len(bodies) == 3 and all(body["stream"] is True for body in bodies)
    assert bodies[-1]["messages"][-1]["content"][0]["content"] == "2"
    events = await events_of(1)
    usages = of_type(events, "token_usage")
    assert len(usages) == 3
    assert message.usage.input_tokens == sum(u["input_tokens"] for u in usages)
    assert message.usage.output_tokens == sum(u["output_tokens"] for u in usages)
    tools = of_type(events, "tool_usage")
    assert len(tools) == 2 and all(t["injected"] and t["invocation_error"] is None for t in tools)
    [ended] = of_type(events, "interception.ended")
    assert ended["status"] == "completed"


async def test_anthropic_raw_events_have_contiguous_indexes(mcp_proxy: Proxy, token: str) -> None:
    client = anthropic_client(mcp_proxy, token, **ROUNDS)
    events = list(
        client.messages.create(
            model="claude-sonnet-4-5",
            max_tokens=200,
            stream=True,
            messages=[{"role": "user", "content": "add 1 and 1"}],
        )
    )
    kinds = [event.type for event in events]
    assert kinds[0] == "message_start" and kinds.count("message_start") == 1
    assert kinds[-2:] == ["message_delta", "message_stop"] and kinds.count("message_delta") == 1
    starts = [event.index for event in events if event.type == "content_block_start"]
    assert starts == list(range(len(starts))) and len(starts) >= 2
    open_index = -1
    for event in events:
        if event.type == "content_block_start":
            open_index = event.index
        elif event.type in {"content_block_delta", "content_block_stop"}:
            assert event.index == open_index
    no_injected([event.model_dump() for event in events])


async def test_anthropic_stream_mixed_turn_forwards_the_client_call(mcp_proxy: Proxy, token: str) -> None:
    client = anthropic_client(mcp_proxy, token, **{"x-simulator-mcp-tools": ADD, "x-simulator-mcp-mixed": "1"})
    with client.messages.stream(
        model="claude-sonnet-4-5", max_tokens=99, tools=[READ_FILE], messages=[{"role": "user", "content": "x"}]
    ) as stream:
        message = stream.get_final_message()
    assert [block.name for block in message.content if block.type == "tool_use"] == ["read_file"]
    assert message.stop_reason == "tool_use"
    no_injected(message.model_dump())


async def test_anthropic_stream_round_cap(
    start_proxy: ProxyFactory, mcp_server: McpTestServer, tmp_path: Path, token: str, events_of: Callable[..., Any]
) -> None:
    proxy = start_proxy(mcp_servers_file=servers_file(tmp_path, mcp_server), mcp_max_rounds=2)
    capped = round_caps()
    client = anthropic_client(proxy, token, **{"x-simulator-mcp-tools": ADD, "x-simulator-mcp-rounds": "5"})
    with client.messages.stream(
        model="claude-sonnet-4-5", max_tokens=99, messages=[{"role": "user", "content": "x"}]
    ) as stream:
        message = stream.get_final_message()
    assert message.stop_reason == "end_turn" and all(block.type == "text" for block in message.content)
    events = await events_of(1)
    assert len(of_type(events, "token_usage")) == 2
    assert of_type(events, "tool_usage")[-1]["invocation_error"].startswith("not run: the round cap")
    assert round_caps() == capped + 1


@pytest.mark.parametrize("include_usage", [True, False])
async def test_chat_stream_accumulates(
    mcp_proxy: Proxy, token: str, events_of: Callable[..., Any], simulator: Any, include_usage: bool
) -> None:
    client = openai_client(mcp_proxy, token, **ROUNDS)
    earlier = len(sent_bodies(simulator, "/chat/completions"))
    options = {"stream_options": {"include_usage": True}} if include_usage else {}
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o", stream=True, messages=[{"role": "user", "content": "add"}], **options
        )
    )
    no_injected([chunk.model_dump() for chunk in chunks])
    assert sum(1 for chunk in chunks if chunk.choices and chunk.choices[0].delta.role) == 1
    finishes = [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices]
    assert [reason for reason in finishes if reason] == ["stop"]
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert "Simulated answer" in text
    bodies = sent_bodies(simulator, "/chat/completions")[earlier:]
    assert len(bodies) == 3 and all(body["stream_options"]["include_usage"] for body in bodies)
    usages = of_type(await events_of(1), "token_usage")
    assert len(usages) == 3
    usage_chunks = [chunk.usage for chunk in chunks if chunk.usage is not None]
    if include_usage:
        [usage] = usage_chunks
        assert usage.completion_tokens == sum(u["output_tokens"] for u in usages)
        assert chunks[-1].usage is usage and not chunks[-1].choices
    else:
        assert usage_chunks == []


async def test_chat_stream_helper_final_completion(mcp_proxy: Proxy, token: str) -> None:
    client = openai_client(mcp_proxy, token, **ROUNDS)
    with client.chat.completions.stream(model="gpt-4o", messages=[{"role": "user", "content": "add"}]) as stream:
        completion = stream.get_final_completion()
    choice = completion.choices[0]
    assert choice.finish_reason == "stop" and not choice.message.tool_calls
    assert "Simulated answer" in (choice.message.content or "")


async def test_chat_stream_mixed_turn_renumbers_the_client_call(mcp_proxy: Proxy, token: str) -> None:
    client = openai_client(mcp_proxy, token, **{"x-simulator-mcp-tools": ADD, "x-simulator-mcp-mixed": "1"})
    with client.chat.completions.stream(
        model="gpt-4o", tools=[CHAT_READ_FILE], messages=[{"role": "user", "content": "x"}]
    ) as stream:
        completion = stream.get_final_completion()
    calls = completion.choices[0].message.tool_calls or []
    assert [call.function.name for call in calls] == ["read_file"]  # type: ignore[union-attr]
    assert completion.choices[0].finish_reason == "tool_calls"


async def test_responses_stream_final_response(
    mcp_proxy: Proxy, token: str, events_of: Callable[..., Any], simulator: Any
) -> None:
    client = openai_client(mcp_proxy, token, **ROUNDS)
    with client.responses.stream(model="gpt-5", input="add 1 and 1", store=False) as stream:
        response = stream.get_final_response()
    assert all(item.type != "function_call" for item in response.output)
    assert "Simulated answer" in response.output_text
    no_injected(response.model_dump())
    assert len(sent_bodies(simulator, "/v1/responses")) == 3
    usages = of_type(await events_of(1), "token_usage")
    assert len(usages) == 3 and response.usage is not None
    assert response.usage.output_tokens == sum(u["output_tokens"] for u in usages)


async def test_responses_raw_events_numbered_and_contiguous(mcp_proxy: Proxy, token: str) -> None:
    """Each round starts with a reasoning item (upstream output indexes 0, 0, 0 then 1): the client's run on."""
    client = openai_client(mcp_proxy, token, **ROUNDS, **{"x-simulator-reasoning-tokens": "5"})
    events = list(client.responses.create(model="gpt-5", input="add 1 and 1", stream=True))
    numbers = [event.sequence_number for event in events]
    assert numbers == list(range(len(numbers)))
    kinds = [event.type for event in events]
    assert kinds.count("response.created") == 1 and kinds.count("response.completed") == 1
    assert kinds[-1] == "response.completed"
    added = [event.output_index for event in events if event.type == "response.output_item.added"]
    assert added == [0, 1, 2, 3]
    no_injected([event.model_dump() for event in events])


NO_CALL = {"x-simulator-mcp-rounds": "0"}  # the model calls no injected tool (it calls the client's)
RESPONSES_READ_FILE = {"type": "function", "name": "read_file", "parameters": CHAT_READ_FILE["function"]["parameters"]}


def stream_with_a_client_tool(api: str, client: Any) -> list[Any]:
    """The API's streamed request with one client tool, read by the official SDK: the events it parsed."""
    prompt = "read the file a.py"
    if api == "anthropic":
        messages: Any = [{"role": "user", "content": prompt}]
        with client.messages.stream(
            model="claude-sonnet-4-5", max_tokens=200, messages=messages, tools=[READ_FILE]
        ) as s:
            events = list(s)
            s.get_final_message()
        return events
    if api == "openai_responses":
        with client.responses.stream(model="gpt-5", input=prompt, tools=[RESPONSES_READ_FILE], store=False) as s:
            events = list(s)
            s.get_final_response()
        return events
    messages = [{"role": "user", "content": prompt}]
    return list(client.chat.completions.create(model="gpt-4o", stream=True, messages=messages, tools=[CHAT_READ_FILE]))


def recorded(events: list[Any], interception: str) -> dict[str, list[Any]]:
    """What an interception's rounds recorded, less what differs between two requests (ids, times, and the
    input tokens, which count the offered tools)."""
    mine = [event for event in events if event["interception_id"] == interception]
    usage_fields = ("output_tokens", "cache_read_input_tokens", "cache_write_input_tokens", "metadata")
    return {
        "token_usage": [{key: u[key] for key in usage_fields} for u in of_type(mine, "token_usage")],
        "tool_usage": [
            {key: t[key] for key in ("tool", "input", "injected", "invocation_error", "server_name", "metadata")}
            for t in of_type(mine, "tool_usage")
        ],
        "reasoning": [r["text"] for r in of_type(mine, "reasoning")],
        "ended": [(e["status"], e["http_status"]) for e in of_type(mine, "interception.ended")],
    }


@pytest.fixture
def on_and_off(start_proxy: ProxyFactory, mcp_server: McpTestServer, tmp_path: Path) -> tuple[Proxy, Proxy]:
    """A proxy with injection and one without, publishing to the same topic."""
    return start_proxy(mcp_servers_file=servers_file(tmp_path, mcp_server)), start_proxy()


@pytest.mark.parametrize("api", ["anthropic", "openai_chat", "openai_responses"])
async def test_stream_without_injected_call_is_recorded_as_without_injection(
    on_and_off: tuple[Proxy, Proxy], token: str, events_of: Callable[..., Any], simulator: Any, api: str
) -> None:
    """The first round goes unedited (a Responses stream's echoed tools less the injected ones), and its
    record is the same request's record without injection."""
    on, off = on_and_off
    client = anthropic_client if api == "anthropic" else openai_client
    earlier = len(simulator.state.requests)
    parsed = stream_with_a_client_tool(api, client(on, token, **NO_CALL))
    stream_with_a_client_tool(api, client(off, token, **NO_CALL))
    no_injected([event.model_dump() for event in parsed])
    if api == "openai_responses":
        assert [event.sequence_number for event in parsed] == list(range(len(parsed)))
        assert [tool.name for tool in parsed[-1].response.tools] == ["read_file"]
    offered = [request.body for request in list(simulator.state.requests)[earlier:]]
    assert [b"bmcp_tools_add" in body for body in offered] == [True, False]  # injection was on, then off
    events = await events_of(2)
    on_id, off_id = (event["interception_id"] for event in of_type(events, "interception.started"))
    with_injection, without = recorded(events, on_id), recorded(events, off_id)
    assert with_injection == without
    assert [tool["tool"] for tool in with_injection["tool_usage"]] == ["read_file"]
    assert len(with_injection["token_usage"]) == 1 and with_injection["ended"] == [("completed", 200)]


@pytest.mark.parametrize("stream", [False, True], ids=["blocking", "streaming"])
async def test_an_injection_loop_leaves_no_reference_cycle(
    mcp_proxy: Proxy, token: str, events_of: Callable[..., Any], collected: Callable[[], list[Any]], stream: bool
) -> None:
    """As tests/proxy/test_proxy_no_cycles.py asks of an interception without injection: the rounds'
    objects are freed by reference counting, not left to the garbage collector."""
    client = anthropic_client(mcp_proxy, token, **ROUNDS)
    message = {"role": "user", "content": "add 1 and 1"}
    if stream:
        with client.messages.stream(model="claude-sonnet-4-5", max_tokens=200, messages=[message]) as answer:
            answer.get_final_message()
    else:
        client.messages.create(model="claude-sonnet-4-5", max_tokens=200, messages=[message])
    await events_of(1)
    await wait_for(lambda: not mcp_proxy.component.deferred and mcp_proxy.component.in_flight.count == 0)
    assert collected() == []
