"""Bad input is a 400 naming the offending term; a store that is down or unmigrated is a 503, never a 500."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import httpx
import pytest
from api_rows import api_settings

from aibridge import store
from aibridge.api.component import ApiComponent
from aibridge.api.settings import ApiSettings
from aibridge.auth import TokenVerifier
from aibridge.testing.broker import free_port
from aibridge.testing.server import serve_in_thread

PREFIX = "/api/v2/aibridge"
AsUser = Callable[[str], httpx.Client]
UNKNOWN = str(uuid.uuid4())

BAD_REQUESTS: list[tuple[str, dict[str, object], str]] = [
    ("interceptions", {"q": "colour:blue"}, "'colour'"),
    ("interceptions", {"q": 'client:"Claude Code'}, "unterminated quote"),
    ("interceptions", {"q": "started_after:last-week"}, "started_after:last-week"),
    ("interceptions", {"q": "started_before:2025-01-01T00:00:00"}, "time zone"),
    ("interceptions", {"q": "model"}, "'model' is not of the form key:value"),
    ("interceptions", {"limit": 0}, "limit"),
    ("interceptions", {"limit": 1001}, "limit"),
    ("interceptions", {"limit": "ten"}, "limit"),
    ("interceptions", {"offset": -1}, "offset"),
    ("interceptions", {"after_id": "not-a-uuid"}, "after_id"),
    ("interceptions", {"after_id": UNKNOWN}, f"unknown after_id {UNKNOWN}"),
    ("interceptions", {"after_id": UNKNOWN, "offset": 0}, "after_id and offset"),
    ("usage", {"group_by": "planet"}, "group_by"),
    ("usage", {"started_after": "yesterday"}, "started_after=yesterday"),
    ("usage", {"started_after": "2025-01-01T00:00:00Z", "q": "started_after:2025-01-02T00:00:00Z"}, "twice"),
    ("usage", {"started_after": "2025-02-01T00:00:00Z", "started_before": "2025-01-01T00:00:00Z"}, "earlier"),
    ("interceptions", {"q": ["provider:openai", ""]}, "'q' is given more than once"),
    ("sessions", {"q": ["provider:openai", "model:gpt-4o"]}, "'q' is given more than once"),
    ("usage", {"group_by": ["user", "model"]}, "'group_by' is given more than once"),
    ("budgets/me", {"x": ["1", "2"]}, "'x' is given more than once"),
]


@pytest.mark.parametrize(("path", "params", "named"), BAD_REQUESTS)
def test_bad_input_is_a_400_naming_the_term(as_user: AsUser, path: str, params: dict[str, object], named: str) -> None:
    answer = as_user("admin").get(f"{PREFIX}/{path}", params=params)
    assert answer.status_code == 400, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert named in answer.json()["message"]


@pytest.fixture
def unreachable_settings(chdb_url: str) -> ApiSettings:
    return ApiSettings(clickhouse_url=f"http://127.0.0.1:{free_port()}", clickhouse_database="aibridge")


@pytest.fixture
def down_api(unreachable_settings: ApiSettings, verifier: TokenVerifier) -> Iterator[tuple[ApiComponent, str]]:
    component = ApiComponent(unreachable_settings, None, verifier)
    with serve_in_thread(component.app) as url:
        yield component, url


@pytest.mark.parametrize("path", ["interceptions", "models", "clients", "providers", "usage"])
def test_an_unreachable_store_is_a_503(down_api: tuple[ApiComponent, str], tokens: dict[str, str], path: str) -> None:
    _, url = down_api
    answer = httpx.get(f"{url}{PREFIX}/{path}", headers={"Authorization": f"Bearer {tokens['admin']}"})
    assert answer.status_code == 503
    body = answer.json()
    assert body["message"] == "the interception store is unreachable"
    assert "OperationalError" in body["detail"]


async def test_readiness_names_the_unreachable_store(down_api: tuple[ApiComponent, str]) -> None:
    component, _ = down_api
    problem = (await component.readiness())["clickhouse"]
    assert problem is not None and "OperationalError" in problem
    await component.start()  # starts anyway: it answers 503 until the store is back
    await component.stop()


async def test_readiness_is_clean_with_a_store(chdb_url: str, shared_store: object, verifier: TokenVerifier) -> None:
    component = ApiComponent(api_settings(chdb_url, shared_store), shared_store, verifier)  # type: ignore[arg-type]
    assert await component.readiness() == {"clickhouse": None}
    assert [route.path for route in component.routes] == [""]


def test_a_store_without_tables_is_a_503(chdb_url: str, verifier: TokenVerifier, tokens: dict[str, str]) -> None:
    client = store.connect(chdb_url, f"empty_{uuid.uuid4().hex[:8]}", create_database=True)
    component = ApiComponent(api_settings(chdb_url, client), client, verifier)
    with serve_in_thread(component.app) as url:
        answer = httpx.get(f"{url}{PREFIX}/interceptions", headers={"X-Api-Key": tokens["admin"]})
    assert answer.status_code == 503
    assert answer.json()["message"] == "the interception store failed to answer"
