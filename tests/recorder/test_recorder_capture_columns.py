"""Migration 4 on a store that already holds prompts and tool usages: the rows keep their text and get
the defaults (capture '' = not known, 0 redactions); rows of new events carry the proxy's values."""

from __future__ import annotations

from clickhouse_connect.driver.client import Client

from aibridge import store
from aibridge.events import InterceptionContext
from aibridge.recorder.rows import COLUMNS, process_event
from aibridge.redaction import CaptureMode, CapturePolicy
from aibridge.store import MIGRATIONS, MIGRATIONS_TABLE

BEFORE = 3


def migrate_to(client: Client, version: int) -> None:
    store.applied_versions(client)
    for migration in MIGRATIONS[:version]:
        for statement in migration.statements:
            client.command(statement)
        client.insert(MIGRATIONS_TABLE, [[migration.version, migration.description]], ["version", "description"])


def store_rows(client: Client, events: list[dict[str, object]], *, without: tuple[str, ...] = ()) -> None:
    for event in events:
        row = process_event(event)
        fields = {name: value for name, value in row.fields().items() if name not in without}
        store.insert(client, row.table, [list(fields.values())], list(fields))


def context(mode: CaptureMode) -> InterceptionContext:
    return InterceptionContext(
        initiator_id="u1",
        initiator_username="dev",
        provider="openai",
        model="gpt-4o",
        client="Codex",
        streaming=False,
        route="/v1/chat/completions",
        api_key_id="k1",
        capture=CapturePolicy.build(mode),
    )


def test_the_migration_adds_the_columns_to_a_store_with_rows(chdb_url: str, store_database: str) -> None:
    client = store.connect(chdb_url, store_database, create_database=True)
    migrate_to(client, BEFORE)
    old = context(CaptureMode.FULL)
    older_rows = [
        old.prompt("deploy with AKIAQ3EGWM5XK7PLT2ZD"),
        old.tool_usage(provider_response_id="r", tool="Bash", call_id="c", tool_input="{}"),
    ]
    # as a recorder before migration 4 wrote them (nor had it the columns of migration 10)
    store_rows(client, older_rows, without=("capture", "redactions", "server_name", "duration_ms"))

    assert store.migrate(client) == [migration.version for migration in MIGRATIONS[BEFORE:]]
    assert client.query(f"SELECT prompt, capture, redactions FROM {store.USER_PROMPTS}").result_rows == [
        ("deploy with [REDACTED:aws_access_key]", "", 0)
    ]
    assert client.query(f"SELECT tool, capture, redactions FROM {store.TOOL_USAGES}").result_rows == [("Bash", "", 0)]

    new = context(CaptureMode.METADATA)
    store_rows(client, [new.prompt("deploy with AKIAQ3EGWM5XK7PLT2ZD")])
    query = f"SELECT prompt, capture, redactions FROM {store.USER_PROMPTS} WHERE capture != '' ORDER BY created_at"
    assert client.query(query).result_rows == [("", "metadata", 0)]
    assert set(COLUMNS[store.USER_PROMPTS]) >= {"capture", "redactions"}
