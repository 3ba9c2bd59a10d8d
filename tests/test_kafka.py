from __future__ import annotations

import uuid

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import murmur2

from aibridge.bus import BusError
from aibridge.kafka import KafkaConsumer, KafkaProducer
from aibridge.settings import CommonSettings
from aibridge.testing.broker import create_topics, free_port, start_broker


async def test_round_trip_with_manual_commit(kafka_bootstrap: str, kafka_topic: str) -> None:
    settings = CommonSettings(kafka_bootstrap=kafka_bootstrap, kafka_topic=kafka_topic)
    producer = KafkaProducer(settings)
    await producer.start()
    for i in range(5):
        await producer.send(kafka_topic, b"key", f"v{i}".encode(), [("traceparent", b"00-abc")])
    await producer.stop()

    consumer = KafkaConsumer(settings, group_id="g1")
    await consumer.start()
    received = []
    while len(received) < 5:
        received += await consumer.poll(100, 1.0)
    assert [m.value for m in received] == [f"v{i}".encode() for i in range(5)]
    assert received[0].key == b"key" and dict(received[0].headers)["traceparent"] == b"00-abc"
    await consumer.commit({received[2].partition: received[2].offset + 1})
    await consumer.stop()

    consumer = KafkaConsumer(settings, group_id="g1")
    await consumer.start()
    again = []
    while len(again) < 2:
        again += await consumer.poll(100, 1.0)
    await consumer.stop()
    assert [m.value for m in again] == [b"v3", b"v4"]


async def test_unreachable_broker_is_a_bus_error() -> None:
    settings = CommonSettings(kafka_bootstrap=f"127.0.0.1:{free_port()}")
    producer = KafkaProducer(settings, request_timeout=1.0)
    with pytest.raises(BusError, match="cannot connect"):
        await producer.start()


async def test_send_batch_delivers_in_order_and_reports_per_message(kafka_bootstrap: str, kafka_topic: str) -> None:
    settings = CommonSettings(kafka_bootstrap=kafka_bootstrap, kafka_topic=kafka_topic)
    producer = KafkaProducer(settings)
    unstarted = await producer.send_batch(kafka_topic, [(b"k", b"v", ())])
    assert [str(error) for error in unstarted] == ["the Kafka producer is not started"]
    await producer.start()
    messages = [(f"key{i % 2}".encode(), f"v{i}".encode(), [("traceparent", f"00-{i}".encode())]) for i in range(6)]
    assert await producer.send_batch(kafka_topic, messages) == [None] * 6
    await producer.stop()

    consumer = KafkaConsumer(settings, group_id="batch")
    await consumer.start()
    received = []
    while len(received) < 6:
        received += await consumer.poll(100, 1.0)
    await consumer.stop()
    assert [(m.key, m.value, dict(m.headers)["traceparent"]) for m in received] == [
        (key, value, headers[0][1]) for key, value, headers in messages
    ]


async def test_send_batch_to_a_broker_that_went_away_is_a_bus_error_per_message() -> None:
    broker = start_broker()
    settings = CommonSettings(kafka_bootstrap=broker.bootstrap)
    producer = KafkaProducer(settings, request_timeout=1.0)
    try:
        await producer.start()
        broker.stop()
        results = await producer.send_batch("aibridge.gone", [(b"k", b"v1", ()), (b"k", b"v2", ())])
        assert len(results) == 2 and all(isinstance(error, BusError) for error in results), results
    finally:
        broker.stop()
        await producer.stop()


async def read_all(bootstrap: str, topic: str, partitions: int, count: int) -> dict[int, list[tuple[bytes, bytes]]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    found: dict[int, list[tuple[bytes, bytes]]] = {p: [] for p in range(partitions)}
    try:
        assigned = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        while sum(len(v) for v in found.values()) < count:
            for tp, records in (await consumer.getmany(timeout_ms=1000)).items():
                found[tp.partition] += [(r.key or b"", r.value or b"") for r in records]
    finally:
        await consumer.stop()
    return found


@pytest.mark.parametrize("compression", ["lz4", "zstd", "snappy", "gzip", "none"])
async def test_every_compression_round_trips_through_the_broker(
    kafka_bootstrap: str, kafka_topic: str, compression: str
) -> None:
    settings = CommonSettings(kafka_bootstrap=kafka_bootstrap, kafka_topic=kafka_topic, kafka_compression=compression)
    producer = KafkaProducer(settings)
    await producer.start()
    values = [b'{"prompt": "' + b"x" * (100 * i) + b'"}' for i in range(20)]
    assert await producer.send_batch(kafka_topic, [(b"k", value, ()) for value in values]) == [None] * 20
    await producer.stop()
    found = await read_all(kafka_bootstrap, kafka_topic, 1, len(values))
    assert [value for _, value in found[0]] == values


def test_lz4_is_the_default_compression() -> None:
    assert CommonSettings().kafka_compression == "lz4"
    assert KafkaProducer(CommonSettings())._options["compression_type"] == "lz4"
    assert KafkaProducer(CommonSettings(kafka_compression="none"))._options["compression_type"] is None


async def test_send_batch_places_each_key_as_kafkas_default_partitioner_and_keeps_its_order(
    kafka_bootstrap: str,
) -> None:
    topic = f"aibridge.test.{uuid.uuid4().hex[:12]}"
    await create_topics(kafka_bootstrap, topic, partitions=3)
    producer = KafkaProducer(CommonSettings(kafka_bootstrap=kafka_bootstrap))
    await producer.start()
    keys = [f"interception-{i}".encode() for i in range(12)]
    messages = [(key, b"%s:%d" % (key, n), ()) for n in range(4) for key in keys]  # interleaved, as queued
    assert await producer.send_batch(topic, messages) == [None] * len(messages)
    await producer.stop()
    found = await read_all(kafka_bootstrap, topic, 3, len(messages))
    for key in keys:
        expected = (murmur2(key) & 0x7FFFFFFF) % 3  # Java's DefaultPartitioner for a keyed record
        assert [value for k, value in found[expected] if k == key] == [b"%s:%d" % (key, n) for n in range(4)]
    assert len({p for p, records in found.items() if records}) > 1


async def test_send_batch_splits_what_does_not_fit_one_record_batch(kafka_bootstrap: str, kafka_topic: str) -> None:
    producer = KafkaProducer(CommonSettings(kafka_bootstrap=kafka_bootstrap), compression_type=None)
    await producer.start()
    values = [bytes([65 + i]) * 300_000 for i in range(4)]  # 1.2 MB in all: several record batches
    assert await producer.send_batch(kafka_topic, [(b"k", value, ()) for value in values]) == [None] * 4
    await producer.stop()
    found = await read_all(kafka_bootstrap, kafka_topic, 1, 4)
    assert [value for _, value in found[0]] == values
