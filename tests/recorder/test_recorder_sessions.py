"""Threads are a function of the stored rows ordered by started_at, not of arrival: through the real
recorder (in-process bus and Kafka on Tansu, 3 partitions keyed by interception id) and chDB, a session
delivered twice, out of order and across a recorder restart reads back as the same threads as when it
arrived once, in order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from clickhouse_connect.driver.client import Client
from recorder_harness import BusHarness, eventually

from aibridge.api import sessions, sql
from aibridge.api.repository import ClientSource, InterceptionReader
from aibridge.api.settings import ApiSettings
from aibridge.events import Event, InterceptionContext, Status

BASE = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
SESSION = "0b7f6a52-3c1d-4e8f-9a2b-5c6d7e8f9a01"
# (seconds after BASE, turn): two human prompts, each followed by the agentic loop it set off.
TURNS = [(0, "prompt"), (5, "tool_result"), (9, "tool_result"), (60, "prompt"), (64, "tool_result"), (70, "")]


def interception(offset: int, turn: str, session_id: str = SESSION) -> list[Event]:
    context = InterceptionContext(
        initiator_id="user-s", initiator_username="sam", provider="anthropic", model="claude-sonnet-4-5",
        client="Claude Code", streaming=True, route="/v1/messages", api_key_id="jti",
        started_at=BASE + timedelta(seconds=offset),
    )  # fmt: skip
    events = [context.started(session_id=session_id, turn=turn)]
    if turn == "prompt":
        events.append(context.prompt(f"prompt at {offset}s"))
    events.append(context.token_usage(provider_response_id=f"r{offset}", input_tokens=10, output_tokens=offset))
    events.append(
        context.tool_usage(provider_response_id=f"r{offset}", tool="Bash", call_id=f"c{offset}", tool_input="{}")
    )
    events.append(context.ended(Status.COMPLETED, 200, ended_at=context.started_at + timedelta(seconds=2)))
    for event in events[1:-1]:
        event["occurred_at"] = (context.started_at + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return events


def session_events() -> list[list[Event]]:
    return [interception(offset, turn) for offset, turn in TURNS]


def reader(client: Client) -> sessions.SessionReader:
    settings = ApiSettings(clickhouse_url=CHDB_URL[0], clickhouse_database=client.database)
    return sessions.SessionReader(InterceptionReader(ClientSource(settings, client)))


def shape(detail: dict[str, Any]) -> list[tuple[str | None, list[str], int]]:
    """Per thread: its prompt, its interceptions' start times and its output tokens."""
    return [
        (thread["prompt"], [row["started_at"][11:19] for row in thread["interceptions"]], thread["output_tokens"])
        for thread in detail["threads"]
    ]


CHDB_URL = ["chdb://memory"]
EXPECTED = [
    ("prompt at 0s", ["09:00:00", "09:00:05", "09:00:09"], 0 + 5 + 9),
    ("prompt at 60s", ["09:01:00", "09:01:04", "09:01:10"], 60 + 64 + 70),
]


async def stored(bus: BusHarness, client: Client, count: int) -> None:
    async def done() -> bool:
        rows = client.query(
            "SELECT uniqExact(id), countIf(version = 1) FROM (SELECT id, max(version) AS version "
            "FROM interceptions_by_session GROUP BY id)"
        ).result_rows[0]
        return tuple(rows) == (count, count) and await bus.committed() == bus.published

    await eventually(done, timeout=30)


async def test_threads_survive_duplicates_disorder_and_a_restart(
    bus: BusHarness, store_client: Client, chdb_url: str
) -> None:
    CHDB_URL[:] = [chdb_url]
    per_interception = session_events()
    # Across the restart: the first thread's tool results and the second prompt's ended event first, the
    # prompts that start the threads last; each interception's events reversed (ended before started).
    first_half = [event for events in per_interception[1:3] + per_interception[4:] for event in reversed(events)]
    second_half = [event for events in (per_interception[3], per_interception[0]) for event in reversed(events)]
    recorder = bus.recorder(store_client)
    await recorder.start()
    await bus.publish(*first_half)
    await stored(bus, store_client, 4)
    partial = sessions.get_session(reader(store_client), SESSION, None)
    # No prompt stored yet: one leading thread without a prompt (none is made up), to be split once they land.
    assert [(thread["prompt"], len(thread["interceptions"])) for thread in partial["threads"]] == [(None, 4)]
    listed = sessions.list_sessions(reader(store_client), sql.Criteria(), None, limit=10, offset=None, after_id=None)
    assert [(row["threads"], row["interceptions"]) for row in listed["results"]] == [(1, 4)]
    await recorder.stop()  # a restart in the middle of both threads

    restarted = bus.recorder(store_client)
    await restarted.start()
    await bus.publish(*second_half)
    await bus.publish(*(event for events in per_interception for event in events))  # everything redelivered
    await stored(bus, store_client, len(TURNS))

    detail = sessions.get_session(reader(store_client), SESSION, None)
    assert shape(detail) == EXPECTED
    assert detail["interceptions"] == len(TURNS) and detail["output_tokens"] == sum(offset for offset, _ in TURNS)
    thread_ids = {row["id"]: row["thread_id"] for thread in detail["threads"] for row in thread["interceptions"]}
    starters = [thread["id"] for thread in detail["threads"]]
    assert starters == [str(per_interception[0][0]["interception_id"]), str(per_interception[3][0]["interception_id"])]
    assert sorted(set(thread_ids.values())) == sorted(starters)
    assert all(thread["duration_ms"] == 11_000 for thread in detail["threads"][:1])

    page = sessions.list_sessions(reader(store_client), sql.Criteria(), None, limit=10, offset=None, after_id=None)
    assert page["count"] == 1
    (summary,) = page["results"]
    assert (summary["id"], summary["threads"], summary["interceptions"]) == (SESSION, 2, len(TURNS))
    assert summary["output_tokens"] == sum(offset for offset, _ in TURNS) and summary["input_tokens"] == 10 * len(TURNS)
    assert (summary["started_at"], summary["last_started_at"]) == (
        "2026-11-20T09:00:00.000000Z",
        "2026-11-20T09:01:10.000000Z",
    )
