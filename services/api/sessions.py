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

from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from aibridge import store
from aibridge.api import sql
from aibridge.api.errors import BadRequest, NotFound
from aibridge.api.render import Row, rfc3339
from aibridge.api.repository import InterceptionReader
from aibridge.events import Turn

TOKEN_FIELDS: Final = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_write_input_tokens")
# Sessions summed per page: each reads its interceptions' ids and token usages.
MAX_PAGE: Final = 200

_SUMMARY: Final = (
    "SELECT session_id, argMax(initiator_id, last) AS initiator, argMax(username, last) AS name, "
    "argMax(client, last) AS newest_client, min(first) AS first_at, max(last) AS last_at, "
    "groupUniqArrayArray(providers_) AS all_providers, groupUniqArrayArray(models_) AS all_models "
    "FROM (SELECT session_id, initiator_id, client, anyLast(initiator_username) AS username, "
    "min(first_started_at) AS first, max(last_started_at) AS last, groupUniqArrayArray(providers) AS providers_, "
    f"groupUniqArrayArray(models) AS models_ FROM {store.SESSIONS} {{where}} "
    "GROUP BY session_id, initiator_id, client) GROUP BY session_id"
)
_NEWEST: Final = "ORDER BY last_at DESC, session_id DESC"


@dataclass(frozen=True, slots=True)
class SessionPosition:
    """Where a sessions cursor points: the (last_started_at, session_id) of the last session seen."""

    last_started_at: datetime
    session_id: str


def summary_filters(criteria: sql.Criteria) -> tuple[str, str, dict[str, Any]]:
    """(WHERE on summary rows, HAVING on sessions, parameters). A session matches a provider or model when
    any of its interceptions does, and a time range when its span (first to last start) overlaps it."""
    conditions, having = ["session_id != ''"], ["1"]
    parameters: dict[str, Any] = {}
    if criteria.initiator_ids is not None:
        conditions.append("initiator_id IN {initiator_ids:Array(String)}")
        parameters["initiator_ids"] = list(criteria.initiator_ids)
    if criteria.client is not None:
        conditions.append("client = {client:String}")
        parameters["client"] = criteria.client
    for name, column in (("provider", "all_providers"), ("model", "all_models")):
        value = getattr(criteria, name)
        if value is not None:
            having.append(f"has({column}, {{{name}:String}})")
            parameters[name] = value
    if criteria.started_after is not None:
        having.append("last_at >= {started_after:DateTime64(6, 'UTC')}")
        parameters["started_after"] = sql.format_param_time(criteria.started_after)
    if criteria.started_before is not None:
        having.append("first_at < {started_before:DateTime64(6, 'UTC')}")
        parameters["started_before"] = sql.format_param_time(criteria.started_before)
    return "WHERE " + " AND ".join(conditions), " AND ".join(having), parameters


def page_statement(criteria: sql.Criteria, limit: int, offset: int, after: SessionPosition | None) -> sql.Statement:
    """The page's sessions, newest activity first."""
    where, having, parameters = summary_filters(criteria)
    if after is not None:
        having += (
            " AND (last_at < {after_at:DateTime64(6, 'UTC')}"
            " OR (last_at = {after_at:DateTime64(6, 'UTC')} AND session_id < {after_session:String}))"
        )
        parameters |= {"after_at": sql.format_param_time(after.last_started_at), "after_session": after.session_id}
    return sql.Statement(
        f"{_SUMMARY.format(where=where)} HAVING {having} {_NEWEST} LIMIT {{limit:UInt32}} OFFSET {{offset:UInt64}}",
        parameters | {"limit": limit, "offset": offset},
    )


def count_statement(criteria: sql.Criteria) -> sql.Statement:
    where, having, parameters = summary_filters(criteria)
    return sql.Statement(f"SELECT count() FROM ({_SUMMARY.format(where=where)} HAVING {having})", parameters)


def position_statement(session_id: str, initiator_ids: tuple[str, ...] | None) -> sql.Statement:
    where, _, parameters = summary_filters(sql.Criteria(initiator_ids=initiator_ids))
    return sql.Statement(
        f"SELECT max(last_started_at) FROM {store.SESSIONS} {where} AND session_id = {{session:String}} "
        "HAVING count() > 0",
        parameters | {"session": session_id},
    )


MEMBER_COLUMNS: Final = ("id", "session_id", "initiator_id", "client", "turn", "started_at")


def members_statement(session_ids: Sequence[str], initiator_ids: tuple[str, ...] | None) -> sql.Statement:
    """Each interception of the sessions once (its highest version), for counting threads and tokens."""
    scope = "" if initiator_ids is None else " AND initiator_id IN {initiator_ids:Array(String)}"
    parameters: dict[str, Any] = {"sessions": list(session_ids)}
    if initiator_ids is not None:
        parameters["initiator_ids"] = list(initiator_ids)
    return sql.Statement(
        f"SELECT {', '.join(MEMBER_COLUMNS)} FROM {store.INTERCEPTIONS_BY_SESSION} "
        f"WHERE session_id IN {{sessions:Array(String)}}{scope} ORDER BY session_id, started_at, id, version DESC "
        "LIMIT 1 BY id",
        parameters,
    )


def detail_statement(session_id: str, initiator_ids: tuple[str, ...] | None) -> sql.Statement:
    """A session's interceptions in time order, one row per id (its highest version), with its turn."""
    scope = "" if initiator_ids is None else " AND initiator_id IN {initiator_ids:Array(String)}"
    parameters: dict[str, Any] = {"session": session_id}
    if initiator_ids is not None:
        parameters["initiator_ids"] = list(initiator_ids)
    return sql.Statement(
        f"SELECT {', '.join(sql.INTERCEPTION_COLUMNS)}, turn FROM {store.INTERCEPTIONS_BY_SESSION} "
        f"WHERE session_id = {{session:String}}{scope} ORDER BY started_at, id, version DESC LIMIT 1 BY id",
        parameters,
    )


def token_statement(session_ids: Sequence[str], since: datetime, until: datetime) -> sql.Statement:
    """Token sums per interception of the sessions, each usage once. A usage is created while its interception
    runs, so between the sessions' first start (less the clock margin) and their last start plus the
    in-flight margin; the window lets ClickHouse read the by_time projection of that span only."""
    sums = ", ".join(f"sum(usage{index})" for index in range(len(TOKEN_FIELDS)))
    firsts = ", ".join(f"any({name}) AS usage{index}" for index, name in enumerate(TOKEN_FIELDS))
    since = max(sql.as_utc(since) - sql.CHILD_CLOCK_MARGIN, sql.EARLIEST)
    until = min(sql.as_utc(until) + sql.IN_FLIGHT_MARGIN, sql.LATEST)
    return sql.Statement(
        f"SELECT interception_id, {sums} FROM (SELECT interception_id, {firsts} FROM {store.TOKEN_USAGES} "
        "WHERE created_at BETWEEN {since:DateTime64(6, 'UTC')} AND {until:DateTime64(6, 'UTC')} "
        f"AND interception_id IN (SELECT id FROM {store.INTERCEPTIONS_BY_SESSION} "
        "WHERE session_id IN {sessions:Array(String)}) GROUP BY interception_id, id) GROUP BY interception_id",
        {"sessions": list(session_ids), "since": sql.format_param_time(since), "until": sql.format_param_time(until)},
    )


@dataclass(frozen=True, slots=True)
class Member:
    """What decides an interception's thread."""

    id: str
    initiator_id: str
    client: str
    turn: str
    started_at: datetime


def thread_ids(members: Iterable[Member]) -> dict[str, str]:
    """Each interception's thread id: the id of the newest ``prompt`` interception of the same user and client
    at or before it (ordered by started_at, then id), else the id of the first interception before any prompt."""
    ordered = sorted(members, key=lambda member: (member.started_at, member.id))
    current: dict[tuple[str, str], str] = {}
    threads: dict[str, str] = {}
    for member in ordered:
        lane = (member.initiator_id, member.client)
        if member.turn == Turn.PROMPT or lane not in current:
            current[lane] = member.id
        threads[member.id] = current[lane]
    return threads


def _members(rows: Iterable[Sequence[Any]]) -> list[Member]:
    return [Member(str(row[0]), str(row[2]), str(row[3]), str(row[4]), sql.as_utc(row[5])) for row in rows]


class SessionReader:
    """Reads sessions through the interception reader (its clients, timeouts, metrics and traces)."""

    def __init__(self, reader: InterceptionReader) -> None:
        self._reader = reader

    def concurrently(self, call: Callable[[], Any]) -> Future[Any]:
        return self._reader.concurrently(call)

    def position(self, session_id: str, initiator_ids: tuple[str, ...] | None) -> SessionPosition | None:
        rows = self._reader.query("session_cursor", position_statement(session_id, initiator_ids))
        return SessionPosition(rows[0][0], session_id) if rows else None

    def count(self, criteria: sql.Criteria) -> int:
        if criteria.matches_nothing:
            return 0
        return int(self._reader.query("session_count", count_statement(criteria))[0][0])

    def page(self, criteria: sql.Criteria, limit: int, offset: int, after: SessionPosition | None) -> list[Row]:
        if criteria.matches_nothing:
            return []
        summaries = self._reader.query("sessions", page_statement(criteria, limit, offset, after))
        if not summaries:
            return []
        session_ids = [str(row[0]) for row in summaries]
        statement = members_statement(session_ids, criteria.initiator_ids)
        found = self._reader.concurrently(lambda: self._reader.query("session_members", statement))
        tokens = self._tokens(
            token_statement(session_ids, min(row[4] for row in summaries), max(row[5] for row in summaries))
        )
        members = found.result()
        by_session: dict[str, list[Sequence[Any]]] = {}
        for row in members:
            by_session.setdefault(str(row[1]), []).append(row)
        return [_session_row(summary, by_session.get(str(summary[0]), []), tokens) for summary in summaries]

    def detail(self, session_id: str, initiator_ids: tuple[str, ...] | None) -> Row | None:
        rows = self._reader.query("session", detail_statement(session_id, initiator_ids))
        if not rows:
            return None
        turns = {str(row[0]): str(row[-1]) for row in rows}
        interceptions = self._reader.rendered([row[:-1] for row in rows])
        return _session_detail(session_id, interceptions, turns)

    def _tokens(self, statement: sql.Statement) -> dict[str, tuple[int, ...]]:
        return {
            str(row[0]): tuple(int(value) for value in row[1:])
            for row in self._reader.query("session_tokens", statement)
        }


def _session_row(summary: Sequence[Any], members: Sequence[Sequence[Any]], tokens: dict[str, tuple[int, ...]]) -> Row:
    session_id, initiator_id, username, client, first_at, last_at, providers, models = summary
    sums = [0, 0, 0, 0]
    for member in members:
        for index, value in enumerate(tokens.get(str(member[0]), (0, 0, 0, 0))):
            sums[index] += value
    return {
        "id": str(session_id),
        "initiator": {"id": str(initiator_id), "username": str(username), "name": "", "avatar_url": ""},
        "client": str(client),
        "providers": sorted(str(value) for value in providers),
        "models": sorted(str(value) for value in models),
        "started_at": rfc3339(first_at),
        "last_started_at": rfc3339(last_at),
        "threads": len(set(thread_ids(_members(members)).values())),
        "interceptions": len(members),
        **dict(zip(TOKEN_FIELDS, sums, strict=True)),
        "total_tokens": sum(sums),
    }


def _session_detail(session_id: str, interceptions: list[Row], turns: dict[str, str]) -> Row:
    members = [
        Member(row["id"], row["initiator"]["id"], row["client"], turns[row["id"]], _parse(row["started_at"]))
        for row in interceptions
    ]
    threads_of = thread_ids(members)
    threads: dict[str, list[Row]] = {}
    for interception in interceptions:
        interception["session_id"] = session_id
        interception["thread_id"] = threads_of[interception["id"]]
        interception["turn"] = turns[interception["id"]]
        threads.setdefault(interception["thread_id"], []).append(interception)
    rendered = [_thread(thread_id, rows) for thread_id, rows in threads.items()]
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
        # The model's reasoning, from each interception's reasoning records when the store keeps them.
        "reasoning": [item for row in interceptions for item in row.get("reasoning", [])],
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
    after = None
    if after_id is not None:
        after = reader.position(after_id, scope)
        if after is None:
            raise BadRequest(f"unknown after_id {after_id!r}: no session with that id is visible to you")
    counted = reader.concurrently(lambda: reader.count(criteria))  # independent of the page
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
