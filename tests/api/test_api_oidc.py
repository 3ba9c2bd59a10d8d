"""The query API with the identity provider's tokens: a member (by ``sub``) sees only their own
interceptions, group membership makes an auditor who sees everyone's, bad tokens get 401, and bridge
tokens keep working beside them."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from api_rows import Spec, api_settings, newest_first, user_id
from clickhouse_connect.driver.client import Client

from aibridge.api.app import create_api_app
from aibridge.auth import TokenVerifier
from aibridge.identity import Verifiers
from aibridge.jwks import KeySource
from aibridge.oidc import ClaimMapping, OidcVerifier
from aibridge.testing.oidc_provider import OidcProvider, User
from aibridge.testing.server import serve_in_thread

PREFIX = "/api/v2/aibridge"
ALICE = User(user_id("alice"), "alice", "alice@example.com", ("engineering",))
AUDREY = User("00u-audrey", "audrey", "audrey@example.com", ("engineering", "sec-auditors"))


@pytest.fixture(scope="module")
def idp() -> Iterator[OidcProvider]:
    with OidcProvider().serve() as served:
        yield served


@pytest.fixture(scope="module")
def oidc_api(chdb_url: str, shared_store: Client, verifier: TokenVerifier, idp: OidcProvider) -> Iterator[str]:
    mapping = ClaimMapping(auditor_groups=frozenset({"sec-auditors"}))
    oidc = OidcVerifier(KeySource(idp.issuer, timeout=2.0), idp.client_id, mapping)
    app = create_api_app(api_settings(chdb_url, shared_store), shared_store, Verifiers(verifier, oidc))
    with serve_in_thread(app) as url:
        yield url


def get(url: str, token: str, **params: object) -> httpx.Response:
    return httpx.get(f"{url}{PREFIX}/interceptions", params=params, headers={"authorization": f"Bearer {token}"})


def test_an_oidc_member_sees_only_their_own(oidc_api: str, idp: OidcProvider, specs: list[Spec]) -> None:
    body = get(oidc_api, idp.token(ALICE, algorithm="ES256"), limit=1000).json()
    assert [r["id"] for r in body["results"]] == newest_first([s for s in specs if s.username == "alice"])
    assert get(oidc_api, idp.token(ALICE), q="initiator:bob").status_code == 403


def test_an_oidc_auditor_by_group_sees_everyone(oidc_api: str, idp: OidcProvider, specs: list[Spec]) -> None:
    body = get(oidc_api, idp.token(AUDREY, algorithm="EdDSA"), limit=1000).json()
    assert body["count"] == len(specs)
    assert {r["initiator"]["username"] for r in body["results"]} == {"alice", "bob", "carol"}


def test_bad_oidc_tokens_get_401(oidc_api: str, idp: OidcProvider) -> None:
    for name, forged in idp.forged_tokens(AUDREY).items():
        answer = get(oidc_api, forged)
        assert answer.status_code == 401, name
        assert forged not in answer.text


def test_bridge_tokens_work_beside_oidc(oidc_api: str, tokens: dict[str, str], specs: list[Spec]) -> None:
    assert get(oidc_api, tokens["auditor"], limit=1000).json()["count"] == len(specs)
