"""Threads: which interceptions of a session belong together (pure: SQL text and computation, no I/O).

Within a session, the interceptions of one user and one client (a *lane*) ordered by ``started_at`` (then
id): one whose turn is ``prompt`` starts a thread, and every later one (``tool_result``, or a turn not
known) continues it until the next prompt. Interceptions before the lane's first prompt form a leading
thread named after the first of them. A thread's id is the id of the interception that started it.

Computed when rows are read, from the stored rows in time order, so duplicates, events out of order
across partitions and recorder restarts do not change a thread.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final
from uuid import UUID

from aibridge import store
from aibridge.api import sql
from aibridge.events import Turn

MEMBER_COLUMNS: Final = ("id", "session_id", "initiator_id", "client", "turn", "started_at")


@dataclass(frozen=True, slots=True)
class Member:
    """What decides an interception's thread."""

    id: str
    initiator_id: str
    client: str
    turn: str
    started_at: datetime


@dataclass(frozen=True, slots=True)
class Span:
    """The interceptions of one thread: its session and lane, from its start until the lane's next prompt."""

    session_id: str
    initiator_id: str
    client: str
    started_at: datetime
    next_prompt_at: datetime | None


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


def members(rows: Iterable[Sequence[Any]]) -> list[Member]:
    """Rows of :func:`members_statement` as members."""
    return [Member(str(row[0]), str(row[2]), str(row[3]), str(row[4]), sql.as_utc(row[5])) for row in rows]


def members_statement(session_ids: Sequence[str], initiator_ids: Iterable[str] | None) -> sql.Statement:
    """Each interception of the sessions once (its highest version), in :data:`MEMBER_COLUMNS` order."""
    scope = "" if initiator_ids is None else " AND initiator_id IN {initiator_ids:Array(String)}"
    parameters: dict[str, Any] = {"sessions": list(session_ids)}
    if initiator_ids is not None:
        parameters["initiator_ids"] = sorted(initiator_ids)
    return sql.Statement(
        f"SELECT {', '.join(MEMBER_COLUMNS)} FROM {store.INTERCEPTIONS_BY_SESSION} "
        f"WHERE session_id IN {{sessions:Array(String)}}{scope} ORDER BY session_id, started_at, id, version DESC "
        "LIMIT 1 BY id",
        parameters,
    )


LANE_COLUMNS: Final = ("session_id", "initiator_id", "client", "interceptions", "threads", "first_at", "last_at")


def lanes_statement(session_ids: Sequence[str], initiator_ids: Iterable[str] | None) -> sql.Statement:
    """Per session and lane (:data:`LANE_COLUMNS`): its interceptions and threads (its prompts, plus a leading
    thread when an interception came before the first prompt, or there is none), first and last start."""
    scope = "" if initiator_ids is None else " AND initiator_id IN {initiator_ids:Array(String)}"
    parameters: dict[str, Any] = {"sessions": list(session_ids)}
    if initiator_ids is not None:
        parameters["initiator_ids"] = sorted(initiator_ids)
    # minIf over no rows is the epoch, not NULL: without its countIf, a lane of prompts only had a leading thread
    leading = (
        "countIf(turn = 'prompt') = 0 OR (countIf(turn != 'prompt') > 0 "
        "AND minIf(started_at, turn != 'prompt') < minIf(started_at, turn = 'prompt'))"
    )
    return sql.Statement(
        f"SELECT session_id, initiator_id, client, uniqExact(id), uniqExactIf(id, turn = 'prompt') + ({leading}), "
        f"min(started_at), max(started_at) FROM {store.INTERCEPTIONS_BY_SESSION} "
        f"WHERE session_id IN {{sessions:Array(String)}}{scope} GROUP BY session_id, initiator_id, client",
        parameters,
    )


def starter_statement(thread_id: UUID, initiator_ids: tuple[str, ...] | None) -> sql.Statement:
    """The session, lane, start and turn of the interception ``thread_id`` (if the caller may see it)."""
    scope = "" if initiator_ids is None else " AND initiator_id IN {initiator_ids:Array(String)}"
    parameters: dict[str, Any] = {"id": str(thread_id)}
    if initiator_ids is not None:
        parameters["initiator_ids"] = list(initiator_ids)
    return sql.Statement(
        f"SELECT session_id, initiator_id, client, started_at, turn FROM {store.INTERCEPTIONS} "
        f"WHERE id = {{id:UUID}} AND session_id != ''{scope} LIMIT 1",
        parameters,
    )


def lane_statement(session_id: str, initiator_id: str, client: str, started_at: datetime) -> sql.Statement:
    """(interceptions of the lane before ``started_at``, the start of the lane's first prompt after it)."""
    return sql.Statement(
        "SELECT countIf(started_at < {at:DateTime64(6, 'UTC')}), "
        "minIf(started_at, turn = 'prompt' AND started_at > {at:DateTime64(6, 'UTC')}), "
        "countIf(turn = 'prompt' AND started_at > {at:DateTime64(6, 'UTC')}) "
        f"FROM {store.INTERCEPTIONS_BY_SESSION} "
        "WHERE session_id = {session:String} AND initiator_id = {initiator:String} AND client = {client:String}",
        {"session": session_id, "initiator": initiator_id, "client": client, "at": sql.format_param_time(started_at)},
    )


def span(starter: Sequence[Any], lane: Sequence[Any]) -> Span | None:
    """The thread started by the interception ``starter`` (a row of :func:`starter_statement`), given its
    lane (a row of :func:`lane_statement`); None when that interception started no thread."""
    session_id, initiator_id, client, started_at, turn = starter
    earlier, next_prompt_at, later_prompts = lane
    if turn != Turn.PROMPT and earlier:
        return None
    following = sql.as_utc(next_prompt_at) if later_prompts else None
    return Span(str(session_id), str(initiator_id), str(client), sql.as_utc(started_at), following)
