"""The proxy's Kafka producer on librdkafka (confluent-kafka): a :class:`aibridge.bus.BatchProducer`.

librdkafka batches, compresses and sends on its own C threads, outside the interpreter lock, so the
proxy's event loop only hands messages over. The guarantees are those of the aiokafka producer
(:class:`aibridge.kafka.KafkaProducer`): ``acks=all``; one produce request in flight per broker
connection, so a retried batch cannot be overtaken and the events of one interception (one key, one
partition) stay in order; no idempotence (not every Kafka-protocol broker has it; sinks deduplicate on
the event id); the same partitioner (murmur2 of the key, as Java clients and aiokafka place it).

Every message gets its delivery report: the broker's acknowledgement, or librdkafka's error once it has
given up (``message.timeout.ms``, the request timeout). :meth:`send_batch` resolves when every message of
the batch has its report, so a failed one goes back to the emitter, which spools it.
librdkafka's errors are mapped to :class:`aibridge.bus.BusError` here and nowhere else.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from functools import partial
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from aibridge.bus import BusError, Headers, OutgoingMessage
from aibridge.settings import CommonSettings

_LIBRDKAFKA_LOG = logging.getLogger("aibridge.kafka.librdkafka")
_MAX_BATCH_BYTES = 512 * 1024
_POLL_SECONDS = 0.1
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
    """Sends messages and waits for their delivery reports; one thread serves the reports."""

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
            "log_level": 3,  # errors only: librdkafka's own notices would flood the proxy's log
            "logger": _LIBRDKAFKA_LOG,  # through logging (JSON lines), not straight to stderr
            **options,
        }
        self._timeout = request_timeout
        self._producer: Producer | None = None
        self._poller: threading.Thread | None = None
        self._stopping = threading.Event()

    async def start(self) -> None:
        producer = Producer(self._config)
        try:  # librdkafka connects lazily: ask for the cluster's metadata to know it is there
            await asyncio.to_thread(producer.list_topics, timeout=self._timeout)
        except KafkaException as exc:
            raise BusError(f"cannot connect to Kafka: {_describe(exc)}") from exc
        self._producer = producer
        self._stopping.clear()
        self._poller = threading.Thread(target=self._serve_reports, name="aibridge-kafka-reports", daemon=True)
        self._poller.start()

    def _serve_reports(self) -> None:
        producer = self._producer
        while producer is not None and not self._stopping.is_set():
            producer.poll(_POLL_SECONDS)

    async def send(self, topic: str, key: bytes | None, value: bytes, headers: Headers = ()) -> None:
        [error] = await self.send_batch(topic, [(key, value, headers)])
        if error is not None:
            raise error

    async def send_batch(self, topic: str, messages: Sequence[OutgoingMessage]) -> list[BusError | None]:
        """Hand every message to librdkafka, then wait for all their delivery reports (one timeout)."""
        producer = self._producer
        if producer is None:
            error = BusError("the Kafka producer is not started")
            return [error for _ in messages]
        batch = _Batch(asyncio.get_running_loop(), len(messages))
        for index, (key, value, headers) in enumerate(messages):
            try:
                report = partial(batch.report, index)
                producer.produce(topic, value, key, headers=list(headers) or None, on_delivery=report)
            except (BufferError, KafkaException) as exc:
                batch.refused(index, BusError(f"Kafka did not accept the message: {_describe(exc)}"))
        try:
            await asyncio.wait_for(asyncio.shield(batch.done), self._timeout + _REPORT_SLACK)
        except TimeoutError:
            return batch.results_so_far(f"Kafka did not acknowledge the message within {self._timeout:g}s")
        return batch.results

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is None:
            return
        left = await asyncio.to_thread(producer.flush, self._timeout)
        self._stopping.set()
        if self._poller is not None:
            await asyncio.to_thread(self._poller.join)
        if left:
            raise BusError(f"{left} message(s) were not delivered before the producer stopped")


class _Batch:
    """The delivery reports of one ``send_batch``: written by the reports thread, read on the loop
    once ``done`` resolves (or the wait timed out)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, size: int) -> None:
        self._loop = loop
        self.results: list[BusError | None] = [None] * size
        self._reported = [False] * size
        self._waiting = size
        self._lock = threading.Lock()
        self.done: asyncio.Future[None] = loop.create_future()
        if size == 0:
            self.done.set_result(None)

    def report(self, index: int, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self.results[index] = BusError(f"Kafka did not accept the message: {error.str()}")
        self._settle(index, threadsafe=True)

    def refused(self, index: int, error: BusError) -> None:
        self.results[index] = error
        self._settle(index, threadsafe=False)

    def _settle(self, index: int, *, threadsafe: bool) -> None:
        with self._lock:  # a refusal on the loop and a report on the reports thread can meet here
            self._reported[index] = True
            self._waiting -= 1
            last = self._waiting == 0
        if last:
            if threadsafe:
                self._loop.call_soon_threadsafe(self._finish)
            else:
                self._finish()

    def _finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def results_so_far(self, missing: str) -> list[BusError | None]:
        pairs = zip(self.results, self._reported, strict=True)
        return [result if reported else BusError(missing) for result, reported in pairs]


def _describe(exc: BaseException) -> str:
    error = exc.args[0] if exc.args else None
    return error.str() if isinstance(error, KafkaError) else repr(exc)
