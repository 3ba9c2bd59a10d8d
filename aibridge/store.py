"""The ClickHouse store: connection from a URL, the table schema, and its migrations.

One code path for both engines: ``http(s)://user:password@host:8123`` reaches a ClickHouse server and
``chdb:///dir`` (or ``chdb://memory``) the embedded chDB engine, both through clickhouse-connect.
chDB opens one data directory per process, so an embedded process shares one client between
its components (see :func:`connect`).

The recorder is the only writer and applies migrations at start; the API only reads.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import unquote, urlsplit

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DataError, ProgrammingError
from clickhouse_connect.driver.exceptions import Error as ClickHouseDriverError

MIGRATIONS_TABLE = "schema_migrations"

INTERCEPTIONS = "interceptions"
USER_PROMPTS = "user_prompts"
TOKEN_USAGES = "token_usages"
TOOL_USAGES = "tool_usages"
REASONING = "reasoning"  # the model's reasoning per interception (migration 9)
CHILD_TABLES = (USER_PROMPTS, TOKEN_USAGES, TOOL_USAGES)
# Kept by materialized views from interceptions (migration 2); nothing else writes them.
INTERCEPTIONS_BY_INITIATOR = "interceptions_by_initiator"
INITIATORS = "initiators"
# Kept by materialized views from interceptions with a session key (migration 5).
INTERCEPTIONS_BY_SESSION = "interceptions_by_session"
SESSIONS = "sessions"
DERIVED_TABLES = (INTERCEPTIONS_BY_INITIATOR, INITIATORS, INTERCEPTIONS_BY_SESSION, SESSIONS)
# Spending budgets (aibridge.budgets): settings, not records, so retention leaves them alone.
BUDGETS = "budgets"

# Columns every child row carries, copied from the event's interception context so that
# per-user and per-model summaries need no join with the interceptions table.
_CONTEXT_COLUMNS = """
    initiator_id String,
    initiator_username String,
    provider LowCardinality(String),
    model LowCardinality(String),
    client LowCardinality(String),"""


# Query shapes (services/api): the table is read newest first by its key (started_at, id); the
# projections serve one model's interceptions, ``by_id`` the cursor (after_id) lookup, and ``facets``
# the distinct users, models and clients without a scan. (``by_initiator`` served one user's until
# migration 2's interceptions_by_initiator replaced it; migration 3 drops it.)
# ``deduplicate_merge_projection_mode`` is required for projections on a ReplacingMergeTree: merges
# rebuild them from the deduplicated rows.
_KEY_PROJECTION = (
    "PROJECTION {name} (SELECT id, initiator_id, provider, model, client, started_at ORDER BY ({key}, started_at, id))"
)
_FACETS = "initiator_id, initiator_username, provider, model, client"
# Children are fetched for a page of interceptions, knowing their ids, initiators and time window.
# Ordered by (initiator_id, created_at, ...), one user's children in a window lie together (a user's
# page spans hours or days); the by_time projection, ordered by created_at, serves pages that span
# a short time (the newest page, a time range). ClickHouse reads whichever touches fewer granules.
# Every copy of a child row (redelivery) has the same key, so ReplacingMergeTree still collapses them.
_CHILD_SETTINGS = "index_granularity = 1024, deduplicate_merge_projection_mode = 'rebuild'"
_CHILD_RESPONSE_COLUMNS = {
    USER_PROMPTS: "prompt",
    TOKEN_USAGES: "input_tokens, output_tokens, cache_read_input_tokens, cache_write_input_tokens",
    TOOL_USAGES: "call_id, server_url, tool, input, injected, invocation_error",
}


def _by_time(table: str, added: str = "") -> str:
    """The by_time projection of a child table; ``added``: columns added to the table since migration 1."""
    columns = (
        f"interception_id, id, initiator_id, provider_response_id, {_CHILD_RESPONSE_COLUMNS[table]}, metadata, "
        f"created_at{added}"
    )
    return f"PROJECTION by_time (SELECT {columns} ORDER BY created_at)"


# Every column of interceptions (migration 1), for the tables and views derived from it.
_INTERCEPTION_COLUMNS = (
    "id, version, initiator_id, initiator_username, provider, model, client, api_key_id, route, streaming, "
    "user_agent, status, http_status, error, metadata, started_at, ended_at"
)
# The session columns (migration 5) and every column of interceptions since.
_SESSION_COLUMNS = "session_id, turn"
_SESSION_INTERCEPTION_COLUMNS = f"{_INTERCEPTION_COLUMNS}, {_SESSION_COLUMNS}"
_ADD_SESSION_COLUMNS = (
    "ADD COLUMN IF NOT EXISTS session_id String DEFAULT '' COMMENT 'the client''s session key; empty when none', "
    "ADD COLUMN IF NOT EXISTS turn LowCardinality(String) DEFAULT '' COMMENT 'prompt, tool_result or empty'"
)
# One row per (session, user, client) and insert block; merges fold them. Every column is a min, max or
# set union, so a redelivered or replaced (started, then ended) row changes nothing.
_SESSION_SUMMARY = (
    "SELECT session_id, initiator_id, client, anyLast(initiator_username) AS initiator_username, "
    "min(started_at) AS first_started_at, max(started_at) AS last_started_at, "
    "groupUniqArray(provider) AS providers, groupUniqArray(model) AS models "
    f"FROM {INTERCEPTIONS} WHERE session_id != '' GROUP BY session_id, initiator_id, client"
)
_INITIATOR_PAIRS = (
    "SELECT initiator_username, initiator_id, max(started_at) AS last_started_at "
    f"FROM {INTERCEPTIONS} GROUP BY initiator_username, initiator_id"
)


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


MIGRATIONS: list[Migration] = [
    Migration(
        1,
        "interceptions and their prompts, token usages and tool usages",
        (
            f"""CREATE TABLE IF NOT EXISTS {INTERCEPTIONS} (
    id UUID,
    version UInt8 COMMENT '0 from interception.started, 1 from interception.ended; the highest wins',
    {_CONTEXT_COLUMNS.strip()}
    api_key_id String,
    route LowCardinality(String),
    streaming Bool,
    user_agent String,
    status LowCardinality(String) COMMENT 'empty while in flight',
    http_status UInt16,
    error Nullable(String),
    metadata String,
    started_at DateTime64(6, 'UTC'),
    ended_at Nullable(DateTime64(6, 'UTC')),
    INDEX idx_id id TYPE bloom_filter GRANULARITY 1,
    INDEX idx_client client TYPE set(64) GRANULARITY 1,
    {_KEY_PROJECTION.format(name="by_initiator", key="initiator_id")},
    {_KEY_PROJECTION.format(name="by_model", key="model")},
    PROJECTION by_id (SELECT id, started_at, initiator_id ORDER BY id),
    PROJECTION facets (SELECT {_FACETS}, count() GROUP BY {_FACETS})
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(started_at)
ORDER BY (started_at, id)
SETTINGS index_granularity = 1024, deduplicate_merge_projection_mode = 'rebuild'""",
            f"""CREATE TABLE IF NOT EXISTS {USER_PROMPTS} (
    id UUID,
    interception_id UUID,{_CONTEXT_COLUMNS}
    provider_response_id String,
    prompt String,
    metadata String,
    created_at DateTime64(6, 'UTC'),
    {_by_time(USER_PROMPTS)}
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(created_at)
ORDER BY (initiator_id, created_at, interception_id, id)
SETTINGS {_CHILD_SETTINGS}""",
            f"""CREATE TABLE IF NOT EXISTS {TOKEN_USAGES} (
    id UUID,
    interception_id UUID,{_CONTEXT_COLUMNS}
    provider_response_id String,
    input_tokens Int64,
    output_tokens Int64,
    cache_read_input_tokens Int64,
    cache_write_input_tokens Int64,
    metadata String,
    created_at DateTime64(6, 'UTC'),
    {_by_time(TOKEN_USAGES)}
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(created_at)
ORDER BY (initiator_id, created_at, interception_id, id)
SETTINGS {_CHILD_SETTINGS}""",
            f"""CREATE TABLE IF NOT EXISTS {TOOL_USAGES} (
    id UUID,
    interception_id UUID,{_CONTEXT_COLUMNS}
    provider_response_id String,
    call_id String,
    server_url Nullable(String),
    tool String,
    input String,
    injected Bool,
    invocation_error Nullable(String),
    metadata String,
    created_at DateTime64(6, 'UTC'),
    {_by_time(TOOL_USAGES)}
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(created_at)
ORDER BY (initiator_id, created_at, interception_id, id)
SETTINGS {_CHILD_SETTINGS}""",
        ),
    ),
    Migration(
        2,
        "interceptions_by_initiator and initiators, kept by materialized views from interceptions",
        (
            # One user's interceptions in key order with every listed column: a user's page is one
            # contiguous read instead of ~100 granules scattered over interceptions (ordered by time).
            f"""CREATE TABLE IF NOT EXISTS {INTERCEPTIONS_BY_INITIATOR} (
    id UUID,
    version UInt8,
    {_CONTEXT_COLUMNS.strip()}
    api_key_id String,
    route LowCardinality(String),
    streaming Bool,
    user_agent String,
    status LowCardinality(String),
    http_status UInt16,
    error Nullable(String),
    metadata String,
    started_at DateTime64(6, 'UTC'),
    ended_at Nullable(DateTime64(6, 'UTC'))
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(started_at)
ORDER BY (initiator_id, started_at, id)
SETTINGS index_granularity = 1024""",
            # Which ids a username (or id) names. The view groups each insert, so a part holds one row per
            # pair; merges keep the newest. last_started_at (the pair's newest interception) is what
            # retention expires: a pair goes when the last of its interceptions does.
            f"""CREATE TABLE IF NOT EXISTS {INITIATORS} (
    initiator_username String,
    initiator_id String,
    last_started_at DateTime64(6, 'UTC')
) ENGINE = ReplacingMergeTree(last_started_at)
ORDER BY (initiator_username, initiator_id)""",
            f"""CREATE MATERIALIZED VIEW IF NOT EXISTS {INTERCEPTIONS_BY_INITIATOR}_mv TO {INTERCEPTIONS_BY_INITIATOR}
AS SELECT {_INTERCEPTION_COLUMNS} FROM {INTERCEPTIONS}""",
            f"CREATE MATERIALIZED VIEW IF NOT EXISTS {INITIATORS}_mv TO {INITIATORS} AS {_INITIATOR_PAIRS}",
            # Backfill what was stored before the views existed. A row inserted between a view's creation
            # and this (none: the recorder migrates before it consumes) is only duplicated, which both
            # tables absorb like a redelivery.
            f"INSERT INTO {INTERCEPTIONS_BY_INITIATOR} ({_INTERCEPTION_COLUMNS}) "
            f"SELECT {_INTERCEPTION_COLUMNS} FROM {INTERCEPTIONS}",
            f"INSERT INTO {INITIATORS} {_INITIATOR_PAIRS}",
        ),
    ),
    Migration(
        3,
        "drop the by_initiator projection of interceptions (interceptions_by_initiator serves one user's reads)",
        # Every read limited to users goes to interceptions_by_initiator now; the projection only cost
        # disk (236 MiB of 1.59 GiB on the 10 M store) and insert time.
        (f"ALTER TABLE {INTERCEPTIONS} DROP PROJECTION IF EXISTS by_initiator",),
    ),
    Migration(
        4,
        "the capture mode and redaction count of prompts and tool usages",
        # Rows stored before keep the defaults: capture '' (not known), 0 redactions.
        tuple(
            f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column}"
            for table in (USER_PROMPTS, TOOL_USAGES)
            for column in ("capture LowCardinality(String) DEFAULT ''", "redactions UInt32 DEFAULT 0")
        ),
    ),
    Migration(
        5,
        "session key and turn of interceptions; interceptions_by_session and sessions, kept by views",
        (
            # Rows stored before keep '' (no session, turn not known).
            f"ALTER TABLE {INTERCEPTIONS} {_ADD_SESSION_COLUMNS}",
            f"ALTER TABLE {INTERCEPTIONS_BY_INITIATOR} {_ADD_SESSION_COLUMNS}",
            # The view names its columns: recreated to copy the new ones. The recorder migrates before it
            # consumes, so no insert falls between the two statements.
            f"DROP VIEW IF EXISTS {INTERCEPTIONS_BY_INITIATOR}_mv",
            f"""CREATE MATERIALIZED VIEW IF NOT EXISTS {INTERCEPTIONS_BY_INITIATOR}_mv TO {INTERCEPTIONS_BY_INITIATOR}
AS SELECT {_SESSION_INTERCEPTION_COLUMNS} FROM {INTERCEPTIONS}""",
            # One session's interceptions in time order: a session's detail and its threads are one
            # contiguous read. Both versions of a row carry the session key, so the ended one replaces
            # the started one here as in interceptions.
            f"""CREATE TABLE IF NOT EXISTS {INTERCEPTIONS_BY_SESSION} (
    id UUID,
    version UInt8,
    {_CONTEXT_COLUMNS.strip()}
    api_key_id String,
    route LowCardinality(String),
    streaming Bool,
    user_agent String,
    status LowCardinality(String),
    http_status UInt16,
    error Nullable(String),
    metadata String,
    started_at DateTime64(6, 'UTC'),
    ended_at Nullable(DateTime64(6, 'UTC')),
    session_id String,
    turn LowCardinality(String)
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(started_at)
ORDER BY (session_id, started_at, id)
SETTINGS index_granularity = 1024""",
            f"""CREATE MATERIALIZED VIEW IF NOT EXISTS {INTERCEPTIONS_BY_SESSION}_mv TO {INTERCEPTIONS_BY_SESSION}
AS SELECT {_SESSION_INTERCEPTION_COLUMNS} FROM {INTERCEPTIONS} WHERE session_id != ''""",
            # The sessions page: a session's span, user and facets without reading its interceptions.
            f"""CREATE TABLE IF NOT EXISTS {SESSIONS} (
    session_id String,
    initiator_id String,
    client LowCardinality(String),
    initiator_username SimpleAggregateFunction(anyLast, String),
    first_started_at SimpleAggregateFunction(min, DateTime64(6, 'UTC')),
    last_started_at SimpleAggregateFunction(max, DateTime64(6, 'UTC')),
    providers SimpleAggregateFunction(groupUniqArrayArray, Array(String)),
    models SimpleAggregateFunction(groupUniqArrayArray, Array(String))
) ENGINE = AggregatingMergeTree
ORDER BY (session_id, initiator_id, client)""",
            f"CREATE MATERIALIZED VIEW IF NOT EXISTS {SESSIONS}_mv TO {SESSIONS} AS {_SESSION_SUMMARY}",
        ),
    ),
    Migration(
        6,
        "the cost of each token usage, priced when recorded",
        (
            # NULL: the model had no price, or the row was recorded before this migration. Decimal(38, 12)
            # holds every cost exactly (prices have at most 6 decimals) and its sums are exact.
            f"ALTER TABLE {TOKEN_USAGES} ADD COLUMN IF NOT EXISTS cost Nullable(Decimal(38, 12)) "
            "COMMENT 'USD at the prices known when recorded; NULL when the model has no price'",
            # The page's children are read from the by_time projection: it must hold the new column too.
            f"ALTER TABLE {TOKEN_USAGES} DROP PROJECTION IF EXISTS by_time",
            f"ALTER TABLE {TOKEN_USAGES} ADD {_by_time(TOKEN_USAGES, ', cost')}",
            f"ALTER TABLE {TOKEN_USAGES} MATERIALIZE PROJECTION by_time SETTINGS mutations_sync = 1",
        ),
    ),
    Migration(
        8,
        "spending budgets per user or group and period (the newest version of a row wins)",
        (
            f"""CREATE TABLE IF NOT EXISTS {BUDGETS} (
    scope LowCardinality(String) COMMENT 'user or group',
    name String COMMENT 'a user id or username, or a group name',
    period LowCardinality(String) COMMENT 'day or month, in UTC',
    limit_usd Decimal(38, 12),
    warn Decimal(9, 6) COMMENT 'the share of the limit whose spending warns, above 0 and at most 1',
    deleted UInt8,
    version UInt64 COMMENT 'microseconds since 1970 of the change: the newest wins',
    updated_at DateTime64(6, 'UTC'),
    updated_by String
) ENGINE = ReplacingMergeTree(version, deleted)
ORDER BY (scope, name, period)""",
        ),
    ),
    Migration(
        9,
        "the model's reasoning (thinking blocks, reasoning summaries, reasoning_content) of interceptions",
        (
            # Read by interception (a session's detail shows each interception's reasoning), so keyed by it.
            f"""CREATE TABLE IF NOT EXISTS {REASONING} (
    id UUID,
    interception_id UUID,{_CONTEXT_COLUMNS}
    provider_response_id String,
    kind LowCardinality(String) COMMENT 'thinking, summary, reasoning_content, redacted or encrypted',
    text String COMMENT 'empty with capture metadata and for redacted and encrypted',
    capture LowCardinality(String),
    redactions UInt32,
    metadata String,
    created_at DateTime64(6, 'UTC')
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(created_at)
ORDER BY (interception_id, created_at, id)
SETTINGS index_granularity = 1024""",
        ),
    ),
    Migration(
        10,
        "the MCP server's name and the duration of injected tool calls",
        (
            # NULL for the client's own tools, calls the bridge did not run, and rows from before this migration.
            f"ALTER TABLE {TOOL_USAGES} ADD COLUMN IF NOT EXISTS server_name Nullable(String) "
            "COMMENT 'the MCP server (its name in the servers file) that ran an injected call'",
            f"ALTER TABLE {TOOL_USAGES} ADD COLUMN IF NOT EXISTS duration_ms Nullable(Float64) "
            "COMMENT 'how long the bridge took to run an injected call'",
            # The page's children are read from the by_time projection: it must hold the new columns too.
            f"ALTER TABLE {TOOL_USAGES} DROP PROJECTION IF EXISTS by_time",
            f"ALTER TABLE {TOOL_USAGES} ADD {_by_time(TOOL_USAGES, ', server_name, duration_ms')}",
            f"ALTER TABLE {TOOL_USAGES} MATERIALIZE PROJECTION by_time SETTINGS mutations_sync = 1",
        ),
    ),
]


class StoreError(Exception):
    """The store did not do what was asked. Driver errors become one of the two subclasses in
    :func:`insert` (the one place that maps them)::

        StoreError
        ├── StoreUnavailable   transient: the same insert may succeed later (connection, timeout, too many
        │                      parts, memory, and any error not known to be about the data)
        └── StoreRejected      permanent: the store refuses these rows' data (a value the column cannot
                               take, a violated constraint, columns that do not match); every retry fails
    """


class StoreUnavailable(StoreError):
    """Retry later: nothing says the rows themselves are at fault."""


class StoreRejected(StoreError):
    """The rows' data is refused; retrying the same rows fails the same way."""


# ClickHouse error codes that are about the data inserted or the columns it is inserted into. Any other
# code (TOO_MANY_PARTS 252, MEMORY_LIMIT_EXCEEDED 241, TIMEOUT_EXCEEDED 159, NETWORK_ERROR 210, an
# UNKNOWN_TABLE 60 while a table is detached, …) is transient: unknown errors are retried, never dropped.
PERMANENT_ERROR_CODES: Final = frozenset({
    6,  # CANNOT_PARSE_TEXT
    8,  # THERE_IS_NO_COLUMN
    10,  # NOT_FOUND_COLUMN_IN_BLOCK
    16,  # NO_SUCH_COLUMN_IN_TABLE
    26,  # CANNOT_PARSE_QUOTED_STRING
    27,  # CANNOT_PARSE_INPUT_ASSERTION_FAILED
    38,  # CANNOT_PARSE_DATE
    41,  # CANNOT_PARSE_DATETIME
    43,  # ILLEGAL_TYPE_OF_ARGUMENT
    44,  # ILLEGAL_COLUMN
    53,  # TYPE_MISMATCH
    69,  # ARGUMENT_OUT_OF_BOUND
    70,  # CANNOT_CONVERT_TYPE
    72,  # CANNOT_PARSE_NUMBER
    117,  # INCORRECT_DATA
    131,  # TOO_LARGE_STRING_SIZE
    321,  # VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
    349,  # CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN
    395,  # FUNCTION_THROW_IF_VALUE_IS_NON_ZERO
    469,  # VIOLATED_CONSTRAINT
    691,  # UNKNOWN_ELEMENT_OF_ENUM
})  # fmt: skip
# Raised by the driver while it converts rows to the column types, before anything is sent.
_CONVERSION_ERRORS: Final = (DataError, ProgrammingError, ValueError, TypeError, OverflowError, struct.error)


def insert(client: Client, table: str, rows: Sequence[Sequence[Any]], column_names: Sequence[str]) -> None:
    """Insert ``rows`` into ``table``; raise :class:`StoreRejected` or :class:`StoreUnavailable` if not stored."""
    try:
        client.insert(table, rows, column_names=column_names)
    except Exception as exc:  # the driver also leaks socket and conversion errors; all mean "not stored"
        raise classify(exc, f"insert into {table} failed") from exc


def classify(exc: Exception, context: str) -> StoreError:
    """The store error that ``exc``, raised by the driver, means: permanent only when it is about the data."""
    kind = StoreRejected if is_permanent(exc) else StoreUnavailable
    return kind(f"{context}: {_describe(exc)}")


def is_permanent(exc: Exception) -> bool:
    if isinstance(exc, _CONVERSION_ERRORS):
        return True
    return isinstance(exc, ClickHouseDriverError) and exc.code in PERMANENT_ERROR_CODES


def _describe(exc: BaseException) -> str:
    """The driver's first line; a conversion error's cause too (its own text is often just "error")."""
    text = _first_line(exc)
    if not isinstance(exc, ClickHouseDriverError):
        text = f"{type(exc).__name__}: {text}"
    cause = exc.__cause__
    if cause is not None and _first_line(cause) not in text:
        text = f"{text} ({type(cause).__name__}: {_first_line(cause)})"
    return text


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:500]


_embedded_lock = threading.Lock()
_embedded_clients: dict[tuple[str, str], Client] = {}


def connect(url: str, database: str, *, create_database: bool = False, **options: Any) -> Client:
    """Return a client for ``database`` at ``url``. Embedded clients are shared per process.

    ``options`` (``StoreSettings.clickhouse_options``: username, password, ca_cert, client_cert,
    client_cert_key) go to clickhouse-connect for a server and win over credentials in the URL.
    """
    parts = urlsplit(url)
    if parts.scheme == "chdb":
        if options:
            raise ValueError(f"{', '.join(sorted(options))} apply to a ClickHouse server, not the embedded engine")
        return _connect_embedded(url, database, create_database)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"unsupported ClickHouse URL scheme {parts.scheme!r}: use http(s):// or chdb://")
    common: dict[str, Any] = {
        "host": parts.hostname or "localhost",
        "port": parts.port or (8443 if parts.scheme == "https" else 8123),
        "username": unquote(parts.username or "default"),
        "password": unquote(parts.password or ""),
        "secure": parts.scheme == "https",
        "connect_timeout": 5,
        "send_receive_timeout": 60,
        "autogenerate_session_id": False,
        **options,
    }
    if create_database:
        clickhouse_connect.get_client(**common).command(f"CREATE DATABASE IF NOT EXISTS {database}")
    return clickhouse_connect.get_client(database=database, **common)


def _connect_embedded(url: str, database: str, create_database: bool) -> Client:
    with _embedded_lock:
        client = _embedded_clients.get((url, database))
        if client is None:
            if create_database:
                clickhouse_connect.get_client(dsn=url).command(f"CREATE DATABASE IF NOT EXISTS {database}")
            client = clickhouse_connect.get_client(dsn=url, database=database)
            _embedded_clients[(url, database)] = client
        return client


def applied_versions(client: Client) -> set[int]:
    client.command(
        f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (version UInt32, description String, "
        "applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) ENGINE = ReplacingMergeTree ORDER BY version"
    )
    return {int(row[0]) for row in client.query(f"SELECT version FROM {MIGRATIONS_TABLE}").result_rows}


def migrate(client: Client) -> list[int]:
    """Apply every migration not yet recorded; return the versions applied now."""
    done = applied_versions(client)
    applied = []
    for migration in MIGRATIONS:
        if migration.version in done:
            continue
        for statement in migration.statements:
            client.command(statement)
        client.insert(
            MIGRATIONS_TABLE,
            [[migration.version, migration.description]],
            column_names=["version", "description"],
        )
        applied.append(migration.version)
    return applied
