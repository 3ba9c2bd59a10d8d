"""Migration 5 on a store that already holds interceptions: they keep their rows with no session ('') and
turn not known (''); rows of new events carry the session key and turn into interceptions, both index
tables the views keep, and the sessions summary."""

from __future__ import annotations

from test_recorder_capture_columns import migrate_to, store_rows

from aibridge import store
from aibridge.events import InterceptionContext, Status
from aibridge.recorder.rows import process_event
from aibridge.store import MIGRATIONS

BEFORE = 4


def context() -> InterceptionContext:
    return InterceptionContext(
        initiator_id="u1",
        initiator_username="dev",
        provider="anthropic",
        model="claude-sonnet-4-5",
        client="Claude Code",
        streaming=True,
        route="/v1/messages",
        api_key_id="k1",
    )


def test_the_migration_adds_the_session_columns_to_a_store_with_rows(chdb_url: str, store_database: str) -> None:
    client = store.connect(chdb_url, store_database, create_database=True)
    migrate_to(client, BEFORE)
    old = context()
    store_rows(client, [old.started()], without=("session_id", "turn"))  # as a recorder before migration 5

    assert store.migrate(client) == [migration.version for migration in MIGRATIONS[BEFORE:]]
    for table in (store.INTERCEPTIONS, store.INTERCEPTIONS_BY_INITIATOR):
        assert client.query(f"SELECT toString(id), session_id, turn FROM {table}").result_rows == [
            (old.interception_id, "", "")
        ]
    assert client.query(f"SELECT count() FROM {store.INTERCEPTIONS_BY_SESSION}").result_rows == [(0,)]

    new = context()
    started = new.started(session_id="s-1", turn="prompt")
    store_rows(client, [started, new.ended(Status.COMPLETED, 200)])
    assert started["session_id"] == "s-1" and started["turn"] == "prompt"
    for table in (store.INTERCEPTIONS, store.INTERCEPTIONS_BY_INITIATOR, store.INTERCEPTIONS_BY_SESSION):
        query = f"SELECT session_id, turn, status FROM {table} FINAL WHERE id = {{id:UUID}}"
        assert client.query(query, parameters={"id": new.interception_id}).result_rows == [
            ("s-1", "prompt", "completed")
        ], table
    summary = client.query(
        f"SELECT session_id, initiator_id, client, initiator_username, first_started_at = last_started_at, "
        f"providers, models FROM {store.SESSIONS} FINAL"
    ).result_rows
    assert summary == [("s-1", "u1", "Claude Code", "dev", True, ["anthropic"], ["claude-sonnet-4-5"])]


def test_an_ended_row_keeps_the_session_of_its_started_row() -> None:
    """The ended event's row replaces the started one's, so it carries the session key and turn too."""
    interception = context()
    interception.started(session_id="s-2", turn="tool_result")
    ended = process_event(interception.ended(Status.COMPLETED, 200)).fields()
    assert (ended["session_id"], ended["turn"]) == ("s-2", "tool_result")
    assert (process_event(context().started()).fields()["session_id"]) == ""


def test_a_session_key_is_cut_to_the_schema_limit() -> None:
    event = context().started(session_id="x" * 1000, turn="")
    assert len(event["session_id"]) == 256 and event["turn"] == ""
