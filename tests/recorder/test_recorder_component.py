"""The recorder component: settings, structured logs, crash recovery, dead-letter failures, start errors."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from clickhouse_connect.driver.client import Client
from recorder_harness import PARTITIONS, eventually, kafka_committed, kafka_read_all
from test_recorder_pipeline import dedup_counts, expected_counts, interception

from aibridge import metrics
from aibridge.bus import BusError, InProcessBus
from aibridge.events import encode_event, example_events
from aibridge.kafka import KafkaConsumer, KafkaProducer
from aibridge.logs import JsonFormatter
from aibridge.recorder.component import RecorderComponent
from aibridge.recorder.records_log import LOGGER_NAME
from aibridge.recorder.settings import RecorderSettings
from aibridge.testing.broker import Broker, create_topics, free_port

TOPIC = "aibridge.interceptions.v1"


def test_settings_defaults_and_forms(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = RecorderSettings(kafka_topic="events")
    assert settings.listen == "0.0.0.0:8082"
    assert settings.consumer_group == "aibridge-recorder"
    assert settings.dlq_topic == "events.dlq"
    assert (settings.batch_max_rows, settings.batch_max_seconds) == (10_000, 1.0)
    assert settings.retention == 60 * 86400
    monkeypatch.setenv("AIBRIDGE_RETENTION", "720h")
    assert RecorderSettings().retention == 30 * 86400
    monkeypatch.setenv("AIBRIDGE_RETENTION", "0")
    assert RecorderSettings().retention == 0
    monkeypatch.setenv("AIBRIDGE_DLQ_TOPIC", "dead")
    monkeypatch.setenv("AIBRIDGE_BATCH_MAX_ROWS", "500")
    assert (RecorderSettings().dlq_topic, RecorderSettings().batch_max_rows) == ("dead", 500)
    with pytest.raises(ValueError, match="RETRY_BACKOFF_MAX"):
        RecorderSettings(retry_backoff_min=5, retry_backoff_max=1)


@pytest.fixture
def record_lines() -> Iterator[io.StringIO]:
    """What the process's JSON log handler writes for the records logger."""
    sink = io.StringIO()
    handler = logging.StreamHandler(sink)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(LOGGER_NAME)
    logger.addHandler(handler)
    try:
        yield sink
    finally:
        logger.removeHandler(handler)


def _settings(chdb_url: str, database: str, **extra: Any) -> RecorderSettings:
    return RecorderSettings(
        kafka_topic=TOPIC, clickhouse_url=chdb_url, clickhouse_database=database, batch_max_seconds=0.1, **extra
    )


async def test_structured_logs_one_line_per_stored_record(
    record_lines: io.StringIO, chdb_url: str, store_database: str, store_client: Client
) -> None:
    bus = InProcessBus()
    recorder = RecorderComponent(
        _settings(chdb_url, store_database, structured_logs=True), bus.consumer(TOPIC), bus.producer(), store_client
    )
    await recorder.start()
    producer = bus.producer()
    events = example_events()
    secret = events["interception_started"] | {"authorization": "Bearer bridge-secret-token"}
    for event in [secret, *[e for name, e in events.items() if name != "interception_started"]]:
        await producer.send(TOPIC, event["interception_id"].encode(), encode_event(event))
    await eventually(lambda: record_lines.getvalue().count("\n") >= 6)
    await recorder.stop()
    assert "bridge-secret-token" not in record_lines.getvalue()
    lines = [orjson.loads(line) for line in record_lines.getvalue().splitlines()]
    by_type = {line["record_type"]: line for line in lines}
    assert sorted(by_type) == [
        "interception_end",
        "interception_start",
        "prompt_usage",
        "reasoning",
        "token_usage",
        "tool_usage",
    ]
    assert all(line["logger"] == LOGGER_NAME and line["initiator_username"] == "alice" for line in lines)
    assert by_type["token_usage"]["input_tokens"] == 1204 and by_type["token_usage"]["cache_read_input_tokens"] == 18211
    assert by_type["token_usage"]["metadata"]["service_tier"] == "standard"
    assert by_type["prompt_usage"]["prompt"].startswith("Refactor the retry loop")
    assert (by_type["tool_usage"]["tool"], by_type["tool_usage"]["input"]) == (
        "Read",
        '{"file_path": "/src/client.py"}',
    )
    assert by_type["interception_end"]["status"] == "completed" and by_type["interception_end"]["http_status"] == 200
    assert by_type["interception_start"]["started_at"] == "2026-11-27T10:15:30.123456Z"
    assert {line["interception_id"] for line in lines} == {"7c9e6679-7425-40de-944b-e07fc1f90ae7"}
    assert {line["model"] for line in lines} == {"claude-sonnet-4-5"}


async def test_no_structured_logs_unless_enabled(
    record_lines: io.StringIO, chdb_url: str, store_database: str, store_client: Client
) -> None:
    bus = InProcessBus()
    recorder = RecorderComponent(_settings(chdb_url, store_database), bus.consumer(TOPIC), bus.producer(), store_client)
    await recorder.start()
    events = interception(1)
    for event in events:
        await bus.producer().send(TOPIC, event["interception_id"].encode(), encode_event(event))
    await eventually(lambda: dedup_counts(store_client) == expected_counts(events))
    await recorder.stop()
    assert record_lines.getvalue() == ""


async def test_crash_redelivers_and_duplicates_collapse(
    chdb_url: str, store_database: str, store_client: Client
) -> None:
    """A recorder killed after writing but before committing: the next one stores the events again."""
    bus = InProcessBus(partitions=PARTITIONS)
    for table in ("interceptions", "user_prompts", "token_usages", "tool_usages"):
        store_client.command(f"SYSTEM STOP MERGES {table}")
    events = interception(1) + interception(2)
    settings = _settings(chdb_url, store_database)
    crashing = RecorderComponent(settings, bus.consumer(TOPIC), bus.producer(), store_client)
    await crashing.start()
    original_commit = bus.commit
    bus.commit = lambda offsets: None  # type: ignore[method-assign]  # the process dies before committing
    for event in events:
        await bus.producer().send(TOPIC, event["interception_id"].encode(), encode_event(event))
    await eventually(lambda: dedup_counts(store_client) == expected_counts(events))
    await crashing.stop()
    bus.commit = original_commit  # type: ignore[method-assign]
    assert bus.pending(TOPIC) == len(events)
    recovering = RecorderComponent(settings, bus.consumer(TOPIC), bus.producer(), store_client)
    await recorder_until_drained(recovering, bus)
    raw = int(store_client.query("SELECT count() FROM token_usages").result_rows[0][0])
    assert raw == 4  # each token usage was written twice
    assert dedup_counts(store_client) == expected_counts(events)


async def recorder_until_drained(recorder: RecorderComponent, bus: InProcessBus) -> None:
    await recorder.start()
    try:
        await eventually(lambda: bus.pending(TOPIC) == 0)
    finally:
        await recorder.stop()


async def test_failed_dead_letter_publish_blocks_the_commit_until_it_succeeds(
    kafka_bootstrap: str, own_broker: Broker, chdb_url: str, store_database: str, store_client: Client
) -> None:
    """The dead-letter topic lives on a second broker, frozen for a while: nothing is committed past the poison."""
    topic = f"aibridge.test.dlq.{free_port()}"
    await create_topics(kafka_bootstrap, topic, partitions=1)
    await create_topics(own_broker.bootstrap, f"{topic}.dlq", partitions=1)
    settings = RecorderSettings(
        kafka_bootstrap=kafka_bootstrap, kafka_topic=topic, consumer_group=f"g-{topic}", clickhouse_url=chdb_url,
        clickhouse_database=store_database, batch_max_seconds=0.1, retry_backoff_min=0.05, retry_backoff_max=0.3,
        kafka_session_timeout_ms=3000, kafka_heartbeat_interval_ms=300, kafka_rebalance_timeout_ms=500,
    )  # fmt: skip
    dead_letters = KafkaProducer(RecorderSettings(kafka_bootstrap=own_broker.bootstrap), request_timeout=0.5)
    consumer = KafkaConsumer(settings, settings.consumer_group, **settings.kafka_consumer_options())
    recorder = RecorderComponent(settings, consumer, dead_letters, store_client)
    producer = KafkaProducer(RecorderSettings(kafka_bootstrap=kafka_bootstrap))
    await producer.start()
    await recorder.start()
    failures = metrics.RECORDER_FAILURES.labels("dead_letter")._value.get()
    try:
        before, after = interception(1), interception(2)
        for event in before:
            await producer.send(topic, b"key", encode_event(event))
        await eventually(lambda: _committed_is(kafka_bootstrap, settings.consumer_group, topic, len(before)))
        own_broker.freeze()
        try:
            for value in [b"poison"] + [encode_event(e) for e in after]:
                await producer.send(topic, b"key", value)
            await eventually(lambda: metrics.RECORDER_FAILURES.labels("dead_letter")._value.get() >= failures + 2)
            assert await kafka_committed(kafka_bootstrap, settings.consumer_group, topic, 1) == len(before)
            assert dedup_counts(store_client) == expected_counts(before)
        finally:
            own_broker.thaw()
        await eventually(lambda: dedup_counts(store_client) == expected_counts(before + after), timeout=30)
        total = len(before) + 1 + len(after)
        await eventually(lambda: _committed_is(kafka_bootstrap, settings.consumer_group, topic, total), timeout=30)
        letters = await kafka_read_all(own_broker.bootstrap, f"{topic}.dlq", 1)
        # A send that timed out while frozen may still land (at least once); the source headers identify copies.
        assert letters and {m.value for m in letters} == {b"poison"}
        assert {dict(m.headers)["aibridge-dlq-source-offset"] for m in letters} == {str(len(before)).encode()}
    finally:
        await recorder.stop()
        await producer.stop()


async def _committed_is(bootstrap: str, group: str, topic: str, count: int) -> bool:
    return await kafka_committed(bootstrap, group, topic, 1) == count


async def test_unreachable_broker_refuses_to_start(chdb_url: str, store_database: str, store_client: Client) -> None:
    settings = RecorderSettings(
        kafka_bootstrap=f"127.0.0.1:{free_port()}", clickhouse_url=chdb_url, clickhouse_database=store_database
    )
    dead_letters = InProcessBus().producer()
    recorder = RecorderComponent(settings, KafkaConsumer(settings, "g"), dead_letters, store_client)
    with pytest.raises(BusError, match="cannot connect"):
        await recorder.start()
    assert (await recorder.readiness())["kafka"] == "not started"


def test_unreachable_http_store_is_a_clear_error() -> None:
    from aibridge import store

    with pytest.raises(Exception, match=r"127\.0\.0\.1"):
        store.connect(f"http://127.0.0.1:{free_port()}", "aibridge")


async def test_stop_writes_and_commits_the_open_batch(chdb_url: str, store_database: str, store_client: Client) -> None:
    bus = InProcessBus(partitions=PARTITIONS)
    settings = _settings(chdb_url, store_database).model_copy(update={"batch_max_seconds": 60.0})
    recorder = RecorderComponent(settings, bus.consumer(TOPIC), bus.producer(), store_client)
    await recorder.start()
    events = interception(1) + interception(2)
    for event in events:
        await bus.producer().send(TOPIC, event["interception_id"].encode(), encode_event(event))
    await asyncio.sleep(0.6)  # fetched, but the batch is neither full nor due
    assert dedup_counts(store_client) == dict.fromkeys(expected_counts(events), 0)
    await recorder.stop()
    assert dedup_counts(store_client) == expected_counts(events)
    assert bus.pending(TOPIC) == 0


async def test_stop_while_the_store_is_down_leaves_the_batch_uncommitted(
    chdb_url: str, store_database: str, store_client: Client
) -> None:
    bus = InProcessBus(partitions=PARTITIONS)
    settings = _settings(chdb_url, store_database).model_copy(update={"shutdown_timeout": 0.5})
    recorder = RecorderComponent(settings, bus.consumer(TOPIC), bus.producer(), store_client)
    await recorder.start()
    store_client.command("DETACH TABLE tool_usages")
    try:
        events = interception(1)
        for event in events:
            await bus.producer().send(TOPIC, event["interception_id"].encode(), encode_event(event))
        await eventually(lambda: (recorder._pipeline and recorder._pipeline.store_error) is not None)
        started = asyncio.get_running_loop().time()
        await recorder.stop()
        assert asyncio.get_running_loop().time() - started < 3
        assert bus.pending(TOPIC) == len(events)  # nothing committed: the events will be delivered again
    finally:
        store_client.command("ATTACH TABLE tool_usages")
    await recorder_until_drained(RecorderComponent(settings, bus.consumer(TOPIC), bus.producer(), store_client), bus)
    assert dedup_counts(store_client) == expected_counts(events)
