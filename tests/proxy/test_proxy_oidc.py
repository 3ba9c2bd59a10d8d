"""The identity provider's tokens through the real proxy, the official SDKs and the real broker: accepted
and attributed to the provider's user, refused in each provider's error shape with nothing recorded,
rotated keys picked up, and bridge tokens still working beside them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest
from proxy_support import Proxy, ProxyFactory, Simulator, of_type

from aibridge.auth import TokenVerifier
from aibridge.identity import Verifiers
from aibridge.jwks import KeySource
from aibridge.oidc import ClaimMapping, OidcVerifier
from aibridge.testing.oidc_provider import OidcProvider, SigningKey, User, new_key

pytestmark = pytest.mark.kafka

ALICE = User("00u-alice", "alice", "alice@example.com", ("engineering",))
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
OPENAI_PATH = "/api/v2/aibridge/openai/v1/chat/completions"
ANTHROPIC_PATH = "/api/v2/aibridge/anthropic/v1/messages"


@pytest.fixture(scope="module")
def idp() -> Iterator[OidcProvider]:
    with OidcProvider().serve() as served:
        yield served


@pytest.fixture
def oidc_proxy(start_proxy: ProxyFactory, idp: OidcProvider, verifier: TokenVerifier) -> Proxy:
    keys = KeySource(idp.issuer, min_interval=0.2, timeout=2.0)
    oidc = OidcVerifier(keys, idp.client_id, ClaimMapping(auditor_groups=frozenset({"sec-auditors"})))
    return start_proxy(token_verifier=Verifiers(verifier, oidc))


def openai_client(proxy: Proxy, token: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=proxy.openai_base_url, api_key=token, max_retries=0, timeout=20)


def anthropic_client(proxy: Proxy, token: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=proxy.anthropic_base_url, api_key=token, max_retries=0, timeout=20)


async def test_an_oidc_token_works_with_both_sdks_and_is_attributed_to_the_provider_user(
    oidc_proxy: Proxy, idp: OidcProvider, events_of: Callable[..., Any]
) -> None:
    rsa_token, eddsa_token = idp.token(ALICE, jti="jti-rsa"), idp.token(ALICE, algorithm="EdDSA", jti="jti-ed")
    chat = await openai_client(oidc_proxy, rsa_token).chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hello"}]
    )
    assert chat.choices[0].message.content
    message = await anthropic_client(oidc_proxy, eddsa_token).messages.create(
        model="claude-sonnet-4-5", max_tokens=64, messages=[{"role": "user", "content": "hello"}]
    )
    assert message.content
    events = await events_of(2)
    published = orjson.dumps(events).decode()
    assert rsa_token not in published and eddsa_token not in published
    assert {(e["initiator"]["id"], e["initiator"]["username"]) for e in events} == {("00u-alice", "alice")}
    started = of_type(events, "interception.started")
    assert {(e["provider"], e["api_key_id"]) for e in started} == {("openai", "jti-rsa"), ("anthropic", "jti-ed")}


async def test_bad_oidc_tokens_get_401_in_each_shape_and_nothing_is_recorded(
    oidc_proxy: Proxy, idp: OidcProvider, simulator: Simulator, events_of: Callable[..., Any], token: str
) -> None:
    seen = len(simulator.state.requests)
    async with httpx.AsyncClient(base_url=oidc_proxy.url, timeout=10) as client:
        for name, forged in idp.forged_tokens(ALICE).items():
            response = await client.post(OPENAI_PATH, json=CHAT, headers={"authorization": f"Bearer {forged}"})
            assert response.status_code == 401, name
            assert response.json()["error"]["code"] == "invalid_api_key", name
            response = await client.post(ANTHROPIC_PATH, json=CHAT | {"max_tokens": 8}, headers={"x-api-key": forged})
            assert response.status_code == 401 and response.json()["error"]["type"] == "authentication_error", name
            assert "eyJ" not in response.text, "a token must never be echoed"
            models = await client.get("/api/v2/aibridge/openai/v1/models", headers={"x-api-key": forged})
            assert models.status_code == 401, name
    with pytest.raises(openai.AuthenticationError):
        await openai_client(oidc_proxy, idp.forged_tokens(ALICE)["wrong audience"]).chat.completions.create(**CHAT)
    assert len(simulator.state.requests) == seen, "a refused request reached the upstream"
    bridge = await openai_client(oidc_proxy, token).chat.completions.create(**CHAT)
    assert bridge.choices[0].message.content, "bridge tokens keep working beside OIDC"
    events = await events_of(1)
    assert len({e["interception_id"] for e in events}) == 1, "only the bridge token's request was recorded"
    assert {e["initiator"]["id"] for e in events} == {"user-alice-1"}


async def test_a_token_signed_with_a_newly_rotated_key_works_at_once(
    oidc_proxy: Proxy, idp: OidcProvider, events_of: Callable[..., Any]
) -> None:
    first = await openai_client(oidc_proxy, idp.token(ALICE)).chat.completions.create(**CHAT)
    assert first.choices
    fetches = idp.jwks_requests
    rotated = idp.rotate("ES256")
    await asyncio.sleep(0.25)  # past the test's refetch interval
    message = await anthropic_client(oidc_proxy, idp.token(ALICE, key=rotated)).messages.create(
        model="claude-sonnet-4-5", max_tokens=64, messages=[{"role": "user", "content": "after rotation"}]
    )
    assert message.content and idp.jwks_requests == fetches + 1
    assert len({e["interception_id"] for e in await events_of(2)}) == 2


async def test_a_flood_of_made_up_kids_costs_the_provider_one_key_fetch_per_interval(
    start_proxy: ProxyFactory, idp: OidcProvider, verifier: TokenVerifier, simulator: Simulator
) -> None:
    interval = 2.0
    oidc = OidcVerifier(KeySource(idp.issuer, min_interval=interval, timeout=2.0), idp.client_id)
    proxy = start_proxy(token_verifier=Verifiers(verifier, oidc))
    assert (await openai_client(proxy, idp.token(ALICE)).chat.completions.create(**CHAT)).choices
    await asyncio.sleep(interval + 0.05)  # the first made-up kid may cause one fetch
    fetches, seen = idp.jwks_requests, len(simulator.state.requests)
    unpublished = new_key("ES256").private
    flood = [idp.token(ALICE, key=SigningKey(f"made-up-{n}", "ES256", unpublished)) for n in range(150)]
    began = time.monotonic()
    async with httpx.AsyncClient(base_url=proxy.url, timeout=20) as client:
        answers = await asyncio.gather(
            *(client.post(OPENAI_PATH, json=CHAT, headers={"authorization": f"Bearer {t}"}) for t in flood)
        )
    intervals_passed = int((time.monotonic() - began) / interval)
    assert {answer.status_code for answer in answers} == {401}
    assert 1 <= idp.jwks_requests - fetches <= 1 + intervals_passed, "at most one fetch per interval"
    assert len(simulator.state.requests) == seen


async def test_with_the_provider_down_tokens_of_known_keys_keep_working(
    oidc_proxy: Proxy, idp: OidcProvider, events_of: Callable[..., Any]
) -> None:
    assert (await openai_client(oidc_proxy, idp.token(ALICE)).chat.completions.create(**CHAT)).choices
    idp.stop()
    try:
        fresh = idp.token(ALICE, algorithm="ES256", jti="while-down")  # never seen: its signature is checked now
        message = await anthropic_client(oidc_proxy, fresh).messages.create(
            model="claude-sonnet-4-5", max_tokens=64, messages=[{"role": "user", "content": "provider down"}]
        )
        assert message.content
    finally:
        idp.start()
    started = of_type(await events_of(2), "interception.started")
    assert "while-down" in {e["api_key_id"] for e in started}
