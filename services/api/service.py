"""What each endpoint does, between the HTTP layer and the store: access rules, cursors, usage.

Access: a ``member`` sees only their own interceptions (``initiator:me`` is implied, and naming
anyone else is a 403); ``auditor`` and ``admin`` see everyone's. Models, clients and usage follow
the same visibility.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from aibridge.api import sql
from aibridge.api.errors import BadRequest, Forbidden
from aibridge.api.query import Filters
from aibridge.api.render import Row, rfc3339
from aibridge.api.repository import InterceptionReader
from aibridge.auth import Identity

_TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_write_input_tokens")


def visible_initiators(identity: Identity) -> tuple[str, ...] | None:
    return None if identity.role.sees_everyone else (identity.user_id,)


def resolve(filters: Filters, identity: Identity, reader: InterceptionReader) -> sql.Criteria:
    """Filters as store criteria, with the initiator resolved to user ids and the caller's scope applied."""
    return sql.Criteria(
        initiator_ids=_initiator_ids(filters.initiator, identity, reader),
        provider=filters.provider,
        model=filters.model,
        client=filters.client,
        started_after=filters.started_after,
        started_before=filters.started_before,
    )


def _initiator_ids(initiator: str | None, identity: Identity, reader: InterceptionReader) -> tuple[str, ...] | None:
    yourself = initiator in (None, "me", identity.user_id, identity.username)
    if not identity.role.sees_everyone:
        if not yourself:
            raise Forbidden(
                f"initiator:{initiator} is not you: a member can only see their own interceptions "
                "(an auditor or admin token can see everyone's)"
            )
        return (identity.user_id,)
    if initiator is None:
        return None
    if initiator == "me":
        return (identity.user_id,)
    return reader.initiator_ids(initiator)


def list_interceptions(
    reader: InterceptionReader,
    identity: Identity,
    filters: Filters,
    *,
    limit: int,
    offset: int | None,
    after_id: UUID | None,
) -> dict[str, Any]:
    if after_id is not None and offset is not None:
        raise BadRequest("after_id and offset cannot be used together: page with one or the other")
    # The cursor lookup needs only the caller's scope: it runs while a username is resolved to ids.
    positioned = None
    if after_id is not None:
        scope = visible_initiators(identity)
        positioned = reader.concurrently(lambda: reader.position(after_id, scope))
    criteria = resolve(filters, identity, reader)
    counted = reader.concurrently(lambda: reader.count(criteria))  # independent of the page
    after = None if positioned is None else positioned.result()
    if after_id is not None and after is None:
        raise BadRequest(f"unknown after_id {after_id}: no interception with that id is visible to you")
    results = reader.page(criteria, limit, offset or 0, after)
    return {"count": counted.result(), "results": results}


def usage_summary(
    reader: InterceptionReader, identity: Identity, filters: Filters, group_by: sql.GroupBy
) -> dict[str, Any]:
    criteria = resolve(filters, identity, reader)
    counts, tokens = reader.usage(criteria, group_by)
    rows: dict[str, Row] = {}
    for key, username, interceptions in counts:
        rows[str(key)] = _usage_row(str(key), str(username), group_by) | {"interceptions": int(interceptions)}
    for key, username, *sums in tokens:
        row = rows.setdefault(str(key), _usage_row(str(key), str(username), group_by))
        row.update(zip(_TOKEN_FIELDS, (int(value) for value in sums), strict=True))
    for row in rows.values():
        row["total_tokens"] = sum(row[name] for name in _TOKEN_FIELDS)
    return {
        "group_by": group_by,
        "started_after": rfc3339(filters.started_after),
        "started_before": rfc3339(filters.started_before),
        "results": sorted(rows.values(), key=_usage_order),
    }


def _usage_row(key: str, username: str, group_by: str) -> Row:
    initiator = {"id": key, "username": username} if group_by == "user" else None
    return {"key": key, "initiator": initiator, "interceptions": 0} | dict.fromkeys(_TOKEN_FIELDS, 0)


def _usage_order(row: Row) -> tuple[int, int, str]:
    return (-row["total_tokens"], -row["interceptions"], row["key"])


def facet(
    reader: InterceptionReader, identity: Identity, column: sql.Facet, filters: Filters | None = None
) -> list[str]:
    criteria = resolve(filters or Filters(), identity, reader)
    return reader.facet(column, criteria)
