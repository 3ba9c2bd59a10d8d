"""Retention by TTL on the real engine: old rows go, recent rows and 'keep forever' stay."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from clickhouse_connect.driver.client import Client

from aibridge import store
from aibridge.bus import InProcessBus, Message, Partition
from aibridge.events import Event, InterceptionContext, ReasoningKind, Status
from aibridge.recorder.component import RecorderComponent
from aibridge.recorder.retention import TTL_COLUMNS, apply_retention, current_ttl
from aibridge.recorder.rows import COLUMNS, process_event
from aibridge.recorder.settings import RecorderSettings
from aibridge.recorder.stages import Batch, BatchWriter

DAY = 86400


def interception_at(moment: datetime, user: str = "alice") -> list[Event]:
    context = InterceptionContext(
        initiator_id=f"id-{user}", initiator_username=user, provider="anthropic", model="claude-sonnet-4-5",
        client="Claude Code", streaming=True, route="/v1/messages", api_key_id="jti", started_at=moment,
    )  # fmt: skip
    events = [
        context.started(session_id=f"session-{user}-{moment.isoformat()}", turn="prompt"),
        context.prompt("old prompt"),
        context.token_usage(provider_response_id="r", input_tokens=1, output_tokens=1),
        context.tool_usage(provider_response_id="r", tool="Read", call_id="c", tool_input="{}"),
        context.reasoning(ReasoningKind.THINKING, "old thinking", "r"),
        context.ended(Status.COMPLETED, 200),
    ]
    for event in events[1:]:  # child events happen during the interception
        event["occurred_at"] = event["ended_at"] = (moment + timedelta(seconds=2)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return events


async def store_events(client: Client, events: list[Event]) -> None:
    batch = Batch()
    for offset, event in enumerate(events):
        batch.add(Message(Partition("t", 0), offset, None, b""), process_event(event))
    await BatchWriter(client).write(batch)


TABLES = (*COLUMNS, *store.DERIVED_TABLES)  # what the recorder writes, and the copies its views keep


def counts(client: Client) -> dict[str, int]:
    for table in TABLES:
        client.command(f"OPTIMIZE TABLE {table} FINAL")  # merges apply the TTL
    return {table: int(client.query(f"SELECT count() FROM {table} FINAL").result_rows[0][0]) for table in TABLES}


# Each test stores an old and a recent interception of two users: one row each per table (initiators
# holds a pair per user) while both are kept.
ONE_EACH = dict.fromkeys(TABLES, 1)
TWO_EACH = dict.fromkeys(TABLES, 2)


def test_every_table_has_a_retention_column() -> None:
    assert set(TTL_COLUMNS) == set(TABLES)


async def test_rows_older_than_the_retention_expire_with_their_children(store_client: Client) -> None:
    now = datetime.now(UTC)
    apply_retention(store_client, 30 * DAY)
    await store_events(
        store_client, interception_at(now - timedelta(days=40), "old") + interception_at(now - timedelta(days=1))
    )
    assert counts(store_client) == ONE_EACH
    for table in (store.INTERCEPTIONS, store.INTERCEPTIONS_BY_INITIATOR):
        remaining = store_client.query(f"SELECT min(started_at) FROM {table} FINAL").result_rows[0][0]
        assert remaining.replace(tzinfo=UTC) > now - timedelta(days=2)
    users = store_client.query(f"SELECT initiator_username FROM {store.INITIATORS} FINAL").result_rows
    assert users == [("alice",)]  # the old user's only interception expired, and their username with it


async def test_zero_keeps_everything(store_client: Client) -> None:
    now = datetime.now(UTC)
    apply_retention(store_client, 30 * DAY)
    assert apply_retention(store_client, 0) == dict.fromkeys(TTL_COLUMNS, "kept forever")
    await store_events(store_client, interception_at(now - timedelta(days=4000), "old") + interception_at(now))
    assert counts(store_client) == TWO_EACH
    assert all(current_ttl(store_client, table) is None for table in TTL_COLUMNS)


async def test_shorter_retention_applies_to_existing_rows(store_client: Client) -> None:
    now = datetime.now(UTC)
    apply_retention(store_client, 60 * DAY)
    await store_events(store_client, interception_at(now - timedelta(days=40), "old") + interception_at(now))
    assert counts(store_client) == TWO_EACH
    assert set(apply_retention(store_client, 30 * DAY)) == set(TTL_COLUMNS)
    assert counts(store_client) == ONE_EACH


async def test_unchanged_retention_is_not_reapplied(store_client: Client) -> None:
    assert set(apply_retention(store_client, 7 * DAY)) == set(TTL_COLUMNS)
    assert apply_retention(store_client, 7 * DAY) == {}
    assert current_ttl(store_client, "interceptions") == f"toDateTime(started_at) + toIntervalSecond({7 * DAY})"
    assert current_ttl(store_client, "tool_usages") == f"toDateTime(created_at) + toIntervalSecond({7 * DAY})"
    assert current_ttl(store_client, store.INTERCEPTIONS_BY_INITIATOR) == current_ttl(store_client, "interceptions")
    assert current_ttl(store_client, store.INITIATORS) == f"toDateTime(last_started_at) + toIntervalSecond({7 * DAY})"


async def test_restart_with_a_new_setting_changes_the_tables_ttl(chdb_url: str, store_database: str) -> None:
    client = store.connect(chdb_url, store_database, create_database=True)
    for retention, expected in (("30d", 30 * DAY), ("720h", 30 * DAY), ("90d", 90 * DAY), ("0", None)):
        settings = RecorderSettings(
            kafka_topic="t",
            clickhouse_url=chdb_url,
            clickhouse_database=store_database,
            retention=retention,  # type: ignore[arg-type]
        )
        bus = InProcessBus()
        recorder = RecorderComponent(settings, bus.consumer("t"), bus.producer(), client)
        await recorder.start()
        await recorder.stop()
        wanted = None if expected is None else f"toDateTime(started_at) + toIntervalSecond({expected})"
        assert current_ttl(client, "interceptions") == wanted
        assert current_ttl(client, "token_usages") == (wanted and wanted.replace("started_at", "created_at"))
        assert current_ttl(client, store.INTERCEPTIONS_BY_INITIATOR) == wanted
