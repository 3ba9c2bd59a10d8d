"""The tables the materialized views keep from ``interceptions`` (migration 2): every row the recorder
writes reaches ``interceptions_by_initiator`` (started and ended versions, redelivered copies) and its
user's pair reaches ``initiators``; the migration backfills a store written before it, once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from clickhouse_connect.driver.client import Client
from recorder_harness import BusHarness, eventually
from test_recorder_pipeline import interception
from test_recorder_retention import interception_at, store_events

from aibridge import store
from aibridge.store import MIGRATIONS, MIGRATIONS_TABLE

COPIES = "SELECT {columns} FROM {table} {final} ORDER BY id, version"
COLUMNS = (
    "id, version, initiator_id, initiator_username, provider, model, client, api_key_id, route, streaming, "
    "user_agent, status, http_status, error, metadata, started_at, ended_at"
)


def rows(client: Client, table: str, *, final: bool = False) -> list[tuple[Any, ...]]:
    """Every stored copy, or with ``final`` what a query sees: one row per id, its highest version."""
    statement = COPIES.format(columns=COLUMNS, table=table, final="FINAL" if final else "")
    return [tuple(row) for row in client.query(statement).result_rows]


def pairs(client: Client) -> set[tuple[str, str, datetime]]:
    found = client.query(
        f"SELECT initiator_username, initiator_id, last_started_at FROM {store.INITIATORS} FINAL"
    ).result_rows
    return {(str(name), str(user), moment) for name, user, moment in found}


def expected_pairs(client: Client) -> set[tuple[str, str, datetime]]:
    found = client.query(
        "SELECT initiator_username, initiator_id, max(started_at) FROM interceptions "
        "GROUP BY initiator_username, initiator_id"
    ).result_rows
    return {(str(name), str(user), moment) for name, user, moment in found}


async def test_every_row_the_recorder_writes_reaches_the_index_tables(bus: BusHarness, store_client: Client) -> None:
    for table in (store.INTERCEPTIONS, *store.DERIVED_TABLES):  # keep every copy apart, as before merges
        store_client.command(f"SYSTEM STOP MERGES {table}")
    in_flight = interception(7)[:4]  # started, with children, not ended yet
    events = interception(1) + interception(2) + interception(4) + in_flight
    ended = [event for event in events if event["type"] == "interception.ended"]
    recorder = bus.recorder(store_client)
    await recorder.start()
    # The started rows in one insert, the ended rows in a later one (in one insert the engine keeps only
    # the ended row), then everything redelivered.
    for part in ([event for event in events if event not in ended], ended, events):
        await bus.publish(*part)
        await eventually(lambda: committed_all(bus))

    copies = rows(store_client, store.INTERCEPTIONS_BY_INITIATOR)
    assert copies == rows(store_client, store.INTERCEPTIONS)
    versions = {(row[0], row[1]) for row in copies}
    assert sorted(version for _, version in versions) == [0] * 4 + [1] * 3  # the in-flight one has no ended row
    assert len(copies) > len(versions)  # the redelivered copies are there too
    assert pairs(store_client) == expected_pairs(store_client)
    assert {(name, user) for name, user, _ in pairs(store_client)} == {("dev1", "user-1"), ("dev2", "user-2")}


async def committed_all(bus: BusHarness) -> bool:
    return await bus.committed() == bus.published


def only_interceptions(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [event for event in events if event["type"].startswith("interception.")]


def migrate_to_1(client: Client) -> None:
    """The store as a recorder from before migration 2 left it."""
    store.applied_versions(client)
    for statement in MIGRATIONS[0].statements:
        client.command(statement)
    client.insert(MIGRATIONS_TABLE, [[1, MIGRATIONS[0].description]], column_names=["version", "description"])
    # The rows written here carry the session columns of migration 5, which adds them only if missing.
    client.command(f"ALTER TABLE {store.INTERCEPTIONS} ADD COLUMN session_id String, ADD COLUMN turn String")


async def test_the_migration_backfills_an_existing_store_once(chdb_url: str, store_database: str) -> None:
    client = store.connect(chdb_url, store_database, create_database=True)
    migrate_to_1(client)
    now = datetime.now(UTC)
    # Interception rows only: the children's later columns (migration 4) are not in this store yet.
    events = only_interceptions(interception_at(now - timedelta(days=3), "old") + interception_at(now))
    await store_events(client, [event for event in events if event["type"] != "interception.ended"])
    await store_events(client, events)  # ended rows, and a redelivery of the rest
    await store_events(client, only_interceptions(interception_at(now - timedelta(days=1))))  # alice again, later
    before = rows(client, store.INTERCEPTIONS, final=True)
    assert [row[1] for row in before] == [1, 1, 1]

    assert store.migrate(client) == [migration.version for migration in MIGRATIONS[1:]]
    assert rows(client, store.INTERCEPTIONS_BY_INITIATOR, final=True) == before
    assert pairs(client) == expected_pairs(client)
    assert {name for name, _, _ in pairs(client)} == {"old", "alice"}
    copies = len(rows(client, store.INTERCEPTIONS_BY_INITIATOR))

    assert store.migrate(client) == []  # applied once: nothing backfilled twice
    assert len(rows(client, store.INTERCEPTIONS_BY_INITIATOR)) <= copies  # merges may only collapse copies
    await store_events(client, interception_at(now + timedelta(seconds=1), "new"))  # the views keep it up to date
    after = rows(client, store.INTERCEPTIONS, final=True)
    assert len(after) == 4 and rows(client, store.INTERCEPTIONS_BY_INITIATOR, final=True) == after
    assert pairs(client) == expected_pairs(client)
