"""One trace from the proxy through the real broker (Tansu) to the recorder and its store (chDB): the
recorder's spans are children of the proxy's Record… spans, found through the Kafka message headers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from clickhouse_connect.driver.client import Client
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from telemetry_support import OPENAI_CHAT, PROVIDER_KEY, named, one, parent_of, running_proxy

from aibridge import telemetry
from aibridge.auth import TokenVerifier
from aibridge.kafka import KafkaConsumer, KafkaProducer
from aibridge.proxy.settings import ProxySettings
from aibridge.recorder.component import RecorderComponent
from aibridge.recorder.settings import RecorderSettings
from aibridge.simulator import create_simulator_app
from aibridge.testing.server import serve_in_thread

pytestmark = pytest.mark.kafka
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    telemetry.configure(True, exporter=exporter)
    yield exporter
    telemetry.configure(False)


async def _recorder_spans(exporter: InMemorySpanExporter, consumed: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while len(named(exporter.get_finished_spans(), "Recorder.Insert")) < 1 or (
        len(named(exporter.get_finished_spans(), "Recorder.Consume")) < consumed
    ):
        assert time.monotonic() < deadline, "the recorder's spans did not arrive"
        await asyncio.sleep(0.05)


async def test_one_trace_spans_proxy_broker_and_recorder(  # noqa: PLR0917
    spans: InMemorySpanExporter,
    kafka_bootstrap: str,
    kafka_topic: str,
    chdb_url: str,
    store_client: Client,
    verifier: TokenVerifier,
    make_token: Callable[..., str],
) -> None:
    settings = RecorderSettings(
        kafka_bootstrap=kafka_bootstrap,
        kafka_topic=kafka_topic,
        clickhouse_url=chdb_url,
        clickhouse_database=store_client.database,
        consumer_group=f"{kafka_topic}.recorder",
        batch_max_seconds=0.2,
        kafka_session_timeout_ms=3000,
        kafka_heartbeat_interval_ms=300,
        kafka_rebalance_timeout_ms=500,
    )
    consumer = KafkaConsumer(settings, group_id=settings.consumer_group, **settings.kafka_consumer_options())
    recorder = RecorderComponent(settings, consumer, KafkaProducer(settings), store_client)
    await recorder.start()
    try:
        with (
            serve_in_thread(create_simulator_app(openai_key=PROVIDER_KEY, anthropic_key=PROVIDER_KEY)) as upstream,
            running_proxy(
                upstream,
                KafkaProducer(ProxySettings(kafka_bootstrap=kafka_bootstrap)),
                verifier,
                kafka_bootstrap=kafka_bootstrap,
                kafka_topic=kafka_topic,
            ) as (url, _),
        ):
            body = {"model": "gpt-4o", "stream": True, "tools": [TOOL], "messages": [{"role": "user", "content": "hi"}]}
            async with httpx.AsyncClient(timeout=30) as client:
                answer = await client.post(f"{url}{OPENAI_CHAT}", json=body, headers={"x-api-key": make_token()})
            assert answer.status_code == 200
            await _recorder_spans(spans, consumed=5)  # started, prompt, token usage, tool usage, ended
    finally:
        await recorder.stop()

    finished = spans.get_finished_spans()
    intercept = one(finished, "Intercept")
    trace_id = intercept.context.trace_id
    recorder_spans = [s for s in finished if s.resource.attributes["service.name"] == "aibridge-recorder"]
    assert recorder_spans and {s.context.trace_id for s in recorder_spans} == {trace_id}
    records = {s.context.span_id: s.name for s in finished if s.name.startswith("Intercept.Record")}
    consumes = named(finished, "Recorder.Consume")
    assert sorted(records[parent_of(s) or 0] for s in consumes) == sorted(
        [
            "Intercept.RecordInterception",
            "Intercept.RecordPromptUsage",
            "Intercept.RecordTokenUsage",
            "Intercept.RecordToolUsage",
            "Intercept.RecordInterceptionEnded",
        ]
    )
    consume_ids = {s.context.span_id for s in consumes}
    assert all(parent_of(s) in consume_ids for s in named(finished, "Recorder.Insert"))
    interception_id = intercept.attributes["aibridge.interception_id"] if intercept.attributes else None
    stored = store_client.query(
        "SELECT count() FROM interceptions FINAL WHERE id = {id:UUID} AND status = 'completed'",
        parameters={"id": interception_id},
    )
    assert stored.result_rows[0][0] == 1
