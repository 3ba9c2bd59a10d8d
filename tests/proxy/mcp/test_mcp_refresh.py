"""Listing at start (spans), a server down at start, refresh on an interval and on SIGHUP, static and
forwarded auth (the server sees the token), and the per-user session pool."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY

from aibridge import telemetry
from aibridge.proxy.mcp import McpInjector, Outcome, ToolCall, ToolFormat
from aibridge.testing.mcp_server import McpTestServer

InjectorFactory = Callable[..., Any]
TOOLS = ["bmcp_{0}_add", "bmcp_{0}_slow", "bmcp_{0}_fail", "bmcp_{0}_rpc_error", "bmcp_{0}_big", "bmcp_{0}_whoami"]


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    telemetry.configure(True, exporter=exporter)
    yield exporter
    telemetry.configure(False)


def _names(injector: McpInjector, headers: dict[str, str] | None = None) -> list[str]:
    return [tool["name"] for tool in injector.tools_for(ToolFormat.ANTHROPIC, headers or {}) or []]


async def _until(condition: Callable[[], bool], seconds: float = 10) -> None:
    for _ in range(int(seconds / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


def _failures(server: str) -> float:
    return REGISTRY.get_sample_value("aibridge_mcp_refresh_failures_total", {"server": server}) or 0.0


async def test_listing_at_start_has_the_init_spans(
    mcp_server: McpTestServer, make_injector: InjectorFactory, spans: InMemorySpanExporter
) -> None:
    down = McpTestServer()  # never started
    injector = await make_injector(
        f"servers:\n  - name: up\n    url: {mcp_server.url}\n  - name: down\n    url: {down.url}\n"
    )
    assert _names(injector) == [name.format("up") for name in TOOLS]
    finished = {span.name: span for span in spans.get_finished_spans()}
    init = finished["ServerProxyManager.Init"]
    servers = [s for s in spans.get_finished_spans() if s.name == "StreamableHTTPServerProxy.Init"]
    fetches = [s for s in spans.get_finished_spans() if s.name == "StreamableHTTPServerProxy.Init.fetchTools"]
    assert sorted(s.attributes["aibridge.mcp.server"] for s in servers) == ["down", "up"]  # type: ignore[index]
    assert all(s.parent is not None and s.parent.span_id == init.context.span_id for s in servers)
    assert sorted(f.parent.span_id for f in fetches if f.parent) == sorted(s.context.span_id for s in servers)
    outcomes = {s.attributes["aibridge.mcp.server"]: s.attributes["aibridge.mcp.outcome"] for s in servers}  # type: ignore[index]
    assert outcomes == {"up": "ok", "down": "failed"}


async def test_a_server_down_at_start_gets_its_tools_once_up(make_injector: InjectorFactory) -> None:
    server = McpTestServer()
    before = _failures("late")
    injector = await make_injector(f"servers:\n  - name: late\n    url: {server.url}\n", mcp_connect_timeout=1)
    assert injector.tools_for(ToolFormat.OPENAI_CHAT, {}) is None
    assert _failures("late") == before + 1
    assert REGISTRY.get_sample_value("aibridge_mcp_tools", {"server": "late"}) == 0
    await _until(lambda: _failures("late") >= before + 2)  # retried with backoff
    await asyncio.to_thread(server.start)
    try:
        await _until(lambda: bool(_names(injector)))
        assert _names(injector) == [name.format("late") for name in TOOLS]
        assert REGISTRY.get_sample_value("aibridge_mcp_tools", {"server": "late"}) == 6
    finally:
        await asyncio.to_thread(server.stop)


async def test_sighup_lists_the_tools_again(mcp_server: McpTestServer, make_injector: InjectorFactory) -> None:
    injector = await make_injector(f"servers:\n  - name: hup\n    url: {mcp_server.url}\n")
    assert "bmcp_hup_echo" not in _names(injector)
    mcp_server.extra_tools = True
    await asyncio.to_thread(mcp_server.restart)
    await asyncio.sleep(0.3)
    assert "bmcp_hup_echo" not in _names(injector)  # the interval (300 s) has not passed
    os.kill(os.getpid(), signal.SIGHUP)
    await _until(lambda: "bmcp_hup_echo" in _names(injector))


async def test_tools_are_listed_again_on_the_interval(
    mcp_server: McpTestServer, make_injector: InjectorFactory
) -> None:
    injector = await make_injector(f"servers:\n  - name: tick\n    url: {mcp_server.url}\n", mcp_refresh_interval=0.3)
    mcp_server.extra_tools = True
    await asyncio.to_thread(mcp_server.restart)
    await _until(lambda: "bmcp_tick_echo" in _names(injector))


async def test_static_bearer_token_reaches_the_server(make_injector: InjectorFactory, tmp_path: Path) -> None:
    (tmp_path / "token").write_text("static-secret\n")
    with McpTestServer(required_token="static-secret") as server:
        injector = await make_injector(
            f"servers:\n  - name: st\n    url: {server.url}\n"
            f"    auth: {{kind: bearer, token_file: {tmp_path / 'token'}}}\n"
        )
        headers = {"x-aibridge-mcp-token-st": "caller-token"}  # not used for a static server
        [result] = await injector.call_many([ToolCall("bmcp_st_whoami", {})], "alice", headers)
        assert (result.outcome, result.content) == (Outcome.OK, "static-secret")
        assert set(server.tokens_seen) == {"static-secret"}


async def test_a_wrong_static_token_means_no_tools(make_injector: InjectorFactory, tmp_path: Path) -> None:
    (tmp_path / "token").write_text("wrong")
    with McpTestServer(required_token="static-secret") as server:
        injector = await make_injector(
            f"servers:\n  - name: wrong\n    url: {server.url}\n"
            f"    auth: {{kind: bearer, token_file: {tmp_path / 'token'}}}\n"
        )
        assert _names(injector) == []


async def test_forwarded_tokens_are_each_callers_own(make_injector: InjectorFactory, tmp_path: Path) -> None:
    (tmp_path / "discovery").write_text("discovery-token")
    with McpTestServer() as server:
        injector = await make_injector(
            f"servers:\n  - name: fw\n    url: {server.url}\n"
            f"    auth: {{kind: forward, discovery_token_file: {tmp_path / 'discovery'}}}\n"
        )
        assert server.tokens_seen and set(server.tokens_seen) == {"discovery-token"}
        assert _names(injector) == []  # no token for fw in this request: its tools are not offered
        assert _names(injector, {"x-aibridge-mcp-token-fw": "alice-token"}) == [name.format("fw") for name in TOOLS]
        alice, bob, nobody = await asyncio.gather(
            injector.call_many([ToolCall("bmcp_fw_whoami", {})], "alice", {"x-aibridge-mcp-token-fw": "alice-token"}),
            injector.call_many([ToolCall("bmcp_fw_whoami", {})], "bob", {"x-aibridge-mcp-token-fw": "bob-token"}),
            injector.call_many([ToolCall("bmcp_fw_whoami", {})], "carol", {}),
        )
        assert [alice[0].content, bob[0].content] == ["alice-token", "bob-token"]
        assert nobody[0].outcome is Outcome.MISSING_TOKEN and "X-Aibridge-Mcp-Token-fw" in nobody[0].content
        assert set(server.tokens_seen) == {"discovery-token", "alice-token", "bob-token"}


async def test_the_pool_caps_and_closes_idle_sessions(make_injector: InjectorFactory) -> None:
    with McpTestServer() as server:
        injector = await make_injector(
            f"servers:\n  - name: pool\n    url: {server.url}\n    auth: forward\n",
            mcp_pool_max_sessions=2,
            mcp_pool_idle_timeout=0.5,
        )
        assert len(injector.pool) == 1  # the shared session that listed the tools
        for user in ("alice", "bob", "carol"):
            headers = {"x-aibridge-mcp-token-pool": f"{user}-token"}
            [result] = await injector.call_many([ToolCall("bmcp_pool_whoami", {})], user, headers)
            assert result.content == f"{user}-token"
            assert len(injector.pool) <= 2
        again = {"x-aibridge-mcp-token-pool": "alice-token"}  # alice was closed first: a new session, same answer
        [result] = await injector.call_many([ToolCall("bmcp_pool_whoami", {})], "alice", again)
        assert result.content == "alice-token"
        await _until(lambda: len(injector.pool) == 0, seconds=5)  # the refresh loop closes idle sessions


async def test_each_injected_call_has_a_tool_call_span_in_the_callers_trace(
    mcp_server: McpTestServer, make_injector: InjectorFactory, spans: InMemorySpanExporter
) -> None:
    injector = await make_injector(f"servers:\n  - name: tr\n    url: {mcp_server.url}\n")
    spans.clear()
    tracer = telemetry.tracer(telemetry.PROXY_SERVICE)
    with tracer.start_as_current_span("Intercept.ProcessRequest") as parent:
        calls = [ToolCall("bmcp_tr_add", {"a": 1, "b": 2}), ToolCall("bmcp_tr_fail", {})]
        await injector.call_many(calls, "alice", {})
    finished = spans.get_finished_spans()
    tool_calls = [s for s in finished if s.name == "Intercept.ProcessRequest.ToolCall"]
    trace_id, parent_id = parent.get_span_context().trace_id, parent.get_span_context().span_id
    assert all(s.context.trace_id == trace_id and s.parent and s.parent.span_id == parent_id for s in tool_calls)
    attributes = sorted((dict(s.attributes or {}) for s in tool_calls), key=lambda a: str(a["aibridge.mcp.tool"]))
    assert attributes == [
        {
            "aibridge.tool.name": "bmcp_tr_add",
            "aibridge.mcp.server": "tr",
            "aibridge.mcp.tool": "add",
            "aibridge.mcp.outcome": "ok",
        },
        {
            "aibridge.tool.name": "bmcp_tr_fail",
            "aibridge.mcp.server": "tr",
            "aibridge.mcp.tool": "fail",
            "aibridge.mcp.outcome": "tool_error",
        },
    ]
    assert sorted(s.status.status_code.name for s in tool_calls) == ["ERROR", "UNSET"]
    acquires = [s for s in finished if s.name == "CachedBridgePool.Acquire"]
    assert len(acquires) == 2 and {s.parent.span_id for s in acquires if s.parent} == {
        s.context.span_id for s in tool_calls
    }
