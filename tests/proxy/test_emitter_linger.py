"""The publisher lingers for a batch to fill: fewer, larger produce requests (CPU per event), nothing lost."""

from __future__ import annotations

import asyncio
import copy
import json
import uuid
from collections.abc import Sequence
from pathlib import Path

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
