"""Fixtures for the recorder's tests: one bus contract, two buses (in-process and Kafka on Tansu).

A :class:`BusHarness` publishes events, builds recorder components on its bus, reads the group's
committed offsets and reads the dead-letter topic back, so each contract test runs unchanged on both.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from clickhouse_connect.driver.client import Client

from aibridge.bus import BusConsumer, BusProducer, InProcessBus, Message, Partition
from aibridge.events import Event, encode_event
from aibridge.kafka import KafkaConsumer, KafkaProducer
from aibridge.recorder.component import RecorderComponent
from aibridge.recorder.settings import RecorderSettings
from aibridge.testing.broker import create_topics

PARTITIONS = 3


async def eventually(check: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05) -> Any:
    """Await until ``check()`` (sync or async) returns something truthy; return it or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value {result!r})")
        await asyncio.sleep(interval)


@dataclass
class BusHarness:
    kind: str
    topic: str
    settings_base: dict[str, Any]
    make_consumer: Callable[[RecorderSettings], BusConsumer]
    make_dlq: Callable[[RecorderSettings], BusProducer]
    producer: BusProducer
    committed: Callable[[], Awaitable[int]]
    dead_letters: Callable[[], Awaitable[list[Message]]]
    published: int = 0
    components: list[RecorderComponent] = field(default_factory=list)

    def settings(self, **overrides: Any) -> RecorderSettings:
        return RecorderSettings(**(self.settings_base | overrides))

    def recorder(self, client: Client, **overrides: Any) -> RecorderComponent:
        settings = self.settings(**overrides)
        component = RecorderComponent(settings, self.make_consumer(settings), self.make_dlq(settings), client)
        self.components.append(component)
        return component

    async def publish(self, *events: Event | bytes, key: bytes | None = None) -> None:
        for event in events:
            value = event if isinstance(event, bytes) else encode_event(event)
            message_key = key if isinstance(event, bytes) else event["interception_id"].encode()
            await self.producer.send(self.topic, message_key, value)
            self.published += 1


def _settings_base(topic: str, chdb_url: str, database: str, **extra: Any) -> dict[str, Any]:
    return {
        "kafka_topic": topic,
        "clickhouse_url": chdb_url,
        "clickhouse_database": database,
        "batch_max_seconds": 0.2,
        "retry_backoff_min": 0.05,
        "retry_backoff_max": 0.3,
        "shutdown_timeout": 5.0,
    } | extra


async def _in_process(chdb_url: str, database: str) -> BusHarness:
    topic = "aibridge.interceptions.v1"
    bus, dlq_bus = InProcessBus(partitions=PARTITIONS), InProcessBus()

    async def committed() -> int:
        return harness.published - bus.pending(topic)

    async def dead_letters() -> list[Message]:
        consumer = dlq_bus.consumer(f"{topic}.dlq")
        await consumer.start()
        messages = await consumer.poll(1000, 0.01)
        await consumer.stop()
        return messages

    harness = BusHarness(
        "inprocess",
        topic,
        _settings_base(topic, chdb_url, database),
        lambda settings: bus.consumer(settings.kafka_topic),
        lambda settings: dlq_bus.producer(),
        bus.producer(),
        committed,
        dead_letters,
    )
    return harness


async def kafka_committed(bootstrap: str, group: str, topic: str, partitions: int) -> int:
    """Sum of the group's committed offsets over the topic's partitions (read without joining the group)."""
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await reader.start()
    try:
        total = 0
        for index in range(partitions):
            total += max(0, await reader.committed(TopicPartition(topic, index)) or 0)
        return total
    finally:
        await reader.stop()


async def kafka_read_all(bootstrap: str, topic: str, partition_count: int, timeout: float = 3.0) -> list[Message]:
    """Every message of ``topic`` (all partitions, from the beginning), without a consumer group."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, index) for index in range(partition_count)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        messages: list[Message] = []
        deadline = time.monotonic() + timeout
        while sum(ends.values()) > len(messages) and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                messages += [
                    Message(Partition(r.topic, r.partition), r.offset, r.key, r.value or b"", tuple(r.headers))
                    for r in records
                ]
        return messages
    finally:
        await consumer.stop()


def _kafka(bootstrap: str, topic: str, chdb_url: str, database: str, producer: KafkaProducer) -> BusHarness:
    group = f"recorder-test-{uuid.uuid4().hex[:8]}"
    base = _settings_base(
        topic,
        chdb_url,
        database,
        kafka_bootstrap=bootstrap,
        consumer_group=group,
        kafka_session_timeout_ms=3000,
        kafka_heartbeat_interval_ms=300,
        kafka_rebalance_timeout_ms=500,
    )
    return BusHarness(
        "kafka",
        topic,
        base,
        lambda s: KafkaConsumer(s, group_id=s.consumer_group, **s.kafka_consumer_options()),
        KafkaProducer,
        producer,
        lambda: kafka_committed(bootstrap, group, topic, PARTITIONS),
        lambda: kafka_read_all(bootstrap, f"{topic}.dlq", PARTITIONS),
    )


@pytest.fixture(params=["inprocess", "kafka"])
async def bus(request: pytest.FixtureRequest, chdb_url: str, store_database: str) -> AsyncIterator[BusHarness]:
    """The same recorder contract on the in-process bus and on Kafka (Tansu)."""
    producer: KafkaProducer | None = None
    if request.param == "inprocess":
        harness = await _in_process(chdb_url, store_database)
    else:
        bootstrap: str = request.getfixturevalue("kafka_bootstrap")
        topic = f"aibridge.test.{uuid.uuid4().hex[:12]}"
        await create_topics(bootstrap, topic, f"{topic}.dlq", partitions=PARTITIONS)
        producer = KafkaProducer(RecorderSettings(kafka_bootstrap=bootstrap))
        await producer.start()
        harness = _kafka(bootstrap, topic, chdb_url, store_database, producer)
    try:
        yield harness
    finally:
        for component in harness.components:
            await component.stop()
        if producer is not None:
            await producer.stop()
