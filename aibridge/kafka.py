"""Kafka implementations of the bus seam (:mod:`aibridge.bus`), with aiokafka.

aiokafka's errors are mapped to :class:`aibridge.bus.BusError` here and nowhere else.
Idempotent production stays off by default (not every Kafka-protocol broker supports it); sinks
deduplicate on the event id instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import OffsetAndMetadata

from aibridge.bus import BusError, Headers, Message, OutgoingMessage, Partition
from aibridge.settings import CommonSettings

_MAX_BATCH_BYTES = 512 * 1024  # per record batch (aiokafka's default is 16 KiB); brokers take 1 MiB
_PARTITIONER = DefaultPartitioner()


class KafkaProducer:
    """Sends one message and waits for the broker's acknowledgement (acks=all).

    The aiokafka producer is created in :meth:`start` (it must be built inside the running event loop),
    so this object can be built before the loop runs and can be started again after a failed start.
    """

    def __init__(self, settings: CommonSettings, *, request_timeout: float = 10.0, **options: Any) -> None:
        self._options: dict[str, Any] = {
            **settings.kafka_client_options(),
            "acks": "all",
            "enable_idempotence": False,
            "compression_type": None if settings.kafka_compression == "none" else settings.kafka_compression,
            "linger_ms": 5,
            "max_batch_size": _MAX_BATCH_BYTES,
            "partitioner": _PARTITIONER,
            "request_timeout_ms": int(request_timeout * 1000),
            **options,
        }
        self._producer: AIOKafkaProducer | None = None
        self._timeout = request_timeout

    async def start(self) -> None:
        producer = AIOKafkaProducer(**self._options)
        try:
            await producer.start()
        except KafkaError as exc:
            await producer.stop()
            raise BusError(f"cannot connect to Kafka: {exc}") from exc
        self._producer = producer

    async def send(self, topic: str, key: bytes | None, value: bytes, headers: Headers = ()) -> None:
        [error] = await self.send_batch(topic, [(key, value, headers)])
        if error is not None:
            raise error

    async def send_batch(self, topic: str, messages: Sequence[OutgoingMessage]) -> list[BusError | None]:
        """Build one record batch per partition and hand each to aiokafka whole, then wait for all the
        acknowledgements together (one timeout for the lot).

        aiokafka's per-message ``send`` (a future, the partitioner and the accumulator for every
        message) was the largest part of the proxy's publishing CPU. Placement is the producer's own
        partitioner (murmur2 of the key, as Kafka's default), computed once per distinct key: the
        events of one interception share it and so stay in order on one partition.
        """
        producer = self._producer
        if producer is None:
            error = BusError("the Kafka producer is not started")
            return [error for _ in messages]
        try:
            partitions = sorted(await producer.partitions_for(topic))
        except KafkaError as exc:
            error = BusError(f"Kafka has no metadata for {topic!r}: {exc!r}")
            return [error for _ in messages]
        results: list[BusError | None] = [None] * len(messages)
        waiting: dict[int, asyncio.Future[Any]] = {}  # message index -> its batch's acknowledgement
        for partition, indexes in _placement(messages, partitions).items():
            if self._queue_busy(topic, partition):  # a batch still waits there (an outage): join it
                await self._send_each(topic, partition, messages, indexes, waiting, results)
                continue
            batch, members = producer.create_batch(), list[int]()
            for index in indexes:
                key, value, headers = messages[index]
                if batch.append(key=key, value=value, timestamp=None, headers=list(headers)) is None and members:
                    await self._submit(batch, topic, partition, members, waiting, results)  # full: a new one
                    batch, members = producer.create_batch(), []
                    batch.append(key=key, value=value, timestamp=None, headers=list(headers))  # empty: takes it
                members.append(index)
            await self._submit(batch, topic, partition, members, waiting, results)
        futures = set(waiting.values())
        if futures:
            await asyncio.wait(futures, timeout=self._timeout)
        for index, future in waiting.items():
            if not future.done() or future.cancelled():
                future.cancel()
                results[index] = BusError(f"Kafka did not acknowledge the message within {self._timeout:g}s")
            elif (failure := future.exception()) is not None:
                results[index] = BusError(f"Kafka did not accept the message: {failure!r}")
        return results

    def _queue_busy(self, topic: str, partition: int) -> bool:
        """aiokafka queues one batch per partition: ``send_batch`` would wait (up to the request timeout)
        for an undelivered one to drain, where ``send`` appends to it. Read from aiokafka's accumulator;
        if its internals ever change, every batch goes through ``send_batch``."""
        accumulator = getattr(self._producer, "_message_accumulator", None)
        pending = getattr(accumulator, "_batches", None)
        return bool(isinstance(pending, dict) and pending.get(TopicPartition(topic, partition)))

    async def _send_each(  # noqa: PLR0917
        self,
        topic: str,
        partition: int,
        messages: Sequence[OutgoingMessage],
        indexes: list[int],
        waiting: dict[int, asyncio.Future[Any]],
        results: list[BusError | None],
    ) -> None:
        assert self._producer is not None
        for index in indexes:
            key, value, headers = messages[index]
            try:
                waiting[index] = await self._producer.send(
                    topic, value=value, key=key, headers=list(headers), partition=partition
                )
            except KafkaError as exc:
                results[index] = BusError(f"Kafka did not accept the message: {exc!r}")

    async def _submit(  # noqa: PLR0917
        self,
        batch: Any,
        topic: str,
        partition: int,
        members: list[int],
        waiting: dict[int, asyncio.Future[Any]],
        results: list[BusError | None],
    ) -> None:
        assert self._producer is not None
        try:
            future = await self._producer.send_batch(batch, topic, partition=partition)
        except KafkaError as exc:
            for index in members:
                results[index] = BusError(f"Kafka did not accept the message: {exc!r}")
            return
        for index in members:
            waiting[index] = future

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()


def _placement(messages: Sequence[OutgoingMessage], partitions: list[int]) -> dict[int, list[int]]:
    """Partition -> indexes of its messages, in order; the partitioner runs once per distinct key."""
    by_key: dict[bytes, int] = {}
    placed: dict[int, list[int]] = {}
    for index, (key, _, _) in enumerate(messages):
        partition = by_key.get(key) if key is not None else None
        if partition is None:
            partition = _PARTITIONER(key, partitions, partitions)
            if key is not None:
                by_key[key] = partition
        placed.setdefault(partition, []).append(index)
    return placed


class KafkaConsumer:
    """A consumer-group member with manual commits; offsets are committed only when told."""

    def __init__(self, settings: CommonSettings, group_id: str, topic: str | None = None, **options: Any) -> None:
        self._topic = topic or settings.kafka_topic
        self._options: dict[str, Any] = {
            **settings.kafka_client_options(),
            "group_id": group_id,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            **options,
        }
        self._client: AIOKafkaConsumer | None = None
        self._paused = False

    @property
    def _consumer(self) -> AIOKafkaConsumer:
        """The aiokafka consumer; it must be created inside the running loop, so :meth:`start` builds it."""
        if self._client is None:
            raise BusError("the Kafka consumer is not started")
        return self._client

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(self._topic, **self._options)
        try:
            await consumer.start()
        except KafkaError as exc:
            await consumer.stop()
            raise BusError(f"cannot connect to Kafka: {exc}") from exc
        self._client = consumer

    async def poll(self, max_records: int, timeout: float) -> list[Message]:
        if self._paused:
            # A rebalance assigns partitions unpaused; keep backpressure on whatever this member owns now.
            self._consumer.pause(*self._consumer.assignment())
        try:
            batches = await self._consumer.getmany(timeout_ms=int(timeout * 1000), max_records=max_records)
        except KafkaError as exc:
            raise BusError(f"Kafka fetch failed: {exc!r}") from exc
        return [_message(record) for records in batches.values() for record in records]

    async def commit(self, offsets: Mapping[Partition, int]) -> None:
        if not offsets:
            return
        try:
            await self._consumer.commit(
                {TopicPartition(p.topic, p.index): OffsetAndMetadata(offset, "") for p, offset in offsets.items()}
            )
        except KafkaError as exc:
            raise BusError(f"Kafka offset commit failed: {exc!r}") from exc

    def pause(self) -> None:
        self._paused = True
        if self._client is not None:
            self._client.pause(*self._client.assignment())

    def resume(self) -> None:
        self._paused = False
        if self._client is not None:
            self._client.resume(*self._client.assignment())

    async def probe(self, timeout: float = 3.0) -> str | None:
        """None when the cluster answers a metadata request within ``timeout`` seconds, else why not."""
        if self._client is None:
            return "the Kafka consumer is not started"
        try:
            await asyncio.wait_for(self._consumer.topics(), timeout)
        except (KafkaError, TimeoutError) as exc:
            return f"Kafka unreachable: {exc!r}"
        return None

    async def lag(self) -> int:
        """Messages in the assigned partitions not yet consumed."""
        if self._client is None:
            return 0
        assignment = list(self._consumer.assignment())
        if not assignment:
            return 0
        ends = await self._consumer.end_offsets(assignment)
        total = 0
        for tp in assignment:
            total += max(0, int(ends[tp]) - int(await self._consumer.position(tp)))
        return total

    async def caught_up(self) -> bool:
        """True once partitions are assigned and every one is read to its end."""
        if self._client is None or not self._client.assignment():
            return False
        try:
            return await self.lag() == 0
        except KafkaError as exc:
            raise BusError(f"Kafka offsets unavailable: {exc!r}") from exc

    async def stop(self) -> None:
        consumer, self._client = self._client, None
        if consumer is not None:
            await consumer.stop()


async def read_topic(settings: CommonSettings, topic: str, timeout: float = 10.0) -> list[Message]:
    """Every message of ``topic`` up to its current end, all partitions, read without a consumer group."""
    consumer = AIOKafkaConsumer(**settings.kafka_client_options(), enable_auto_commit=False)
    try:
        await consumer.start()
        await consumer.topics()  # loads the cluster's metadata
        partitions = [TopicPartition(topic, index) for index in sorted(consumer.partitions_for_topic(topic) or ())]
        if not partitions:
            raise BusError(f"Kafka has no topic {topic!r}")
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        messages: list[Message] = []
        async with asyncio.timeout(timeout):
            while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
                batches = await consumer.getmany(*partitions, timeout_ms=200)
                messages += [_message(record) for records in batches.values() for record in records]
        return messages
    except KafkaError as exc:
        raise BusError(f"cannot read {topic!r} from Kafka: {exc!r}") from exc
    except TimeoutError as exc:
        raise BusError(f"reading {topic!r} from Kafka took longer than {timeout:g}s") from exc
    finally:
        await consumer.stop()


def _message(record: Any) -> Message:
    return Message(
        Partition(record.topic, record.partition),
        record.offset,
        record.key,
        record.value or b"",
        tuple(record.headers),
        record.timestamp,
    )
