"""Publishes interception events off the request path, through broker outages.

``emit`` only encodes the event and appends it to a bounded in-memory buffer (a deque: an
``asyncio.Queue`` costs several times as much per event, for waiting the publisher does not need) and
never waits. Encoded at once, a waiting event is bytes, which the garbage collector never walks; kept as
its dicts through the linger, the queue's events were walked by every collection while they waited
(part of the collector's work that ``bench/proxy_ab.py --paired`` measures in docs/performance.md). A
background task takes what is queued in batches, letting a batch fill for ``linger`` seconds after its
first event (fewer, larger produce requests: the per-request work is what costs CPU), and hands each
batch to the producer in one call where it can take one (:class:`~aibridge.bus.BatchProducer`).

Without a spool, a failed send is retried a few times (``send_attempts``). With a spool
(``AIBRIDGE_SPOOL_DIR``), the spool is the retry: an event whose send failed goes to disk, and while
the spool holds anything, or the producer has not connected yet, new events go to disk behind it so
nothing overtakes older events. One replayer task connects the producer and drains the spool in
order (:func:`aibridge.proxy.recording.spool.drain`), backing off while the broker is away; direct sending
resumes once the spool is empty.

An event that cannot be published goes to :meth:`EventEmitter.unpublished`, the one seam for them:
with a spool it is written there; only what the spool refuses (full, or a write error) — or, without a
spool, every such event — is dropped, counted in ``aibridge_proxy_events_dropped_total{reason}`` and
logged with its ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Sequence

from aibridge.bus import BatchProducer, BusError, BusProducer, Headers
from aibridge.events import Event, encode_event
from aibridge.metrics import (
    PROXY_EVENT_SEND_FAILURES,
    PROXY_EVENTS_BUFFERED,
    PROXY_EVENTS_DROPPED,
    PROXY_EVENTS_PUBLISHED,
    track,
)
from aibridge.proxy.recording.spool import Spool, drain

log = logging.getLogger("aibridge.proxy.emitter")

_LOG_INTERVAL = 5.0
# An event as it waits in the buffer: encoded at once (bytes, which the garbage collector never walks,
# instead of an event's dicts kept alive for the linger), with its ids for a log line.
_Queued = tuple[bytes, bytes, Headers, tuple[str, str, str]]  # key, value, headers, (type, interception, event)


def _queued(event: Event, headers: Headers) -> _Queued:
    interception_id = event["interception_id"]
    ids = (event["type"], interception_id, event["event_id"])
    return str(interception_id).encode(), encode_event(event), headers, ids


class EventEmitter:
    def __init__(
        self,
        producer: BusProducer,
        topic: str,
        *,
        buffer_size: int = 100_000,
        batch_size: int = 500,
        linger: float = 0.0,
        send_attempts: int = 3,
        retry_backoff: float = 0.2,
        reconnect_backoff_max: float = 5.0,
        spool: Spool | None = None,
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._queue: deque[_Queued] = deque()
        self._buffer_size = buffer_size
        self._arrival: asyncio.Future[None] | None = None  # the publisher waits on it for an event
        self._in_hand = 0  # events taken from the buffer and not yet sent, spooled or dropped
        self._batch_size = batch_size
        self._linger = linger
        self._batch_producer = producer if isinstance(producer, BatchProducer) else None  # a Protocol check: slow
        self._attempts = 1 if spool is not None else send_attempts
        self._retry_backoff = retry_backoff
        self._reconnect_max = reconnect_backoff_max
        self._spool = spool
        self._spooled = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._replayer: asyncio.Task[None] | None = None
        self._connected = False
        self._last_problem_log = 0.0
        self.published = 0
        self.replayed = 0
        self.spooled = 0
        self.dropped = 0
        track(PROXY_EVENTS_BUFFERED, self._queue.__len__)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def buffered(self) -> int:
        return len(self._queue)

    @property
    def spool(self) -> Spool | None:
        return self._spool

    async def start(self) -> None:
        if self._spool is None:
            self._task = asyncio.create_task(self._run(), name="aibridge-event-emitter")
            return
        self._replayer = asyncio.create_task(self._replay(), name="aibridge-spool-replayer")
        self._task = asyncio.create_task(self._publish_forever(), name="aibridge-event-emitter")

    def emit(self, event: Event, headers: Headers = ()) -> None:
        """Queue one event for publishing; never blocks, never raises."""
        try:
            item = _queued(event, headers)
        except (TypeError, KeyError) as exc:  # a value JSON cannot hold, or no ids: a bug, said and counted
            self.dropped += 1
            PROXY_EVENTS_DROPPED.labels("unencodable").inc()
            log.error("could not encode an interception event (%s): %r", event.get("type"), exc)
            return
        if len(self._queue) >= self._buffer_size:
            self.unpublished([item], "buffer_full")
            return
        self._queue.append(item)
        arrival = self._arrival
        if arrival is not None:
            self._arrival = None
            if not arrival.done():
                arrival.set_result(None)

    async def stop(self, timeout: float) -> None:
        """Publish what is queued (and, if the bus is up, what is spooled) within ``timeout`` seconds;
        spool or give up the rest; close the spool and the producer."""
        task, self._task = self._task, None
        replayer, self._replayer = self._replayer, None
        if task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flushed(), timeout)
        for background in (task, replayer):
            if background is not None:
                background.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await background
        left = list(self._queue)
        self._queue.clear()
        if left:
            self.unpublished(left, "shutdown")
        self._close_spool()
        try:
            await asyncio.wait_for(self._producer.stop(), max(timeout, 1.0))
        except (TimeoutError, BusError) as exc:
            log.warning("the event bus producer did not stop cleanly: %r", exc)
        self._connected = False

    def unpublished(self, events: Sequence[_Queued], reason: str, detail: str = "") -> None:
        """The single seam for events that could not be published: spool them, else count and log them."""
        if self._spool is not None:
            events = self._to_spool(events)
            if not events:
                return
            reason, detail = "spool_refused", f"(after {reason}) {detail}"
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
                "events": [ids for _, _, _, ids in events[:20]],
            },
        )

    def _to_spool(self, events: Sequence[_Queued]) -> list[_Queued]:
        """Append ``events`` to the spool; return the ones it refused."""
        assert self._spool is not None
        if self._spool.pending_records == 0 and self._connected:
            log.warning("the event bus is not taking events: spooling them to %s", self._spool.directory)
        refused = [item for item in events if not self._spool.append(*item[:3])]
        self.spooled += len(events) - len(refused)
        self._spooled.set()
        return refused

    async def _flushed(self) -> None:
        while self._queue or self._in_hand:  # noqa: ASYNC110 - at shutdown only
            await asyncio.sleep(0.01)
        while self._spool is not None and self._spool.pending_records and self._connected:  # noqa: ASYNC110
            await asyncio.sleep(0.05)

    def _close_spool(self) -> None:
        if self._spool is None:
            return
        if self._spool.pending_records:
            log.warning(
                "%d event(s) stay in the spool %s; they are replayed when the proxy starts on it again",
                self._spool.pending_records,
                self._spool.directory,
            )
        self._spool.close()

    async def _run(self) -> None:
        await self._connect()
        await self._publish_forever()

    async def _publish_forever(self) -> None:
        queue = self._queue
        while True:
            if not queue:
                self._arrival = asyncio.get_running_loop().create_future()
                await self._arrival
            if self._linger and len(queue) < self._batch_size:
                await asyncio.sleep(self._linger)  # let the batch fill: per produce request costs dominate
            batch = [queue.popleft() for _ in range(min(len(queue), self._batch_size))]
            self._in_hand = len(batch)
            try:
                if self._spool is not None and (self._spool.pending_records or not self._connected):
                    self.unpublished(batch, "behind_spool")
                elif self._batch_producer is not None:
                    await self._send_batch(self._batch_producer, batch)
                else:
                    await asyncio.gather(*(self._send(item) for item in batch))
            finally:
                self._in_hand = 0

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

    async def _replay(self) -> None:
        """Connect, then send whatever the spool holds, oldest first, whenever it holds anything."""
        assert self._spool is not None
        await self._connect()
        delay = 0.25
        while True:
            if not self._spool.pending_records:
                self._spooled.clear()
                await self._spooled.wait()
                continue
            try:
                sent = await drain(self._spool, self._send_spooled, batch=self._batch_size)
            except Exception as exc:
                self._log_problem(f"replaying the spool failed, retrying in {delay:.1f}s: {exc!r}")
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._reconnect_max)
                continue
            delay = 0.25
            log.info("the event bus is taking events again: %d spooled event(s) replayed", sent)

    async def _send_spooled(self, key: bytes | None, value: bytes, headers: Headers) -> None:
        await self._producer.send(self._topic, key, value, headers)
        self.replayed += 1
        self._published()

    async def _send_batch(self, producer: BatchProducer, batch: list[_Queued]) -> None:
        """The whole batch in one call (no task per event); what failed is retried one by one."""
        outgoing = [item[:3] for item in batch]
        results = await producer.send_batch(self._topic, outgoing)
        failed = []
        for item, error in zip(batch, results, strict=True):
            if error is not None:
                self._failed(1, error)
                failed.append(item)
        self._published(len(batch) - len(failed))  # one increment a batch: with workers each costs a file write
        if failed:
            await asyncio.gather(*(self._send(item, first_attempt=2) for item in failed))

    async def _send(self, item: _Queued, first_attempt: int = 1) -> None:
        sent = False
        try:
            sent = await self._send_with_retries(item, first_attempt)
        finally:
            if not sent:
                self.unpublished([item], "send_failed")

    async def _send_with_retries(self, item: _Queued, first_attempt: int = 1) -> bool:
        key, value, headers, _ = item
        if 1 < first_attempt <= self._attempts:
            await asyncio.sleep(self._retry_backoff * (first_attempt - 1))
        for attempt in range(first_attempt, self._attempts + 1):
            try:
                await self._producer.send(self._topic, key, value, headers)
            except BusError as exc:
                self._failed(attempt, exc)
                if attempt < self._attempts:
                    await asyncio.sleep(self._retry_backoff * attempt)
                continue
            self._published()
            return True
        return False

    def _published(self, count: int = 1) -> None:
        if count:
            self.published += count
            PROXY_EVENTS_PUBLISHED.inc(count)

    def _failed(self, attempt: int, error: BusError) -> None:
        PROXY_EVENT_SEND_FAILURES.inc()
        self._log_problem(f"sending an event failed (attempt {attempt}/{self._attempts}): {error}")

    def _log_problem(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_problem_log >= _LOG_INTERVAL:
            self._last_problem_log = now
            log.warning("%s", message)
