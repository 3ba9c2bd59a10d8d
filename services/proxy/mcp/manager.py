"""Listing the servers' tools: at start, every ``refresh_interval`` seconds, and when asked (``SIGHUP``).

Spans: ``ServerProxyManager.Init`` per listing round, a child ``StreamableHTTPServerProxy.Init`` per
server, and under it ``StreamableHTTPServerProxy.Init.fetchTools``. A server that cannot be listed is
logged, counted in ``aibridge_mcp_refresh_failures_total`` and retried after 1, 2, 4 … seconds (at
most the refresh interval). It has no tools until a listing succeeds; a server listed before keeps
its last list, so a short outage does not change what the model is offered mid-conversation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from aibridge import metrics, telemetry
from aibridge.proxy.mcp.config import McpServerConfig
from aibridge.proxy.mcp.connection import describe
from aibridge.proxy.mcp.pool import CachedBridgePool
from aibridge.proxy.mcp.registry import ServerTools, ToolRegistry

log = logging.getLogger("aibridge.proxy.mcp")


@dataclass
class _Schedule:
    due: float = 0.0
    failures: int = 0


class ServerProxyManager:
    def __init__(
        self,
        servers: Sequence[McpServerConfig],
        registry: ToolRegistry,
        pool: CachedBridgePool,
        *,
        refresh_interval: float,
        backoff_base: float = 1.0,
    ) -> None:
        self.servers = tuple(servers)
        self.registry = registry
        self.pool = pool
        self.refresh_interval = refresh_interval
        self.backoff_base = backoff_base
        self._schedule = {server.name: _Schedule() for server in self.servers}
        self._wake = asyncio.Event()

    def request_refresh(self) -> None:
        """List every server again now (the ``SIGHUP`` handler); safe to call from the event loop only."""
        self._wake.set()

    async def refresh(self, servers: Sequence[McpServerConfig] | None = None) -> None:
        """List ``servers`` (all by default) concurrently under one ``ServerProxyManager.Init`` span."""
        with telemetry.tracer(telemetry.PROXY_SERVICE).start_as_current_span("ServerProxyManager.Init") as span:
            chosen = self.servers if servers is None else tuple(servers)
            span.set_attribute("aibridge.mcp.servers", len(chosen))
            await asyncio.gather(*(self._refresh_one(server) for server in chosen))

    async def run(self) -> None:
        """Refresh due servers until cancelled; also closes idle pooled sessions."""
        while True:
            await self._sleep_until_due()
            forced = self._wake.is_set()
            self._wake.clear()
            self.pool.evict_idle()
            now = time.monotonic()
            due = [s for s in self.servers if forced or self._schedule[s.name].due <= now]
            if due:
                await self.refresh(due)

    async def _sleep_until_due(self) -> None:
        next_due = min((entry.due for entry in self._schedule.values()), default=time.monotonic())
        delay = max(0.0, min(next_due - time.monotonic(), self.pool.limits.idle_timeout))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), delay)

    async def _refresh_one(self, server: McpServerConfig) -> None:
        tracer = telemetry.tracer(telemetry.PROXY_SERVICE)
        with tracer.start_as_current_span("StreamableHTTPServerProxy.Init") as span:
            span.set_attribute("aibridge.mcp.server", server.name)
            span.set_attribute("aibridge.mcp.url", server.url)
            try:
                with tracer.start_as_current_span("StreamableHTTPServerProxy.Init.fetchTools") as fetch:
                    listed = await self._fetch(server)
                    fetch.set_attribute("aibridge.mcp.tools.listed", len(listed))
            except Exception as exc:  # any failure to list: logged, counted, retried; never fatal
                span.set_attribute("aibridge.mcp.outcome", "failed")
                self._failed(server, exc)
                return
            span.set_attribute("aibridge.mcp.outcome", "ok")
            self._listed(server, ServerTools.listed(server, listed))

    async def _fetch(self, server: McpServerConfig) -> list[tuple[str, str, dict[str, object]]]:
        token = server.token.get_secret_value() if server.token is not None else None
        timeout = self.pool.limits.connect_timeout * 2
        try:
            async with asyncio.timeout(timeout), self.pool.lease(server, "", token) as session:
                return await session.list_tools()
        except BaseException:
            self.pool.discard(server.name, "", token)
            raise

    def _listed(self, server: McpServerConfig, tools: ServerTools) -> None:
        self.registry.update(tools)
        schedule = self._schedule[server.name]
        if schedule.failures:
            log.info("MCP server %s is back: %d tools", server.name, len(tools.tools))
        schedule.failures = 0
        schedule.due = time.monotonic() + self.refresh_interval
        metrics.MCP_TOOLS.labels(server.name).set(len(tools.tools))

    def _failed(self, server: McpServerConfig, exc: BaseException) -> None:
        schedule = self._schedule[server.name]
        schedule.failures += 1
        retry = min(self.refresh_interval, self.backoff_base * 2 ** (schedule.failures - 1))
        schedule.due = time.monotonic() + retry
        metrics.MCP_REFRESH_FAILURES.labels(server.name).inc()
        metrics.MCP_TOOLS.labels(server.name).set(self.registry.snapshot.tool_count(server.name))
        log.warning(
            "MCP server %s (%s): cannot list its tools (%s); %s; retrying in %.0fs",
            server.name,
            server.url,
            describe(exc) if not isinstance(exc, TimeoutError) else "timed out",
            "its last tool list stays" if server.name in self.registry.snapshot.servers else "it has no tools",
            retry,
        )
