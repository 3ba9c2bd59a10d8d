"""The recorder's metrics (consumed, lag, store errors) on both buses, and its spans joining the traces
that produced its messages (Recorder.Consume per message, Recorder.Insert per trace and batch)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from clickhouse_connect.driver.client import Client
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import REGISTRY
from recorder_harness import BusHarness, eventually
from test_recorder_pipeline import dedup_counts, expected_counts, interception

from aibridge import store, telemetry
from aibridge.bus import Headers, InProcessBus
from aibridge.events import Event, encode_event
from aibridge.recorder.component import RecorderComponent
from aibridge.recorder.settings import RecorderSettings
from aibridge.recorder.tracing import CONSUME_SPAN, INSERT_SPAN

TOPIC = "aibridge.interceptions.v1"


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _plain(name: str) -> float:
    return _sample(name)


def _lag() -> float:
    return _plain("aibridge_recorder_consumer_lag_messages")


async def _publish(bus: BusHarness, events: list[Event], headers: Headers = ()) -> None:
    for event in events:
        await bus.producer.send(bus.topic, event["interception_id"].encode(), encode_event(event), headers)


async def test_consumed_lag_and_insert_errors_through_a_store_outage(bus: BusHarness, store_client: Client) -> None:
    first, second, third = interception(1), interception(2), interception(3)
    consumed = _plain("aibridge_recorder_events_consumed_total")
    insert_errors = _sample("aibridge_recorder_store_errors_total", operation="insert")
    write_failures = _sample("aibridge_recorder_failures_total", operation="write")
    recorder = bus.recorder(store_client, consumer_lag_interval=0.05)
    await recorder.start()
    await _publish(bus, first)
    await eventually(lambda: dedup_counts(store_client) == expected_counts(first))
    await eventually(lambda: _lag() == 0)
    store_client.command("DETACH TABLE token_usages")  # inserts into it now fail for real
    try:
        await _publish(bus, second)
        await eventually(lambda: _plain("aibridge_recorder_paused") == 1)
        await _publish(bus, third)  # fetching is paused: these wait on the bus
        await eventually(lambda: _lag() == len(third))
        failed = _sample("aibridge_recorder_store_errors_total", operation="insert") - insert_errors
        assert failed >= 1
        assert failed == _sample("aibridge_recorder_failures_total", operation="write") - write_failures
    finally:
        store_client.command("ATTACH TABLE token_usages")
    await eventually(lambda: dedup_counts(store_client) == expected_counts(first + second + third))
    await eventually(lambda: _lag() == 0)
    assert _plain("aibridge_recorder_events_consumed_total") - consumed == len(first + second + third)


async def test_failed_migration_and_retention_are_store_errors(
    chdb_url: str, store_database: str, store_client: Client
) -> None:
    bus = InProcessBus()
    settings = RecorderSettings(kafka_topic=TOPIC, clickhouse_url=chdb_url, clickhouse_database=store_database)
    for table, operation in ((store.MIGRATIONS_TABLE, "migrate"), (store.TOKEN_USAGES, "retention")):
        before = _sample("aibridge_recorder_store_errors_total", operation=operation)
        store_client.command(f"DETACH TABLE {table}")
        try:
            with pytest.raises(store.StoreError, match="cannot prepare the store"):
                await RecorderComponent(settings, bus.consumer(TOPIC), bus.producer(), store_client).start()
        finally:
            store_client.command(f"ATTACH TABLE {table}")
        assert _sample("aibridge_recorder_store_errors_total", operation=operation) == before + 1


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    telemetry.configure(True, exporter=exporter)
    yield exporter
    telemetry.configure(False)


def _published_in_span(name: str) -> tuple[ReadableSpan, Headers]:
    """A proxy span and the Kafka headers it injected, as ``Intercept.Record…`` does."""
    with telemetry.tracer(telemetry.PROXY_SERVICE).start_as_current_span(name) as span:
        headers = telemetry.inject_headers()
    assert isinstance(span, ReadableSpan)
    return span, headers


async def test_recorder_spans_join_the_producing_traces(
    spans: InMemorySpanExporter, chdb_url: str, store_database: str, store_client: Client
) -> None:
    bus = InProcessBus()
    producer = bus.producer()
    traced, other, untraced = interception(1), interception(2), interception(3)
    with telemetry.tracer(telemetry.PROXY_SERVICE).start_as_current_span("Intercept"):  # one trace, two events
        started_span, started_headers = _published_in_span("Intercept.RecordInterception")
        ended_span, ended_headers = _published_in_span("Intercept.RecordInterceptionEnded")
    other_span, other_headers = _published_in_span("Intercept.RecordPromptUsage")
    assert started_span.context.trace_id == ended_span.context.trace_id != other_span.context.trace_id
    sent = [(traced[0], started_headers), (traced[-1], ended_headers), (other[1], other_headers), (untraced[0], ())]
    for event, headers in sent:
        await producer.send(TOPIC, event["interception_id"].encode(), encode_event(event), headers)
    await producer.send(TOPIC, b"poison", b"{not json", other_headers)
    settings = RecorderSettings(
        kafka_topic=TOPIC, clickhouse_url=chdb_url, clickhouse_database=store_database, batch_max_seconds=0.1
    )
    recorder = RecorderComponent(settings, bus.consumer(TOPIC), InProcessBus().producer(), store_client)
    await recorder.start()  # everything is on the bus already: one poll, one batch
    try:
        await eventually(lambda: bus.pending(TOPIC) == 0)
    finally:
        await recorder.stop()

    finished = [s for s in spans.get_finished_spans() if s.resource.attributes["service.name"] == "aibridge-recorder"]
    consumes = [s for s in finished if s.name == CONSUME_SPAN]
    parents = {s.parent.span_id for s in consumes if s.parent}
    assert len(consumes) == 4 and all(s.kind is SpanKind.CONSUMER for s in consumes)
    assert parents == {started_span.context.span_id, ended_span.context.span_id, other_span.context.span_id}
    for span in consumes:
        assert span.parent is not None and span.context.trace_id == span.parent.trace_id
    poison = next(s for s in consumes if s.attributes["messaging.kafka.offset"] == 4)
    assert (
        poison.status.status_code is StatusCode.ERROR and poison.attributes["aibridge.rejection.kind"] == "invalid_json"
    )
    first = next(s for s in consumes if s.parent and s.parent.span_id == started_span.context.span_id)
    assert first.attributes["aibridge.event.type"] == "interception.started"
    assert first.attributes["aibridge.interception_id"] == traced[0]["interception_id"]
    assert first.attributes["messaging.destination.name"] == TOPIC

    inserts = {s.parent.span_id if s.parent else None: s for s in finished if s.name == INSERT_SPAN}
    other_consume = next(s for s in consumes if s.parent and s.parent.span_id == other_span.context.span_id)
    assert other_consume is not poison  # the stored message of that trace was consumed first
    assert set(inserts) == {first.context.span_id, other_consume.context.span_id, None}
    assert inserts[first.context.span_id].context.trace_id == started_span.context.trace_id
    assert inserts[other_consume.context.span_id].context.trace_id == other_span.context.trace_id
    assert {key: _insert_counts(span) for key, span in inserts.items()} == {
        first.context.span_id: (5, 2),
        other_consume.context.span_id: (5, 1),
        None: (5, 1),
    }
    decoded = max(span.end_time or 0 for span in consumes)
    for span in inserts.values():
        assert span.kind is SpanKind.CLIENT and span.attributes["db.system.name"] == "clickhouse"
        assert span.start_time is not None and span.end_time is not None
        assert decoded <= span.start_time <= span.end_time


def _insert_counts(span: ReadableSpan) -> tuple[object, object]:
    return span.attributes["aibridge.batch.events"], span.attributes["aibridge.batch.trace_events"]
