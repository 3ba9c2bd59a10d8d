"""The publisher lingers for a batch to fill: fewer, larger produce requests (CPU per event), nothing lost."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from proxy_support import read_events, wait_for

from aibridge.bus import BusError, OutgoingMessage
from aibridge.events import Event
from aibridge.kafka import KafkaProducer
from aibridge.proxy.recording.emitter import EventEmitter
from aibridge.settings import CommonSettings

EXAMPLE = json.loads((Path(__file__).parents[2] / "schemas" / "examples" / "prompt.json").read_text())


class CountingProducer(KafkaProducer):
    """The real Kafka producer, remembering how many messages each batch call carried."""

    def __init__(self, settings: CommonSettings) -> None:
        super().__init__(settings)
        self.batches: list[int] = []

    async def send_batch(self, topic: str, messages: Sequence[OutgoingMessage]) -> list[BusError | None]:
        self.batches.append(len(messages))
        return await super().send_batch(topic, messages)


def prompt(index: int) -> Event:
    event: Event = copy.deepcopy(EXAMPLE)
    event["interception_id"] = str(uuid.uuid4())
    event["event_id"] = str(uuid.uuid4())
    event["prompt"] = f"prompt {index}"
    return event


async def publish(kafka_bootstrap: str, kafka_topic: str, linger: float) -> list[int]:
    producer = CountingProducer(CommonSettings(kafka_bootstrap=kafka_bootstrap))
    emitter = EventEmitter(producer, kafka_topic, linger=linger)
    await emitter.start()
    await wait_for(lambda: emitter.connected, timeout=10)
    for index in range(20):
        emitter.emit(prompt(index))
        await asyncio.sleep(0.005)  # events arrive over ~100 ms, as requests end
    await wait_for(lambda: emitter.published == 20, timeout=10)
    await emitter.stop(5.0)
    events = await read_events(kafka_bootstrap, kafka_topic, until=lambda events: len(events) >= 20)
    assert [e["prompt"] for e in events] == [f"prompt {i}" for i in range(20)]
    assert emitter.dropped == 0
    return producer.batches


async def test_a_lingering_publisher_sends_fewer_larger_batches_and_loses_nothing(
    kafka_bootstrap: str, kafka_topic: str
) -> None:
    batches = await publish(kafka_bootstrap, kafka_topic, linger=0.5)
    assert sum(batches) == 20
    assert len(batches) <= 2, batches  # the first event waits 0.5 s: the other 19 (sent within ~0.1 s) join it


async def test_without_linger_each_event_goes_out_as_soon_as_the_publisher_is_free(
    kafka_bootstrap: str, kafka_topic: str
) -> None:
    batches = await publish(kafka_bootstrap, kafka_topic, linger=0.0)
    assert sum(batches) == 20
    assert len(batches) > 2, batches


async def test_an_event_json_cannot_hold_is_counted_and_logged_and_the_rest_are_published(
    kafka_bootstrap: str, kafka_topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Events are encoded when emitted: a value JSON cannot hold (a bug) is refused there, never raised
    into the recording, and does not stop the events after it."""
    before = REGISTRY.get_sample_value("aibridge_proxy_events_dropped_total", {"reason": "unencodable"}) or 0.0
    emitter = EventEmitter(KafkaProducer(CommonSettings(kafka_bootstrap=kafka_bootstrap)), kafka_topic)
    await emitter.start()
    await wait_for(lambda: emitter.connected, timeout=10)
    broken = prompt(0) | {"metadata": {"not_json": object()}}
    with caplog.at_level(logging.ERROR, logger="aibridge.proxy.emitter"):
        emitter.emit(broken)
    emitter.emit(prompt(1))
    await wait_for(lambda: emitter.published == 1, timeout=10)
    await emitter.stop(5.0)
    assert emitter.dropped == 1 and emitter.buffered == 0
    after = REGISTRY.get_sample_value("aibridge_proxy_events_dropped_total", {"reason": "unencodable"})
    assert after == before + 1
    assert "could not encode an interception event (prompt)" in caplog.text
    events = await read_events(kafka_bootstrap, kafka_topic, until=lambda events: len(events) >= 1)
    assert [e["prompt"] for e in events] == ["prompt 1"]
