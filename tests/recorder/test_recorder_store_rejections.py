"""Rows the store refuses every time are dead-lettered, not retried forever; transient failures still are.

The refusal is real: ``token_usages.input_tokens`` narrowed to ``UInt32`` (a schema left behind by a
partial upgrade) cannot take a count above 4,294,967,295, which the event schema allows.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from clickhouse_connect.driver.client import Client
from recorder_harness import PARTITIONS, BusHarness, eventually, kafka_read_all
from test_recorder_pipeline import dedup_counts, expected_counts, interception

from aibridge import cli, metrics, store
from aibridge.events import Event, encode_event
from aibridge.recorder.stages import KIND_HEADER, REASON_HEADER, SOURCE_OFFSET_HEADER, SOURCE_TOPIC_HEADER

TOO_MANY_TOKENS = 5_000_000_000


def narrow_input_tokens(client: Client) -> None:
    client.command(f"ALTER TABLE {store.TOKEN_USAGES} MODIFY COLUMN input_tokens UInt32")


def refused_usage(good: list[Event]) -> Event:
    """A token usage of a good interception with a count the narrowed column cannot take."""
    return interception_usage(good, TOO_MANY_TOKENS)


def interception_usage(events: list[Event], input_tokens: int) -> Event:
    usage = next(event for event in events if event["type"] == "token_usage")
    return usage | {"event_id": _other_id(usage["event_id"]), "input_tokens": input_tokens}


def _other_id(event_id: str) -> str:
    return event_id[:-12] + f"{int(event_id[-12:], 16) ^ 0xFFFFFF:012x}"


def dead_lettered(kind: str) -> float:
    return float(metrics.RECORDER_DEAD_LETTERS.labels(kind)._value.get())


def raw_count(client: Client, table: str) -> int:
    return int(client.query(f"SELECT count() FROM {table}").result_rows[0][0])


async def test_refused_rows_in_a_loaded_stream_are_dead_lettered_and_the_rest_lands_once(
    bus: BusHarness, store_client: Client
) -> None:
    store_client.command(f"SYSTEM STOP MERGES {store.TOKEN_USAGES}")  # so that any second copy stays visible
    narrow_input_tokens(store_client)
    good: list[Event] = []
    refused: list[Event] = []
    before = dead_lettered("store_rejected")
    recorder = bus.recorder(store_client, batch_max_rows=1_000)
    await recorder.start()
    for index in range(600):  # 3,000 good events, 3 refused ones among them
        events = interception(index)
        good += events
        if index in (150, 300, 450):
            refused.append(refused_usage(events))
            events = [*events[:3], refused[-1], *events[3:]]
        await bus.publish(*events)
    await eventually(lambda: _committed_all(bus), timeout=60)
    assert dedup_counts(store_client) == expected_counts(good)
    assert raw_count(store_client, store.TOKEN_USAGES) == 600  # each accepted usage was inserted once
    assert await recorder._consumer.lag() == 0  # type: ignore[attr-defined]
    letters = await eventually(bus.dead_letters)
    assert sorted(m.value for m in letters) == sorted(encode_event(event) for event in refused)
    for letter in letters:
        headers = dict(letter.headers)
        assert headers[KIND_HEADER] == b"store_rejected"
        reason = headers[REASON_HEADER].decode()
        assert reason.startswith("insert into token_usages failed: ") and "input_tokens" in reason, reason
        assert "format requires 0 <= number <= 4294967295" in reason
        assert headers[SOURCE_TOPIC_HEADER].decode() == bus.topic and int(headers[SOURCE_OFFSET_HEADER]) > 0
    assert dead_lettered("store_rejected") == before + 3


async def _committed_all(bus: BusHarness) -> bool:
    return await bus.committed() == bus.published


async def test_a_refused_row_is_logged_with_its_ids_not_its_contents(
    bus: BusHarness, store_client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    narrow_input_tokens(store_client)
    events = interception(7)
    bad = refused_usage(events)
    recorder = bus.recorder(store_client)
    await recorder.start()
    with caplog.at_level("WARNING", logger="aibridge.recorder"):
        await bus.publish(*events, bad)
        await eventually(lambda: _committed_all(bus))
    lines = [record.getMessage() for record in caplog.records if record.getMessage().startswith("dead-lettered")]
    assert len(lines) == 1
    assert f"token_usage {bad['event_id']}, interception {bad['interception_id']}" in lines[0]
    assert "(store_rejected)" in lines[0] and "4294967295" in lines[0]
    assert "prompt 7" not in caplog.text


async def test_a_transient_store_error_is_retried_not_dead_lettered(bus: BusHarness, store_client: Client) -> None:
    """TOO_MANY_PARTS (real, code 252) refuses every insert until merges catch up: wait, never drop."""
    events = interception(1)
    recorder = bus.recorder(store_client)
    await recorder.start()  # before merges stop: applying the retention TTL at start waits for merges
    store_client.command(f"SYSTEM STOP MERGES {store.TOKEN_USAGES}")
    store_client.command(f"ALTER TABLE {store.TOKEN_USAGES} MODIFY SETTING parts_to_throw_insert = 1")
    store.insert(store_client, store.TOKEN_USAGES, [_row_of(interception(2)[3])], _token_columns())
    before, failures = dead_lettered("store_rejected"), metrics.RECORDER_FAILURES.labels("write")._value.get()
    await bus.publish(*events)
    await eventually(lambda: metrics.RECORDER_FAILURES.labels("write")._value.get() >= failures + 3)
    assert "TOO_MANY_PARTS" in ((await recorder.readiness())["clickhouse"] or "")
    assert await bus.committed() == 0
    store_client.command(f"ALTER TABLE {store.TOKEN_USAGES} MODIFY SETTING parts_to_throw_insert = 3000")
    await eventually(lambda: _committed_all(bus))
    assert dedup_counts(store_client)[store.TOKEN_USAGES] == 2
    assert dead_lettered("store_rejected") == before
    assert await bus.dead_letters() == []


def _row_of(event: Event) -> tuple[Any, ...]:
    from aibridge.recorder.rows import process_event

    return process_event(event).values


def _token_columns() -> tuple[str, ...]:
    from aibridge.recorder.rows import COLUMNS

    return COLUMNS[store.TOKEN_USAGES]


@pytest.mark.parametrize("bus", ["kafka"], indirect=True)
async def test_replay_after_the_fix_stores_the_dead_letters_once(
    bus: BusHarness, store_client: Client, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    narrow_input_tokens(store_client)
    good = interception(1) + interception(2)
    refused = [refused_usage(good[:5]), refused_usage(good[5:])]
    recorder = bus.recorder(store_client)
    await recorder.start()
    await bus.publish(*good[:5], refused[0], *good[5:], refused[1])
    await eventually(lambda: _committed_all(bus))
    assert len(await eventually(bus.dead_letters)) == 2
    monkeypatch.setenv("AIBRIDGE_KAFKA_BOOTSTRAP", bus.settings().kafka_bootstrap)
    group = ["--group", f"replay-{bus.topic}"]
    assert await _aibridge(["dlq", "list", "--topic", bus.topic]) == 0
    listed = [orjson.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sorted(entry["event_id"] for entry in listed) == sorted(event["event_id"] for event in refused)
    assert {entry["kind"] for entry in listed} == {"store_rejected"}
    assert all("prompt" not in orjson.dumps(entry).decode() for entry in listed)
    assert await _aibridge(["dlq", "replay", "--topic", bus.topic, "--dry-run", *group]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    store_client.command(f"ALTER TABLE {store.TOKEN_USAGES} MODIFY COLUMN input_tokens Int64")  # the fix
    assert await _aibridge(["dlq", "replay", "--topic", bus.topic, *group]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    bus.published += 2
    await eventually(lambda: dedup_counts(store_client) == expected_counts(good + refused))
    await eventually(lambda: _committed_all(bus))
    assert await _aibridge(["dlq", "replay", "--topic", bus.topic, *group]) == 0  # nothing new to replay
    assert capsys.readouterr().out == ""
    replayed = await kafka_read_all(bus.settings().kafka_bootstrap, bus.topic, PARTITIONS)
    copies = [m for m in replayed if orjson.loads(m.value)["event_id"] in {e["event_id"] for e in refused}]
    assert len(copies) == 4  # the originals and one replay each, the replays without dead-letter headers
    assert all(not name.startswith("aibridge-dlq-") for m in copies for name, _ in m.headers)
    assert len(await bus.dead_letters()) == 2


async def _aibridge(argv: list[str]) -> int:
    return await asyncio.to_thread(cli.main, argv)
