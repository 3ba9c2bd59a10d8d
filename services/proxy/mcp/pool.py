"""Open MCP sessions, kept and shared: one per server for static auth, one per user and token for forwarded auth.

Forwarded auth means each caller talks to the server as themselves, so their sessions cannot be shared.
Opening one costs two or three round trips (initialize, initialized, the event stream), so sessions
are kept: at most ``max_sessions``, the least recently used closed first, and any left unused for
``idle_timeout`` seconds closed by :meth:`CachedBridgePool.evict_idle` (the refresh loop calls it).
A session is never closed while a call holds it.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aibridge import telemetry
from aibridge.proxy.mcp.config import McpServerConfig
from aibridge.proxy.mcp.connection import McpSession

PoolKey = tuple[str, str, str]
"""(server, user, digest of the token); user and digest are empty for a shared session."""


@dataclass
class _Entry:
    session: McpSession
    last_used: float
    holders: int = 0


@dataclass
class PoolLimits:
    connect_timeout: float = 10.0
    max_sessions: int = 1000
    idle_timeout: float = 300.0
    clock: Callable[[], float] = field(default=time.monotonic)


class CachedBridgePool:
    def __init__(self, limits: PoolLimits) -> None:
        self.limits = limits
        self._entries: OrderedDict[PoolKey, _Entry] = OrderedDict()
        self._opening: dict[PoolKey, asyncio.Lock] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._entries)

    @asynccontextmanager
    async def lease(self, server: McpServerConfig, user: str, token: str | None) -> AsyncIterator[McpSession]:
        """An open session to ``server`` as ``user`` with ``token`` (``user`` empty: the shared session)."""
        key = pool_key(server.name, user, token)
        with telemetry.tracer(telemetry.PROXY_SERVICE).start_as_current_span("CachedBridgePool.Acquire") as span:
            span.set_attribute("aibridge.mcp.server", server.name)
            entry = await self._acquire(key, server.url, token)
            span.set_attribute("aibridge.mcp.pool.size", len(self._entries))
        entry.holders += 1
        try:
            yield entry.session
        finally:
            entry.holders -= 1
            entry.last_used = self.limits.clock()

    async def _acquire(self, key: PoolKey, url: str, token: str | None) -> _Entry:
        entry = self._live(key)
        if entry is not None:
            return entry
        lock = self._opening.setdefault(key, asyncio.Lock())
        async with lock:
            entry = self._live(key)
            if entry is None:
                session = await McpSession(url, token, self.limits.connect_timeout).open()
                entry = self._entries[key] = _Entry(session, self.limits.clock())
                self._evict_over_cap()
        self._opening.pop(key, None)
        return entry

    def _live(self, key: PoolKey) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.session.broken:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        entry.last_used = self.limits.clock()
        return entry

    def discard(self, server: str, user: str, token: str | None) -> None:
        """Close the session after a failure that may have left it unusable; the next lease opens a new one."""
        self._drop(pool_key(server, user, token))

    def evict_idle(self) -> int:
        """Close sessions unused for ``idle_timeout``; how many were closed."""
        cutoff = self.limits.clock() - self.limits.idle_timeout
        idle = [key for key, entry in self._entries.items() if entry.holders == 0 and entry.last_used <= cutoff]
        for key in idle:
            self._drop(key)
        return len(idle)

    def _evict_over_cap(self) -> None:
        for key in [key for key, entry in self._entries.items() if entry.holders == 0]:
            if len(self._entries) <= self.limits.max_sessions:
                return
            self._drop(key)

    def _drop(self, key: PoolKey) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            task = asyncio.get_running_loop().create_task(entry.session.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        for key in list(self._entries):
            self._drop(key)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


def pool_key(server: str, user: str, token: str | None) -> PoolKey:
    digest = hashlib.sha256(token.encode()).hexdigest()[:16] if token and user else ""
    return server, user, digest
