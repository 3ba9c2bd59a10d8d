"""The identity provider's tokens, verified against a real local OIDC provider (discovery, JWKS over HTTP):
algorithms, claims, claim mapping, key rotation, the refetch rate limit, an outage, and routing beside
bridge tokens."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Iterator

import pytest

from aibridge.auth import AuthError, ExpiredToken, InvalidToken, Role, TokenVerifier
from aibridge.identity import Verifiers, verify
from aibridge.jwks import KeySource
from aibridge.oidc import ClaimMapping, OidcVerifier, UnknownSigningKey
from aibridge.settings import CommonSettings
from aibridge.testing.oidc_provider import OidcProvider, SigningKey, User, new_key

ALICE = User("00u-alice", "alice", "alice@example.com", ("engineering",))
AUDREY = User("00u-audrey", "audrey", "audrey@example.com", ("engineering", "sec-auditors"))
ROOT = User("00u-root", "root", "root@example.com", ("sec-auditors", "platform-admins"))


@pytest.fixture
def provider() -> Iterator[OidcProvider]:
    with OidcProvider().serve() as served:
        yield served


def make_verifier(provider: OidcProvider, *, min_interval: float = 30.0, leeway: float = 60.0) -> OidcVerifier:
    mapping = ClaimMapping(auditor_groups=frozenset({"sec-auditors"}), admin_groups=frozenset({"platform-admins"}))
    keys = KeySource(provider.issuer, min_interval=min_interval, timeout=2.0)
    return OidcVerifier(keys, provider.client_id, mapping, leeway=leeway)


@pytest.mark.parametrize("algorithm", ["RS256", "ES256", "EdDSA"])
async def test_each_accepted_algorithm_verifies_and_maps_the_claims(provider: OidcProvider, algorithm: str) -> None:
    verifier = make_verifier(provider)
    token = provider.token(ALICE, algorithm=algorithm, jti="jti-1")
    identity = await verify(verifier, token)
    assert (identity.user_id, identity.username, identity.role) == ("00u-alice", "alice", Role.MEMBER)
    assert identity.token_id == "jti-1" and identity.groups == ("engineering",)
    assert provider.discovery_requests == 1 and provider.jwks_requests == 1
    assert verifier.verify(token) is identity, "a verified token is served from the cache"


async def test_roles_come_from_groups_and_the_username_falls_back_to_email(provider: OidcProvider) -> None:
    verifier = make_verifier(provider)
    assert (await verify(verifier, provider.token(AUDREY))).role is Role.AUDITOR
    assert (await verify(verifier, provider.token(ROOT))).role is Role.ADMIN
    no_name = await verify(verifier, provider.token(ALICE, preferred_username=None, jti=None, groups="engineering"))
    assert no_name.username == "alice@example.com" and no_name.groups == ("engineering",)
    token = provider.token(ALICE, preferred_username=None, email=None, jti=None)
    anonymous = await verify(verifier, token)
    assert anonymous.username == "00u-alice"
    assert anonymous.token_id == hashlib.sha256(token.encode()).hexdigest()[:32] and anonymous.token_id not in token


async def test_configured_claims_name_the_user_and_groups(provider: OidcProvider) -> None:
    settings = CommonSettings(
        oidc_issuer=provider.issuer,
        oidc_audience=provider.client_id,
        oidc_user_id_claim="oid",
        oidc_username_claims="upn",
        oidc_groups_claim="roles",
        oidc_auditor_groups="Bridge.Auditor, Other",
    )
    verifier = OidcVerifier.from_settings(settings)
    token = provider.token(ALICE, oid="object-7", upn="alice@corp.example", roles=["Bridge.Auditor"])
    identity = await verify(verifier, token)
    assert (identity.user_id, identity.username, identity.role) == ("object-7", "alice@corp.example", Role.AUDITOR)
    with pytest.raises(InvalidToken, match="'oid'"):
        await verify(verifier, provider.token(ALICE))


async def test_every_kind_of_forged_or_unfit_token_is_refused(provider: OidcProvider) -> None:
    verifier = make_verifier(provider)
    await verify(verifier, provider.token(ALICE))
    forged = provider.forged_tokens(ALICE)
    for name, token in forged.items():
        with pytest.raises(AuthError) as refused:
            await verify(verifier, token)
        assert token not in str(refused.value), name
    assert isinstance(_refusal(verifier, forged["expired"]), ExpiredToken)
    assert "algorithm 'none'" in str(_refusal(verifier, forged["algorithm none"]))
    assert "algorithm 'HS256'" in str(_refusal(verifier, forged["HS256 signed with the public key"]))
    assert isinstance(_refusal(verifier, forged["unknown kid"]), UnknownSigningKey)


def _refusal(verifier: OidcVerifier, token: str) -> AuthError:
    with pytest.raises(AuthError) as refused:
        verifier.verify(token)
    return refused.value


async def test_clock_skew_within_the_leeway_is_tolerated(provider: OidcProvider) -> None:
    verifier = make_verifier(provider, leeway=60)
    just_expired = provider.token(ALICE, lifetime=-30)
    assert (await verify(verifier, just_expired)).user_id == ALICE.sub
    with pytest.raises(ExpiredToken):
        await verify(verifier, provider.token(ALICE, lifetime=-90))
    assert (await verify(verifier, provider.token(ALICE, nbf=_now() + 30))).user_id == ALICE.sub


def _now() -> int:
    import time

    return int(time.time())


async def test_a_rotated_key_is_fetched_when_a_token_names_it(provider: OidcProvider) -> None:
    verifier = make_verifier(provider, min_interval=0.2)
    await verify(verifier, provider.token(ALICE))
    await asyncio.sleep(0.25)
    rotated = provider.rotate("ES256")
    identity = await verify(verifier, provider.token(AUDREY, key=rotated))
    assert identity.user_id == AUDREY.sub and provider.jwks_requests == 2


async def test_a_flood_of_unknown_kids_fetches_the_keys_once_per_interval(provider: OidcProvider) -> None:
    verifier = make_verifier(provider, min_interval=1.0)
    await verify(verifier, provider.token(ALICE))
    await asyncio.sleep(1.05)
    unpublished = new_key("RS256").private
    flood = [provider.token(ALICE, key=SigningKey(f"made-up-{i}", "RS256", unpublished)) for i in range(300)]
    results = await asyncio.gather(*(verify(verifier, token) for token in flood), return_exceptions=True)
    assert all(isinstance(result, InvalidToken) for result in results)
    for token in flood[:50]:
        with pytest.raises(InvalidToken):
            await verify(verifier, token)
    assert provider.jwks_requests == 2, "the first bogus kid refetches; the rest wait for that one fetch or skip"
    assert (await verify(verifier, provider.token(ROOT))).role is Role.ADMIN, "known keys keep working"


async def test_with_the_provider_down_tokens_of_cached_keys_keep_working(provider: OidcProvider) -> None:
    verifier = make_verifier(provider, min_interval=0.1)
    await verify(verifier, provider.token(ALICE, algorithm="EdDSA"))
    provider.stop()
    fresh_token = provider.token(AUDREY, algorithm="EdDSA")  # not cached: its signature is checked now
    assert (await verify(verifier, fresh_token)).user_id == AUDREY.sub
    await asyncio.sleep(0.15)
    with pytest.raises(UnknownSigningKey):
        await verify(verifier, provider.token(ALICE, key=provider.rotate("RS256")))
    assert (await verify(verifier, provider.token(ROOT, algorithm="ES256"))).role is Role.ADMIN


async def test_keys_the_provider_withdraws_stop_verifying_even_cached_tokens(provider: OidcProvider) -> None:
    verifier = make_verifier(provider, min_interval=0.1)
    old_key = provider.key("RS256")
    token = provider.token(ALICE, key=old_key)
    await verify(verifier, token)
    await asyncio.sleep(0.15)
    provider.rotate("RS256", drop_old=True)
    await verifier.keys.refresh()
    with pytest.raises(UnknownSigningKey):
        verifier.verify(token)


async def test_bridge_tokens_and_oidc_tokens_are_each_verified_by_their_issuer(
    provider: OidcProvider, verifier: TokenVerifier, make_token: Callable[..., str]
) -> None:
    verifiers = Verifiers(verifier, make_verifier(provider))
    bridge = await verify(verifiers, make_token("bob", Role.AUDITOR, user_id="bridge-bob"))
    assert (bridge.user_id, bridge.role) == ("bridge-bob", Role.AUDITOR)
    assert (await verify(verifiers, provider.token(ALICE))).user_id == ALICE.sub
    with pytest.raises(InvalidToken):  # the provider's key cannot sign a bridge token
        await verify(verifiers, provider.token(ALICE, iss="aibridge", algorithm="EdDSA"))
    with pytest.raises(InvalidToken):
        await verify(verifiers, "not-a-jwt")


def test_the_settings_need_an_audience_and_read_comma_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIBRIDGE_OIDC_ISSUER", "https://idp.example.com")
    with pytest.raises(ValueError, match="AIBRIDGE_OIDC_AUDIENCE"):
        CommonSettings()
    monkeypatch.setenv("AIBRIDGE_OIDC_AUDIENCE", "aibridge-cli")
    monkeypatch.setenv("AIBRIDGE_OIDC_ADMIN_GROUPS", "platform-admins, sre")
    assert CommonSettings().oidc_admin_groups == ["platform-admins", "sre"]
    monkeypatch.setenv("AIBRIDGE_OIDC_ISSUER", "aibridge")
    with pytest.raises(ValueError, match="issuer URL"):
        CommonSettings()


async def test_keys_older_than_max_age_are_refetched_in_the_background(provider: OidcProvider) -> None:
    keys = KeySource(provider.issuer, min_interval=0.1, max_age=0.3, timeout=2.0)
    verifier = OidcVerifier(keys, provider.client_id)
    token = provider.token(ALICE)
    await verify(verifier, token)
    verifier.verify(token)
    assert provider.jwks_requests == 1, "fresh keys: no fetch"
    await asyncio.sleep(0.35)
    assert verifier.verify(token).user_id == ALICE.sub, "answered at once from the cache"
    for _ in range(100):
        if provider.jwks_requests == 2:
            break
        await asyncio.sleep(0.02)
    assert provider.jwks_requests == 2
