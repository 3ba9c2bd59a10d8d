"""The proxy as a component: its routes, the shared upstream client and the event emitter."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from aibridge import groups, metrics, pricing
from aibridge.auth import Verifier
from aibridge.bus import BusProducer, InProcessProducer
from aibridge.fastpath import FastPathStarlette, Handler
from aibridge.proxy.guards.breaker import BreakerPolicy, Breakers
from aibridge.proxy.guards.budget_alerts import AlertPublisher
from aibridge.proxy.guards.budgets import BudgetGuard
from aibridge.proxy.guards.limits import Admission
from aibridge.proxy.intercept import InFlight, Interceptor
from aibridge.proxy.mcp.injector import McpInjector
from aibridge.proxy.passthrough import Passthrough, not_found
from aibridge.proxy.providers.records import Provider
from aibridge.proxy.providers.spec import ProviderSpec, anthropic_spec, compaction_spec, openai_spec, responses_spec
from aibridge.proxy.recording.deferred import Deferred
from aibridge.proxy.recording.emitter import EventEmitter
from aibridge.proxy.recording.spool import Spool
from aibridge.proxy.settings import ProxySettings
from aibridge.proxy.upstream.client import create_upstream
from aibridge.redaction import capture_policy

log = logging.getLogger("aibridge.proxy")

GC_YOUNG_THRESHOLD = 10_000  # allocations between two collections of the young generation (Python: 700)

PREFIX = "/api/v2/aibridge"
OPENAI_PREFIX = f"{PREFIX}/openai"
ANTHROPIC_PREFIX = f"{PREFIX}/anthropic"
ANY_METHOD = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
RESPONSE_BY_ID = "/v1/responses/{response_id}"


class ProxyComponent:
    name = "proxy"

    def __init__(
        self, settings: ProxySettings, producer: BusProducer, verifier: Verifier, store_client: Any = None
    ) -> None:
        self.settings = settings
        metrics.model_label.reset(settings.metrics_max_models)
        self.upstream = create_upstream(settings)
        self._durable_bus = isinstance(producer, InProcessProducer)
        self.emitter = EventEmitter(
            producer,
            settings.kafka_topic,
            buffer_size=settings.event_buffer_size,
            batch_size=settings.event_batch_size,
            linger=settings.event_linger,
            send_attempts=settings.event_send_attempts,
            spool=None if self._durable_bus else Spool.from_settings(settings),
        )
        self.in_flight = InFlight()
        self.deferred = Deferred()
        self.admission = Admission.from_settings(settings)
        self.breakers = Breakers(BreakerPolicy.from_settings(settings))
        self.capture = capture_policy(settings.prompt_capture, settings.redaction_rules_file)
        self.prices = pricing.load(settings.prices_file)  # the cost metric and the budget check price alike
        self.mcp = McpInjector.from_settings(settings)
        self.budgets = self._budget_guard(store_client, producer)
        self._verifier = verifier
        openai_key = settings.openai_key.get_secret_value() if settings.openai_key else None
        anthropic_key = settings.anthropic_key.get_secret_value() if settings.anthropic_key else None
        self.openai = self._interceptor(openai_spec(settings.openai_base_url, openai_key))
        self.anthropic = self._interceptor(anthropic_spec(settings.anthropic_base_url, anthropic_key))
        self.responses = self._interceptor(responses_spec(settings.openai_base_url, openai_key))
        self.compaction = self._interceptor(compaction_spec(settings.openai_base_url, openai_key))
        stored_response = f"{settings.openai_base_url}/responses/{{response_id}}"
        self._passthrough = [
            self._passthrough_route(self.openai.spec, "GET", "/v1/models", f"{settings.openai_base_url}/models"),
            self._passthrough_route(self.openai.spec, "GET", RESPONSE_BY_ID, stored_response),
            self._passthrough_route(self.openai.spec, "DELETE", RESPONSE_BY_ID, stored_response),
            self._passthrough_route(
                self.openai.spec, "GET", f"{RESPONSE_BY_ID}/input_items", f"{stored_response}/input_items"
            ),
            self._passthrough_route(
                self.anthropic.spec, "GET", "/v1/models", f"{settings.anthropic_base_url}/v1/models"
            ),
            self._passthrough_route(
                self.anthropic.spec,
                "POST",
                "/v1/messages/count_tokens",
                f"{settings.anthropic_base_url}/v1/messages/count_tokens",
            ),
        ]
        self._started = False

    def _interceptor(self, spec: ProviderSpec) -> Interceptor:
        return Interceptor(
            spec,
            upstream=self.upstream,
            verifier=self._verifier,
            emitter=self.emitter,
            in_flight=self.in_flight,
            max_body=self.settings.max_body_bytes,
            admission=self.admission,
            breakers=self.breakers,
            deferred=self.deferred,
            metrics_initiator_label=self.settings.metrics_initiator_label,
            capture=self.capture,
            mcp=self.mcp,
            budgets=self.budgets,
            prices=self.prices,
        )

    def _budget_guard(self, store_client: Any, producer: BusProducer) -> BudgetGuard | None:
        """With AIBRIDGE_BUDGETS, the guard reading the store (its alerts go to Kafka, not to an in-process bus)."""
        settings = self.settings
        if not settings.budgets:
            return None
        if store_client is None:
            raise ValueError("AIBRIDGE_BUDGETS needs the store (AIBRIDGE_CLICKHOUSE_URL)")
        self.alerts = AlertPublisher(None if self._durable_bus else producer, settings.budget_alerts_topic)
        return BudgetGuard(
            store_client,
            groups.load(settings.groups_file),
            self.prices,
            interval=settings.budget_refresh_interval,
            alert=self.alerts,
        )

    def _passthrough_route(self, spec: ProviderSpec, method: str, route: str, url: str) -> Route:
        passthrough = Passthrough(
            spec.provider,
            route,
            url,
            spec.key_headers,
            upstream=self.upstream,
            verifier=self._verifier,
            max_body=self.settings.max_body_bytes,
            admission=self.admission,
        )
        prefix = OPENAI_PREFIX if spec.provider is Provider.OPENAI else ANTHROPIC_PREFIX
        return Route(f"{prefix}{route}", passthrough.handle, methods=[method])

    @property
    def routes(self) -> list[BaseRoute]:
        return [
            Route(f"{OPENAI_PREFIX}/v1/chat/completions", self.openai.handle, methods=["POST"]),
            Route(f"{OPENAI_PREFIX}/v1/responses", self.responses.handle, methods=["POST"]),
            Route(f"{OPENAI_PREFIX}/v1/responses/compact", self.compaction.handle, methods=["POST"]),
            Route(f"{ANTHROPIC_PREFIX}/v1/messages", self.anthropic.handle, methods=["POST"]),
            *self._passthrough,
            Route(f"{OPENAI_PREFIX}/{{rest:path}}", _not_found_openai, methods=ANY_METHOD),
            Route(f"{ANTHROPIC_PREFIX}/{{rest:path}}", _not_found_anthropic, methods=ANY_METHOD),
        ]

    @property
    def direct_routes(self) -> dict[str, Handler]:
        """The intercepted routes (POST, exact paths), served ahead of the router (:mod:`aibridge.fastpath`)."""
        return {
            f"{OPENAI_PREFIX}/v1/chat/completions": self.openai.handle,
            f"{OPENAI_PREFIX}/v1/responses": self.responses.handle,
            f"{OPENAI_PREFIX}/v1/responses/compact": self.compaction.handle,
            f"{ANTHROPIC_PREFIX}/v1/messages": self.anthropic.handle,
        }

    async def start(self) -> None:
        if self.settings.openai_key is None or self.settings.anthropic_key is None:
            log.warning("AIBRIDGE_OPENAI_KEY or AIBRIDGE_ANTHROPIC_KEY is not set: that provider gets no key")
        if self.emitter.spool is None and not self._durable_bus:
            log.warning(
                "AIBRIDGE_SPOOL_DIR is not set: events the broker does not take (an outage) are dropped and counted"
                " in aibridge_proxy_events_dropped_total; set it to keep them on disk until the broker is back"
            )
        await self.upstream.start()
        await self.emitter.start()
        if self.mcp is not None:
            await self.mcp.start()
        if self.budgets is not None:
            await self.budgets.start()
        self._started = True
        # Everything built so far (modules, settings, metrics, the app) lives as long as the process:
        # out of the collector's sight, a full collection no longer walks it (~70k objects, 20-40 ms,
        # a pause every request in flight would wait for).
        gc.collect()
        gc.freeze()
        # A request's objects are freed by reference counting (tests/proxy/test_proxy_no_cycles.py),
        # so the young generation's collections mostly walk the requests in flight: with Python's 700
        # allocations between them, one every few requests. Fewer of them: about 2% less CPU per
        # blocking request, 1% streamed (bench/proxy_ab.py --paired; docs/performance.md).
        gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])

    async def stop(self) -> None:
        """Let in-flight requests and streams finish (bounded), flush queued events, close."""
        self._started = False
        self.deferred.flush()  # recordings of answers already sent (a stream is in flight until recorded)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.in_flight.idle.wait(), self.settings.shutdown_grace)
        if self.in_flight.count:
            log.warning("stopping with %d request(s) still in flight", self.in_flight.count)
        self.deferred.flush()
        if self.budgets is not None:
            await self.budgets.stop()
            await self.alerts.drain(self.settings.event_flush_timeout)
        if self.mcp is not None:
            await self.mcp.stop()
        await self.emitter.stop(self.settings.event_flush_timeout)
        await self.upstream.stop()

    async def readiness(self) -> dict[str, str | None]:
        """The broker is deliberately not a dependency: requests are served while it is away."""
        return {
            "upstream_client": None if self._started else "not started",
            "event_emitter": None if self.emitter.running else "not running",
            "budgets": None if self.budgets is None or self.budgets.loaded else "not read from the store yet",
        }


async def _not_found_openai(request: Request) -> Response:
    return not_found(Provider.OPENAI)


async def _not_found_anthropic(request: Request) -> Response:
    return not_found(Provider.ANTHROPIC)


def create_proxy_app(
    settings: ProxySettings, producer: BusProducer, verifier: Verifier, store_client: Any = None
) -> Starlette:
    """The proxy alone as an app with a lifespan (tests, benchmarks)."""
    component = ProxyComponent(settings, producer, verifier, store_client)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await component.start()
        try:
            yield
        finally:
            await component.stop()

    app = FastPathStarlette(routes=component.routes, lifespan=lifespan, direct_routes=component.direct_routes)
    app.state.component = component
    return app
