"""The proxy's librdkafka producer through the real broker: acknowledgements per message, order per
key on Kafka's default partition, every compression, a broker that is away or went away."""

from __future__ import annotations

import uuid

import pytest
from aiokafka.partitioner import murmur2
from test_kafka import read_all

from aibridge.bus import BatchProducer, BusError
from aibridge.kafka_confluent import ConfluentProducer, librdkafka_options
from aibridge.settings import CommonSettings
from aibridge.testing.broker import create_topics, free_port, start_broker

pytestmark = pytest.mark.kafka


async def test_send_batch_delivers_in_order_with_headers_and_reports_per_message(
    kafka_bootstrap: str, kafka_topic: str
) -> None:
    producer = ConfluentProducer(CommonSettings(kafka_bootstrap=kafka_bootstrap))
    assert isinstance(producer, BatchProducer)
    unstarted = await producer.send_batch(kafka_topic, [(b"k", b"v", ())])
    assert [str(error) for error in unstarted] == ["the Kafka producer is not started"]
    await producer.start()
    messages = [(b"k", f"v{i}".encode(), [("traceparent", f"00-{i}".encode())]) for i in range(6)]
    assert await producer.send_batch(kafka_topic, messages) == [None] * 6
    await producer.send(kafka_topic, b"k", b"v6")
    assert await producer.send_batch(kafka_topic, []) == []
    await producer.stop()
    found = await read_all(kafka_bootstrap, kafka_topic, 1, 7)
    assert [value for _, value in found[0]] == [f"v{i}".encode() for i in range(7)]


async def test_an_unreachable_broker_at_start_is_a_bus_error() -> None:
    producer = ConfluentProducer(CommonSettings(kafka_bootstrap=f"127.0.0.1:{free_port()}"), request_timeout=1.0)
    with pytest.raises(BusError, match="cannot connect"):
        await producer.start()


async def test_a_broker_that_went_away_is_a_bus_error_per_message_from_its_delivery_report() -> None:
    broker = start_broker()
    topic = f"aibridge.test.{uuid.uuid4().hex[:12]}"
    await create_topics(broker.bootstrap, topic)
    producer = ConfluentProducer(CommonSettings(kafka_bootstrap=broker.bootstrap), request_timeout=1.0)
    try:
        await producer.start()
        assert await producer.send_batch(topic, [(b"k", b"v0", ())]) == [None]
        broker.stop()
        results = await producer.send_batch(topic, [(b"k", b"v1", ()), (b"k", b"v2", ())])
        assert len(results) == 2 and all(isinstance(error, BusError) for error in results), results
        with pytest.raises(BusError):
            await producer.send(topic, b"k", b"v3")
    finally:
        broker.stop()
        await producer.stop()  # nothing is left in its queue: every message got its report


async def test_each_key_lands_where_kafkas_default_partitioner_puts_it_in_order(kafka_bootstrap: str) -> None:
    topic = f"aibridge.test.{uuid.uuid4().hex[:12]}"
    await create_topics(kafka_bootstrap, topic, partitions=3)
    producer = ConfluentProducer(CommonSettings(kafka_bootstrap=kafka_bootstrap))
    await producer.start()
    keys = [f"interception-{i}".encode() for i in range(12)]
    messages = [(key, b"%s:%d" % (key, n), ()) for n in range(4) for key in keys]  # interleaved, as queued
    assert await producer.send_batch(topic, messages) == [None] * len(messages)
    await producer.stop()
    found = await read_all(kafka_bootstrap, topic, 3, len(messages))
    for key in keys:
        expected = (murmur2(key) & 0x7FFFFFFF) % 3  # the partition aiokafka's producer would choose too
        assert [value for k, value in found[expected] if k == key] == [b"%s:%d" % (key, n) for n in range(4)]
    assert len({p for p, records in found.items() if records}) > 1


@pytest.mark.parametrize("compression", ["lz4", "zstd", "snappy", "gzip", "none"])
async def test_every_compression_round_trips_through_the_broker(
    kafka_bootstrap: str, kafka_topic: str, compression: str
) -> None:
    producer = ConfluentProducer(CommonSettings(kafka_bootstrap=kafka_bootstrap, kafka_compression=compression))
    await producer.start()
    values = [b'{"prompt": "' + b"x" * (100 * i) + b'"}' for i in range(20)] + [b"y" * 300_000] * 4
    assert await producer.send_batch(kafka_topic, [(b"k", value, ()) for value in values]) == [None] * len(values)
    await producer.stop()
    found = await read_all(kafka_bootstrap, kafka_topic, 1, len(values))
    assert [value for _, value in found[0]] == values


def test_the_guarantees_are_those_of_the_aiokafka_producer() -> None:
    config = ConfluentProducer(CommonSettings(), request_timeout=3.0)._config
    assert config["acks"] == "all" and config["enable.idempotence"] is False
    assert config["max.in.flight.requests.per.connection"] == 1  # a retried batch is never overtaken
    assert config["partitioner"] == "murmur2_random" and config["compression.type"] == "lz4"
    assert config["message.timeout.ms"] == 3000


def test_tls_and_sasl_settings_map_to_librdkafka(tmp_path: pytest.TempPathFactory) -> None:
    options = librdkafka_options(
        CommonSettings(
            kafka_bootstrap="b:9093",
            kafka_security_protocol="SASL_PLAINTEXT",
            kafka_sasl_mechanism="SCRAM-SHA-512",
            kafka_sasl_username="proxy",
            kafka_sasl_password="s3cret",
        )
    )
    assert options == {
        "bootstrap.servers": "b:9093",
        "security.protocol": "sasl_plaintext",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "proxy",
        "sasl.password": "s3cret",
    }


class _Report:
    """What a delivery report callback reads of librdkafka's message: its value."""

    def __init__(self, value: bytes) -> None:
        self._value = value

    def value(self) -> bytes:
        return self._value


class _Error:
    def str(self) -> str:  # as librdkafka's KafkaError names it
        return "Local: Message timed out"


async def test_each_reported_failure_lands_at_its_own_message() -> None:
    """librdkafka reports failures only, in any order and named by value: each lands on its message,
    refusals stay theirs, the rest count as delivered once the queue is empty."""
    import asyncio

    from aibridge.kafka_confluent import _Batch

    messages = [(b"k", f"v{i}".encode(), ()) for i in range(5)]
    batch = _Batch(asyncio.get_running_loop(), messages)
    batch.refused(1, BusError("queue full"))
    assert not batch.all_refused
    for value in (b"v4", b"v2"):
        batch.report(_Error(), _Report(value))  # type: ignore[arg-type]
    assert not batch.done.done()
    batch.complete()
    await asyncio.wait_for(batch.done, 1)
    assert [str(result) if result else None for result in batch.results] == [
        None,
        "queue full",
        "Kafka did not accept the message: Local: Message timed out",
        None,
        "Kafka did not accept the message: Local: Message timed out",
    ]


async def test_messages_not_known_delivered_are_failures_when_the_wait_ends_first() -> None:
    import asyncio

    from aibridge.kafka_confluent import _Batch

    messages = [(b"k", f"v{i}".encode(), ()) for i in range(3)]
    batch = _Batch(asyncio.get_running_loop(), messages)
    batch.report(_Error(), _Report(b"v1"))  # type: ignore[arg-type]
    results = batch.results_so_far("not acknowledged in time")
    assert [str(result) for result in results] == [
        "not acknowledged in time",
        "Kafka did not accept the message: Local: Message timed out",
        "not acknowledged in time",
    ]
    stopped = _Batch(asyncio.get_running_loop(), messages)
    stopped.complete(missing="2 message(s) were not delivered before the producer stopped")
    assert all("not delivered before the producer stopped" in str(result) for result in stopped.results)
