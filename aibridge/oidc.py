"""The identity provider's JWTs as credentials: verified against its published keys, mapped to an Identity.

A token is accepted when it is signed by a key of the issuer's JWKS (:mod:`aibridge.jwks`) with an
accepted algorithm (RS256, ES256 or EdDSA: never ``none``, never an HMAC, and only the algorithm of the
key it names), and its ``iss``, ``aud``, ``exp``, ``nbf`` and ``iat`` hold within ``leeway`` seconds of
clock skew. Verified tokens are cached until they expire, so the hot path verifies a signature once per
token. A token naming an unknown key id raises :class:`UnknownSigningKey`, which carries the key source:
an async caller awaits its (rate-limited) refresh and asks again (:func:`aibridge.identity.verify`).
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt

from aibridge.auth import ExpiredToken, Identity, InvalidToken, RevocationList, RevokedToken, Role
from aibridge.jwks import ALGORITHMS, KeySource
from aibridge.settings import CommonSettings

REQUIRED_CLAIMS = ["exp", "iat", "iss", "aud", "sub"]


class UnknownSigningKey(InvalidToken):
    """The token names a key the cache does not hold; ``keys.refresh()`` may fetch it."""

    def __init__(self, keys: KeySource) -> None:
        super().__init__("invalid OIDC token: signed with a key the identity provider does not publish")
        self.keys = keys


@dataclass(frozen=True)
class ClaimMapping:
    """Which claims name the user, and which groups make an auditor or an admin."""

    user_id: str = "sub"
    username: tuple[str, ...] = ("preferred_username", "email")
    groups: str = "groups"
    auditor_groups: frozenset[str] = frozenset()
    admin_groups: frozenset[str] = frozenset()

    def identity(self, claims: Mapping[str, Any], token: str) -> Identity:
        user_id = claims.get(self.user_id)
        if not isinstance(user_id, str) or not user_id:
            raise InvalidToken(f"invalid OIDC token: no {self.user_id!r} claim to name the user")
        groups = _strings(claims.get(self.groups))
        return Identity(
            user_id=user_id,
            username=next((v for c in self.username if isinstance(v := claims.get(c), str) and v), user_id),
            role=self.role(groups),
            token_id=str(claims.get("jti") or hashlib.sha256(token.encode()).hexdigest()[:32]),
            expires_at=float(claims["exp"]),
            groups=groups,
        )

    def role(self, groups: Iterable[str]) -> Role:
        member_of = set(groups)
        if member_of & self.admin_groups:
            return Role.ADMIN
        return Role.AUDITOR if member_of & self.auditor_groups else Role.MEMBER


def _strings(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        return tuple(item for item in value if isinstance(item, str))
    return ()


class OidcVerifier:
    """Verifies the identity provider's tokens; see the module docstring."""

    def __init__(
        self,
        keys: KeySource,
        audience: str,
        mapping: ClaimMapping | None = None,
        *,
        leeway: float = 60.0,
        revoked: RevocationList | None = None,
        cache_size: int = 4096,
    ) -> None:
        self.keys = keys
        self._audience = audience
        self._mapping = mapping or ClaimMapping()
        self._leeway = leeway
        self._revoked = revoked or RevocationList(None)
        self._cache: OrderedDict[str, Identity] = OrderedDict()
        self._cache_size = cache_size
        self._generation = keys.generation

    @classmethod
    def from_settings(cls, settings: CommonSettings, revoked: RevocationList | None = None) -> OidcVerifier:
        assert settings.oidc_issuer is not None and settings.oidc_audience is not None
        keys = KeySource(
            settings.oidc_issuer,
            min_interval=settings.oidc_jwks_refetch_interval,
            max_age=settings.oidc_jwks_max_age,
            timeout=settings.oidc_http_timeout,
        )
        mapping = ClaimMapping(
            user_id=settings.oidc_user_id_claim,
            username=tuple(settings.oidc_username_claims),
            groups=settings.oidc_groups_claim,
            auditor_groups=frozenset(settings.oidc_auditor_groups),
            admin_groups=frozenset(settings.oidc_admin_groups),
        )
        return cls(keys, settings.oidc_audience, mapping, leeway=settings.oidc_leeway, revoked=revoked)

    @property
    def issuer(self) -> str:
        return self.keys.issuer

    def knows(self, token: str) -> bool:
        """Whether ``token`` was verified here before (and is still cached)."""
        return token in self._cache

    def verify(self, token: str) -> Identity:
        self._follow_keys()
        identity = self._cache.get(token)
        if identity is None:
            identity = self._decode(token)
            self._remember(token, identity)
        if identity.expires_at + self._leeway <= time.time():
            self._cache.pop(token, None)
            raise ExpiredToken("the OIDC token has expired")
        if identity.token_id in self._revoked:
            raise RevokedToken("the OIDC token has been revoked")
        return identity

    def _follow_keys(self) -> None:
        if self.keys.stale():
            self.keys.refresh_in_background()
        if self.keys.generation != self._generation:
            self._generation = self.keys.generation
            self._cache.clear()

    def _remember(self, token: str, identity: Identity) -> None:
        self._cache[token] = identity
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def _decode(self, token: str) -> Identity:
        key = self._key_of(token)
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[key.algorithm_name],
                audience=self._audience,
                issuer=self.issuer,
                leeway=self._leeway,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError as exc:
            raise ExpiredToken("the OIDC token has expired") from exc
        except jwt.InvalidTokenError as exc:
            raise InvalidToken(f"invalid OIDC token: {_describe(exc)}") from exc
        return self._mapping.identity(claims, token)

    def _key_of(self, token: str) -> jwt.PyJWK:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError as exc:
            raise InvalidToken("invalid OIDC token: not a well-formed token") from exc
        algorithm = header.get("alg")
        if algorithm not in ALGORITHMS:
            raise InvalidToken(f"invalid OIDC token: algorithm {str(algorithm)[:16]!r} is not accepted")
        kid = header.get("kid")
        key = self.keys.key_for(kid if isinstance(kid, str) else None)
        if key is None:
            raise UnknownSigningKey(self.keys)
        if key.algorithm_name != algorithm:
            raise InvalidToken("invalid OIDC token: the algorithm does not match the signing key")
        return key


def _describe(exc: jwt.InvalidTokenError) -> str:
    if isinstance(exc, jwt.InvalidSignatureError):
        return "signature verification failed"
    if isinstance(exc, jwt.DecodeError):
        return "not a well-formed token"
    return str(exc)
