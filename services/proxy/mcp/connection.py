"""One open MCP session (Streamable HTTP, the ``mcp`` SDK) to one server with one token.

The SDK's transport and session are async context managers whose task groups must be entered and left
by the same task, so each session lives in a task of its own that opens it, signals readiness, and
waits to be closed; requests from any task then share the open session. A session whose transport
failed is :attr:`McpSession.broken` and is replaced by the pool on next use.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx2
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp_types import CallToolResult, PaginatedRequestParams

from aibridge.proxy.mcp.registry import JsonObject

SSE_READ_TIMEOUT = 300.0
"""Seconds the SDK's server-to-client stream may stay silent (it is reopened by the SDK)."""


class McpUnavailable(Exception):
    """The server could not be reached or the session could not be opened. Its message holds no token."""


class McpSession:
    def __init__(self, url: str, token: str | None, connect_timeout: float) -> None:
        self.url = url
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._connect_timeout = connect_timeout
        self._session: ClientSession | None = None
        self._ready = asyncio.Event()
        self._closing = asyncio.Event()
        self._failure: BaseException | None = None
        self._task: asyncio.Task[None] | None = None
        self.broken = False

    async def open(self) -> McpSession:
        """Connect and initialize within the connect timeout, or raise :class:`McpUnavailable`."""
        self._task = asyncio.create_task(self._run(), name=f"mcp-session {self.url}")
        try:
            await asyncio.wait_for(self._ready.wait(), self._connect_timeout)
        except TimeoutError:
            await self.close()
            raise McpUnavailable(f"no MCP session with {self.url} within {self._connect_timeout:g}s") from None
        if self._session is None:
            await self.close()
            raise McpUnavailable(f"cannot open an MCP session with {self.url}: {describe(self._failure)}")
        return self

    async def _run(self) -> None:
        timeout = httpx2.Timeout(self._connect_timeout, read=SSE_READ_TIMEOUT)
        try:
            async with (
                httpx2.AsyncClient(headers=self._headers, timeout=timeout) as http,
                streamable_http_client(self.url, http_client=http) as (read, write),
                ClientSession(read, write) as session,
            ):
                await session.initialize()
                self._session = session
                self._ready.set()
                await self._closing.wait()
        except Exception as exc:  # the transport's failures: kept for the message, the session is dropped
            self._failure = exc
        finally:
            self.broken = True
            self._session = None
            self._ready.set()

    async def list_tools(self) -> list[tuple[str, str, JsonObject]]:
        """Every tool (all pages) as ``(name, description, input_schema)``."""
        session = self._require()
        tools: list[tuple[str, str, JsonObject]] = []
        cursor: str | None = None
        while True:
            params = PaginatedRequestParams(cursor=cursor) if cursor else None
            page = await session.list_tools(params=params)
            tools.extend((tool.name, tool.description or "", dict(tool.input_schema)) for tool in page.tools)
            cursor = page.next_cursor
            if not cursor:
                return tools

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> CallToolResult:
        return await self._require().call_tool(name, arguments)

    def _require(self) -> ClientSession:
        if self._session is None:
            raise McpUnavailable(f"the MCP session with {self.url} is closed: {describe(self._failure)}")
        return self._session

    async def close(self) -> None:
        self._closing.set()
        if self._task is not None and not self._task.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._task), self._connect_timeout)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task


def describe(exc: BaseException | None) -> str:
    """A short reason: the innermost exception of a group, by type and message."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if exc is None:
        return "closed"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
