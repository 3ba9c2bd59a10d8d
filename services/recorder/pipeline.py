"""The recorder's loop: poll → decode → batch → write → commit, one batch at a time.

Guarantees (at least once, nothing lost):

- A message's offset is committed only after its row was stored or it was accepted by the
  dead-letter topic, and after every earlier message of its partition was too.
- A write the store could not do (:class:`aibridge.store.StoreUnavailable`: down, timing out, too
  many parts, …) keeps the batch, pauses fetching (backpressure), retries with bounded exponential
  backoff while still polling the paused consumer (so the group keeps the member), and resumes once
  the write succeeds. A failed dead-letter publish is retried the same way, and nothing after it
  is committed meanwhile.
- A write the store refuses for its data (:class:`aibridge.store.StoreRejected`) is split until the
  refused rows stand alone (:mod:`aibridge.recorder.isolation`); the others are stored, the refused
  events go to the dead-letter topic with the store's error, and the batch is committed: one bad row
  never holds up the events behind it.
- A stop request ends fetching, writes the open batch (retrying up to ``shutdown_timeout``) and
  commits it; a batch still unwritten then stays uncommitted and is redelivered later.

The stages only see :class:`aibridge.bus.BusConsumer` and :class:`aibridge.bus.BusProducer`, so the
embedded mode (in-process bus) and the distributed mode (Kafka) run this same code.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass

from aibridge import metrics, telemetry
from aibridge.bus import BusConsumer, BusError, Message
from aibridge.pricing import PriceTable
from aibridge.recorder.isolation import isolate
from aibridge.recorder.records_log import RecordsLog
from aibridge.recorder.rows import Row
from aibridge.recorder.stages import Backoff, Batch, BatchWriter, DeadLetters, Decoder, Rejection, offsets_text
from aibridge.recorder.tracing import BatchTracer
from aibridge.store import StoreError, StoreRejected

log = logging.getLogger("aibridge.recorder")

IDLE_POLL_SECONDS = 0.5


@dataclass(frozen=True)
class PipelineConfig:
    batch_max_rows: int = 10_000
    batch_max_seconds: float = 1.0
    poll_max_records: int = 2_000
    retry_backoff_min: float = 0.2
    retry_backoff_max: float = 30.0
    shutdown_timeout: float = 20.0


class _GaveUp(Exception):
    """Stopping, and the shutdown timeout passed while an operation still failed."""


class Pipeline:
    def __init__(
        self,
        consumer: BusConsumer,
        dead_letters: DeadLetters,
        writer: BatchWriter,
        config: PipelineConfig,
        records_log: RecordsLog | None = None,
        *,
        prices: PriceTable | None = None,
    ) -> None:
        self._consumer = consumer
        self._decoder = Decoder(prices)
        self._dead_letters = dead_letters
        self._writer = writer
        self._config = config
        self._records_log = records_log
        self._batch = Batch()
        self._held: deque[Message] = deque()
        self._stopping = asyncio.Event()
        self._stop_deadline: float | None = None
        self._paused = False
        self._tracing = BatchTracer() if telemetry.enabled() else None
        self.store_error: str | None = None
        self.bus_error: str | None = None

    def request_stop(self) -> None:
        """Stop fetching; :meth:`run` then writes and commits the open batch and returns."""
        if not self._stopping.is_set():
            self._stop_deadline = time.monotonic() + self._config.shutdown_timeout
            self._stopping.set()

    async def run(self) -> None:
        try:
            while not self._stopping.is_set():
                await self._step()
        except _GaveUp:
            pass
        try:
            await self._flush()
        except _GaveUp:
            log.error("stopped with %d events unwritten; they stay uncommitted", self._batch.messages)

    async def _step(self) -> None:
        for message in await self._next_messages():
            outcome = self._decode(message)
            if isinstance(outcome, Rejection):
                await self._dead_letter(message, outcome)
                self._batch.add(message, None)
            else:
                self._batch.add(message, outcome)
        if self._batch.is_due(self._config.batch_max_rows, self._config.batch_max_seconds):
            await self._flush()

    def _decode(self, message: Message) -> Row | Rejection:
        if self._tracing is None:
            return self._decoder.decode(message)
        return self._tracing.decode(self._decoder, message)

    async def _next_messages(self) -> list[Message]:
        if self._held:
            held = list(self._held)
            self._held.clear()
            return held
        room = max(1, min(self._config.poll_max_records, self._config.batch_max_rows - self._batch.messages))
        timeout = min(IDLE_POLL_SECONDS, self._batch.seconds_left(self._config.batch_max_seconds))
        try:
            messages = await self._consumer.poll(room, timeout)
        except BusError as exc:
            self._bus_failed("poll", exc)
            await asyncio.sleep(self._config.retry_backoff_min)
            return []
        self.bus_error = None
        metrics.RECORDER_EVENTS_CONSUMED.inc(len(messages))
        return messages

    async def _dead_letter(self, message: Message, rejection: Rejection, row: Row | None = None) -> None:
        backoff = self._backoff()
        while True:
            try:
                await self._dead_letters.send(message, rejection)
                break
            except BusError as exc:
                self._bus_failed("dead_letter", exc)
                await self._wait_paused(backoff.next())
        self._resume()
        metrics.RECORDER_DEAD_LETTERS.labels(rejection.kind).inc()
        log.warning(
            "dead-lettered %s[%d]@%d%s to %s (%s): %s",
            message.partition.topic,
            message.partition.index,
            message.offset,
            _identify(message, row),
            self._dead_letters.topic,
            rejection.kind,
            rejection.reason,
        )

    async def _flush(self) -> None:
        batch = self._batch
        if not batch.messages:
            return
        if batch.records:
            await self._write(batch)
        await self._commit(batch)
        self._batch = Batch()
        if self._tracing is not None:
            self._tracing.reset()

    async def _write(self, batch: Batch) -> None:
        backoff = self._backoff()
        first_started_ns, attempts = time.time_ns(), 0
        while True:
            started = time.monotonic()
            attempts += 1
            try:
                await self._write_tables(batch)
                break
            except StoreError as exc:  # StoreUnavailable: StoreRejected is handled per table
                self.store_error = str(exc)
                metrics.RECORDER_FAILURES.labels("write").inc()
                metrics.RECORDER_STORE_ERRORS.labels("insert").inc()
                log.warning("store write of %d events failed, retrying: %s", batch.messages, exc)
                await self._wait_paused(backoff.next())
        self._resume()
        if self.store_error is not None:
            log.info("store write succeeded again; resumed fetching")
        self.store_error = None
        self._stored(batch, time.monotonic() - started)
        if self._tracing is not None:
            self._tracing.inserted(batch.messages, first_started_ns, time.time_ns(), attempts)

    async def _write_tables(self, batch: Batch) -> None:
        for table in batch.unwritten_tables():
            try:
                await self._writer.insert(table, batch.values(table))
            except StoreRejected as exc:
                await self._set_aside(batch, table, exc)
            batch.written_tables.add(table)

    async def _set_aside(self, batch: Batch, table: str, error: StoreRejected) -> None:
        """Store the rows of ``table`` the store accepts; dead-letter the events of those it refuses."""
        rows = batch.values(table)
        outcome = await isolate(lambda part: self._writer.insert(table, part), rows, error)
        log.warning(
            "the store refused %d of %d %s rows (found in %d more inserts): %s",
            len(outcome.refused),
            len(rows),
            table,
            outcome.inserts,
            error,
        )
        refusals = {refusal.index: refusal.error for refusal in outcome.refused}
        for index, (message, row) in zip(sorted(refusals), batch.remove(table, refusals), strict=True):
            await self._dead_letter(message, Rejection("store_rejected", str(refusals[index])), row)

    def _stored(self, batch: Batch, seconds: float) -> None:
        metrics.RECORDER_WRITE_SECONDS.observe(seconds)
        now_ms = time.time() * 1000
        for table, entries in batch.entries.items():
            if entries:
                metrics.RECORDER_ROWS_WRITTEN.labels(table).inc(len(entries))
            for message, _ in entries:
                if message.timestamp_ms:
                    delay = max(0.0, now_ms - message.timestamp_ms) / 1000
                    metrics.RECORDER_PUBLISH_TO_STORED_SECONDS.observe(delay)
        if self._records_log is not None:
            self._records_log.emit(batch.records)

    async def _commit(self, batch: Batch) -> None:
        try:
            await self._consumer.commit(batch.offsets)
        except BusError as exc:
            # The rows are stored: a redelivery after a failed commit is absorbed by deduplication.
            self._bus_failed("commit", exc)
            return
        metrics.RECORDER_BATCHES_WRITTEN.inc()
        metrics.RECORDER_BATCH_EVENTS.observe(batch.messages)
        log.debug("committed %d events: %s", batch.messages, offsets_text(batch.offsets))

    async def _wait_paused(self, delay: float) -> None:
        """Pause fetching, then keep polling (the group needs it) for ``delay`` seconds."""
        if self._stop_deadline is not None and time.monotonic() >= self._stop_deadline:
            raise _GaveUp
        self._pause()
        deadline = time.monotonic() + delay
        while (left := min(deadline, self._stop_deadline or deadline) - time.monotonic()) > 0:
            step = min(left, IDLE_POLL_SECONDS)  # short steps: a stop request may move the deadline
            try:
                held = await self._consumer.poll(self._config.poll_max_records, step)
            except BusError:
                await asyncio.sleep(step)
                continue
            # Counted here, where they leave the bus, not when _next_messages replays them.
            metrics.RECORDER_EVENTS_CONSUMED.inc(len(held))
            self._held.extend(held)

    def _pause(self) -> None:
        if not self._paused:
            self._consumer.pause()
            self._paused = True
            metrics.RECORDER_PAUSED.set(1)

    def _resume(self) -> None:
        if self._paused:
            self._consumer.resume()
            self._paused = False
            metrics.RECORDER_PAUSED.set(0)

    def _bus_failed(self, operation: str, exc: BusError) -> None:
        self.bus_error = str(exc)
        metrics.RECORDER_FAILURES.labels(operation).inc()
        log.warning("bus %s failed: %s", operation, exc)

    def _backoff(self) -> Backoff:
        return Backoff(self._config.retry_backoff_min, self._config.retry_backoff_max)


def _identify(message: Message, row: Row | None) -> str:
    """Ids for a log line, never contents: the row's own id and its interception (the message key)."""
    if row is None:
        return ""
    key = message.key.decode("utf-8", "replace") if message.key else "-"
    return f" ({row.record_type} {row.values[0]}, interception {key})"
