"""Contract tests of the recorder on both buses (in-process and Kafka/Tansu) with the real chDB engine."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from clickhouse_connect.driver.client import Client
from recorder_harness import BusHarness, eventually

from aibridge import metrics, store
from aibridge.events import Event, InterceptionContext, Status, example_events
from aibridge.recorder.rows import COLUMNS, process_event
from aibridge.recorder.stages import (
    KIND_HEADER,
    REASON_HEADER,
    SOURCE_OFFSET_HEADER,
    SOURCE_PARTITION_HEADER,
    SOURCE_TOPIC_HEADER,
)


def interception(index: int) -> list[Event]:
    context = InterceptionContext(
        initiator_id=f"user-{index % 3}",
        initiator_username=f"dev{index % 3}",
        provider="openai",
        model="gpt-4o",
        client="Codex",
        streaming=bool(index % 2),
        route="/v1/chat/completions",
        api_key_id=str(uuid.uuid4()),
        metadata={"n": index},
    )
    return [
        context.started(),
        context.prompt(f"prompt {index}", f"chatcmpl-{index}"),
        context.tool_usage(
            provider_response_id=f"chatcmpl-{index}", tool="shell", call_id=f"c{index}", tool_input="{}"
        ),
        context.token_usage(provider_response_id=f"chatcmpl-{index}", input_tokens=index, output_tokens=2 * index),
        context.ended(Status.COMPLETED, 200),
    ]


def expected_counts(events: list[Event]) -> dict[str, int]:
    """Rows per table in deduplicated query results."""
    ids: dict[str, set[str]] = {table: set() for table in COLUMNS}
    for event in events:
        row = process_event(event)
        ids[row.table].add(row.values[0])
    return {table: len(found) for table, found in ids.items()}


def dedup_counts(client: Client) -> dict[str, int]:
    """Rows per table as the API reads them, with FINAL and with LIMIT 1 BY id (-1 when they disagree:
    an insert may land between the two queries, so callers compare the result until it settles)."""
    counts = {}
    for table in COLUMNS:
        final = int(client.query(f"SELECT count() FROM {table} FINAL").result_rows[0][0])
        by_id = int(client.query(f"SELECT count() FROM (SELECT id FROM {table} LIMIT 1 BY id)").result_rows[0][0])
        counts[table] = final if final == by_id else -1
    return counts


def stored(client: Client, table: str, row_id: str) -> dict[str, Any]:
    result = client.query(f"SELECT * FROM {table} FINAL WHERE id = {{id:UUID}}", parameters={"id": row_id})
    assert len(result.result_rows) == 1, (table, row_id, result.result_rows)
    return {name: _plain(value) for name, value in zip(result.column_names, result.result_rows[0], strict=True)}


def _plain(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


async def test_events_become_the_right_rows(bus: BusHarness, store_client: Client) -> None:
    events = [*example_events().values(), *interception(1), *interception(2)]
    recorder = bus.recorder(store_client)
    await recorder.start()
    await bus.publish(*events)
    await eventually(lambda: dedup_counts(store_client) == expected_counts(events))
    for event in events:
        if event["type"] == "interception.started":
            continue  # superseded by its interception.ended row, checked below
        row = process_event(event)
        assert stored(store_client, row.table, row.values[0]) == row.fields()
    assert await eventually(lambda: _committed_all(bus))
    assert await recorder.readiness() == {"kafka": None, "clickhouse": None}


async def _committed_all(bus: BusHarness) -> bool:
    return await bus.committed() == bus.published


async def test_duplicates_collapse_in_query_results(bus: BusHarness, store_client: Client) -> None:
    for table in COLUMNS:  # keep the duplicate parts apart so the test sees them collapse at query time
        store_client.command(f"SYSTEM STOP MERGES {table}")
    events = interception(1) + interception(2) + [example_events()["token_usage"]]
    recorder = bus.recorder(store_client)
    await recorder.start()
    await bus.publish(*events)
    await eventually(lambda: _committed_all(bus))
    await bus.publish(*events)  # a replay: the same events again
    await eventually(lambda: _committed_all(bus))
    raw = int(store_client.query("SELECT count() FROM token_usages").result_rows[0][0])
    assert raw == 6  # three token usages, each stored twice
    assert dedup_counts(store_client) == expected_counts(events)
    ended = {e["interception_id"]: e for e in events if e["type"] == "interception.ended"}
    for interception_id, event in ended.items():
        assert stored(store_client, store.INTERCEPTIONS, interception_id) == process_event(event).fields()


async def test_poison_events_go_to_the_dead_letter_topic(bus: BusHarness, store_client: Client) -> None:
    before = {kind: _dead_letter_count(kind) for kind in ("invalid_json", "schema", "unstorable")}
    good = interception(1)
    schema_violation = orjson.dumps({k: v for k, v in good[3].items() if k != "input_tokens"})
    unstorable = orjson.dumps(good[1] | {"occurred_at": "1960-01-01T00:00:00Z"})
    key = good[0]["interception_id"].encode()
    recorder = bus.recorder(store_client)
    await recorder.start()
    await bus.publish(*good[:2])
    await bus.publish(b"\x00not json", schema_violation, unstorable, key=key)
    await bus.publish(*good[2:])
    await eventually(lambda: dedup_counts(store_client) == expected_counts(good))
    await eventually(lambda: _committed_all(bus))
    letters = await eventually(bus.dead_letters)
    assert [m.value for m in letters] == [b"\x00not json", schema_violation, unstorable]
    for letter in letters:
        headers = dict(letter.headers)
        assert letter.key == key
        assert headers[SOURCE_TOPIC_HEADER].decode() == bus.topic
        assert int(headers[SOURCE_PARTITION_HEADER]) >= 0 and int(headers[SOURCE_OFFSET_HEADER]) >= 0
    reasons = [dict(m.headers)[REASON_HEADER].decode() for m in letters]
    assert reasons[0].startswith("not valid JSON")
    assert "input_tokens" in reasons[1]
    assert "1960" in reasons[2]
    assert [dict(m.headers)[KIND_HEADER] for m in letters] == [b"invalid_json", b"schema", b"unstorable"]
    for kind, count in before.items():
        assert _dead_letter_count(kind) == count + 1


def _dead_letter_count(kind: str) -> float:
    return float(metrics.RECORDER_DEAD_LETTERS.labels(kind)._value.get())


def _write_failures() -> float:
    return float(metrics.RECORDER_FAILURES.labels("write")._value.get())


async def test_store_rejecting_inserts_pauses_without_committing(bus: BusHarness, store_client: Client) -> None:
    first, second = interception(1), interception(2)
    recorder = bus.recorder(store_client)
    await recorder.start()
    await bus.publish(*first)
    await eventually(lambda: dedup_counts(store_client) == expected_counts(first))
    await eventually(lambda: _committed_all(bus))
    committed_before = await bus.committed()
    failures = _write_failures()
    store_client.command("DETACH TABLE token_usages")  # inserts into it now fail for real
    try:
        await bus.publish(*second)
        await eventually(lambda: _write_failures() >= failures + 3)
        assert metrics.RECORDER_PAUSED._value.get() == 1
        assert "token_usages" in ((await recorder.readiness())["clickhouse"] or "")
        assert await bus.committed() == committed_before
    finally:
        store_client.command("ATTACH TABLE token_usages")
    await eventually(lambda: dedup_counts(store_client) == expected_counts(first + second))
    await eventually(lambda: _committed_all(bus))
    assert metrics.RECORDER_PAUSED._value.get() == 0
    assert (await recorder.readiness())["clickhouse"] is None


async def test_restart_mid_stream_stores_every_event_once(bus: BusHarness, store_client: Client) -> None:
    events: list[Event] = []
    progress = {"done": False}

    async def produce() -> None:
        for index in range(60):
            batch = interception(index)
            events.extend(batch)
            await bus.publish(*batch)
            await asyncio.sleep(0.03)
        progress["done"] = True

    for table in store.CHILD_TABLES:
        store_client.command(f"SYSTEM STOP MERGES {table}")
    producer = asyncio.create_task(produce())
    first = bus.recorder(store_client, batch_max_rows=20)
    await first.start()
    await eventually(lambda: _committed_at_least(bus, 40))
    await first.stop()  # what SIGTERM does: stop fetching, flush, commit
    assert not progress["done"], "the recorder should stop while events are still being published"
    stopped_at = await bus.committed()
    assert stored_events(store_client) == stopped_at  # everything fetched was written and committed
    second = bus.recorder(store_client, batch_max_rows=20)
    await second.start()
    await asyncio.wait_for(producer, 30)
    await eventually(lambda: _committed_all(bus), timeout=40)
    assert stopped_at < bus.published
    assert dedup_counts(store_client) == expected_counts(events)
    for table in store.CHILD_TABLES:  # a graceful stop redelivers nothing: no duplicate was even written
        assert store_client.query(f"SELECT count() FROM {table}").result_rows[0][0] == expected_counts(events)[table]


def stored_events(client: Client) -> int:
    """Events stored so far: child rows, plus started (version 0) and ended (version 1) per interception."""
    children = sum(int(client.query(f"SELECT count() FROM {t} FINAL").result_rows[0][0]) for t in store.CHILD_TABLES)
    query = "SELECT sum(v + 1) FROM (SELECT max(version) AS v FROM interceptions GROUP BY id)"
    return children + int(client.query(query).result_rows[0][0])


async def _committed_at_least(bus: BusHarness, count: int) -> bool:
    return await bus.committed() >= count
