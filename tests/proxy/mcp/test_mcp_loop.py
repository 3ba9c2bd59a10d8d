"""The injection loop through the real proxy: a real MCP server (the SDK over Streamable HTTP), the simulated
provider calling the injected tools, the official SDKs as clients, the events read back from the broker."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest
from prometheus_client import REGISTRY
from proxy_support import Proxy, ProxyFactory

from aibridge.proxy.mcp import ToolFormat
from aibridge.proxy.mcp.loop import McpRun
from aibridge.testing.mcp_server import McpTestServer

ADD = "bmcp_tools_add"
InjectorFactory = Callable[..., Any]  # the make_injector fixture


def servers_file(tmp_path: Path, server: McpTestServer, extra: str = "") -> Path:
    path = tmp_path / "servers.yaml"
    path.write_text(f"servers:\n  - name: tools\n    url: {server.url}\n{extra}")
    return path


@pytest.fixture
def mcp_proxy(start_proxy: ProxyFactory, mcp_server: McpTestServer, tmp_path: Path) -> Proxy:
    return start_proxy(mcp_servers_file=servers_file(tmp_path, mcp_server))


def anthropic_client(proxy: Proxy, token: str, **headers: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=proxy.anthropic_base_url, api_key=token, default_headers=headers)


def openai_client(proxy: Proxy, token: str, **headers: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.openai_base_url, api_key=token, default_headers=headers)


def of_type(events: list[Any], kind: str) -> list[Any]:
    return [event for event in events if event["type"] == kind]


def round_caps(api: str = "anthropic") -> float:
    return REGISTRY.get_sample_value("aibridge_mcp_round_cap_total", {"api": api}) or 0.0


def sent_bodies(simulator: Any, path: str) -> list[Any]:
    import orjson

    return [orjson.loads(request.body) for request in simulator.state.requests if request.path.endswith(path)]


async def test_anthropic_blocking_runs_the_injected_call_and_answers(
    mcp_proxy: Proxy, token: str, events_of: Callable[..., Any], simulator: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "aibridge.interceptions")
    client = anthropic_client(mcp_proxy, token, **{"x-simulator-mcp-tools": ADD})
    message = client.messages.create(
        model="claude-sonnet-4-5", max_tokens=200, messages=[{"role": "user", "content": "add 1 and 1"}]
    )
    assert message.stop_reason == "end_turn"
    assert all(block.type == "text" for block in message.content)
    assert message.content[-1].type == "text" and "Simulated answer" in message.content[-1].text
    last = sent_bodies(simulator, "/v1/messages")[-1]
    result = last["messages"][-1]["content"][0]
    assert result == {"type": "tool_result", "tool_use_id": result["tool_use_id"], "content": "2", "is_error": False}
    assert any(tool["name"] == ADD for tool in last["tools"])
    events = await events_of(1)
    usages = of_type(events, "token_usage")
    assert len(usages) == 2
    assert message.usage.input_tokens == sum(u["input_tokens"] for u in usages)
    assert message.usage.output_tokens == sum(u["output_tokens"] for u in usages)
    [tool] = of_type(events, "tool_usage")
    assert tool["injected"] is True and tool["tool"] == ADD and tool["invocation_error"] is None
    assert tool["server_url"].endswith("/mcp") and tool["metadata"]["server"] == "tools"
    assert tool["metadata"]["outcome"] == "ok" and tool["metadata"]["duration_ms"] >= 0
    assert (tool["server_name"], tool["duration_ms"]) == ("tools", tool["metadata"]["duration_ms"])
    [line] = [record for record in caplog.records if record.name == "aibridge.interceptions"]
    assert " tools=0 mcp=1 " in line.getMessage() and line.mcp_calls == 1  # type: ignore[attr-defined]


async def test_chat_blocking_multi_round(
    mcp_proxy: Proxy, token: str, events_of: Callable[..., Any], simulator: Any
) -> None:
    client = openai_client(mcp_proxy, token, **{"x-simulator-mcp-tools": ADD, "x-simulator-mcp-rounds": "3"})
    completion = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "add"}])
    choice = completion.choices[0]
    assert choice.finish_reason == "stop" and not choice.message.tool_calls
    assert "Simulated answer" in (choice.message.content or "")
    last = sent_bodies(simulator, "/chat/completions")[-1]
    assert [m["role"] for m in last["messages"]][-2:] == ["assistant", "tool"]
    assert last["messages"][-1]["content"] == "2"
    events = await events_of(1)
    assert len(of_type(events, "token_usage")) == 4
    tools = of_type(events, "tool_usage")
    assert len(tools) == 3 and all(t["injected"] and t["invocation_error"] is None for t in tools)
    assert completion.usage is not None
    assert completion.usage.completion_tokens == sum(u["output_tokens"] for u in of_type(events, "token_usage"))


async def test_responses_blocking_replays_items(
    mcp_proxy: Proxy, token: str, events_of: Callable[..., Any], simulator: Any
) -> None:
    client = openai_client(mcp_proxy, token, **{"x-simulator-mcp-tools": ADD})
    response = client.responses.create(model="gpt-5", input="add 1 and 1", store=False)
    assert all(item.type != "function_call" for item in response.output)
    assert "Simulated answer" in response.output_text
    last = sent_bodies(simulator, "/v1/responses")[-1]
    assert [item.get("type", "message") for item in last["input"]] == [
        "message",
        "function_call",
        "function_call_output",
    ]
    assert last["input"][-1]["output"] == "2"
    events = await events_of(1)
    [tool] = of_type(events, "tool_usage")
    assert tool["injected"] and tool["tool"] == ADD


async def test_failing_calls_go_back_to_the_model_as_errors(
    mcp_proxy: Proxy, token: str, events_of: Callable[..., Any], simulator: Any
) -> None:
    names = "bmcp_tools_fail,bmcp_tools_rpc_error,bmcp_tools_nope"
    client = anthropic_client(mcp_proxy, token, **{"x-simulator-mcp-tools": names})
    message = client.messages.create(
        model="claude-sonnet-4-5", max_tokens=99, messages=[{"role": "user", "content": "x"}]
    )
    assert message.stop_reason == "end_turn"
    results = sent_bodies(simulator, "/v1/messages")[-1]["messages"][-1]["content"]
    assert [r["is_error"] for r in results] == [True, True, True]
    assert "tool_error" in results[0]["content"] and "rpc_error" in results[1]["content"]
    assert "unknown_tool" in results[2]["content"]
    tools = of_type(await events_of(1), "tool_usage")
    assert sorted(t["metadata"].get("outcome") for t in tools) == ["rpc_error", "tool_error", "unknown_tool"]
    assert all(t["invocation_error"] for t in tools)


async def test_arguments_not_matching_the_schema_are_an_error_result(
    mcp_proxy: Proxy, token: str, simulator: Any
) -> None:
    headers = {"x-simulator-mcp-tools": ADD, "x-simulator-mcp-arguments": '{"a": "one"}'}
    completion = openai_client(mcp_proxy, token, **headers).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "add"}]
    )
    assert completion.choices[0].finish_reason == "stop"
    tool_message = sent_bodies(simulator, "/chat/completions")[-1]["messages"][-1]
    assert tool_message["role"] == "tool" and tool_message["content"].startswith("MCP tool call failed (tool_error)")


async def test_round_cap_strips_the_calls(
    start_proxy: ProxyFactory, mcp_server: McpTestServer, tmp_path: Path, token: str, events_of: Callable[..., Any]
) -> None:
    proxy = start_proxy(mcp_servers_file=servers_file(tmp_path, mcp_server), mcp_max_rounds=2)
    capped = round_caps()
    client = anthropic_client(proxy, token, **{"x-simulator-mcp-tools": ADD, "x-simulator-mcp-rounds": "5"})
    message = client.messages.create(
        model="claude-sonnet-4-5", max_tokens=99, messages=[{"role": "user", "content": "x"}]
    )
    assert message.stop_reason == "end_turn" and all(block.type == "text" for block in message.content)
    events = await events_of(1)
    assert len(of_type(events, "token_usage")) == 2
    tools = of_type(events, "tool_usage")
    assert [t["invocation_error"] for t in tools][-1].startswith("not run: the round cap")
    assert round_caps() == capped + 1


async def test_mixed_turn_gives_the_client_only_its_calls(
    mcp_proxy: Proxy, token: str, events_of: Callable[..., Any]
) -> None:
    headers = {"x-simulator-mcp-tools": ADD, "x-simulator-mcp-mixed": "1"}
    tool = {
        "name": "read_file",
        "description": "Read",
        "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}},
    }
    message = anthropic_client(mcp_proxy, token, **headers).messages.create(
        model="claude-sonnet-4-5", max_tokens=99, tools=[tool], messages=[{"role": "user", "content": "x"}]
    )
    calls = [block for block in message.content if block.type == "tool_use"]
    assert [call.name for call in calls] == ["read_file"] and message.stop_reason == "tool_use"
    tools = of_type(await events_of(1), "tool_usage")
    injected = [t for t in tools if t["injected"]]
    assert [t["tool"] for t in tools if not t["injected"]] == ["read_file"]
    assert injected[0]["invocation_error"].startswith("not run: the model called client tools")


async def test_opt_out_header_skips_injection(mcp_proxy: Proxy, token: str, simulator: Any) -> None:
    client = openai_client(mcp_proxy, token, **{"X-Aibridge-Mcp": "off"})
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    last = sent_bodies(simulator, "/chat/completions")[-1]
    assert "tools" not in last
    assert not any(name.startswith("x-aibridge-mcp") for name in simulator.state.requests[-1].headers)


@pytest.mark.parametrize("kib", [500, 1024])
async def test_a_large_result_is_capped_and_a_1_mib_one_an_error_result(
    mcp_proxy: Proxy, token: str, simulator: Any, kib: int
) -> None:
    """The server sends the text twice (content and structured content): 500 KiB is a 1 MiB message, cut to
    the cap; 1 MiB of text is past the MCP client's 1 MiB event limit: an error result, never a 5xx."""
    headers = {"x-simulator-mcp-tools": "bmcp_tools_big", "x-simulator-mcp-arguments": f'{{"kib": {kib}}}'}
    message = anthropic_client(mcp_proxy, token, **headers).messages.create(
        model="claude-sonnet-4-5", max_tokens=99, messages=[{"role": "user", "content": "x"}]
    )
    assert message.stop_reason == "end_turn"
    result = sent_bodies(simulator, "/v1/messages")[-1]["messages"][-1]["content"][0]
    assert len(result["content"].encode()) <= 64 * 1024
    if kib == 500:
        assert result["is_error"] is False and "result cut to 65536" in result["content"]
    else:
        assert result["is_error"] is True and "byte limit" in result["content"]


async def test_server_down_is_an_error_result_not_a_5xx(
    start_proxy: ProxyFactory, tmp_path: Path, token: str, simulator: Any
) -> None:
    server = McpTestServer().start()
    proxy = start_proxy(mcp_servers_file=servers_file(tmp_path, server))
    server.stop()
    message = anthropic_client(proxy, token, **{"x-simulator-mcp-tools": ADD}).messages.create(
        model="claude-sonnet-4-5", max_tokens=99, messages=[{"role": "user", "content": "x"}]
    )
    assert message.stop_reason == "end_turn"
    result = sent_bodies(simulator, "/v1/messages")[-1]["messages"][-1]["content"][0]
    assert result["is_error"] is True and "unavailable" in result["content"]


async def test_an_answer_without_injected_calls_reaches_the_client_as_the_provider_sent_it(
    mcp_server: McpTestServer, make_injector: InjectorFactory
) -> None:
    injector = await make_injector(f"servers:\n  - name: tools\n    url: {mcp_server.url}\n")
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    run = McpRun.begin(injector, ToolFormat.OPENAI_CHAT, body, "user-1", {})
    assert run is not None
    message = {"role": "assistant", "content": "hello"}
    raw = b'{"id": "c1",  "choices": [{"index": 0, "message": %s, "finish_reason": "stop"}]}' % orjson.dumps(message)
    assert not await run.settle(raw)
    assert run.merged(raw) is raw  # not decoded and encoded again: the provider's bytes


@pytest.mark.parametrize("rounds", ["0", "1"])
async def test_responses_blocking_echo_shows_only_the_clients_tools(
    mcp_proxy: Proxy, token: str, simulator: Any, rounds: str
) -> None:
    """A Responses answer echoes the request's tools: the client's come back, the injected never do,
    whether the model called one (a merged answer) or not (the provider's answer as it came)."""
    client = openai_client(mcp_proxy, token, **{"x-simulator-mcp-tools": ADD, "x-simulator-mcp-rounds": rounds})
    own = {"type": "function", "name": "read_file", "parameters": {"type": "object", "properties": {}}}
    response = client.responses.create(model="gpt-5", input="add 1 and 1", store=False, tools=[own])  # type: ignore[list-item]
    assert [tool.name for tool in response.tools] == ["read_file"]  # type: ignore[union-attr]
    assert "bmcp_" not in response.model_dump_json()
    offered = [tool["name"] for tool in sent_bodies(simulator, "/v1/responses")[-1]["tools"]]
    assert offered[0] == "read_file" and ADD in offered


def nested(levels: int) -> Any:
    value: Any = "x"
    for _ in range(levels):
        value = [value]
    return value


async def test_a_body_too_deep_to_write_again_goes_without_injection(
    mcp_proxy: Proxy, token: str, simulator: Any
) -> None:
    """Nesting orjson reads but cannot write (past 254 levels), in a body the splice cannot take (the SDK's
    JSON has spaces): the tools cannot be added, so the request goes on as the client sent it, not a 500."""
    client = openai_client(mcp_proxy, token, **{"x-simulator-mcp-tools": ADD})
    tool = {"type": "function", "function": {"name": "read_file", "parameters": {"type": "object"}}}
    answer = client.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "hi"}],
        tools=[tool],  # type: ignore[list-item]
        extra_body={"metadata_tree": nested(300)},
    )
    [call] = answer.choices[0].message.tool_calls or []
    assert call.function.name == "read_file"  # the model had the client's tool only
    last = sent_bodies(simulator, "/chat/completions")[-1]
    assert [item["function"]["name"] for item in last["tools"]] == ["read_file"]


@pytest.mark.parametrize("stream", [False, True], ids=["blocking", "streamed"])
async def test_a_later_round_too_deep_to_write_is_a_clear_error(
    mcp_proxy: Proxy, token: str, simulator: Any, stream: bool
) -> None:
    """Written compactly, the same depth is spliced and the model calls an injected tool; the next round's
    body cannot be written: the client gets a 400 (blocking) or an error event (streamed) saying why."""
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "add"}], "stream": stream, "tree": "<deep>"}
    raw = orjson.dumps(body).replace(b'"<deep>"', b"[" * 300 + b'"x"' + b"]" * 300)  # orjson writes 254 at most
    headers = {"authorization": f"Bearer {token}", "x-simulator-mcp-tools": ADD}
    async with httpx.AsyncClient(timeout=30) as client:
        answer = await client.post(f"{mcp_proxy.openai_base_url}/chat/completions", content=raw, headers=headers)
    assert ADD in [item["function"]["name"] for item in sent_bodies(simulator, "/chat/completions")[-1]["tools"]]
    if stream:
        assert answer.status_code == 200
        [error] = [line for line in answer.text.splitlines() if line.startswith("data: ") and '"error"' in line]
        assert "nested deeper than" in orjson.loads(error[6:])["error"]["message"]
    else:
        assert answer.status_code == 400
        error = answer.json()["error"]
        assert error["type"] == "invalid_request_error" and "nested deeper than" in error["message"]


async def test_a_streamed_chat_too_deep_to_ask_for_usage_is_refused_as_without_injection(
    mcp_proxy: Proxy, token: str, simulator: Any
) -> None:
    """Its own ``stream_options`` without usage, nested past what the encoder writes: neither the injected
    tools nor the usage the proxy asks for can be added, so it is the 400 a proxy without injection gives."""
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "add"}], "stream": True, "tree": "<deep>"}
    body |= {"stream_options": {"include_usage": False}}
    raw = orjson.dumps(body).replace(b'"<deep>"', b"[" * 300 + b'"x"' + b"]" * 300)
    headers = {"authorization": f"Bearer {token}", "x-simulator-mcp-tools": ADD}
    sent_before = len(sent_bodies(simulator, "/chat/completions"))
    async with httpx.AsyncClient(timeout=30) as client:
        answer = await client.post(f"{mcp_proxy.openai_base_url}/chat/completions", content=raw, headers=headers)
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["type"] == "invalid_request_error" and "stream_options.include_usage" in error["message"]
    assert len(sent_bodies(simulator, "/chat/completions")) == sent_before  # nothing went upstream
