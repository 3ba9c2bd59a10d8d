"""Migration 10 on a store that already holds tool usages: the older rows get no server name and no duration
(NULL); an injected call recorded after it keeps both, and the API's child query (the by_time projection,
rebuilt with the new columns) reads them."""

from __future__ import annotations

from test_recorder_capture_columns import context, migrate_to, store_rows

from aibridge import store
from aibridge.redaction import CaptureMode
from aibridge.store import MIGRATIONS

BEFORE = next(index for index, migration in enumerate(MIGRATIONS) if migration.version == 10)


def test_the_migration_adds_server_name_and_duration(chdb_url: str, store_database: str) -> None:
    client = store.connect(chdb_url, store_database, create_database=True)
    migrate_to(client, BEFORE)
    old = context(CaptureMode.FULL)
    older = old.tool_usage(provider_response_id="r", tool="bmcp_docs_search", call_id="c0", tool_input="{}")
    store_rows(client, [older], without=("server_name", "duration_ms"))  # as a recorder before migration 10

    assert store.migrate(client) == [migration.version for migration in MIGRATIONS[BEFORE:]]
    new = old.tool_usage(
        provider_response_id="r",
        tool="bmcp_docs_search",
        call_id="c1",
        tool_input="{}",
        injected=True,
        server_url="http://docs.internal/mcp",
        server_name="docs",
        duration_ms=12.5,
    )
    store_rows(client, [new])
    query = f"SELECT call_id, server_name, duration_ms FROM {store.TOOL_USAGES} ORDER BY call_id"
    assert client.query(query).result_rows == [("c0", None, None), ("c1", "docs", 12.5)]
    projection = f"SELECT call_id, server_name, duration_ms FROM {store.TOOL_USAGES} ORDER BY created_at, call_id"
    assert client.query(projection, settings={"force_optimize_projection": 1}).result_rows == [
        ("c0", None, None),
        ("c1", "docs", 12.5),
    ]
