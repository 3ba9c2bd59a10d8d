"""Hosts any mix of components (proxy, recorder, api) in one process behind one HTTP server.

``aibridge up`` is the embedded default: all three, the in-process bus, chDB in a data directory.
``aibridge proxy`` is exactly ``aibridge up --components proxy --bus kafka`` with the distributed
defaults (no data directory, keys and store from the environment); likewise ``recorder`` and ``api``.
Only the bus and the store differ between the modes; every component runs the same code.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from aibridge import metrics, store, telemetry, workers
from aibridge.bus import BusConsumer, BusProducer, InProcessBus, JsonlProducer
from aibridge.component import Component
from aibridge.embedded import EmbeddedHome, print_banner
from aibridge.fastpath import FastPathStarlette, Handler
from aibridge.http_limits import HeaderLimitSettings, limited_protocol
from aibridge.identity import NoVerifierConfigured, Verifiers
from aibridge.logs import configure_logging, note_record_origin
from aibridge.settings import CommonSettings, StoreSettings

if TYPE_CHECKING:
    from aibridge.proxy.settings import ProxySettings

log = logging.getLogger("aibridge")

ComponentName = Literal["proxy", "recorder", "api"]
ALL_COMPONENTS: tuple[ComponentName, ...] = ("proxy", "recorder", "api")
START_ORDER: tuple[ComponentName, ...] = ("recorder", "api", "proxy")
SIMULATOR_PREFIX = "/_simulator"


class ConfigurationError(Exception):
    """The process cannot start as configured; the message says what to set."""


@dataclass(frozen=True)
class Plan:
    components: tuple[ComponentName, ...]
    bus: Literal["inprocess", "kafka"]
    host: str
    port: int
    data_dir: Path | None = None
    simulate: bool = False
    overrides: dict[str, object] = field(default_factory=dict)
    worker: int | None = None  # this process's index when it is one of several proxy workers


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigurationError(f"--listen must be HOST:PORT, got {value!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def parse_components(value: str | None) -> tuple[ComponentName, ...]:
    if not value:
        return ALL_COMPONENTS
    names = [part.strip() for part in value.split(",") if part.strip()]
    unknown = sorted(set(names) - set(ALL_COMPONENTS))
    if unknown or not names:
        raise ConfigurationError(f"--components takes any of proxy,recorder,api; unknown: {', '.join(unknown)}")
    return tuple(name for name in ALL_COMPONENTS if name in names)


class Host:
    """Builds the planned components, serves their routes and the health endpoints, runs their lifecycle."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.components: dict[ComponentName, Component] = {}
        self._bus = InProcessBus() if plan.bus == "inprocess" else None
        self._topic = CommonSettings(**plan.overrides).kafka_topic  # type: ignore[arg-type]
        self._verifier: Verifiers | None = None

    def build(self) -> Starlette:
        for name in self.plan.components:
            self.components[name] = getattr(self, f"_build_{name}")()
        routes: list[BaseRoute] = [
            Route("/healthz", self._healthz),
            Route("/readyz", self._readyz),
            Route("/metrics", self._metrics),
        ]
        if self.plan.simulate:
            from aibridge.simulator import create_simulator_app

            routes.append(Mount(SIMULATOR_PREFIX, app=create_simulator_app()))
        direct: dict[str, Handler] = {}
        for name in ("proxy", "recorder", "api"):
            if name in self.components:
                routes.extend(self.components[name].routes)
                direct |= getattr(self.components[name], "direct_routes", {})
        return FastPathStarlette(routes=routes, lifespan=self._lifespan, direct_routes=direct)

    def verifier(self) -> Verifiers:
        if self._verifier is None:
            try:
                self._verifier = Verifiers.from_settings(CommonSettings(**self.plan.overrides))  # type: ignore[arg-type]
            except NoVerifierConfigured as exc:
                raise ConfigurationError(str(exc)) from exc
        return self._verifier

    def producer(self, settings: CommonSettings) -> BusProducer:
        if self._bus is not None:
            return self._bus.producer()
        from aibridge.kafka import KafkaProducer

        return KafkaProducer(settings)

    def _store_client(self, settings: StoreSettings, *, create: bool) -> object:
        try:
            return store.connect(
                settings.clickhouse_url,
                settings.clickhouse_database,
                create_database=create,
                **settings.clickhouse_options(),
            )
        except ValueError as exc:
            raise ConfigurationError(f"AIBRIDGE_CLICKHOUSE_URL: {exc}") from exc

    def _build_proxy(self) -> Component:
        from aibridge.proxy.component import ProxyComponent
        from aibridge.proxy.settings import ProxySettings

        settings = ProxySettings(**self.plan.overrides)  # type: ignore[arg-type]
        client = self._store_client(settings, create=self._bus is not None) if settings.budgets else None
        return ProxyComponent(settings, self._proxy_producer(settings), self.verifier(), client)

    def _proxy_producer(self, settings: ProxySettings) -> BusProducer:
        """The proxy publishes with librdkafka unless told otherwise; the others keep aiokafka."""
        if self._bus is not None or settings.kafka_producer == "aiokafka":
            return self.producer(settings)
        from aibridge.kafka_confluent import ConfluentProducer

        return ConfluentProducer(settings)

    def _build_recorder(self) -> Component:
        from aibridge.recorder.component import RecorderComponent
        from aibridge.recorder.settings import RecorderSettings

        settings = RecorderSettings(**self.plan.overrides)  # type: ignore[arg-type]
        consumer: BusConsumer
        dead_letters: BusProducer
        if self._bus is not None:
            consumer = self._bus.consumer(settings.kafka_topic)
            assert self.plan.data_dir is not None
            dead_letters = JsonlProducer(self.plan.data_dir / "dead-letters.jsonl")
        else:
            from aibridge.kafka import KafkaConsumer

            consumer = KafkaConsumer(settings, group_id=settings.consumer_group, **settings.kafka_consumer_options())
            dead_letters = self.producer(settings)
        client = self._store_client(settings, create=True)
        return RecorderComponent(settings, consumer, dead_letters, client)  # type: ignore[arg-type]

    def _build_api(self) -> Component:
        from aibridge.api.component import ApiComponent
        from aibridge.api.settings import ApiSettings

        settings = ApiSettings(**self.plan.overrides)  # type: ignore[arg-type]
        client = self._store_client(settings, create="recorder" not in self.plan.components and self._bus is not None)
        # Nothing reads an in-process audit topic: embedded, the access audit is the log alone.
        audit_producer = None if self._bus is not None else self.producer(settings)
        return ApiComponent(settings, client, self.verifier(), audit_producer)  # type: ignore[arg-type]

    @asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        started: list[Component] = []
        if self._verifier is not None:
            await self._verifier.start()
        gauges = asyncio.create_task(metrics.copy_tracked_gauges()) if self.plan.worker is not None else None
        try:
            for name in START_ORDER:
                if name in self.components:
                    await self.components[name].start()
                    started.append(self.components[name])
            log.info("ready: %s", ", ".join(c.name for c in started))
            yield
        finally:
            await self._stop(started)
            if gauges is not None:
                gauges.cancel()

    async def _stop(self, started: list[Component]) -> None:
        for component in reversed(started):
            if component.name == "recorder":
                await self._drain_bus()
            try:
                await component.stop()
            except Exception:
                log.exception("%s did not stop cleanly", component.name)

    async def _drain_bus(self, timeout: float = 30.0) -> None:
        """In-process bus: let the recorder store what the proxy queued before it stops."""
        if self._bus is None:
            return
        deadline = time.monotonic() + timeout
        while self._bus.pending(self._topic) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        if left := self._bus.pending(self._topic):
            log.error("shutdown: %d events were not stored in %ss", left, timeout)

    async def _healthz(self, request: Request) -> Response:
        if self.plan.worker is None:
            return JSONResponse({"status": "ok"})
        return JSONResponse({"status": "ok", "worker": self.plan.worker})

    async def _readyz(self, request: Request) -> Response:
        checks: dict[str, str | None] = {}
        for name, component in self.components.items():
            for dependency, problem in (await component.readiness()).items():
                checks[f"{name}.{dependency}"] = problem
        ready = all(problem is None for problem in checks.values())
        body = {"status": "ready" if ready else "not ready", "checks": {k: v or "ok" for k, v in checks.items()}}
        return JSONResponse(body, status_code=200 if ready else 503)

    async def _metrics(self, request: Request) -> Response:
        if self.plan.worker is None:
            return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
        registry = CollectorRegistry()  # every worker's samples, from the files they all write
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def serve(plan: Plan) -> int:
    common = CommonSettings(**plan.overrides)  # type: ignore[arg-type]
    # Structured records are for log shippers: keep every line JSON then, even on a terminal.
    configure_logging(common.log_level, json_lines=True if common.structured_logs else None)
    note_record_origin(common.trace_enable and common.trace_logs)
    telemetry.configure(common.trace_enable, trace_logs=common.trace_logs)
    try:
        app = Host(plan).build()
    except ConfigurationError as exc:
        log.error("%s", exc)
        return 2
    config = uvicorn.Config(
        app,
        host=plan.host,
        port=plan.port,
        loop="uvloop",
        http=limited_protocol(HeaderLimitSettings(**plan.overrides)),  # type: ignore[arg-type]
        lifespan="on",
        log_config=None,
        access_log=False,
        proxy_headers=False,  # the peer stays the peer; the API's audit decides whom to trust (trusted proxies)
        timeout_graceful_shutdown=max(1, round(common.shutdown_grace)),
        timeout_keep_alive=75,
    )
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal with the handler it found;
    # make that handler end the process as a clean exit (after flushing traces) rather than a kill.
    signal.signal(signal.SIGTERM, _stop_requested)
    sockets = [workers.reuse_port_socket(plan.host, plan.port)] if plan.worker is not None else None
    try:
        uvicorn.Server(config).run(sockets=sockets)
    except (KeyboardInterrupt, StopRequested):
        pass
    finally:
        telemetry.shutdown()
    return 0


class StopRequested(Exception):
    """SIGTERM arrived after the server had already shut down gracefully."""


def _stop_requested(signum: int, frame: object) -> None:
    raise StopRequested


def _distributed(args: argparse.Namespace, component: ComponentName, default_listen: str) -> int:
    try:
        host, port = parse_listen(args.listen or default_listen)
    except ConfigurationError as exc:
        configure_logging()
        log.error("%s", exc)
        return 2
    overrides = _trace_overrides(args)
    plan = Plan(components=(component,), bus="kafka", host=host, port=port, overrides=overrides)
    if component == "proxy":
        return _serve_proxy(plan, getattr(args, "workers", None))
    return serve(plan)


def _serve_proxy(plan: Plan, workers_flag: int | None) -> int:
    """One process, or a supervisor of ``--workers`` / ``AIBRIDGE_WORKERS`` processes on one port."""
    from aibridge.proxy.settings import ProxySettings

    settings = ProxySettings(**plan.overrides)  # type: ignore[arg-type]
    count = workers_flag if workers_flag is not None else settings.workers or workers.cpu_limit()
    if count <= 1:
        return serve(plan)
    configure_logging(settings.log_level, json_lines=True if settings.structured_logs else None)
    if plan.port == 0:
        log.error("several workers need a fixed port (--listen HOST:PORT with PORT > 0)")
        return 2
    try:
        workers.check_port_free(plan.host, plan.port)
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", plan.host, plan.port, exc)
        return 2
    supervisor = workers.Supervisor(count, partial(_serve_worker, plan), stop_timeout=settings.shutdown_grace)
    return supervisor.run()


def _serve_worker(plan: Plan, index: int, count: int) -> int:
    from aibridge.proxy.settings import ProxySettings

    own = worker_overrides(ProxySettings(**plan.overrides), index, count)  # type: ignore[arg-type]
    return serve(replace(plan, worker=index, overrides=plan.overrides | own))


def worker_overrides(settings: ProxySettings, index: int, count: int) -> dict[str, object]:
    """What differs in worker ``index`` of ``count``: its share of the replica's rate and concurrency
    limits, and its own spool directory (a spool belongs to one process). Worker 0 keeps the configured
    directory, so what a single process spooled there is replayed when it runs with workers."""
    own: dict[str, object] = {
        "max_rps": workers.share(settings.max_rps, count),
        "max_concurrent": workers.share_count(settings.max_concurrent, count),
    }
    if settings.spool_dir is not None and index > 0:
        own["spool_dir"] = settings.spool_dir / f"worker-{index}"
    return own


def _trace_overrides(args: argparse.Namespace) -> dict[str, object]:
    overrides: dict[str, object] = {}
    if getattr(args, "trace", None):
        overrides["trace_enable"] = True
    if getattr(args, "trace_logs", None):
        overrides["trace_logs"] = True
    return overrides


def run_proxy(args: argparse.Namespace) -> int:
    return _distributed(args, "proxy", "0.0.0.0:8080")


def run_recorder(args: argparse.Namespace) -> int:
    return _distributed(args, "recorder", "0.0.0.0:8082")


def run_api(args: argparse.Namespace) -> int:
    return _distributed(args, "api", "0.0.0.0:8081")


def run_up(args: argparse.Namespace) -> int:
    configure_logging(CommonSettings().log_level)
    try:
        host, port = parse_listen(args.listen or "127.0.0.1:8080")
        components = parse_components(args.components)
    except ConfigurationError as exc:
        log.error("%s", exc)
        return 2
    home = EmbeddedHome.prepare(Path(args.data_dir or ".aibridge"))
    overrides = home.overrides(host, port, simulate=args.simulate_upstream, prefix=SIMULATOR_PREFIX)
    overrides |= _trace_overrides(args)
    simulate = bool(home.simulated) and "proxy" in components
    plan = Plan(components, args.bus or "inprocess", host, port, home.root, simulate, overrides)
    print_banner(home, plan.host, plan.port, components, plan.bus)
    return serve(plan)


def main(argv: Sequence[str] | None = None) -> int:
    from aibridge.cli import main as cli_main

    return cli_main(["up", *(argv or [])])
