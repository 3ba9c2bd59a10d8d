"""Shared helpers of the proxy tests (imported by the tests and by conftest.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from aibridge.events import Event, validate_event
from aibridge.proxy.component import ProxyComponent
from aibridge.proxy.settings import ProxySettings
from aibridge.simulator import SimulatorState

OPENAI_KEY = "sk-central-openai-0123456789"
ANTHROPIC_KEY = "sk-ant-central-0123456789"


@dataclass
class Simulator:
    url: str
    state: SimulatorState

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/v1"


@dataclass
class Proxy:
    url: str
    component: ProxyComponent
    settings: ProxySettings
    stop: Callable[[], None]

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/api/v2/aibridge/openai/v1"

    @property
    def anthropic_base_url(self) -> str:
        return f"{self.url}/api/v2/aibridge/anthropic"


ProxyFactory = Callable[..., Proxy]


async def read_events(
    bootstrap: str, topic: str, *, until: Callable[[list[Event]], bool], timeout: float = 15.0
) -> list[Event]:
    """Every event on ``topic`` (validated against the schema) once ``until`` holds; fail after ``timeout``."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    events: list[Event] = []
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        deadline = asyncio.get_running_loop().time() + timeout
        while not until(events):
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"events did not arrive in {timeout}s; got {[e['type'] for e in events]}")
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    event = validate_event(orjson.loads(record.value))
                    assert record.key == event["interception_id"].encode()
                    events.append(event)
    finally:
        await consumer.stop()
    return events


async def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met in {timeout}s")
        await asyncio.sleep(0.02)


def ended_count(count: int) -> Callable[[list[Event]], bool]:
    """At least ``count`` interceptions ended (distinct ids: a redelivered event is not a new one)."""
    return lambda events: len({e["interception_id"] for e in events if e["type"] == "interception.ended"}) >= count


def of_type(events: list[Event], kind: str) -> list[Event]:
    return [event for event in events if event["type"] == kind]
