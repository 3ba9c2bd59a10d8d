"""GET /api/v2/aibridge/interceptions over a store where every row exists twice (redelivery) and the
started and ended rows of each interception sit in different parts: filters, order, children, pages."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta

import httpx
import pytest
from api_rows import BASE, Spec, api_settings, dataset, insert, new_database, newest_first, user_id
from clickhouse_connect.driver.client import Client

from aibridge.api.app import create_api_app
from aibridge.auth import TokenVerifier
from aibridge.testing.server import serve_in_thread

PATH = "/api/v2/aibridge/interceptions"
AsUser = Callable[[str], httpx.Client]


def listing(http: httpx.Client, **params: object) -> dict[str, object]:
    answer = http.get(PATH, params=params)
    assert answer.status_code == 200, answer.text
    body: dict[str, object] = answer.json()
    return body


def ids(body: dict[str, object]) -> list[str]:
    return [result["id"] for result in body["results"]]  # type: ignore[attr-defined]


def at(minute: int) -> str:
    return f"{BASE + timedelta(minutes=minute):%Y-%m-%dT%H:%M:%SZ}"


FILTERS: list[tuple[str, Callable[[Spec], bool]]] = [
    ("provider:openai", lambda s: s.provider == "openai"),
    ("model:o3", lambda s: s.model == "o3"),
    ('client:"Claude Code"', lambda s: s.client == "Claude Code"),
    ("initiator:bob", lambda s: s.username == "bob"),
    (f"initiator:{user_id('carol')}", lambda s: s.username == "carol"),
    (f"started_after:{at(20)}", lambda s: s.started_at >= BASE + timedelta(minutes=20)),
    (f"started_before:{at(20)}", lambda s: s.started_at < BASE + timedelta(minutes=20)),
    ("initiator:nobody", lambda s: False),
    ("model:no-such-model", lambda s: False),
    (
        f"provider:anthropic client:Codex initiator:alice started_after:{at(5)} started_before:{at(50)}",
        lambda s: (
            s.provider == "anthropic"
            and s.client == "Codex"
            and s.username == "alice"
            and BASE + timedelta(minutes=5) <= s.started_at < BASE + timedelta(minutes=50)
        ),
    ),
    ("model:gpt-5 initiator:bob", lambda s: s.model == "gpt-5" and s.username == "bob"),
]


def test_no_filter_lists_every_interception_once_newest_first(as_user: AsUser, specs: list[Spec]) -> None:
    body = listing(as_user("admin"))
    assert body["count"] == len(specs)
    assert ids(body) == newest_first(specs)


@pytest.mark.parametrize(("q", "keep"), FILTERS, ids=[q for q, _ in FILTERS])
def test_each_filter_alone_and_combined(
    as_user: AsUser, specs: list[Spec], q: str, keep: Callable[[Spec], bool]
) -> None:
    expected = newest_first([spec for spec in specs if keep(spec)])
    body = listing(as_user("auditor"), q=q)
    assert ids(body) == expected
    assert body["count"] == len(expected)
    assert expected or q in ("initiator:nobody", "model:no-such-model")


def test_in_flight_interceptions_are_listed_with_ended_at_null(as_user: AsUser, specs: list[Spec]) -> None:
    results = listing(as_user("admin"), limit=3)["results"]
    flight = {str(spec.id) for spec in specs if spec.in_flight}
    assert [r["id"] in flight for r in results] == [True, True, False]  # type: ignore[index]
    for result in results:  # type: ignore[attr-defined]
        in_flight = result["id"] in flight
        assert (result["ended_at"] is None) is in_flight
        assert (result["status"] is None) is in_flight
        assert (result["http_status"] is None) is in_flight
        assert len(result["user_prompts"]) == 1  # children recorded so far show while in flight


def test_an_interception_carries_its_children_once(as_user: AsUser, specs: list[Spec]) -> None:
    spec = next(s for s in specs if s.tools == 2 and not s.in_flight)
    body = listing(as_user("admin"), q=f"started_after:{spec.started_at:%Y-%m-%dT%H:%M:%SZ}", limit=1000)
    result = next(r for r in body["results"] if r["id"] == str(spec.id))  # type: ignore[attr-defined]
    assert result["initiator"] == {"id": spec.initiator_id, "username": spec.username, "name": "", "avatar_url": ""}
    assert (result["provider"], result["model"], result["client"]) == (spec.provider, spec.model, spec.client)
    assert result["metadata"] == {"session": spec.username}
    assert result["started_at"] == f"{spec.started_at:%Y-%m-%dT%H:%M:%S.%f}Z"
    assert result["ended_at"] == f"{spec.ended_at:%Y-%m-%dT%H:%M:%S.%f}Z"
    assert (result["status"], result["http_status"], result["streaming"]) == ("completed", 200, True)
    [prompt] = result["user_prompts"]
    assert (prompt["prompt"], prompt["interception_id"], prompt["metadata"]) == (spec.prompt, str(spec.id), {})
    [usage] = result["token_usages"]
    assert (usage["input_tokens"], usage["output_tokens"]) == (spec.input_tokens, spec.output_tokens)
    assert (usage["cache_read_input_tokens"], usage["cache_write_input_tokens"]) == (spec.cache_read, spec.cache_write)
    assert usage["metadata"] == {"service_tier": "standard"}
    tools = result["tool_usages"]
    assert [(t["server_url"], t["injected"], t["invocation_error"]) for t in tools] == [
        ("", False, ""),
        ("https://mcp.example/sse", True, ""),
    ]
    assert len({t["id"] for t in tools}) == 2


def test_tied_start_times_keep_one_stable_order(as_user: AsUser, specs: list[Spec]) -> None:
    tied = [spec for spec in specs if spec.started_at == BASE + timedelta(minutes=10)]
    assert len(tied) == 2
    window = f"started_after:{at(10)} started_before:{at(11)}"
    first = ids(listing(as_user("admin"), q=window, limit=1))
    second = ids(listing(as_user("admin"), q=window, limit=1, after_id=first[0]))
    assert first + second == newest_first(tied)


@pytest.mark.parametrize("mode", ["after_id", "offset"])
@pytest.mark.parametrize(("q", "size"), [("", 7), ("model:o3", 4), ("initiator:alice", 5)])
def test_pages_cover_every_row_once(as_user: AsUser, specs: list[Spec], mode: str, q: str, size: int) -> None:
    http, seen, params = as_user("admin"), [], {"q": q, "limit": size}
    while True:
        body = listing(http, **params)
        page = ids(body)
        seen += page
        if len(page) < size:
            break
        params |= {"after_id": page[-1]} if mode == "after_id" else {"offset": len(seen)}
    expected = [spec for spec in specs if f"{q}:".startswith(":") or _matches(spec, q)]
    assert seen == newest_first(expected)
    assert body["count"] == len(expected)


def _matches(spec: Spec, q: str) -> bool:
    key, _, value = q.partition(":")
    return getattr(spec, "username" if key == "initiator" else key) == value


@pytest.fixture
def own_store(chdb_url: str, verifier: TokenVerifier) -> Iterator[tuple[Client, str]]:
    client = new_database(chdb_url)
    with serve_in_thread(create_api_app(api_settings(chdb_url, client), client, verifier)) as url:
        yield client, url


def test_cursor_pages_stay_stable_while_rows_arrive(own_store: tuple[Client, str], tokens: dict[str, str]) -> None:
    client, url = own_store
    older = dataset(20)
    insert(client, older)
    with httpx.Client(base_url=url, headers={"X-Api-Key": tokens["admin"]}) as http:
        first = ids(listing(http, limit=8))
        newer = [Spec("bob", "openai", "gpt-5", "Codex", BASE + timedelta(hours=5, minutes=n)) for n in range(5)]
        insert(client, newer)  # arrives between two page requests
        rest = ids(listing(http, limit=100, after_id=first[-1]))
        assert first + rest == newest_first(older)
        assert ids(listing(http, limit=5)) == newest_first(newer)


def test_an_ended_row_arriving_later_replaces_the_in_flight_one(
    own_store: tuple[Client, str], tokens: dict[str, str]
) -> None:
    client, url = own_store
    spec = Spec("alice", "anthropic", "claude-sonnet-4-5", "Claude Code", BASE, in_flight=True)
    insert(client, [spec])
    with httpx.Client(base_url=url, headers={"X-Api-Key": tokens["admin"]}) as http:
        assert listing(http)["results"][0]["ended_at"] is None  # type: ignore[index]
        spec.in_flight = False
        insert(client, [spec])
        body = listing(http)
    assert body["count"] == 1
    [result] = body["results"]  # type: ignore[misc]
    assert result["ended_at"] is not None and result["status"] == "completed"
    assert len(result["user_prompts"]) == 1
