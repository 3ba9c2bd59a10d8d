"""What each endpoint does, between the HTTP layer and the store: access rules, cursors, usage.

Access: a ``member`` sees only their own interceptions (``initiator:me`` is implied, and naming
anyone else is a 403); ``auditor`` and ``admin`` see everyone's. Models, clients and usage follow
the same visibility.
"""

from __future__ import annotations

import dataclasses
import itertools
import typing
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final
from uuid import UUID

from aibridge.api import sql, threads
from aibridge.api.errors import BadRequest, Forbidden
from aibridge.api.query import Filters
from aibridge.api.render import Row, rfc3339
from aibridge.api.repository import InterceptionReader
from aibridge.auth import Identity
from aibridge.groups import NO_GROUP, GroupMap
from aibridge.pricing import PriceTable, format_cost

GROUP_BY_KEYS: tuple[str, ...] = typing.get_args(sql.GroupBy)
_TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_write_input_tokens")


def visible_initiators(identity: Identity) -> tuple[str, ...] | None:
    return None if identity.role.sees_everyone else (identity.user_id,)


def resolve(filters: Filters, identity: Identity, reader: InterceptionReader) -> sql.Criteria:
    """Filters as store criteria, with the initiator resolved to user ids and the caller's scope applied."""
    criteria = sql.Criteria(
        initiator_ids=_initiator_ids(filters.initiator, identity, reader),
        provider=filters.provider,
        model=filters.model,
        client=filters.client,
        started_after=filters.started_after,
        started_before=filters.started_before,
        session_id=filters.session_id,
    )
    if filters.thread_id is None:
        return criteria
    return _within_thread(criteria, reader.thread_span(_thread_id(filters.thread_id), visible_initiators(identity)))


def _thread_id(value: str) -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise BadRequest(f"thread_id:{value} is not an interception id (a UUID)") from None


NOTHING: Final = sql.Criteria(initiator_ids=())


def _within_thread(criteria: sql.Criteria, span: threads.Span | None) -> sql.Criteria:
    """The criteria narrowed to one thread: its session and lane, from its start until the lane's next prompt."""
    if span is None:  # no such thread visible to the caller
        return NOTHING
    if criteria.session_id not in (None, span.session_id) or criteria.client not in (None, span.client):
        return NOTHING
    if criteria.initiator_ids is not None and span.initiator_id not in criteria.initiator_ids:
        return NOTHING
    after = max(moment for moment in (criteria.started_after, span.started_at) if moment is not None)
    ends = [moment for moment in (criteria.started_before, span.next_prompt_at) if moment is not None]
    return dataclasses.replace(
        criteria,
        initiator_ids=(span.initiator_id,),
        client=span.client,
        session_id=span.session_id,
        started_after=after,
        started_before=min(ends) if ends else None,
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


def usage_report(
    reader: InterceptionReader,
    identity: Identity,
    filters: Filters,
    group_by: tuple[sql.GroupBy, ...],
    spend: Spend,
    *,
    unpriced: bool = False,
) -> dict[str, Any]:
    return {
        "group_by": ",".join(group_by),
        "started_after": rfc3339(filters.started_after),
        "started_before": rfc3339(filters.started_before),
        "prices_checked": spend.prices.checked,
        "results": usage_summary(reader, identity, filters, group_by, spend.groups),
        "unpriced_models": unpriced_models(reader, identity, filters) if unpriced else None,
    }


def parse_group_by(text: str) -> tuple[sql.GroupBy, ...]:
    """``user,model`` as keys; a 400 names an unknown or repeated key."""
    keys = [key.strip() for key in text.split(",")]
    for key in keys:
        if key not in GROUP_BY_KEYS:
            raise BadRequest(f"group_by={text}: unknown key {key!r}: use one or more of {', '.join(GROUP_BY_KEYS)}")
    if len(set(keys)) < len(keys):
        raise BadRequest(f"group_by={text}: a key is given twice")
    return tuple(keys)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Spend:
    """What the usage report needs beyond the store: the prices (for their date) and group membership."""

    prices: PriceTable
    groups: GroupMap


def usage_summary(
    reader: InterceptionReader,
    identity: Identity,
    filters: Filters,
    group_by: tuple[sql.GroupBy, ...],
    groups: GroupMap,
) -> list[Row]:
    """Usage rows by ``group_by``; a user in several groups counts in each (see :mod:`aibridge.groups`)."""
    criteria = resolve(filters, identity, reader)
    counts, tokens = reader.usage(criteria, group_by)
    width = len(group_by)
    rows: dict[tuple[str, ...], Row] = {}
    for *keys, username, interceptions in counts:
        for row in _rows_for(rows, group_by, keys, str(username), groups):
            row["interceptions"] += int(interceptions)
    for *keys, username, input_, output, cache_read, cache_write, cost, priced, unpriced in tokens:
        sums = (input_, output, cache_read, cache_write)
        for row in _rows_for(rows, group_by, keys[:width], str(username), groups):
            for name, value in zip(_TOKEN_FIELDS, sums, strict=True):
                row[name] += int(value)
            if priced:
                row["cost"] = (row["cost"] or Decimal(0)) + cost
            row["unpriced_interceptions"] += int(unpriced)
    for row in rows.values():
        row["total_tokens"] = sum(row[name] for name in _TOKEN_FIELDS)
        row["cost"] = format_cost(row["cost"])
    return sorted(rows.values(), key=_usage_order)


def _rows_for(
    rows: dict[tuple[str, ...], Row],
    group_by: tuple[sql.GroupBy, ...],
    keys: list[Any],
    username: str,
    groups: GroupMap,
) -> list[Row]:
    """The result rows one store row adds to: one per group of its user when grouped by group."""
    values = [str(key) for key in keys]
    choices: list[list[str]] = [[value] for value in values]
    if "group" in group_by:
        user_id = values[group_by.index("group")]
        choices[group_by.index("group")] = list(groups.groups_of(user_id, username)) or [NO_GROUP]
    found = []
    for combination in itertools.product(*choices):
        row = rows.get(combination)
        if row is None:
            row = rows[combination] = _usage_row(group_by, combination, username)
        found.append(row)
    return found


def _usage_row(group_by: tuple[sql.GroupBy, ...], values: tuple[str, ...], username: str) -> Row:
    keys = dict(zip(group_by, values, strict=True))
    initiator = {"id": keys["user"], "username": username} if "user" in keys else None
    return {
        "key": "|".join(values),
        "keys": keys,
        "initiator": initiator,
        "interceptions": 0,
        **dict.fromkeys(_TOKEN_FIELDS, 0),
        "cost": None,
        "unpriced_interceptions": 0,
    }


def _usage_order(row: Row) -> tuple[int, int, str]:
    return (-row["total_tokens"], -row["interceptions"], row["key"])


def unpriced_models(reader: InterceptionReader, identity: Identity, filters: Filters) -> list[Row]:
    rows = reader.unpriced_models(resolve(filters, identity, reader))
    return [
        {"provider": str(provider), "model": str(model), "token_usages": int(usages), "interceptions": int(n)}
        for provider, model, usages, n in rows
    ]


def facet(
    reader: InterceptionReader, identity: Identity, column: sql.Facet, filters: Filters | None = None
) -> list[str]:
    criteria = resolve(filters or Filters(), identity, reader)
    return reader.facet(column, criteria)
