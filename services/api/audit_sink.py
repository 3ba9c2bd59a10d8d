"""Writes access audit records: one log line each (logger ``aibridge.audit``), and to Kafka.

:meth:`AuditSink.write` never blocks and never raises: it logs the record and, when the sink has a
bus, hands it to the event loop (the API's handlers run in worker threads) to join a bounded buffer.
One task connects the producer and sends what is buffered, oldest first; a record the bus did not
take stays at the front and is tried again after a growing pause, so a broker outage delays records
without losing them. Only a record that finds the buffer full, or is still buffered when the API
stops, never reaches the bus: it is counted (``aibridge_api_audit_records_total{outcome="dropped"}``)
and logged with its id, and its log line was written already.

Without a bus (the embedded ``aibridge up``, where nothing would read the in-process topic) the log
line is the record (``outcome="logged"``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Sequence

import orjson

from aibridge.api.audit import Record
from aibridge.bus import BatchProducer, BusError, BusProducer, OutgoingMessage
from aibridge.metrics import API_AUDIT_BUFFERED, API_AUDIT_RECORDS, API_AUDIT_SEND_FAILURES

records_log = logging.getLogger("aibridge.audit")
log = logging.getLogger("aibridge.api.audit")

_BATCH = 200
_LOG_INTERVAL = 5.0


class AuditSink:
    def __init__(
        self,
        producer: BusProducer | None,
        topic: str,
        *,
        buffer_size: int = 10_000,
        retry_backoff: float = 0.25,
        retry_backoff_max: float = 5.0,
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._buffer: deque[Record] = deque()
        self._buffer_size = buffer_size
        self._backoff = (retry_backoff, retry_backoff_max)
        self._arrived: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self._last_problem_log = 0.0
        records_log.setLevel(logging.INFO)  # an audit trail does not follow AIBRIDGE_LOG_LEVEL
        API_AUDIT_BUFFERED.set_function(lambda: len(self._buffer))

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    async def start(self) -> None:
        if self._producer is None:
            return
        self._loop = asyncio.get_running_loop()
        self._arrived = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="aibridge-audit-publisher")

    def write(self, record: Record) -> None:
        """Log ``record`` and queue it for the bus; safe from any thread."""
        _log_record(record)
        loop = self._loop
        if self._producer is None:
            API_AUDIT_RECORDS.labels("logged").inc()
        elif loop is None or loop.is_closed():
            self._dropped([record], "not_started")
        else:
            loop.call_soon_threadsafe(self._buffered, record)

    async def stop(self, timeout: float = 5.0) -> None:
        """Send what is buffered within ``timeout`` seconds; count and log the rest; stop the producer."""
        task, self._task = self._task, None
        if task is None:
            return
        deadline = time.monotonic() + timeout
        while self._buffer and not task.done() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if self._buffer:
            self._dropped(list(self._buffer), "shutdown")
            self._buffer.clear()
        assert self._producer is not None
        try:
            await asyncio.wait_for(self._producer.stop(), max(timeout, 1.0))
        except (TimeoutError, BusError) as exc:
            log.warning("the audit producer did not stop cleanly: %r", exc)

    def _buffered(self, record: Record) -> None:
        if len(self._buffer) >= self._buffer_size:
            self._dropped([record], "buffer_full")
            return
        self._buffer.append(record)
        assert self._arrived is not None
        self._arrived.set()

    async def _run(self) -> None:
        await self._connect()
        assert self._arrived is not None
        delay = self._backoff[0]
        while True:
            if not self._buffer:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            if await self._send_some():
                delay = self._backoff[0]
            else:
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._backoff[1])

    async def _connect(self) -> None:
        assert self._producer is not None
        delay = self._backoff[0]
        while True:
            try:
                await self._producer.start()
            except BusError as exc:
                self._problem(f"the audit topic's broker is unreachable, retrying in {delay:.1f}s: {exc}")
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._backoff[1])
                continue
            log.info("access audit records go to the topic %s", self._topic)
            return

    async def _send_some(self) -> bool:
        """Send the oldest buffered records; put back the ones the bus did not take. True if all went."""
        batch = [self._buffer.popleft() for _ in range(min(_BATCH, len(self._buffer)))]
        errors = await self._send(batch)
        failed = [record for record, error in zip(batch, errors, strict=True) if error is not None]
        API_AUDIT_RECORDS.labels("published").inc(len(batch) - len(failed))
        if failed:
            self._buffer.extendleft(reversed(failed))
            API_AUDIT_SEND_FAILURES.inc(len(failed))
            first = next(error for error in errors if error is not None)
            self._problem(f"{len(failed)} access audit record(s) not sent, kept for a retry: {first}")
            self._failing = True
        elif self._failing:
            self._failing = False
            log.warning("the audit topic takes records again; %d still buffered", len(self._buffer))
        return not failed

    async def _send(self, batch: Sequence[Record]) -> list[BusError | None]:
        producer = self._producer
        assert producer is not None
        messages: list[OutgoingMessage] = [(_key(record), orjson.dumps(record), ()) for record in batch]
        if isinstance(producer, BatchProducer):
            return await producer.send_batch(self._topic, messages)
        errors: list[BusError | None] = []
        for key, value, headers in messages:
            try:
                await producer.send(self._topic, key, value, headers)
            except BusError as exc:
                errors.append(exc)
            else:
                errors.append(None)
        return errors

    def _dropped(self, records: Sequence[Record], reason: str) -> None:
        API_AUDIT_RECORDS.labels("dropped").inc(len(records))
        log.error(
            "%d access audit record(s) did not reach the topic %s (%s); they are in the aibridge.audit log only",
            len(records),
            self._topic,
            reason,
            extra={"reason": reason, "event_ids": [record["event_id"] for record in records[:100]]},
        )

    def _problem(self, message: str) -> None:
        now = time.monotonic()
        if not self._failing or now - self._last_problem_log >= _LOG_INTERVAL:
            self._last_problem_log = now
            log.error("%s", message)


def _key(record: Record) -> bytes:
    return str(record["actor"]["user_id"]).encode()


def _log_record(record: Record) -> None:
    actor, result = record["actor"], record["result"]
    records_log.info(
        "%s by %s (%s) from %s: %s, %d row(s)",
        record["action"],
        actor["username"],
        actor["role"],
        record["source"]["ip"],
        result["status"],
        result["rows"],
        extra={"audit": record},
    )
