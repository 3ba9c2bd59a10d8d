"""What a process hosts: components (proxy, recorder, api) behind one HTTP server.

``aibridge.runner`` builds the components a command asks for, gives them a bus and a store, serves
their routes plus ``/healthz``, ``/readyz`` and ``/metrics`` on one port, starts them in order and
stops them in reverse order on SIGTERM/SIGINT.
"""

from __future__ import annotations

from typing import Protocol

from starlette.routing import BaseRoute


class Component(Protocol):
    name: str

    @property
    def routes(self) -> list[BaseRoute]:
        """HTTP routes this component serves (may be empty)."""

    async def start(self) -> None:
        """Acquire resources and start background work; raise to refuse to start."""

    async def stop(self) -> None:
        """Finish in-flight work (streams, batches, queued events) and release resources."""

    async def readiness(self) -> dict[str, str | None]:
        """Each dependency this component needs, mapped to None when reachable or to why not."""
