"""Running one injected tool call: every failure becomes an error result for the model, never an exception.

Outcomes: ``ok``; ``tool_error`` (the server answered with ``isError``, e.g. arguments that do not match
the tool's schema or a tool that raised); ``rpc_error`` (a JSON-RPC error); ``timeout`` (over the per-call
timeout); ``unavailable`` (no session could be opened or the connection broke); ``bad_arguments``
(arguments that are not a JSON object, refused before any call); ``unknown_tool`` (a ``bmcp_`` name the
cache does not hold); ``missing_token`` (a server with forwarded auth, and no token for it in the request).
A result longer than the size cap is cut and ends with a marker saying so.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED, INVALID_REQUEST, CallToolResult, TextContent

from aibridge import metrics
from aibridge.proxy.mcp.config import AuthKind, McpServerConfig
from aibridge.proxy.mcp.connection import McpUnavailable, describe
from aibridge.proxy.mcp.pool import CachedBridgePool


class Outcome(StrEnum):
    OK = "ok"
    TOOL_ERROR = "tool_error"
    RPC_ERROR = "rpc_error"
    TIMEOUT = "timeout"
    UNAVAILABLE = "unavailable"
    BAD_ARGUMENTS = "bad_arguments"
    UNKNOWN_TOOL = "unknown_tool"
    MISSING_TOKEN = "missing_token"


@dataclass(frozen=True)
class CallResult:
    """What goes back to the model (``content``, ``is_error``) and what is recorded about the call."""

    server: str
    tool: str
    url: str
    content: str
    is_error: bool
    outcome: Outcome
    duration: float
    error_message: str | None = None
    truncated: bool = False


@dataclass(frozen=True)
class CallLimits:
    timeout: float = 30.0
    result_max_bytes: int = 64 * 1024


class McpCaller:
    """Calls tools through the pool with the limits, and records each call's metrics."""

    def __init__(self, pool: CachedBridgePool, limits: CallLimits) -> None:
        self.pool = pool
        self.limits = limits

    async def call_tool(
        self, server: McpServerConfig, tool: str, arguments: Any, user: str, forwarded_token: str | None
    ) -> CallResult:
        started = time.perf_counter()
        if not isinstance(arguments, dict):
            return self._finish(server, tool, started, Outcome.BAD_ARGUMENTS, "arguments must be a JSON object")
        if server.auth is AuthKind.FORWARD and not forwarded_token:
            header = f"X-Aibridge-Mcp-Token-{server.name}"
            return self._finish(server, tool, started, Outcome.MISSING_TOKEN, f"the request carries no {header}")
        user, token = session_owner(server, user, forwarded_token)
        try:
            result = await asyncio.wait_for(self._call(server, tool, arguments, user, token), self.limits.timeout)
        except TimeoutError:
            return self._finish(server, tool, started, Outcome.TIMEOUT, f"timed out after {self.limits.timeout:g}s")
        except McpUnavailable as exc:
            self.pool.discard(server.name, user, token)
            return self._finish(server, tool, started, Outcome.UNAVAILABLE, str(exc))
        except MCPError as exc:
            if not session_lost(exc):
                return self._finish(server, tool, started, Outcome.RPC_ERROR, f"JSON-RPC error {exc.code}: {exc}")
            self.pool.discard(server.name, user, token)
            return self._finish(server, tool, started, Outcome.UNAVAILABLE, f"the MCP session was lost: {exc}")
        except Exception as exc:  # the SDK's transport errors (httpx2, anyio): the connection is gone
            self.pool.discard(server.name, user, token)
            return self._finish(server, tool, started, Outcome.UNAVAILABLE, f"connection failed: {describe(exc)}")
        return self._answered(server, tool, started, result)

    async def _call(
        self, server: McpServerConfig, tool: str, arguments: dict[str, Any], user: str, token: str | None
    ) -> CallToolResult:
        async with self.pool.lease(server, user, token) as session:
            return await session.call_tool(tool, arguments)

    def _answered(self, server: McpServerConfig, tool: str, started: float, result: CallToolResult) -> CallResult:
        text, truncated = cap(result_text(result), self.limits.result_max_bytes)
        if result.is_error:
            return self._finish(server, tool, started, Outcome.TOOL_ERROR, text or "the tool reported an error")
        duration = self._observe(server, tool, started, Outcome.OK)
        return CallResult(server.name, tool, server.url, text, False, Outcome.OK, duration, truncated=truncated)

    def _finish(self, server: McpServerConfig, tool: str, started: float, outcome: Outcome, message: str) -> CallResult:
        duration = self._observe(server, tool, started, outcome)
        content = f"MCP tool call failed ({outcome.value}): {message}"
        return CallResult(server.name, tool, server.url, content, True, outcome, duration, error_message=message)

    def _observe(self, server: McpServerConfig, tool: str, started: float, outcome: Outcome) -> float:
        duration = time.perf_counter() - started
        metrics.child(metrics.MCP_CALLS, server.name, tool, outcome.value).inc()
        metrics.child(metrics.MCP_CALL_DURATION_SECONDS, server.name).observe(duration)
        return duration


def session_lost(exc: MCPError) -> bool:
    """The SDK's own errors for a connection that closed or a session the server no longer knows (it restarted);
    any other JSON-RPC error is the server's answer to this call, and the session stays."""
    return exc.code == CONNECTION_CLOSED or (exc.code == INVALID_REQUEST and "Session terminated" in str(exc))


def session_owner(server: McpServerConfig, user: str, forwarded_token: str | None) -> tuple[str, str | None]:
    """Whose session a call uses: the caller's own for forwarded auth, else the server's shared one."""
    if server.auth is AuthKind.FORWARD:
        return user, forwarded_token
    return "", server.token.get_secret_value() if server.token is not None else None


def result_text(result: CallToolResult) -> str:
    """Text blocks joined by newlines; other blocks (images, resources) as their JSON; structured content
    only when there is no block at all."""
    parts = [
        block.text if isinstance(block, TextContent) else orjson.dumps(block.model_dump(mode="json")).decode()
        for block in result.content
    ]
    if not parts and result.structured_content is not None:
        parts.append(orjson.dumps(result.structured_content).decode())
    return "\n".join(parts)


def cap(text: str, max_bytes: int) -> tuple[str, bool]:
    """``text`` cut to ``max_bytes`` of UTF-8 (marker included) on a character boundary, and whether it was cut."""
    encoded = text.encode()
    if len(encoded) <= max_bytes:
        return text, False
    marker = f"\n[aibridge: result cut to {max_bytes} of {len(encoded)} bytes]"
    keep = max(0, max_bytes - len(marker.encode()))
    return encoded[:keep].decode("utf-8", errors="ignore") + marker, True
