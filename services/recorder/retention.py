"""Retention: a ClickHouse TTL on every table, from ``AIBRIDGE_RETENTION`` (0 keeps data forever).

Interceptions expire by ``started_at``; their prompts, token usages, tool usages and reasoning by ``created_at``
(the event's time). A child event happens during its interception, so a child row never expires
before its interception and follows it within the interception's duration (seconds to minutes).
Child events carry no ``started_at`` and a TTL cannot look another table up, so this is the closest
clean rule. The copies kept by materialized views follow their source: ``interceptions_by_initiator``
by ``started_at`` like ``interceptions``, and a pair in ``initiators`` by its newest interception's
``last_started_at`` (so a username resolves as long as one of its interceptions is kept). The TTL is
changed only when it differs from the table's, because ``MODIFY TTL`` also rewrites (materializes) the
TTL of existing parts.
"""

from __future__ import annotations

import logging
import re
from typing import Final

from clickhouse_connect.driver.client import Client

from aibridge import store

log = logging.getLogger("aibridge.recorder")

TTL_COLUMNS: Final[dict[str, str]] = {
    store.INTERCEPTIONS: "started_at",
    store.USER_PROMPTS: "created_at",
    store.TOKEN_USAGES: "created_at",
    store.TOOL_USAGES: "created_at",
    store.REASONING: "created_at",
    store.INTERCEPTIONS_BY_INITIATOR: "started_at",
    store.INITIATORS: "last_started_at",
    store.INTERCEPTIONS_BY_SESSION: "started_at",
    store.SESSIONS: "last_started_at",
}

# ClickHouse prints a table's TTL in ``engine_full`` after the ORDER BY/SAMPLE clauses and before SETTINGS.
_TTL_CLAUSE: Final = re.compile(r"\sTTL\s+(.+?)(?:\s+SETTINGS\s|$)")


def ttl_expression(column: str, seconds: int) -> str:
    """The TTL as ClickHouse normalizes it, so it compares equal to what ``system.tables`` shows."""
    return f"toDateTime({column}) + toIntervalSecond({seconds})"


def current_ttl(client: Client, table: str) -> str | None:
    """The table's TTL expression as ClickHouse prints it, or None when it has none."""
    result = client.query(
        "SELECT engine_full FROM system.tables WHERE database = currentDatabase() AND name = {table:String}",
        parameters={"table": table},
    )
    if not result.result_rows:
        raise LookupError(f"table {table} does not exist; run the migrations first")
    match = _TTL_CLAUSE.search(str(result.result_rows[0][0]))
    return match.group(1).strip() if match else None


def apply_retention(client: Client, seconds: int) -> dict[str, str]:
    """Give every table the TTL of ``seconds`` (None for 0) where it differs; return what changed."""
    changed: dict[str, str] = {}
    for table, column in TTL_COLUMNS.items():
        wanted = ttl_expression(column, seconds) if seconds > 0 else None
        if current_ttl(client, table) == wanted:
            continue
        if wanted is None:
            client.command(f"ALTER TABLE {table} REMOVE TTL")
        else:
            client.command(f"ALTER TABLE {table} MODIFY TTL {wanted}")
        changed[table] = wanted or "kept forever"
        log.info("retention of %s is now %s", table, changed[table])
    return changed
