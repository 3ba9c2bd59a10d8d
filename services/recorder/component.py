"""The recorder as a component: migrates the store, applies retention, runs the pipeline."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol, runtime_checkable

from clickhouse_connect.driver.client import Client
from starlette.routing import BaseRoute

from aibridge import metrics, pricing, store
from aibridge.bus import BusConsumer, BusProducer
from aibridge.recorder.pipeline import Pipeline, PipelineConfig
from aibridge.recorder.records_log import RecordsLog
from aibridge.recorder.retention import apply_retention
from aibridge.recorder.settings import RecorderSettings
from aibridge.recorder.stages import BatchWriter, DeadLetters

log = logging.getLogger("aibridge.recorder")

_PING_TIMEOUT = 3.0


@runtime_checkable
class _Probed(Protocol):
    async def probe(self) -> str | None: ...


@runtime_checkable
class _Lagging(Protocol):
    async def lag(self) -> int: ...


class RecorderComponent:
    """Consumes interception events from the bus and stores them (see :mod:`aibridge.recorder.pipeline`)."""

    name = "recorder"

    def __init__(self, settings: RecorderSettings, consumer: BusConsumer, dlq: BusProducer, client: Client) -> None:
        self._settings = settings
        self._consumer = consumer
        self._dlq = dlq
        self._client = client
        self._prices = pricing.load(settings.prices_file)  # a bad file fails here, naming the entry
        self._pipeline: Pipeline | None = None
        self._task: asyncio.Task[None] | None = None
        self._lag_task: asyncio.Task[None] | None = None
        self._started = False

    @property
    def routes(self) -> list[BaseRoute]:
        return []

    async def start(self) -> None:
        await asyncio.to_thread(self._prepare_store)
        await self._dlq.start()
        try:
            await self._consumer.start()
        except BaseException:
            await self._dlq.stop()
            raise
        self._started = True
        self._pipeline = self._build_pipeline()
        self._task = asyncio.create_task(self._pipeline.run(), name="recorder-pipeline")
        self._task.add_done_callback(_report_end)
        if isinstance(self._consumer, _Lagging):
            self._lag_task = asyncio.create_task(self._watch_lag(self._consumer), name="recorder-lag")
        log.info(
            "recording %s into %s (batches of %d events or %.2fs; dead letters to %s)",
            self._settings.kafka_topic,
            self._settings.clickhouse_database,
            self._settings.batch_max_rows,
            self._settings.batch_max_seconds,
            self._settings.dlq_topic,
        )

    async def stop(self) -> None:
        """Stop fetching, write and commit the open batch, then stop the consumer (what SIGTERM triggers)."""
        if self._lag_task is not None:
            self._lag_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lag_task
            self._lag_task = None
        if self._pipeline is not None and self._task is not None:
            self._pipeline.request_stop()
            grace = self._settings.shutdown_timeout + 5
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._task), grace)
            if not self._task.done():
                log.error("the recorder did not finish within %.0fs; cancelling it", grace)
                self._task.cancel()
                with contextlib.suppress(BaseException):
                    await self._task
        if self._started:
            self._started = False
            try:
                await self._consumer.stop()
            finally:
                await self._dlq.stop()

    async def readiness(self) -> dict[str, str | None]:
        return {"kafka": await self._kafka_problem(), "clickhouse": await self._store_problem()}

    def _prepare_store(self) -> None:
        try:
            applied = store.migrate(self._client)
        except Exception as exc:
            raise self._store_failed("migrate", exc) from exc
        try:
            apply_retention(self._client, self._settings.retention)
        except Exception as exc:
            raise self._store_failed("retention", exc) from exc
        if applied:
            log.info("applied store migrations %s", applied)

    def _store_failed(self, operation: str, exc: Exception) -> store.StoreError:
        metrics.RECORDER_STORE_ERRORS.labels(operation).inc()
        return store.StoreError(f"cannot prepare the store {self._settings.clickhouse_database}: {exc}")

    async def _watch_lag(self, consumer: _Lagging) -> None:
        """Keep ``aibridge_recorder_consumer_lag_messages`` current (every ``consumer_lag_interval`` s)."""
        interval = self._settings.consumer_lag_interval
        while True:
            try:
                async with asyncio.timeout(interval):  # not wait_for: on 3.11 it can swallow our cancellation
                    metrics.RECORDER_CONSUMER_LAG_MESSAGES.set(await consumer.lag())
            except Exception as exc:  # the gauge keeps its last value; the pipeline reports the bus itself
                log.debug("consumer lag unavailable: %r", exc)
            await asyncio.sleep(interval)

    def _build_pipeline(self) -> Pipeline:
        settings = self._settings
        config = PipelineConfig(
            batch_max_rows=settings.batch_max_rows,
            batch_max_seconds=settings.batch_max_seconds,
            poll_max_records=settings.poll_max_records,
            retry_backoff_min=settings.retry_backoff_min,
            retry_backoff_max=settings.retry_backoff_max,
            shutdown_timeout=settings.shutdown_timeout,
        )
        records_log = RecordsLog() if settings.structured_logs else None
        dead_letters = DeadLetters(self._dlq, settings.dlq_topic)
        writer = BatchWriter(self._client)
        return Pipeline(self._consumer, dead_letters, writer, config, records_log, prices=self._prices)

    async def _kafka_problem(self) -> str | None:
        if self._pipeline is None or self._task is None:
            return "not started"
        if self._task.done():
            return "the recorder loop has stopped"
        if self._pipeline.bus_error is not None:
            return self._pipeline.bus_error
        if isinstance(self._consumer, _Probed):
            return await self._consumer.probe()
        return None

    async def _store_problem(self) -> str | None:
        if self._pipeline is not None and self._pipeline.store_error is not None:
            return self._pipeline.store_error
        try:
            await asyncio.wait_for(asyncio.to_thread(self._client.command, "SELECT 1"), _PING_TIMEOUT)
        except Exception as exc:
            metrics.RECORDER_STORE_ERRORS.labels("ping").inc()
            return f"store unreachable: {type(exc).__name__}: {str(exc).strip()[:300]}"
        return None


def _report_end(task: asyncio.Task[None]) -> None:
    if task.cancelled():
        log.warning("the recorder loop was cancelled")
    elif (exc := task.exception()) is not None:
        log.error("the recorder loop crashed", exc_info=exc)
