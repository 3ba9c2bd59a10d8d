"""The query API as a component: its FastAPI app mounted at the root (the runner puts it last, so the
proxy's routes under /api/v2/aibridge/openai and /anthropic match first)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import FastAPI
from starlette.routing import BaseRoute, Mount

from aibridge import telemetry
from aibridge.api.app import create_api_app
from aibridge.api.audit_sink import AuditSink
from aibridge.api.errors import StoreUnavailable
from aibridge.api.repository import InterceptionReader
from aibridge.api.settings import ApiSettings
from aibridge.asgi_tracing import ServerSpans
from aibridge.auth import Verifier
from aibridge.bus import BusProducer

log = logging.getLogger("aibridge.api")

_PING_TIMEOUT = 3.0


class ApiComponent:
    name = "api"

    def __init__(
        self, settings: ApiSettings, client: Any, verifier: Verifier, audit_producer: BusProducer | None = None
    ) -> None:
        """``audit_producer``: where access audit records go besides the log (None: the log only)."""
        self.settings = settings
        self.audit = AuditSink(audit_producer, settings.audit_topic)
        self.app: FastAPI = create_api_app(settings, client, verifier, self.audit)
        self._reader: InterceptionReader = self.app.state.reader

    @property
    def routes(self) -> list[BaseRoute]:
        return [Mount("", app=ServerSpans(self.app, telemetry.API_SERVICE))]

    async def start(self) -> None:
        await self.audit.start()
        problem = (await self.readiness())["clickhouse"]
        if problem:
            log.warning("the API starts without its store (%s); it answers 503 until the store is back", problem)

    async def stop(self) -> None:
        """Stops the query threads once their work is done (requests in flight finish under the
        server's own shutdown), then sends the access audit records still buffered."""
        self._reader.close()
        await self.audit.stop()

    async def readiness(self) -> dict[str, str | None]:
        try:
            await asyncio.wait_for(asyncio.to_thread(self._reader.ping), _PING_TIMEOUT)
        except StoreUnavailable as exc:
            return {"clickhouse": exc.detail or exc.message}
        except TimeoutError:
            return {"clickhouse": f"no answer within {_PING_TIMEOUT:.0f}s"}
        return {"clickhouse": None}
