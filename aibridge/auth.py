"""Bridge tokens: Ed25519-signed JWTs (EdDSA) naming a user, a role and an expiry.

The signing key stays with whoever issues tokens (``aibridge token issue``); every service verifies
with the public key alone, so verification is stateless. Revocation is a file of token ids (``jti``).
:class:`Verifier` is what every service asks; :class:`TokenVerifier` answers it for bridge tokens and
:class:`aibridge.oidc.OidcVerifier` for the identity provider's tokens (see :mod:`aibridge.identity`).

Exceptions::

    AuthError                 any reason a request is not authenticated
    ├── MissingToken          no Authorization: Bearer / X-Api-Key header
    ├── InvalidToken          malformed, wrongly signed, wrong issuer, missing claims
    ├── ExpiredToken
    └── RevokedToken
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ISSUER = "aibridge"
ALGORITHM = "EdDSA"
PRIVATE_KEY_NAME = "signing_key.pem"
PUBLIC_KEY_NAME = "signing_key.pub.pem"


class Role(StrEnum):
    MEMBER = "member"
    AUDITOR = "auditor"
    ADMIN = "admin"

    @property
    def sees_everyone(self) -> bool:
        return self is not Role.MEMBER


class AuthError(Exception):
    """The request is not authenticated. The message is safe to show: it never contains the token."""


class MissingToken(AuthError):
    pass


class InvalidToken(AuthError):
    pass


class ExpiredToken(AuthError):
    pass


class RevokedToken(AuthError):
    pass


@dataclass(frozen=True, slots=True)
class Identity:
    user_id: str
    username: str
    role: Role
    token_id: str
    expires_at: float
    groups: tuple[str, ...] = ()


class Verifier(Protocol):
    """Turns a presented token into an :class:`Identity`, or raises :class:`AuthError`."""

    def verify(self, token: str) -> Identity: ...


def generate_keypair(out_dir: Path) -> tuple[Path, Path]:
    """Write a new Ed25519 key pair (PKCS#8 / SubjectPublicKeyInfo PEM) and return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    private_path, public_path = out_dir / PRIVATE_KEY_NAME, out_dir / PUBLIC_KEY_NAME
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    private_path.touch(mode=0o600, exist_ok=True)
    private_path.write_bytes(private_pem)
    public_path.write_bytes(public_pem)
    return private_path, public_path


def load_private_key(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} does not hold an Ed25519 private key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(path.read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path} does not hold an Ed25519 public key")
    return key


def issue_token(
    key: Ed25519PrivateKey,
    username: str,
    *,
    user_id: str | None = None,
    role: Role = Role.MEMBER,
    ttl_seconds: int = 90 * 86400,
    now: float | None = None,
) -> str:
    """Return a signed bridge token. ``user_id`` defaults to a UUID derived from the username."""
    issued = int(now if now is not None else time.time())
    claims = {
        "iss": ISSUER,
        "sub": user_id or str(uuid.uuid5(uuid.NAMESPACE_URL, f"aibridge:user:{username}")),
        "username": username,
        "role": role.value,
        "iat": issued,
        "exp": issued + ttl_seconds,
        "jti": str(uuid.uuid4()),
    }
    return jwt.encode(claims, key, algorithm=ALGORITHM)


class RevocationList:
    """Token ids read from a file, one per line (``#`` starts a comment); re-read when the file changes."""

    def __init__(self, path: Path | None, check_interval: float = 2.0) -> None:
        self._path = path
        self._interval = check_interval
        self._ids: frozenset[str] = frozenset()
        self._mtime: float | None = None
        self._checked = 0.0
        self._reload()

    def __contains__(self, token_id: object) -> bool:
        now = time.monotonic()
        if now - self._checked >= self._interval:
            self._checked = now
            self._reload()
        return token_id in self._ids

    def _reload(self) -> None:
        if self._path is None:
            return
        try:
            mtime = self._path.stat().st_mtime
        except FileNotFoundError:
            self._ids, self._mtime = frozenset(), None
            return
        if mtime == self._mtime:
            return
        lines = self._path.read_text().splitlines()
        self._ids = frozenset(line.split("#", 1)[0].strip() for line in lines) - {""}
        self._mtime = mtime


class TokenVerifier:
    """Verifies bridge tokens with the public key; caches results so the hot path pays once per token."""

    def __init__(self, public_key: Ed25519PublicKey, revoked: RevocationList, cache_size: int = 4096) -> None:
        self._key = public_key
        self._revoked = revoked
        self._cache: OrderedDict[str, Identity] = OrderedDict()
        self._cache_size = cache_size

    @classmethod
    def from_files(cls, public_key_file: Path, revoked_file: Path | None = None) -> TokenVerifier:
        return cls(load_public_key(public_key_file), RevocationList(revoked_file))

    def knows(self, token: str) -> bool:
        """Whether ``token`` was verified here before (and is still cached)."""
        return token in self._cache

    def verify(self, token: str) -> Identity:
        identity = self._cache.get(token)
        if identity is None:
            identity = self._decode(token)
            self._remember(token, identity)
        if identity.expires_at <= time.time():
            self._cache.pop(token, None)
            raise ExpiredToken("the bridge token has expired")
        if identity.token_id in self._revoked:
            raise RevokedToken("the bridge token has been revoked")
        return identity

    def _remember(self, token: str, identity: Identity) -> None:
        self._cache[token] = identity
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def _decode(self, token: str) -> Identity:
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                issuer=ISSUER,
                options={"require": ["exp", "sub", "jti", "iss"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise ExpiredToken("the bridge token has expired") from exc
        except jwt.InvalidTokenError as exc:
            raise InvalidToken(f"invalid bridge token: {_describe(exc)}") from exc
        try:
            return Identity(
                user_id=str(claims["sub"]),
                username=str(claims.get("username") or claims["sub"]),
                role=Role(claims.get("role", Role.MEMBER.value)),
                token_id=str(claims["jti"]),
                expires_at=float(claims["exp"]),
            )
        except ValueError as exc:
            raise InvalidToken("invalid bridge token: unknown role") from exc


def _describe(exc: jwt.InvalidTokenError) -> str:
    if isinstance(exc, jwt.InvalidSignatureError):
        return "signature verification failed"
    if isinstance(exc, jwt.DecodeError):
        return "not a well-formed token"
    return str(exc)


def token_from_headers(authorization: str | None, api_key: str | None) -> str:
    """Pick the bridge token from ``Authorization: Bearer`` or ``X-Api-Key``."""
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        raise InvalidToken("the Authorization header must be 'Bearer <token>'")
    if api_key and api_key.strip():
        return api_key.strip()
    raise MissingToken("no bridge token: send 'Authorization: Bearer <token>' or 'X-Api-Key: <token>'")
