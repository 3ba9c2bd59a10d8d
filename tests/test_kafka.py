from __future__ import annotations

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from aibridge.bus import BusError
from aibridge.kafka import KafkaConsumer, KafkaProducer
from aibridge.settings import CommonSettings
from aibridge.testing.broker import free_port, start_broker


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
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        partition = TopicPartition(kafka_topic, 0)
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        received: list[bytes] = []
        while len(received) < 20:
            batches = await consumer.getmany(timeout_ms=1000)
            received += [record.value or b"" for records in batches.values() for record in records]
    finally:
        await consumer.stop()
    assert received == values


def test_lz4_is_the_default_compression() -> None:
    assert CommonSettings().kafka_compression == "lz4"
    assert KafkaProducer(CommonSettings())._options["compression_type"] == "lz4"
    assert KafkaProducer(CommonSettings(kafka_compression="none"))._options["compression_type"] is None
