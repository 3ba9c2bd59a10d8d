"""Who sees what: tokens in any of the three headers, 401 without a valid one, members see only their
own interceptions (403 when they ask for someone else's), auditors and admins see everyone's."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from api_rows import Spec, newest_first, user_id

from aibridge.auth import Role

PREFIX = "/api/v2/aibridge"
AsUser = Callable[[str], httpx.Client]


def own(specs: list[Spec], username: str) -> list[Spec]:
    return [spec for spec in specs if spec.username == username]


@pytest.mark.parametrize("q", [None, "initiator:me", "initiator:alice", f"initiator:{user_id('alice')}"])
def test_a_member_sees_only_their_own(as_user: AsUser, specs: list[Spec], q: str | None) -> None:
    body = as_user("alice").get(f"{PREFIX}/interceptions", params={"q": q} if q else {}).json()
    assert [r["id"] for r in body["results"]] == newest_first(own(specs, "alice"))
    assert body["count"] == len(own(specs, "alice"))


@pytest.mark.parametrize("other", ["bob", user_id("bob"), "nobody"])
def test_a_member_asking_for_someone_else_gets_403(as_user: AsUser, other: str) -> None:
    answer = as_user("alice").get(f"{PREFIX}/interceptions", params={"q": f"model:o3 initiator:{other}"})
    assert answer.status_code == 403
    assert f"initiator:{other} is not you" in answer.json()["message"]


@pytest.mark.parametrize("role", ["auditor", "admin"])
def test_auditors_and_admins_see_everyone(as_user: AsUser, specs: list[Spec], role: str) -> None:
    body = as_user(role).get(f"{PREFIX}/interceptions", params={"limit": 1000}).json()
    assert body["count"] == len(specs)
    assert {r["initiator"]["username"] for r in body["results"]} == {"alice", "bob", "carol"}
    bob = as_user(role).get(f"{PREFIX}/interceptions", params={"q": "initiator:bob"}).json()
    assert [r["id"] for r in bob["results"]] == newest_first(own(specs, "bob"))


def test_initiator_me_is_the_caller_for_an_auditor_too(as_user: AsUser) -> None:
    body = as_user("auditor").get(f"{PREFIX}/interceptions", params={"q": "initiator:me"}).json()
    assert body == {"count": 0, "results": []}


def test_facets_and_usage_follow_the_same_visibility(as_user: AsUser, specs: list[Spec]) -> None:
    alice = as_user("alice")
    assert alice.get(f"{PREFIX}/models").json() == sorted({s.model for s in own(specs, "alice")})
    assert alice.get(f"{PREFIX}/clients").json() == sorted({s.client for s in own(specs, "alice")})
    usage = alice.get(f"{PREFIX}/usage", params={"group_by": "user"}).json()
    assert [row["key"] for row in usage["results"]] == [user_id("alice")]
    forbidden = alice.get(f"{PREFIX}/usage", params={"group_by": "model", "q": "initiator:carol"})
    assert forbidden.status_code == 403


def test_a_member_cannot_page_from_someone_elses_interception(as_user: AsUser, specs: list[Spec]) -> None:
    bobs = str(own(specs, "bob")[0].id)
    answer = as_user("alice").get(f"{PREFIX}/interceptions", params={"after_id": bobs})
    assert answer.status_code == 400
    assert bobs in answer.json()["message"]


@pytest.mark.parametrize("header", ["Authorization", "X-Api-Key", "Coder-Session-Token"])
def test_the_token_is_accepted_in_each_header(api_url: str, tokens: dict[str, str], header: str) -> None:
    value = f"Bearer {tokens['bob']}" if header == "Authorization" else tokens["bob"]
    answer = httpx.get(f"{api_url}{PREFIX}/interceptions", params={"limit": 1}, headers={header: value})
    assert answer.status_code == 200
    assert answer.json()["results"][0]["initiator"]["username"] == "bob"


@pytest.mark.parametrize("path", ["interceptions", "models", "clients", "providers", "usage"])
@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "no bridge token"),
        ({"Authorization": "Bearer not-a-token"}, "not a well-formed token"),
        ({"Authorization": "Basic abc"}, "Bearer"),
        ({"X-Api-Key": "eyJhbGciOiJFZERTQSJ9.e30.c2ln"}, "invalid bridge token"),
    ],
)
def test_without_a_valid_token_every_endpoint_is_401(
    api_url: str, path: str, headers: dict[str, str], reason: str
) -> None:
    answer = httpx.get(f"{api_url}{PREFIX}/{path}", headers=headers)
    assert answer.status_code == 401
    assert reason in answer.json()["message"]


def test_an_expired_token_is_401(api_url: str, make_token: Callable[..., str]) -> None:
    token = make_token("alice", Role.ADMIN, ttl_seconds=-60)
    answer = httpx.get(f"{api_url}{PREFIX}/interceptions", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 401
    assert "expired" in answer.json()["message"]
    assert token not in answer.text
