"""Publishes interception events off the request path.

``emit`` only puts the event on a bounded in-memory queue and never waits. One background task
connects the bus producer (retrying while the broker is away), takes what is queued in batches, sends
each batch concurrently (the producer batches on the wire) and retries a failed send a few times.

An event that cannot be published — the queue is full, every send attempt failed, or it was still
queued when the flush at shutdown ran out of time — goes to :meth:`EventEmitter.unpublished`, the one
place that counts it (``aibridge_proxy_events_dropped_total{reason}``) and logs it. It is never lost
without a trace; a spool can take over at that seam.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

from aibridge.bus import BusError, BusProducer
from aibridge.events import Event, encode_event
from aibridge.metrics import (
    PROXY_EVENT_SEND_FAILURES,
    PROXY_EVENTS_BUFFERED,
    PROXY_EVENTS_DROPPED,
    PROXY_EVENTS_PUBLISHED,
)

log = logging.getLogger("aibridge.proxy.emitter")

_LOG_INTERVAL = 5.0


class EventEmitter:
    def __init__(
        self,
        producer: BusProducer,
        topic: str,
        *,
        buffer_size: int = 100_000,
        batch_size: int = 500,
        send_attempts: int = 3,
        retry_backoff: float = 0.2,
        reconnect_backoff_max: float = 5.0,
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=buffer_size)
        self._batch_size = batch_size
        self._attempts = send_attempts
        self._retry_backoff = retry_backoff
        self._reconnect_max = reconnect_backoff_max
        self._task: asyncio.Task[None] | None = None
        self._connected = False
        self._last_problem_log = 0.0
        self.published = 0
        self.dropped = 0
        PROXY_EVENTS_BUFFERED.set_function(self._queue.qsize)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def buffered(self) -> int:
        return self._queue.qsize()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="aibridge-event-emitter")

    def emit(self, event: Event) -> None:
        """Queue one event for publishing; never blocks, never raises."""
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.unpublished([event], "buffer_full")

    async def stop(self, timeout: float) -> None:
        """Publish what is queued within ``timeout`` seconds, give up the rest, close the producer."""
        task, self._task = self._task, None
        if task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), timeout)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        left = []
        while not self._queue.empty():
            left.append(self._queue.get_nowait())
        if left:
            self.unpublished(left, "shutdown")
        try:
            await asyncio.wait_for(self._producer.stop(), max(timeout, 1.0))
        except (TimeoutError, BusError) as exc:
            log.warning("the event bus producer did not stop cleanly: %r", exc)
        self._connected = False

    def unpublished(self, events: Sequence[Event], reason: str, detail: str = "") -> None:
        """The single seam for events that could not be published: count and log them."""
        self.dropped += len(events)
        PROXY_EVENTS_DROPPED.labels(reason).inc(len(events))
        now = time.monotonic()
        if reason == "buffer_full" and now - self._last_problem_log < _LOG_INTERVAL:
            return
        self._last_problem_log = now
        log.error(
            "could not publish %d interception event(s): %s %s",
            len(events),
            reason,
            detail,
            extra={
                "reason": reason,
                "dropped_total": self.dropped,
                "events": [(e.get("type"), e.get("interception_id"), e.get("event_id")) for e in events[:20]],
            },
        )

    async def _run(self) -> None:
        await self._connect()
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._batch_size and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await asyncio.gather(*(self._send(event) for event in batch))
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _connect(self) -> None:
        delay = 0.25
        while True:
            try:
                await self._producer.start()
            except BusError as exc:
                self._log_problem(f"the event bus is unreachable, retrying in {delay:.1f}s: {exc}")
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._reconnect_max)
                continue
            self._connected = True
            log.info("event bus connected; publishing to %s", self._topic)
            return

    async def _send(self, event: Event) -> None:
        sent = False
        try:
            sent = await self._send_with_retries(event, encode_event(event))
        finally:
            if not sent:
                self.unpublished([event], "send_failed")

    async def _send_with_retries(self, event: Event, value: bytes) -> bool:
        key = str(event["interception_id"]).encode()
        for attempt in range(1, self._attempts + 1):
            try:
                await self._producer.send(self._topic, key, value)
            except BusError as exc:
                PROXY_EVENT_SEND_FAILURES.inc()
                self._log_problem(f"sending an event failed (attempt {attempt}/{self._attempts}): {exc}")
                if attempt < self._attempts:
                    await asyncio.sleep(self._retry_backoff * attempt)
                continue
            self.published += 1
            PROXY_EVENTS_PUBLISHED.inc()
            return True
        return False

    def _log_problem(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_problem_log >= _LOG_INTERVAL:
            self._last_problem_log = now
            log.warning("%s", message)
