"""The event spool wired into the proxy: a frozen broker (SIGSTOP) costs requests nothing, events wait
on disk and reach the broker in order once it is back; a full spool drops and counts; a restarted
proxy replays what an earlier one spooled."""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client import REGISTRY
from proxy_support import ProxyFactory, ended_count, read_events, wait_for

from aibridge.bus import BusProducer
from aibridge.events import Event
from aibridge.kafka import KafkaProducer
from aibridge.kafka_confluent import ConfluentProducer
from aibridge.proxy.recording.spool import read_segment
from aibridge.proxy.settings import ProxySettings
from aibridge.testing.broker import Broker, free_port

pytestmark = pytest.mark.kafka

OPENAI_PATH = "/api/v2/aibridge/openai/v1/chat/completions"
EVENTS_PER_REQUEST = 4  # started, prompt, token_usage, ended


def chat(prompt: str) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": [{"role": "user", "content": prompt}]}


async def create_topic(bootstrap: str) -> str:
    topic = f"aibridge.test.{uuid.uuid4().hex[:12]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    return topic


def spooled_event_ids(directory: Path) -> list[str]:
    values = [value for path in sorted(directory.glob("*.seg")) for _, value, _ in read_segment(path)]
    return [orjson.loads(value)["event_id"] for value in values]


def is_subsequence(wanted: list[str], seen: list[str]) -> bool:
    remaining = iter(seen)
    return all(item in remaining for item in wanted)


def metric(name: str, reason: str) -> float:
    return REGISTRY.get_sample_value(name, {"reason": reason}) or 0.0


PRODUCERS: dict[str, type[KafkaProducer] | type[ConfluentProducer]] = {
    "aiokafka": KafkaProducer,
    "confluent": ConfluentProducer,
}


@pytest.mark.parametrize("kafka_client", list(PRODUCERS))
async def test_frozen_broker_events_are_spooled_and_replayed_in_order_and_requests_stay_fast(
    own_broker: Broker, start_proxy: ProxyFactory, token: str, tmp_path: Path, kafka_client: str
) -> None:
    topic = await create_topic(own_broker.bootstrap)
    settings = ProxySettings(kafka_bootstrap=own_broker.bootstrap)
    producer: BusProducer = PRODUCERS[kafka_client](settings, request_timeout=2.0)
    spool_dir = tmp_path / "spool"
    proxy = start_proxy(producer=producer, kafka_bootstrap=own_broker.bootstrap, kafka_topic=topic, spool_dir=spool_dir)
    emitter = proxy.component.emitter
    assert emitter.spool is not None
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10, headers={"x-api-key": token}) as client:
        for index in range(2):
            assert (await client.post(OPENAI_PATH, json=chat(f"before {index}"))).status_code == 200
        await wait_for(lambda: emitter.published == 2 * EVENTS_PER_REQUEST, timeout=10)
        own_broker.freeze()
        try:
            durations = []
            for index in range(10):
                started = time.monotonic()
                assert (await client.post(OPENAI_PATH, json=chat(f"frozen {index}"))).status_code == 200
                durations.append(time.monotonic() - started)
            assert max(durations) < 1.0, f"requests waited for the frozen broker: {durations}"
            await wait_for(lambda: emitter.spooled == 10 * EVENTS_PER_REQUEST, timeout=20)
            assert emitter.dropped == 0 and emitter.buffered == 0
            in_spool = spooled_event_ids(spool_dir)
            assert len(in_spool) == 10 * EVENTS_PER_REQUEST
        finally:
            own_broker.thaw()
        # The proxy runs in another thread: its ack counts down before it deletes the segment, so wait for both.
        await wait_for(
            lambda: (
                emitter.spool is not None and emitter.spool.pending_records == 0 and not list(spool_dir.glob("*.seg"))
            ),
            timeout=30,
        )
        assert emitter.replayed >= len(in_spool)
        assert (await client.post(OPENAI_PATH, json=chat("after"))).status_code == 200

    def all_arrived(events: list[Event]) -> bool:
        return set(in_spool) <= {e["event_id"] for e in events} and ended_count(13)(events)

    events = await read_events(own_broker.bootstrap, topic, until=all_arrived, timeout=20)
    assert is_subsequence(in_spool, [e["event_id"] for e in events]), "replay changed the spool's order"
    ended = {e["interception_id"]: e for e in events if e["type"] == "interception.ended"}
    assert len(ended) == 13 and {e["status"] for e in ended.values()} == {"completed"}
    prompts = {e["prompt"] for e in events if e["type"] == "prompt"}
    assert prompts == {f"before {i}" for i in range(2)} | {f"frozen {i}" for i in range(10)} | {"after"}


async def test_a_full_spool_drops_counts_and_logs_and_a_restarted_proxy_replays_the_rest(  # noqa: PLR0917
    start_proxy: ProxyFactory,
    token: str,
    tmp_path: Path,
    kafka_bootstrap: str,
    kafka_topic: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    dead = ProxySettings(kafka_bootstrap=f"127.0.0.1:{free_port()}")
    spool_dir = tmp_path / "spool"
    refused_before = metric("aibridge_proxy_events_dropped_total", "spool_refused")
    full_before = metric("aibridge_spool_dropped_records_total", "full")
    proxy = start_proxy(producer=KafkaProducer(dead, request_timeout=1.0), spool_dir=spool_dir, spool_max_bytes=65536)
    emitter = proxy.component.emitter
    total = 40 * EVENTS_PER_REQUEST
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10, headers={"x-api-key": token}) as client:
        for index in range(40):
            assert (await client.post(OPENAI_PATH, json=chat(f"request {index}"))).status_code == 200
    await wait_for(lambda: emitter.spooled + emitter.dropped == total, timeout=10)
    assert 0 < emitter.spooled < total and emitter.dropped > 0
    assert metric("aibridge_proxy_events_dropped_total", "spool_refused") - refused_before == emitter.dropped
    assert metric("aibridge_spool_dropped_records_total", "full") - full_before == emitter.dropped
    drops = [r for r in caplog.records if r.levelno == logging.ERROR and "spool_refused" in r.getMessage()]
    assert drops and all(r.events for r in drops)  # type: ignore[attr-defined]
    spooled = emitter.spooled
    in_spool = set(spooled_event_ids(spool_dir))
    assert len(in_spool) == spooled
    proxy.stop()

    start_proxy(spool_dir=spool_dir)  # on the session's broker: the new proxy replays the old one's spool

    def replayed(events: list[Event]) -> bool:
        return in_spool <= {e["event_id"] for e in events}

    events = await read_events(kafka_bootstrap, kafka_topic, until=replayed, timeout=20)
    assert len(events) == spooled, "replayed exactly what was spooled, once"
    # The replaying proxy runs in another thread and deletes a segment only after its acks: wait for it.
    await wait_for(lambda: not list(spool_dir.glob("*.seg")), timeout=10)
