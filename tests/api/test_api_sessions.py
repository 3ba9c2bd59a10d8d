"""GET /sessions and /sessions/{id} over HTTP on chDB: newest first, counts, filters, both pagination
styles, role rules (a member asking for someone else's session gets the 404 of a session that does not
exist), the access audit, and answers that conform to the OpenAPI document. Rows are written the way
the recorder writes them (process_event), every one twice in separate parts, as after a redelivery."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import httpx
import jsonschema
import orjson
import pytest
from api_rows import api_settings, new_database, user_id
from clickhouse_connect.driver.client import Client

from aibridge import cli, store
from aibridge.api import service
from aibridge.api.app import create_api_app
from aibridge.api.pool import ClientSource
from aibridge.api.query import parse_q
from aibridge.api.repository import InterceptionReader
from aibridge.api.sessions import SessionReader, list_sessions
from aibridge.auth import Identity, Role, TokenVerifier
from aibridge.events import Event, InterceptionContext, ReasoningKind, Status
from aibridge.recorder.rows import process_event
from aibridge.testing.server import serve_in_thread

PREFIX = "/api/v2/aibridge"
BASE = datetime(2026, 11, 10, 8, 0, tzinfo=UTC)
# session -> (user, model, minutes after BASE of each interception and its turn)
SESSIONS = {
    "alice-old": ("alice", "gpt-5", [(0, "prompt"), (1, "tool_result")]),
    "alice-new": ("alice", "claude-sonnet-4-5", [(30, "prompt"), (31, "tool_result"), (32, "prompt"), (33, "")]),
    "bob-only": ("bob", "claude-sonnet-4-5", [(20, "prompt"), (21, "tool_result"), (22, "tool_result")]),
}


def events_of(session: str, user: str, model: str, minute: int, turn: str) -> list[Event]:
    context = InterceptionContext(
        initiator_id=user_id(user), initiator_username=user, provider="openai" if model == "gpt-5" else "anthropic",
        model=model, client="Claude Code", streaming=True, route="/v1/messages", api_key_id="jti",
        started_at=BASE + timedelta(minutes=minute),
    )  # fmt: skip
    events = [context.started(session_id=session, turn=turn)]
    if turn == "prompt":
        events.append(context.prompt(f"{session} at {minute}"))
    if minute == 31:  # the model thought before its answer to the tool result
        events.append(context.reasoning(ReasoningKind.THINKING, "the test fails on line 3", "r"))
        events.append(context.reasoning(ReasoningKind.REDACTED, "", "r"))
    events.append(context.token_usage(provider_response_id="r", input_tokens=minute, output_tokens=1))
    events.append(context.tool_usage(provider_response_id="r", tool="Read", call_id=f"c{minute}", tool_input="{}"))
    events.append(context.ended(Status.COMPLETED, 200, ended_at=context.started_at + timedelta(seconds=30)))
    for index, event in enumerate(events[1:-1]):  # during the interception, in the order they happened
        moment = context.started_at + timedelta(seconds=1, milliseconds=index)
        event["occurred_at"] = moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return events


def write(client: Client, events: list[Event]) -> None:
    for event in events:
        row = process_event(event)
        store.insert(client, row.table, [row.values], list(row.fields()))


@pytest.fixture(scope="module")
def sessions_store(chdb_url: str) -> Client:
    client = new_database(chdb_url)
    events = [
        event
        for session, (user, model, turns) in SESSIONS.items()
        for minute, turn in turns
        for event in events_of(session, user, model, minute, turn)
    ]
    write(client, events)
    write(client, events)  # every row again in other parts: a redelivery
    write(client, events_of("", "carol", "o3", 40, "prompt"))  # no session key: in no session
    return client


@pytest.fixture(scope="module")
def sessions_url(chdb_url: str, sessions_store: Client, verifier: TokenVerifier) -> Iterator[str]:
    app = create_api_app(api_settings(chdb_url, sessions_store), sessions_store, verifier)
    with serve_in_thread(app) as url:
        yield url


@pytest.fixture
def get(sessions_url: str, make_token: Callable[..., str]) -> Iterator[Callable[..., httpx.Response]]:
    clients: dict[str, httpx.Client] = {}
    roles = {"alice": Role.MEMBER, "bob": Role.MEMBER, "audrey": Role.AUDITOR}

    def request(who: str, path: str, **params: object) -> httpx.Response:
        if who not in clients:
            token = make_token(who, roles[who])
            clients[who] = httpx.Client(base_url=sessions_url, headers={"Authorization": f"Bearer {token}"})
        return clients[who].get(PREFIX + path, params=params)

    yield request
    for client in clients.values():
        client.close()


def ids(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [row["id"] for row in response.json()["results"]]


def test_members_see_their_own_sessions_newest_first_with_counts(get: Callable[..., httpx.Response]) -> None:
    page = get("alice", "/sessions").json()
    assert page["count"] == 2 and [row["id"] for row in page["results"]] == ["alice-new", "alice-old"]
    newest = page["results"][0]
    assert (newest["threads"], newest["interceptions"]) == (2, 4)
    assert (newest["input_tokens"], newest["output_tokens"]) == (30 + 31 + 32 + 33, 4)
    assert newest["started_at"] == "2026-11-10T08:30:00.000000Z"
    assert newest["last_started_at"] == "2026-11-10T08:33:00.000000Z"
    assert newest["initiator"]["username"] == "alice" and newest["models"] == ["claude-sonnet-4-5"]
    assert ids(get("bob", "/sessions")) == ["bob-only"]


def test_auditors_see_everyone_and_filter_like_interceptions(get: Callable[..., httpx.Response]) -> None:
    assert ids(get("audrey", "/sessions")) == ["alice-new", "bob-only", "alice-old"]
    assert ids(get("audrey", "/sessions", q="initiator:bob")) == ["bob-only"]
    assert ids(get("audrey", "/sessions", q="model:gpt-5")) == ["alice-old"]
    assert ids(get("audrey", "/sessions", q="provider:anthropic")) == ["alice-new", "bob-only"]
    window = 'started_after:"2026-11-10T08:21:30Z" started_before:"2026-11-10T08:30:00Z"'
    assert ids(get("audrey", "/sessions", q=window)) == ["bob-only"]  # spans overlapping the range
    assert ids(get("audrey", "/sessions", q='client:"Codex"')) == []
    assert get("alice", "/sessions", q="initiator:bob").status_code == 403


def test_pages_by_cursor_and_by_offset(get: Callable[..., httpx.Response]) -> None:
    first = get("audrey", "/sessions", limit=2).json()
    assert first["count"] == 3 and [row["id"] for row in first["results"]] == ["alice-new", "bob-only"]
    assert ids(get("audrey", "/sessions", limit=2, after_id="bob-only")) == ["alice-old"]
    assert ids(get("audrey", "/sessions", limit=2, offset=2)) == ["alice-old"]
    anthropic = {"q": "provider:anthropic", "limit": 1}  # whole-session filters page by cursor too
    assert ids(get("audrey", "/sessions", **anthropic, after_id="alice-new")) == ["bob-only"]
    assert ids(get("audrey", "/sessions", **anthropic, after_id="bob-only")) == []
    assert get("audrey", "/sessions", after_id="nope").status_code == 400
    assert get("alice", "/sessions", after_id="bob-only").status_code == 400  # not visible to alice
    assert get("audrey", "/sessions", after_id="bob-only", offset=1).status_code == 400


def test_a_session_has_its_threads_in_order(get: Callable[..., httpx.Response]) -> None:
    response = get("alice", "/sessions/alice-new")
    assert response.status_code == 200, response.text
    detail = response.json()
    assert [thread["prompt"] for thread in detail["threads"]] == ["alice-new at 30", "alice-new at 32"]
    first, second = detail["threads"]
    assert [row["turn"] for row in first["interceptions"]] == ["prompt", "tool_result"]
    assert [row["turn"] for row in second["interceptions"]] == ["prompt", ""]  # unknown continues the thread
    assert {row["thread_id"] for row in first["interceptions"]} == {first["id"]} == {first["interceptions"][0]["id"]}
    assert all(row["session_id"] == "alice-new" for row in first["interceptions"] + second["interceptions"])
    assert first["duration_ms"] == 90_000 and first["input_tokens"] == 61 and first["output_tokens"] == 2
    assert [call["interception_id"] for call in first["tool_calls"]] == [row["id"] for row in first["interceptions"]]
    assert [(item["kind"], item["text"]) for item in first["reasoning"]] == [
        ("thinking", "the test fails on line 3"),
        ("redacted", ""),
    ]
    assert {item["interception_id"] for item in first["reasoning"]} == {first["interceptions"][1]["id"]}
    assert second["reasoning"] == []
    assert [row["reasoning"] for row in first["interceptions"]] == [[], first["reasoning"]]
    assert detail["interceptions"] == 4 and detail["total_tokens"] == 30 + 31 + 32 + 33 + 4


def test_someone_elses_session_is_not_found_for_a_member(get: Callable[..., httpx.Response]) -> None:
    denied = get("alice", "/sessions/bob-only")
    missing = get("alice", "/sessions/no-such-session")
    assert (denied.status_code, missing.status_code) == (404, 404)
    assert denied.json()["message"].replace("bob-only", "X") == missing.json()["message"].replace(
        "no-such-session", "X"
    )
    assert get("audrey", "/sessions/bob-only").status_code == 200
    assert get("audrey", "/sessions/" + "x" * 300).status_code == 400


def test_reading_sessions_is_audited(get: Callable[..., httpx.Response], caplog: pytest.LogCaptureFixture) -> None:
    get("audrey", "/sessions", q="initiator:bob")
    get("alice", "/sessions/bob-only")
    records = [r.audit for r in caplog.records if r.name == "aibridge.audit"]  # type: ignore[attr-defined]
    assert [(r["action"], r["result"]["status"], r["result"]["rows"]) for r in records] == [
        ("sessions.list", 200, 1),
        ("sessions.show", 404, 0),
    ]
    assert records[0]["request"]["filters"] == {"initiator": "bob"}


def test_answers_conform_to_the_openapi_document(get: Callable[..., httpx.Response], sessions_url: str) -> None:
    document = httpx.get(f"{sessions_url}{PREFIX}/openapi.json").json()
    for path, name in (("/sessions", "SessionsPage"), ("/sessions/alice-new", "SessionDetail")):
        schema = {"$ref": f"#/components/schemas/{name}", "components": document["components"]}
        jsonschema.validate(get("audrey", path).json(), schema)


@pytest.fixture
def cli_run(
    sessions_url: str, make_token: Callable[..., str], capsys: pytest.CaptureFixture[str]
) -> Callable[..., tuple[int, str, str]]:
    token = make_token("audrey", Role.AUDITOR)

    def run(*argv: str) -> tuple[int, str, str]:
        status = cli.main(["sessions", *argv, "--url", sessions_url, "--token", token])
        captured = capsys.readouterr()
        return status, captured.out, captured.err

    return run


def test_cli_lists_sessions_in_each_output_form(cli_run: Callable[..., tuple[int, str, str]]) -> None:
    status, out, _ = cli_run("list")
    assert status == 0 and [row["id"] for row in orjson.loads(out)] == ["alice-new", "bob-only", "alice-old"]
    status, out, _ = cli_run("list", "--initiator", "bob", "--output", "jsonl")
    assert [orjson.loads(line)["id"] for line in out.splitlines()] == ["bob-only"]
    status, out, _ = cli_run("list", "--limit", "1", "--all", "--output", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(row["id"], row["threads"], row["initiator_username"]) for row in rows] == [
        ("alice-new", "2", "alice"),
        ("bob-only", "1", "bob"),
        ("alice-old", "1", "alice"),
    ]
    status, out, _ = cli_run("list", "--output", "table")
    lines = out.splitlines()
    assert lines[0].startswith("LAST STARTED") and len(lines) == 4 and "alice-new" in lines[1]


def test_cli_shows_a_session_by_thread(cli_run: Callable[..., tuple[int, str, str]]) -> None:
    status, out, _ = cli_run("show", "alice-new")
    assert status == 0 and [thread["prompt"] for thread in orjson.loads(out)["threads"]] == [
        "alice-new at 30",
        "alice-new at 32",
    ]
    status, out, _ = cli_run("show", "alice-new", "--output", "jsonl")
    assert len({orjson.loads(line)["thread_id"] for line in out.splitlines()}) == 2 and len(out.splitlines()) == 4
    status, out, _ = cli_run("show", "alice-new", "--output", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(row["prompt"], row["interceptions"], row["duration_s"]) for row in rows] == [
        ("alice-new at 30", "2", "90.0"),
        ("alice-new at 32", "2", "90.0"),
    ]
    status, out, err = cli_run("show", "no-such-session", "--output", "table")
    assert status == 1 and out == "" and err.startswith("error: the API answered 404: no session")


def test_interceptions_carry_their_session_and_thread(get: Callable[..., httpx.Response]) -> None:
    detail = get("alice", "/sessions/alice-new").json()
    first, second = detail["threads"]
    listed = get("alice", "/interceptions", q="session_id:alice-new").json()
    assert listed["count"] == 4
    assert {row["id"]: row["thread_id"] for row in listed["results"]} == {
        row["id"]: thread["id"] for thread in (first, second) for row in thread["interceptions"]
    }
    assert {row["session_id"] for row in listed["results"]} == {"alice-new"}
    everything = get("audrey", "/interceptions").json()["results"]
    carol = [row for row in everything if row["initiator"]["username"] == "carol"]
    assert [(row["session_id"], row["thread_id"], row["turn"]) for row in carol] == [("", None, "prompt")]


def test_interceptions_filter_by_thread(get: Callable[..., httpx.Response]) -> None:
    first, second = get("audrey", "/sessions/alice-new").json()["threads"]
    for thread in (first, second):
        page = get("alice", "/interceptions", q=f"thread_id:{thread['id']}").json()
        assert sorted(row["id"] for row in page["results"]) == sorted(row["id"] for row in thread["interceptions"])
        assert page["count"] == 2
    tool_result = first["interceptions"][1]["id"]  # started no thread
    assert get("alice", "/interceptions", q=f"thread_id:{tool_result}").json()["count"] == 0
    bobs = get("audrey", "/sessions/bob-only").json()["threads"][0]["id"]
    assert get("alice", "/interceptions", q=f"thread_id:{bobs}").json()["count"] == 0  # not alice's
    assert get("audrey", "/interceptions", q=f"thread_id:{bobs}").json()["count"] == 3
    assert get("audrey", "/interceptions", q=f"thread_id:{bobs} session_id:alice-new").json()["count"] == 0
    assert get("audrey", "/interceptions", q="thread_id:nope").status_code == 400
    usage = get("audrey", "/usage", q="session_id:bob-only").json()
    assert [(row["interceptions"], row["input_tokens"]) for row in usage["results"]] == [(3, 20 + 21 + 22)]


def test_a_cursor_skips_sessions_shown_before_it_that_also_have_older_rows(chdb_url: str) -> None:
    """Sessions active on both sides of a cursor (a summary row after it, older rows before it, unmerged)
    were on an earlier page: left out, however many there are before the next one."""
    client = new_database(chdb_url)
    client.command(f"SYSTEM STOP MERGES {store.SESSIONS}")  # each insert's summary row stays apart
    straddling = [f"both-{index:02d}" for index in range(15)]  # more than a page and its slack
    for index, session in enumerate(straddling):
        write(client, events_of(session, "alice", "o3", 50 + index, "prompt"))
        write(client, events_of(session, "alice", "o3", 200 + index, "tool_result"))
    write(client, events_of("older", "bob", "o3", 10, "prompt"))
    reader = InterceptionReader(ClientSource(api_settings(chdb_url, client), client))
    auditor = Identity(user_id("audrey"), "audrey", Role.AUDITOR, "jti", BASE.timestamp() + 3600)

    def page(after_id: str, q: str = "") -> list[str]:
        criteria = service.resolve(parse_q(q), auditor, reader)
        found = list_sessions(SessionReader(reader), criteria, None, limit=1, offset=None, after_id=after_id)
        return [row["id"] for row in found["results"]]

    assert page("both-01") == ["both-00"]
    assert page("both-00") == ["older"]
    assert page("both-00", "model:o3") == ["older"]
    assert page("older") == []


def test_a_session_of_prompts_only_counts_one_thread_per_prompt(chdb_url: str) -> None:
    """No interception before the first prompt, so no leading thread (in the list as in the detail)."""
    client = new_database(chdb_url)
    write(client, events_of("prompts-only", "alice", "o3", 5, "prompt"))
    write(client, events_of("prompts-only", "alice", "o3", 6, "prompt"))
    reader = InterceptionReader(ClientSource(api_settings(chdb_url, client), client))
    auditor = Identity(user_id("audrey"), "audrey", Role.AUDITOR, "jti", BASE.timestamp() + 3600)
    criteria = service.resolve(parse_q(""), auditor, reader)
    found = list_sessions(SessionReader(reader), criteria, None, limit=10, offset=None, after_id=None)
    assert [(row["id"], row["threads"], row["interceptions"]) for row in found["results"]] == [("prompts-only", 2, 2)]
