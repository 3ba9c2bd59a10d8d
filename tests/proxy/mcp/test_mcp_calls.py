"""Injected calls against a real MCP server: every outcome, the size cap, and a server that dies mid-call."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from prometheus_client import REGISTRY

from aibridge.proxy.mcp import CallResult, McpInjector, Outcome, ToolCall, ToolFormat
from aibridge.testing.mcp_server import McpTestServer

InjectorFactory = Callable[..., Any]


def _yaml(server: McpTestServer, name: str = "test", extra: str = "") -> str:
    return f"servers:\n  - name: {name}\n    url: {server.url}\n{extra}"


async def _one(injector: McpInjector, name: str, arguments: object) -> CallResult:
    [result] = await injector.call_many([ToolCall(name, arguments)], "user-1", {})
    return result


async def test_a_call_returns_the_tools_answer(mcp_server: McpTestServer, make_injector: InjectorFactory) -> None:
    injector = await make_injector(_yaml(mcp_server))
    result = await _one(injector, "bmcp_test_add", {"a": 2, "b": 40})
    assert (result.content, result.is_error, result.outcome) == ("42", False, Outcome.OK)
    assert (result.server, result.tool, result.url) == ("test", "add", mcp_server.url)
    assert result.error_message is None and result.duration > 0


async def test_failures_are_error_results(mcp_server: McpTestServer, make_injector: InjectorFactory) -> None:
    injector = await make_injector(_yaml(mcp_server), mcp_call_timeout=1.0)
    calls = [
        ToolCall("bmcp_test_fail", {}),
        ToolCall("bmcp_test_rpc_error", {}),
        ToolCall("bmcp_test_slow", {"seconds": 3}),
        ToolCall("bmcp_test_add", {"a": "not a number"}),
        ToolCall("bmcp_test_add", "not an object"),
        ToolCall("bmcp_test_nothing_like_this", {}),
        ToolCall("bmcp_test_add", {"a": 1, "b": 1}),
    ]
    results = await injector.call_many(calls, "user-1", {})
    outcomes = [result.outcome for result in results]
    assert outcomes == [
        Outcome.TOOL_ERROR,
        Outcome.RPC_ERROR,
        Outcome.TIMEOUT,
        Outcome.TOOL_ERROR,
        Outcome.BAD_ARGUMENTS,
        Outcome.UNKNOWN_TOOL,
        Outcome.OK,
    ]
    assert all(result.is_error for result in results[:-1])
    assert "this tool always fails" in results[0].content
    assert results[1].error_message == "JSON-RPC error -32050: backend unavailable"
    assert "timed out after 1s" in results[2].content
    assert "validation error" in results[3].content  # the server's own words about its schema
    assert "'bmcp_test_nothing_like_this'" in results[5].content
    # concurrently: the slow call's timeout bounds the whole batch
    assert max(result.duration for result in results) < 2.5


async def test_a_large_result_is_cut_with_a_marker(mcp_server: McpTestServer, make_injector: InjectorFactory) -> None:
    injector = await make_injector(_yaml(mcp_server), mcp_result_max_bytes=4096)
    result = await _one(injector, "bmcp_test_big", {"kib": 64})
    assert result.truncated and not result.is_error
    assert len(result.content.encode()) <= 4096
    assert result.content.endswith(f"[aibridge: result cut to 4096 of {64 * 1024} bytes]")


async def test_server_killed_mid_call_then_back(mcp_server: McpTestServer, make_injector: InjectorFactory) -> None:
    injector = await make_injector(_yaml(mcp_server), mcp_call_timeout=5)
    pending = asyncio.create_task(_one(injector, "bmcp_test_slow", {"seconds": 3}))
    await asyncio.sleep(0.3)
    await asyncio.to_thread(mcp_server.stop)
    result = await pending
    assert result.is_error and result.outcome in (Outcome.UNAVAILABLE, Outcome.RPC_ERROR), result
    assert result.duration < 5
    down = await _one(injector, "bmcp_test_add", {"a": 1, "b": 2})
    assert down.is_error and down.outcome is Outcome.UNAVAILABLE
    await asyncio.to_thread(mcp_server.start)
    back = await _one(injector, "bmcp_test_add", {"a": 1, "b": 2})
    assert (back.outcome, back.content) == (Outcome.OK, "3")


async def test_calls_are_counted_by_outcome(mcp_server: McpTestServer, make_injector: InjectorFactory) -> None:
    def calls(outcome: str) -> float:
        labels = {"server": "metrics", "tool": "fail" if outcome != "ok" else "add", "outcome": outcome}
        return REGISTRY.get_sample_value("aibridge_mcp_calls_total", labels) or 0.0

    def durations() -> float:
        return REGISTRY.get_sample_value("aibridge_mcp_call_duration_seconds_count", {"server": "metrics"}) or 0.0

    before = calls("ok"), calls("tool_error"), durations()
    injector = await make_injector(_yaml(mcp_server, "metrics"))
    await injector.call_many(
        [ToolCall("bmcp_metrics_add", {"a": 1, "b": 2}), ToolCall("bmcp_metrics_fail", {})], "u", {}
    )
    assert (calls("ok"), calls("tool_error"), durations()) == (before[0] + 1, before[1] + 1, before[2] + 2)
    assert REGISTRY.get_sample_value("aibridge_mcp_tools", {"server": "metrics"}) == 6


async def test_opt_out_header_means_no_tools(mcp_server: McpTestServer, make_injector: InjectorFactory) -> None:
    injector = await make_injector(_yaml(mcp_server))
    tools = injector.tools_for(ToolFormat.ANTHROPIC, {})
    assert tools is not None and len(tools) == 6
    assert injector.tools_for(ToolFormat.ANTHROPIC, {"x-aibridge-mcp": "off"}) is None
    assert injector.tools_for(ToolFormat.ANTHROPIC, {"x-aibridge-mcp": "on"}) == tools
    assert injector.tools_for(ToolFormat.OPENAI_CHAT, {}) is injector.tools_for(ToolFormat.OPENAI_CHAT, {})
