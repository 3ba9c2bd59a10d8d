"""The one seam the provider adapters use: which tools to add to a request, and running the model's calls."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context

from aibridge import telemetry
from aibridge.proxy.mcp.client import CallLimits, CallResult, McpCaller, Outcome
from aibridge.proxy.mcp.config import McpServerConfig, load_servers
from aibridge.proxy.mcp.manager import ServerProxyManager
from aibridge.proxy.mcp.pool import CachedBridgePool, PoolLimits
from aibridge.proxy.mcp.registry import PREFIX, JsonObject, McpTool, ToolFormat, ToolRegistry
from aibridge.proxy.mcp.settings import McpSettings

log = logging.getLogger("aibridge.proxy.mcp")

OPT_OUT_HEADER = "x-aibridge-mcp"
TOKEN_HEADER_PREFIX = "x-aibridge-mcp-token-"
"""``X-Aibridge-Mcp-Token-<server>``: the caller's own token for a server with forwarded auth."""


@dataclass(frozen=True)
class ToolCall:
    """A call of an injected tool as the model made it (``arguments`` already decoded from JSON)."""

    name: str
    arguments: Any


def is_mcp_header(name: str) -> bool:
    """Headers meant for the bridge alone (opt-out, forwarded tokens), never sent to a provider."""
    return name.lower().startswith(OPT_OUT_HEADER)


def strip_forward_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {name: value for name, value in headers.items() if not is_mcp_header(name)}


def forwarded_tokens(headers: Mapping[str, str]) -> dict[str, str]:
    """Server name → the caller's token, from lower-cased request headers."""
    return {
        name.removeprefix(TOKEN_HEADER_PREFIX): value
        for name, value in headers.items()
        if name.startswith(TOKEN_HEADER_PREFIX) and value
    }


class McpInjector:
    def __init__(self, servers: Sequence[McpServerConfig], settings: McpSettings, *, backoff_base: float = 1.0) -> None:
        self.servers = {server.name: server for server in servers}
        self.max_rounds = settings.mcp_max_rounds
        self.registry = ToolRegistry(servers)
        self.pool = CachedBridgePool(
            PoolLimits(settings.mcp_connect_timeout, settings.mcp_pool_max_sessions, settings.mcp_pool_idle_timeout)
        )
        self.caller = McpCaller(self.pool, CallLimits(settings.mcp_call_timeout, settings.mcp_result_max_bytes))
        self.manager = ServerProxyManager(
            servers,
            self.registry,
            self.pool,
            refresh_interval=settings.mcp_refresh_interval,
            backoff_base=backoff_base,
        )
        self._task: asyncio.Task[None] | None = None
        self._sighup = False

    @classmethod
    def from_settings(cls, settings: McpSettings) -> McpInjector | None:
        """``None`` (injection off) unless ``AIBRIDGE_MCP_SERVERS_FILE`` is set."""
        if settings.mcp_servers_file is None:
            return None
        return cls(load_servers(settings.mcp_servers_file), settings)

    async def start(self) -> None:
        """List every server once (a server that is down does not stop this), then refresh in the background."""
        await self.manager.refresh()
        self._task = asyncio.create_task(self.manager.run(), name="mcp-refresh")
        self._sighup = _install_sighup(self.manager.request_refresh)

    async def stop(self) -> None:
        if self._sighup:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.pool.close()

    def tools_for(self, shape: ToolFormat, headers: Mapping[str, str]) -> list[JsonObject] | None:
        """The cached definitions to append to the request's tools (shared: concatenate, never mutate), or
        ``None`` when the caller opted out (``X-Aibridge-Mcp: off``) or no tool is available."""
        opt_out = headers.get(OPT_OUT_HEADER)
        if opt_out is not None and opt_out.strip().lower() == "off":
            return None
        snapshot = self.registry.snapshot
        if not snapshot.forwarded:  # most deployments: the static tools, one list for every request
            return snapshot.static[shape] or None
        return snapshot.tools_for(shape, frozenset(forwarded_tokens(headers))) or None

    def is_injected(self, name: str) -> bool:
        """Whether the bridge runs this call (any ``bmcp_`` name; an unknown one gets an error result)."""
        return name.startswith(PREFIX)

    def lookup(self, name: str) -> McpTool | None:
        return self.registry.snapshot.by_exposed.get(name)

    async def call_many(
        self, calls: Sequence[ToolCall], user: str, headers: Mapping[str, str], context: Context | None = None
    ) -> list[CallResult]:
        """Run the calls concurrently, results in the order of ``calls``; each has its own
        ``Intercept.ProcessRequest.ToolCall`` span, a child of ``context`` (default: the current span)."""
        tokens = forwarded_tokens(headers)
        return list(await asyncio.gather(*(self._call(call, user, tokens, context) for call in calls)))

    async def _call(self, call: ToolCall, user: str, tokens: dict[str, str], context: Context | None) -> CallResult:
        tracer = telemetry.tracer(telemetry.PROXY_SERVICE)
        with tracer.start_as_current_span("Intercept.ProcessRequest.ToolCall", context=context) as span:
            span.set_attribute("aibridge.tool.name", call.name)
            tool = self.lookup(call.name)
            if tool is None:
                result = unknown_tool(call.name)
            else:
                server = self.servers[tool.server]
                span.set_attribute("aibridge.mcp.server", tool.server)
                span.set_attribute("aibridge.mcp.tool", tool.name)
                result = await self.caller.call_tool(server, tool.name, call.arguments, user, tokens.get(server.name))
            span.set_attribute("aibridge.mcp.outcome", result.outcome.value)
            if result.is_error:
                span.set_status(trace.StatusCode.ERROR, result.outcome.value)
            return result


def unknown_tool(name: str) -> CallResult:
    message = f"no injected tool is named {name!r}"
    content = f"MCP tool call failed ({Outcome.UNKNOWN_TOOL.value}): {message}"
    return CallResult("", name, "", content, True, Outcome.UNKNOWN_TOOL, 0.0, error_message=message)


def _install_sighup(handler: Any) -> bool:
    """``SIGHUP`` refreshes the tool lists; uvicorn leaves that signal alone. Only the main thread can."""
    try:
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, handler)
    except (ValueError, RuntimeError, NotImplementedError):
        log.debug("SIGHUP refresh not installed (not the main thread)")
        return False
    return True
