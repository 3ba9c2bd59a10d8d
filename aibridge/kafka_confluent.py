"""The proxy's Kafka producer on librdkafka (confluent-kafka): a :class:`aibridge.bus.BatchProducer`.

librdkafka batches, compresses and sends on its own C threads, outside the interpreter lock, so the
proxy's event loop only hands messages over, and serves the delivery reports itself: while messages
are in flight, it polls librdkafka every few milliseconds (``poll(0)``, which never waits). A thread
waiting in ``poll`` would take the interpreter lock from the loop for every report, which cost the
proxy more than the reports themselves. librdkafka reports failures only
(``delivery.report.only.error``): a message is delivered once it has left librdkafka's queue without a
failure report, so a batch is complete when the queue is empty after a poll (the emitter sends one
batch at a time; the spool's replay may share the queue, which only makes the wait longer).

The guarantees are those of the aiokafka producer
(:class:`aibridge.kafka.KafkaProducer`): ``acks=all``; one produce request in flight per broker
connection, so a retried batch cannot be overtaken and the events of one interception (one key, one
partition) stay in order; no idempotence (not every Kafka-protocol broker has it; sinks deduplicate on
the event id); the same partitioner (murmur2 of the key, as Java clients and aiokafka place it).

Every message is acknowledged by the broker or reported failed once librdkafka has given up
(``message.timeout.ms``, the request timeout). :meth:`send_batch` resolves when every message of the
batch is one or the other, so a failed one goes back to the emitter, which spools it.
librdkafka's errors are mapped to :class:`aibridge.bus.BusError` here and nowhere else.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from aibridge.bus import BusError, Headers, OutgoingMessage
from aibridge.settings import CommonSettings

_LIBRDKAFKA_LOG = logging.getLogger("aibridge.kafka.librdkafka")
_MAX_BATCH_BYTES = 512 * 1024
_POLL_INTERVAL = 0.005  # seconds between the loop's polls for delivery reports while messages are in flight
_IDLE_POLL_INTERVAL = 1.0  # and while none is
_REPORT_SLACK = 5.0  # librdkafka reports a timed-out message itself; wait a little past its timeout


def librdkafka_options(settings: CommonSettings) -> dict[str, Any]:
    """The connection settings (bootstrap, TLS, SASL) in librdkafka's names."""
    options: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap,
        "security.protocol": settings.kafka_security_protocol.lower(),
    }
    files = {
        "ssl.ca.location": settings.kafka_ssl_cafile,
        "ssl.certificate.location": settings.kafka_ssl_certfile,
        "ssl.key.location": settings.kafka_ssl_keyfile,
    }
    options |= {name: str(path) for name, path in files.items() if path is not None}
    if settings.kafka_ssl_key_password is not None:
        options["ssl.key.password"] = settings.kafka_ssl_key_password.get_secret_value()
    if settings.kafka_security_protocol.endswith("SSL"):
        options["ssl.endpoint.identification.algorithm"] = "https" if settings.kafka_ssl_check_hostname else "none"
        options.setdefault("ssl.ca.location", "probe")  # no CA file: the system's CAs, as for aiokafka
    if settings.kafka_sasl_mechanism:
        password = settings.kafka_sasl_password
        options |= {
            "sasl.mechanism": settings.kafka_sasl_mechanism,
            "sasl.username": settings.kafka_sasl_username,
            "sasl.password": password.get_secret_value() if password is not None else None,
        }
    return options


class ConfluentProducer:
    """Sends messages and waits for their delivery reports, which the event loop polls for."""

    def __init__(self, settings: CommonSettings, *, request_timeout: float = 10.0, **options: Any) -> None:
        compression = settings.kafka_compression
        self._config: dict[str, Any] = {
            **librdkafka_options(settings),
            "acks": "all",
            "enable.idempotence": False,
            "max.in.flight.requests.per.connection": 1,
            "compression.type": compression,
            "linger.ms": 5,
            "batch.size": _MAX_BATCH_BYTES,
            "partitioner": "murmur2_random",
            "message.timeout.ms": int(request_timeout * 1000),
            "request.timeout.ms": int(request_timeout * 1000),
            "socket.keepalive.enable": True,
            "delivery.report.only.error": True,  # a callback per failure, none per acknowledgement
            "log_level": 3,  # errors only: librdkafka's own notices would flood the proxy's log
            "logger": _LIBRDKAFKA_LOG,  # through logging (JSON lines), not straight to stderr
            **options,
        }
        self._timeout = request_timeout
        self._producer: Producer | None = None
        self._polling: asyncio.TimerHandle | None = None
        self._in_flight: list[_Batch] = []  # batches handed over and not yet complete

    async def start(self) -> None:
        producer = Producer(self._config)
        try:  # librdkafka connects lazily: ask for the cluster's metadata to know it is there
            await asyncio.to_thread(producer.list_topics, timeout=self._timeout)
        except KafkaException as exc:
            raise BusError(f"cannot connect to Kafka: {_describe(exc)}") from exc
        self._producer = producer
        self._poll_soon(_IDLE_POLL_INTERVAL)

    def _poll_soon(self, delay: float = _POLL_INTERVAL) -> None:
        if self._polling is not None and delay >= self._polling.when() - asyncio.get_running_loop().time():
            return
        if self._polling is not None:
            self._polling.cancel()
        self._polling = asyncio.get_running_loop().call_later(delay, self._poll)

    def _poll(self) -> None:
        """Serve what arrived (on the loop: the callbacks run here): soon again while any message waits
        for its report, else in a second (librdkafka's own log lines come this way too)."""
        self._polling = None
        producer = self._producer
        if producer is None:
            return
        producer.poll(0)
        if len(producer):
            self._poll_soon()
            return
        complete, self._in_flight = self._in_flight, []
        for batch in complete:
            batch.complete()
        self._poll_soon(_IDLE_POLL_INTERVAL)

    async def send(self, topic: str, key: bytes | None, value: bytes, headers: Headers = ()) -> None:
        [error] = await self.send_batch(topic, [(key, value, headers)])
        if error is not None:
            raise error

    async def send_batch(self, topic: str, messages: Sequence[OutgoingMessage]) -> list[BusError | None]:
        """Hand every message to librdkafka, then wait until each is acknowledged or failed (one timeout)."""
        producer = self._producer
        if producer is None:
            error = BusError("the Kafka producer is not started")
            return [error for _ in messages]
        batch = _Batch(asyncio.get_running_loop(), messages)
        if any(headers for _, _, headers in messages):  # librdkafka's batch call takes no headers
            self._produce_each(producer, topic, messages, batch)
        else:
            self._produce_batch(producer, topic, messages, batch)
        if batch.all_refused:
            batch.complete()
        else:
            self._in_flight.append(batch)
            self._poll_soon()
        try:
            await asyncio.wait_for(asyncio.shield(batch.done), self._timeout + _REPORT_SLACK)
        except TimeoutError:
            return batch.results_so_far(f"Kafka did not acknowledge the message within {self._timeout:g}s")
        return batch.results

    @staticmethod
    def _produce_batch(producer: Producer, topic: str, messages: Sequence[OutgoingMessage], batch: _Batch) -> None:
        """One call for the whole batch (about half the CPU of a call per message), each message placed by
        its key as :meth:`Producer.produce` places it; one delivery report callback for all of them."""
        entries = [{"value": value, "key": key} for key, value, _ in messages]
        try:
            queued = producer.produce_batch(topic, entries, on_delivery=batch.report)
        except (BufferError, KafkaException) as exc:  # nothing was queued
            for index in range(len(messages)):
                batch.refused(index, BusError(f"Kafka did not accept the message: {_describe(exc)}"))
            return
        if queued < len(entries):  # the ones librdkafka did not queue say why; they get no report
            for index, entry in enumerate(entries):
                if (error := entry.get("_error")) is not None:
                    batch.refused(index, BusError(f"Kafka did not accept the message: {_describe_error(error)}"))

    @staticmethod
    def _produce_each(producer: Producer, topic: str, messages: Sequence[OutgoingMessage], batch: _Batch) -> None:
        for index, (key, value, headers) in enumerate(messages):
            try:
                producer.produce(topic, value, key, headers=list(headers) or None, on_delivery=batch.report)
            except (BufferError, KafkaException) as exc:
                batch.refused(index, BusError(f"Kafka did not accept the message: {_describe(exc)}"))

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is None:
            return
        if self._polling is not None:
            self._polling.cancel()
            self._polling = None
        left = await asyncio.to_thread(producer.flush, self._timeout)  # its failure reports come on that thread
        complete, self._in_flight = self._in_flight, []
        for batch in complete:
            batch.complete(missing=f"{left} message(s) were not delivered before the producer stopped" if left else "")
        if left:
            raise BusError(f"{left} message(s) were not delivered before the producer stopped")


class _Batch:
    """The messages of one ``send_batch`` and their failure reports (served on the loop, or, while the
    producer stops, on the thread that flushes it); read on the loop once ``done`` resolves (or the
    wait timed out).

    A report names its message by key and value, not by position, so a failed one is found among the
    batch's messages by its value (an event's value holds its unique id).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, messages: Sequence[OutgoingMessage]) -> None:
        self._messages = messages
        self.results: list[BusError | None] = [None] * len(messages)
        self._failed: list[tuple[bytes | None, BusError]] = []  # reported failures: the message's value
        self._refused: set[int] = set()
        self.done: asyncio.Future[None] = loop.create_future()

    @property
    def all_refused(self) -> bool:
        """librdkafka queued none of the messages (or there were none): nothing to wait for."""
        return len(self._refused) == len(self._messages)

    def report(self, error: KafkaError | None, message: Message) -> None:
        """librdkafka's delivery report, which it makes for failures only."""
        if error is not None:
            self._failed.append((message.value(), BusError(f"Kafka did not accept the message: {error.str()}")))

    def refused(self, index: int, error: BusError) -> None:
        self._refused.add(index)
        self.results[index] = error

    def complete(self, missing: str = "") -> None:
        """Every message left librdkafka's queue: delivered unless reported (``missing``: the queue was
        abandoned, and the messages not reported failed are not known to be delivered)."""
        self._place_failures()
        if missing:
            self.results = [result if result is not None else BusError(missing) for result in self.results]
        if not self.done.done():
            self.done.set_result(None)

    def _place_failures(self) -> None:
        """The reported failures into ``results``, each at its message's index."""
        failed, self._failed = self._failed, []
        if not failed:
            return
        by_value: dict[bytes | None, list[int]] = {}
        for index, (_, value, _) in enumerate(self._messages):
            if index not in self._refused and self.results[index] is None:
                by_value.setdefault(value, []).append(index)
        for reported, error in failed:
            indexes = by_value.get(reported)
            if indexes:
                self.results[indexes.pop(0)] = error

    def results_so_far(self, missing: str) -> list[BusError | None]:
        """After the wait timed out: the failures reported so far where they belong, and every other
        message as missing (not known to be delivered: the emitter sends them again, a duplicate at
        worst, which sinks drop by event id)."""
        self._place_failures()
        return [result if result is not None else BusError(missing) for result in self.results]


def _describe(exc: BaseException) -> str:
    error = exc.args[0] if exc.args else None
    return error.str() if isinstance(error, KafkaError) else repr(exc)


def _describe_error(error: object) -> str:
    return error.str() if isinstance(error, KafkaError) else str(error)
