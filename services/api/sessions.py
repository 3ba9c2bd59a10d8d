"""Sessions and threads: the interceptions of one client-provided session key, grouped into threads.

A **session** is every interception that carries one session key (Claude Code and Codex send one on
every request). A **thread** is one human prompt and the agentic loop it set off: within a session,
the interceptions of one user and one client ordered by ``started_at``, an interception whose turn is
``prompt`` starts a thread and every later one (``tool_result``, or a turn not known) continues it.
Interceptions before the first prompt (the session began before the bridge saw it, or the client's
requests were not classified) form a leading thread with no prompt, named after its first interception.

Threads are computed here, when a session is read, from the stored rows ordered by ``started_at`` —
never from the order the recorder received events in — so duplicates (one row per id is kept), events
out of order across partitions and a recorder restart in the middle of a thread change nothing.

The sessions page reads the ``sessions`` summary (a session's span, user and facets, kept by a view);
the counts and token sums of the page's sessions, and a session's detail, read
``interceptions_by_session`` (one session's rows lie together) and the token usages of those ids.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final
from uuid import UUID

from aibridge import store
from aibridge.api import sql, threads
from aibridge.api.errors import BadRequest, NotFound
from aibridge.api.render import Row, render_child, rfc3339
from aibridge.api.repository import InterceptionReader
from aibridge.events import Turn

TOKEN_FIELDS: Final = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_write_input_tokens")
# Sessions summed per page: each reads its interceptions' ids and token usages.
MAX_PAGE: Final = 200

_SUMMARY: Final = (
    "SELECT session_id, argMax(initiator_id, last_started_at), argMax(initiator_username, last_started_at), "
    "argMax(client, last_started_at), min(first_started_at), max(last_started_at), "
    "groupUniqArrayArray(providers), groupUniqArrayArray(models)"
)
_PAGE: Final = "LIMIT {limit:UInt32} OFFSET {offset:UInt64}"
# Sessions read beyond a page after a cursor, for those that turn out to have been on an earlier page.
_CURSOR_SLACK: Final = 10
# A page's queries each read a few thousand rows and run side by side (count beside page, summaries beside
# lanes): on one thread each they do not contend for the cores (on the 10 M store under load, summaries
# took 5 ms instead of 30 and lanes 7 instead of 35).
_ONE_THREAD: Final = {"max_threads": 1}


@dataclass(frozen=True, slots=True)
class SessionPosition:
    """Where a sessions cursor points: the (last_started_at, session_id) of the last session seen."""

    last_started_at: datetime
    session_id: str


def row_filters(criteria: sql.Criteria) -> tuple[str, dict[str, Any]]:
    """WHERE on summary rows: the user and client are part of each row's key."""
    conditions, parameters = ["session_id != ''"], dict[str, Any]()
    if criteria.initiator_ids is not None:
        conditions.append("initiator_id IN {initiator_ids:Array(String)}")
        parameters["initiator_ids"] = list(criteria.initiator_ids)
    if criteria.client is not None:
        conditions.append("client = {client:String}")
        parameters["client"] = criteria.client
    if criteria.session_id is not None:
        conditions.append("session_id = {session_id:String}")
        parameters["session_id"] = criteria.session_id
    return "WHERE " + " AND ".join(conditions), parameters


def session_conditions(criteria: sql.Criteria) -> tuple[list[str], dict[str, Any]]:
    """Whole-session filters, each a condition on one summary row: a session matches a provider or model when
    one of its interceptions does, and a time range when its span (first to last start) overlaps it, so when
    one of its rows (of the users and client asked) meets each condition."""
    conditions, parameters = list[str](), dict[str, Any]()
    for name, column in (("provider", "providers"), ("model", "models")):
        value = getattr(criteria, name)
        if value is not None:
            conditions.append(f"has({column}, {{{name}:String}})")
            parameters[name] = value
    if criteria.started_after is not None:
        conditions.append("last_started_at >= {started_after:DateTime64(6, 'UTC')}")
        parameters["started_after"] = sql.format_param_time(criteria.started_after)
    if criteria.started_before is not None:
        conditions.append("first_started_at < {started_before:DateTime64(6, 'UTC')}")
        parameters["started_before"] = sql.format_param_time(criteria.started_before)
    return conditions, parameters


def matching_filters(criteria: sql.Criteria, *, whole_rows: bool) -> tuple[str, dict[str, Any]]:
    """WHERE on the summary rows of the sessions that match: each whole-session condition is a
    ``session_id IN`` the sessions with a row meeting it (a set of a few thousand ids, cheaper than grouping
    every session's rows). ``whole_rows``: every row of a matching session is kept (its newest row holds its
    last start); otherwise the first condition is put on the rows themselves (enough to count sessions)."""
    where, parameters = row_filters(criteria)
    conditions, session_parameters = session_conditions(criteria)
    if conditions and not whole_rows:
        where += f" AND {conditions.pop(0)}"
    for condition in conditions:
        where += (
            f" AND session_id IN (SELECT session_id FROM {store.SESSIONS} {row_filters(criteria)[0]} AND {condition})"
        )
    return where, parameters | session_parameters


_BEFORE_CURSOR: Final = "(last_started_at, session_id) < ({after_at:DateTime64(6, 'UTC')}, {after_session:String})"


def keys_statement(criteria: sql.Criteria, limit: int, offset: int, after: SessionPosition | None) -> sql.Statement:
    """The page's (session_id, last_started_at), newest activity first.

    A session's newest summary row holds its last start, so the page is the first row of each matching
    session in last_started_at order (``LIMIT 1 BY``, a partial sort of the ~1 row per session: 10 ms for
    100k sessions). After a cursor, only rows before it are read: a session with a row at or after the
    cursor can then still show up by an older row (an unmerged part); :func:`later_statement` finds those.
    """
    where, parameters = matching_filters(criteria, whole_rows=True)
    parameters |= {"limit": limit, "offset": offset}
    if after is not None:
        where += f" AND {_BEFORE_CURSOR}"
        parameters |= _cursor_parameters(after)
    return sql.Statement(
        f"SELECT session_id, last_started_at FROM {store.SESSIONS} {where} "
        f"ORDER BY last_started_at DESC, session_id DESC LIMIT 1 BY session_id {_PAGE}",
        parameters,
    )


def later_statement(session_ids: Sequence[str], criteria: sql.Criteria, after: SessionPosition) -> sql.Statement:
    """Which of the sessions have a row at or after the cursor (they were on an earlier page): a primary key
    read of the few sessions."""
    where, parameters = row_filters(criteria)
    return sql.Statement(
        f"SELECT DISTINCT session_id FROM {store.SESSIONS} {where} AND session_id IN {{sessions:Array(String)}} "
        f"AND NOT {_BEFORE_CURSOR}",
        parameters | _cursor_parameters(after) | {"sessions": list(session_ids)},
    )


def _cursor_parameters(after: SessionPosition) -> dict[str, Any]:
    return {"after_at": sql.format_param_time(after.last_started_at), "after_session": after.session_id}


def summaries_statement(session_ids: Sequence[str], criteria: sql.Criteria) -> sql.Statement:
    """The sessions' summaries: (id, user, username, client, first start, last start, providers, models)."""
    where, parameters = row_filters(criteria)
    return sql.Statement(
        f"{_SUMMARY} FROM {store.SESSIONS} {where} AND session_id IN {{sessions:Array(String)}} GROUP BY session_id",
        parameters | {"sessions": list(session_ids)},
    )


def count_statement(criteria: sql.Criteria) -> sql.Statement:
    where, parameters = matching_filters(criteria, whole_rows=False)
    return sql.Statement(f"SELECT uniqExact(session_id) FROM {store.SESSIONS} {where}", parameters)


def position_statement(session_id: str, initiator_ids: tuple[str, ...] | None) -> sql.Statement:
    where, parameters = row_filters(sql.Criteria(initiator_ids=initiator_ids))
    return sql.Statement(
        f"SELECT max(last_started_at) FROM {store.SESSIONS} {where} AND session_id = {{session:String}} "
        "HAVING count() > 0",
        parameters | {"session": session_id},
    )


REASONING_COLUMNS: Final = ("interception_id", "id", "provider_response_id", "kind", "text", "metadata", "created_at")


def reasoning_statement(interception_ids: Sequence[UUID]) -> sql.Statement:
    """The reasoning of the interceptions (the table is ordered by interception: one short read each)."""
    return sql.Statement(
        f"SELECT {', '.join(REASONING_COLUMNS)} FROM {store.REASONING} "
        "WHERE interception_id IN {ids:Array(UUID)} ORDER BY interception_id, created_at, id LIMIT 1 BY id",
        {"ids": list(interception_ids)},
    )


def detail_statement(session_id: str, initiator_ids: tuple[str, ...] | None) -> sql.Statement:
    """A session's interceptions in time order, one row per id (its highest version)."""
    scope = "" if initiator_ids is None else " AND initiator_id IN {initiator_ids:Array(String)}"
    parameters: dict[str, Any] = {"session": session_id}
    if initiator_ids is not None:
        parameters["initiator_ids"] = list(initiator_ids)
    return sql.Statement(
        f"SELECT {', '.join(sql.INTERCEPTION_COLUMNS)} FROM {store.INTERCEPTIONS_BY_SESSION} "
        f"WHERE session_id = {{session:String}}{scope} ORDER BY started_at, id, version DESC LIMIT 1 BY id",
        parameters,
    )


def token_statement(session_ids: Sequence[str], lanes: Sequence[Sequence[Any]]) -> sql.Statement:
    """Token sums per session, each usage once. ``lanes`` (rows of :func:`threads.lanes_statement`) locate
    the usages: their users, and the window from the first start (less the clock margin) to the last start
    plus the in-flight margin, in which a usage is created; token usages are ordered by (user, created_at),
    so that is one short read per user."""
    sums = ", ".join(f"sum(usage{index})" for index in range(len(TOKEN_FIELDS)))
    firsts = ", ".join(f"any({name}) AS usage{index}" for index, name in enumerate(TOKEN_FIELDS))
    since = max(min(sql.as_utc(lane[5]) for lane in lanes) - sql.CHILD_CLOCK_MARGIN, sql.EARLIEST)
    until = min(max(sql.as_utc(lane[6]) for lane in lanes) + sql.IN_FLIGHT_MARGIN, sql.LATEST)
    return sql.Statement(
        f"SELECT members.session_id, {sums} FROM (SELECT interception_id, {firsts} FROM {store.TOKEN_USAGES} "
        "WHERE initiator_id IN {initiator_ids:Array(String)} "
        "AND created_at BETWEEN {since:DateTime64(6, 'UTC')} AND {until:DateTime64(6, 'UTC')} "
        "GROUP BY interception_id, id) AS usages "
        f"INNER JOIN (SELECT DISTINCT id, session_id FROM {store.INTERCEPTIONS_BY_SESSION} "
        "WHERE session_id IN {sessions:Array(String)}) AS members ON usages.interception_id = members.id "
        "GROUP BY members.session_id",
        {
            "initiator_ids": sorted({str(lane[1]) for lane in lanes}),
            "sessions": list(session_ids),
            "since": sql.format_param_time(since),
            "until": sql.format_param_time(until),
        },
    )


class SessionReader:
    """Reads sessions through the interception reader (its clients, timeouts, metrics and traces)."""

    def __init__(self, reader: InterceptionReader) -> None:
        self._reader = reader

    def concurrently(self, call: Callable[[], Any]) -> Future[Any]:
        return self._reader.concurrently(call)

    def _query(self, name: str, statement: sql.Statement) -> Sequence[Sequence[Any]]:
        statement.settings = _ONE_THREAD | statement.settings
        return self._reader.query(name, statement)

    def position(self, session_id: str, initiator_ids: tuple[str, ...] | None) -> SessionPosition | None:
        rows = self._query("session_cursor", position_statement(session_id, initiator_ids))
        return SessionPosition(rows[0][0], session_id) if rows else None

    def count(self, criteria: sql.Criteria) -> int:
        if criteria.matches_nothing:
            return 0
        return int(self._query("session_count", count_statement(criteria))[0][0])

    def page(self, criteria: sql.Criteria, limit: int, offset: int, after: SessionPosition | None) -> list[Row]:
        if criteria.matches_nothing:
            return []
        keys = self._keys(criteria, limit, offset, after)
        if not keys:
            return []
        session_ids = [str(row[0]) for row in keys]
        statement = summaries_statement(session_ids, criteria)
        found = self._reader.concurrently(lambda: self._query("session_summaries", statement))
        lanes = self._query("session_lanes", threads.lanes_statement(session_ids, criteria.initiator_ids))
        tokens = self._tokens(token_statement(session_ids, lanes)) if lanes else {}
        by_id = {str(row[0]): row for row in found.result()}
        by_session: dict[str, list[Sequence[Any]]] = {}
        for lane in lanes:
            by_session.setdefault(str(lane[0]), []).append(lane)
        return [
            _session_row(by_id[session_id], by_session.get(session_id, []), tokens.get(session_id, (0, 0, 0, 0)))
            for session_id in session_ids
            if session_id in by_id
        ]

    def _keys(
        self, criteria: sql.Criteria, limit: int, offset: int, after: SessionPosition | None
    ) -> Sequence[Sequence[Any]]:
        if after is None:
            return self._query("sessions", keys_statement(criteria, limit, offset, None))
        fetched = limit + _CURSOR_SLACK
        while True:  # ends: each round fetches more, until fewer sessions than asked are left before the cursor
            candidates = self._query("sessions", keys_statement(criteria, fetched, 0, after))
            if not candidates:
                return []
            ids = [str(row[0]) for row in candidates]
            seen = {str(row[0]) for row in self._query("sessions_seen", later_statement(ids, criteria, after))}
            kept = [row for row in candidates if str(row[0]) not in seen]
            if len(kept) >= limit or len(candidates) < fetched:
                return kept[:limit]
            fetched *= 4

    def detail(self, session_id: str, initiator_ids: tuple[str, ...] | None) -> Row | None:
        rows = self._query("session", detail_statement(session_id, initiator_ids))
        if not rows:
            return None
        ids = [row[0] for row in rows]
        reasoning = self._reader.concurrently(lambda: self._query("reasoning", reasoning_statement(ids)))
        interceptions = self._reader.rendered(rows, with_threads=False)
        by_interception: dict[str, list[Row]] = {}
        for found in reasoning.result():
            item = render_child(dict(zip(REASONING_COLUMNS, found, strict=True)))
            by_interception.setdefault(item["interception_id"], []).append(item)
        for interception in interceptions:  # on each interception (the pages' timeline) and on its thread
            interception["reasoning"] = by_interception.get(interception["id"], [])
        return _session_detail(session_id, interceptions)

    def _tokens(self, statement: sql.Statement) -> dict[str, tuple[int, ...]]:
        return {str(row[0]): tuple(int(value) for value in row[1:]) for row in self._query("session_tokens", statement)}


def _session_row(summary: Sequence[Any], lanes: Sequence[Sequence[Any]], tokens: Sequence[int]) -> Row:
    session_id, initiator_id, username, client, first_at, last_at, providers, models = summary
    return {
        "id": str(session_id),
        "initiator": {"id": str(initiator_id), "username": str(username), "name": "", "avatar_url": ""},
        "client": str(client),
        "providers": sorted(str(value) for value in providers),
        "models": sorted(str(value) for value in models),
        "started_at": rfc3339(first_at),
        "last_started_at": rfc3339(last_at),
        "threads": sum(int(lane[4]) for lane in lanes),
        "interceptions": sum(int(lane[3]) for lane in lanes),
        **dict(zip(TOKEN_FIELDS, tokens, strict=True)),
        "total_tokens": sum(tokens),
    }


def _session_detail(session_id: str, interceptions: list[Row]) -> Row:
    members = [
        threads.Member(row["id"], row["initiator"]["id"], row["client"], row["turn"], _parse(row["started_at"]))
        for row in interceptions
    ]
    threads_of = threads.thread_ids(members)
    by_thread: dict[str, list[Row]] = {}
    for interception in interceptions:
        interception["thread_id"] = threads_of[interception["id"]]
        by_thread.setdefault(interception["thread_id"], []).append(interception)
    rendered = [_thread(thread_id, rows) for thread_id, rows in by_thread.items()]
    rendered.sort(key=lambda thread: (thread["started_at"], thread["id"]))
    first = interceptions[0]
    return {
        "id": session_id,
        "initiator": first["initiator"],
        "client": first["client"],
        "started_at": min(row["started_at"] for row in interceptions),
        "last_started_at": max(row["started_at"] for row in interceptions),
        "interceptions": len(interceptions),
        "threads": rendered,
        **{name: sum(thread[name] for thread in rendered) for name in (*TOKEN_FIELDS, "total_tokens")},
    }


def _thread(thread_id: str, interceptions: list[Row]) -> Row:
    first = interceptions[0]
    prompts = first["user_prompts"] if first["id"] == thread_id and first["turn"] == Turn.PROMPT else []
    sums = {name: sum(usage[name] for row in interceptions for usage in row["token_usages"]) for name in TOKEN_FIELDS}
    ends = [row["ended_at"] for row in interceptions if row["ended_at"] is not None]
    in_flight = len(ends) < len(interceptions)
    return {
        "id": thread_id,
        "initiator": first["initiator"],
        "client": first["client"],
        "prompt": prompts[-1]["prompt"] if prompts else None,
        "started_at": first["started_at"],
        "ended_at": None if in_flight or not ends else max(ends),
        "duration_ms": None if in_flight or not ends else _millis(first["started_at"], max(ends)),
        "interceptions": interceptions,
        "tool_calls": [usage for row in interceptions for usage in row["tool_usages"]],
        "reasoning": [item for row in interceptions for item in row["reasoning"]],
        **sums,
        "total_tokens": sum(sums.values()),
    }


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _millis(start: str, end: str) -> int:
    return round((_parse(end) - _parse(start)).total_seconds() * 1000)


def list_sessions(
    reader: SessionReader,
    criteria: sql.Criteria,
    scope: tuple[str, ...] | None,
    *,
    limit: int,
    offset: int | None,
    after_id: str | None,
) -> dict[str, Any]:
    """A page of sessions and how many match. ``scope``: the users the caller may see (None: everyone)."""
    if after_id is not None and offset is not None:
        raise BadRequest("after_id and offset cannot be used together: page with one or the other")
    counted = reader.concurrently(lambda: reader.count(criteria))  # independent of the page and its cursor
    after = None
    if after_id is not None:
        after = reader.position(after_id, scope)
        if after is None:
            raise BadRequest(f"unknown after_id {after_id!r}: no session with that id is visible to you")
    results = reader.page(criteria, limit, offset or 0, after)
    return {"count": counted.result(), "results": results}


def get_session(reader: SessionReader, session_id: str, scope: tuple[str, ...] | None) -> Row:
    """One session with its threads; a session the caller may not see is not found (as one that does not exist)."""
    if not session_id or len(session_id) > 256:
        raise BadRequest("a session id is 1 to 256 characters")
    detail = reader.detail(session_id, scope)
    if detail is None:
        raise NotFound(f"no session {session_id!r} is visible to you")
    return detail
