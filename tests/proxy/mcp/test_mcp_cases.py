"""Injection cases through the real proxy, streamed: a denied tool is never offered (its name called anyway is
an unknown-tool error result), a forwarded token reaches the MCP server and never the provider, and a server
that dies while the model waits turns the call into an error result while the client still gets its answer."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
from proxy_support import Proxy, ProxyFactory
from test_mcp_loop import anthropic_client, of_type, openai_client, sent_bodies, servers_file

from aibridge.testing.mcp_server import McpTestServer


async def test_denied_tool_never_offered_and_unknown_when_called(
    start_proxy: ProxyFactory, tmp_path: Path, token: str, events_of: Callable[..., Any], simulator: Any
) -> None:
    with McpTestServer() as mcp_server:
        await _denied(
            start_proxy(mcp_servers_file=servers_file(tmp_path, mcp_server, '    tool_deny_regex: "^fail$"\n')),
            token,
            events_of,
            simulator,
        )


async def _denied(proxy: Proxy, token: str, events_of: Callable[..., Any], simulator: Any) -> None:
    client = anthropic_client(proxy, token, **{"x-simulator-mcp-tools": "bmcp_tools_fail"})
    with client.messages.stream(
        model="claude-sonnet-4-5", max_tokens=99, messages=[{"role": "user", "content": "x"}]
    ) as stream:
        message = stream.get_final_message()
    assert message.stop_reason == "end_turn"
    first, last = sent_bodies(simulator, "/v1/messages")[-2:]
    offered = {tool["name"] for tool in first["tools"]}
    assert "bmcp_tools_add" in offered and "bmcp_tools_fail" not in offered
    [result] = last["messages"][-1]["content"]
    assert result["is_error"] is True and "unknown_tool" in result["content"]
    [tool] = of_type(await events_of(1), "tool_usage")
    assert tool["injected"] and tool["metadata"]["outcome"] == "unknown_tool" and tool["invocation_error"]


async def test_forwarded_token_reaches_the_server_never_the_provider(
    start_proxy: ProxyFactory, tmp_path: Path, token: str, simulator: Any
) -> None:
    with McpTestServer() as server:
        proxy = start_proxy(mcp_servers_file=servers_file(tmp_path, server, "    auth: forward\n"))
        headers = {"x-simulator-mcp-tools": "bmcp_tools_whoami", "X-Aibridge-Mcp-Token-Tools": "caller-secret-1"}
        client = openai_client(proxy, token, **headers)
        with client.chat.completions.stream(model="gpt-4o", messages=[{"role": "user", "content": "who"}]) as stream:
            completion = stream.get_final_completion()
        assert completion.choices[0].finish_reason == "stop"
        assert set(server.tokens_seen) == {"", "caller-secret-1"}  # tools listed without a token, called with it
    tool_message = sent_bodies(simulator, "/chat/completions")[-1]["messages"][-1]
    assert tool_message["role"] == "tool" and "caller-secret-1" in tool_message["content"]
    for request in list(simulator.state.requests)[-2:]:
        assert not any(name.lower().startswith("x-aibridge-mcp") for name in request.headers)
        assert b"caller-secret-1" not in request.body.split(b'"role":"tool"')[0]


async def test_server_killed_mid_call_is_an_error_result(
    start_proxy: ProxyFactory, tmp_path: Path, token: str, events_of: Callable[..., Any], simulator: Any
) -> None:
    server = McpTestServer().start()
    proxy = start_proxy(mcp_servers_file=servers_file(tmp_path, server))
    headers = {"x-simulator-mcp-tools": "bmcp_tools_slow", "x-simulator-mcp-arguments": '{"seconds": 5}'}
    killer = threading.Timer(1.0, server.stop)
    killer.start()
    try:
        with anthropic_client(proxy, token, **headers).messages.stream(
            model="claude-sonnet-4-5", max_tokens=99, messages=[{"role": "user", "content": "x"}]
        ) as stream:
            message = stream.get_final_message()
    except anthropic.APIError as exc:  # pragma: no cover - the assertion below says what went wrong
        raise AssertionError(f"the client got an error instead of an answer: {exc}") from exc
    finally:
        killer.join()
        server.stop()
    assert message.stop_reason == "end_turn"
    [result] = sent_bodies(simulator, "/v1/messages")[-1]["messages"][-1]["content"]
    assert result["is_error"] is True
    [tool] = of_type(await events_of(1), "tool_usage")
    assert tool["injected"] and tool["invocation_error"] and tool["metadata"]["outcome"] != "ok"
    [ended] = of_type(await events_of(1), "interception.ended")
    assert ended["status"] == "completed" and ended["http_status"] == 200
