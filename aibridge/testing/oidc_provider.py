"""A small, real OpenID Connect provider for tests: discovery, JWKS, device authorization, tokens.

It signs with PyJWT, the library the bridge verifies with, using RSA (RS256), EC P-256 (ES256) and
Ed25519 (EdDSA) keys. Tests stand in for the person at the browser by calling :meth:`OidcProvider.approve`
(or ``POST /test/approve``), rotate keys with :meth:`OidcProvider.rotate`, mint tokens of any shape with
:meth:`OidcProvider.token`, count the JWKS requests, and stop the server to play an outage.

Endpoints (RFC 8414 discovery, RFC 7517 JWKS, RFC 8628 device flow, RFC 6749 refresh)::

    GET  /.well-known/openid-configuration
    GET  /jwks
    POST /device            client_id, scope -> device_code, user_code, verification_uri, interval
    POST /token             grant_type device_code | refresh_token
    POST /test/approve      user_code, sub, username, email, groups (comma list), deny=1
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from aibridge.testing.broker import free_port
from aibridge.testing.server import serve_in_thread

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
ALGORITHMS = {"RS256": "RSA", "ES256": "EC", "EdDSA": "OKP"}


@dataclass(frozen=True)
class SigningKey:
    kid: str
    algorithm: str
    private: Any

    def public_jwk(self) -> dict[str, Any]:
        jwk: dict[str, Any] = jwt.get_algorithm_by_name(self.algorithm).to_jwk(self.private.public_key(), as_dict=True)
        return jwk | {"kid": self.kid, "use": "sig", "alg": self.algorithm}


def new_key(algorithm: str, kid: str | None = None) -> SigningKey:
    private: Any
    if algorithm == "RS256":
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif algorithm == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
    elif algorithm == "EdDSA":
        private = ed25519.Ed25519PrivateKey.generate()
    else:
        raise ValueError(f"unsupported algorithm {algorithm}")
    return SigningKey(kid or f"{algorithm.lower()}-{uuid.uuid4().hex[:8]}", algorithm, private)


@dataclass
class User:
    sub: str
    username: str
    email: str
    groups: tuple[str, ...] = ()


@dataclass
class DeviceGrant:
    device_code: str
    user_code: str
    client_id: str
    scope: str
    expires_at: float
    interval: int
    last_poll: float = 0.0
    user: User | None = None
    denied: bool = False


@dataclass
class OidcProvider:
    """The provider's state; :meth:`serve` puts it on a loopback port."""

    client_id: str = "aibridge-cli"
    access_audience: str = "aibridge-api"
    token_lifetime: int = 3600
    device_interval: int = 1
    device_lifetime: int = 600
    port: int = field(default_factory=free_port)
    keys: list[SigningKey] = field(default_factory=lambda: [new_key(a) for a in ALGORITHMS])
    jwks_requests: int = 0
    discovery_requests: int = 0
    token_requests: int = 0
    devices: dict[str, DeviceGrant] = field(default_factory=dict)
    refresh_tokens: dict[str, User] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _serving: ExitStack | None = None

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ---- what a test does -------------------------------------------------------------------

    @contextmanager
    def serve(self) -> Iterator[OidcProvider]:
        self.start()
        try:
            yield self
        finally:
            self.stop()

    def start(self) -> None:
        """Serve on ``port`` (again, after :meth:`stop`: the issuer URL stays the same)."""
        self._serving = ExitStack()
        self._serving.enter_context(serve_in_thread(self.app(), port=self.port))

    def stop(self) -> None:
        if self._serving is not None:
            self._serving.close()
            self._serving = None

    def key(self, algorithm: str) -> SigningKey:
        return next(key for key in self.keys if key.algorithm == algorithm)

    def rotate(self, algorithm: str = "RS256", *, drop_old: bool = False) -> SigningKey:
        """Publish a new key (first in the JWKS); with ``drop_old`` the others of its algorithm go."""
        key = new_key(algorithm)
        kept = [k for k in self.keys if not (drop_old and k.algorithm == algorithm)]
        self.keys = [key, *kept]
        return key

    def token(
        self,
        user: User | None = None,
        *,
        algorithm: str = "RS256",
        key: SigningKey | None = None,
        audience: str | None = None,
        lifetime: int | None = None,
        **claims: Any,
    ) -> str:
        """A signed token for ``user`` (an id token: ``aud`` is the client id unless given).
        ``claims`` override or add any claim; a claim given as None is left out."""
        signing = key or self.key(algorithm)
        payload = self.claims(user, audience=audience, lifetime=lifetime, **claims)
        return jwt.encode(payload, signing.private, algorithm=signing.algorithm, headers={"kid": signing.kid})

    def claims(
        self, user: User | None = None, *, audience: str | None = None, lifetime: int | None = None, **claims: Any
    ) -> dict[str, Any]:
        user = user or User("user-1", "alice", "alice@example.com")
        now = int(time.time())
        payload: dict[str, Any] = {
            "iss": self.issuer,
            "sub": user.sub,
            "aud": audience or self.client_id,
            "iat": now,
            "nbf": now,
            "exp": now + (self.token_lifetime if lifetime is None else lifetime),
            "jti": uuid.uuid4().hex,
            "preferred_username": user.username,
            "email": user.email,
            "groups": list(user.groups),
        }
        return {k: v for k, v in (payload | claims).items() if v is not None}

    def forged_tokens(self, user: User | None = None) -> dict[str, str]:
        """Tokens a verifier must refuse, by what is wrong with them (each otherwise well-formed)."""
        rsa_key, ec_key = self.key("RS256"), self.key("ES256")
        now = int(time.time())
        return {
            "wrong issuer": self.token(user, iss="https://idp.example.com"),
            "wrong audience": self.token(user, audience="some-other-app"),
            "algorithm none": jwt.encode(self.claims(user), "", algorithm="none", headers={"kid": rsa_key.kid}),
            "expired": self.token(user, lifetime=-600),
            "not yet valid": self.token(user, nbf=now + 600),
            "issued in the future": self.token(user, iat=now + 600),
            "no exp": self.token(user, exp=None),
            "no sub": self.token(user, sub=None),
            "unknown kid": self.token(user, key=new_key("RS256")),
            "known kid, other key": self.token(user, key=SigningKey(rsa_key.kid, "RS256", new_key("RS256").private)),
            "RS256 under an EC key's kid": self.token(user, key=SigningKey(ec_key.kid, "RS256", rsa_key.private)),
            "HS256 signed with the public key": hs256_with_public_key(self.claims(user), rsa_key),
        }

    def approve(self, user_code: str, user: User) -> None:
        self._grant_by_user_code(user_code).user = user

    def deny(self, user_code: str) -> None:
        self._grant_by_user_code(user_code).denied = True

    def _grant_by_user_code(self, user_code: str) -> DeviceGrant:
        with self._lock:
            return next(g for g in self.devices.values() if g.user_code == user_code)

    # ---- the HTTP side ----------------------------------------------------------------------

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/.well-known/openid-configuration", self._discovery),
                Route("/jwks", self._jwks),
                Route("/device", self._device, methods=["POST"]),
                Route("/token", self._token, methods=["POST"]),
                Route("/test/approve", self._approve, methods=["POST"]),
            ]
        )

    async def _discovery(self, request: Request) -> Response:
        self.discovery_requests += 1
        return JSONResponse(
            {
                "issuer": self.issuer,
                "jwks_uri": f"{self.issuer}/jwks",
                "token_endpoint": f"{self.issuer}/token",
                "device_authorization_endpoint": f"{self.issuer}/device",
                "grant_types_supported": [DEVICE_GRANT, "refresh_token"],
                "id_token_signing_alg_values_supported": list(ALGORITHMS),
            }
        )

    async def _jwks(self, request: Request) -> Response:
        self.jwks_requests += 1
        return JSONResponse({"keys": [key.public_jwk() for key in self.keys]})

    async def _device(self, request: Request) -> Response:
        form = await _form(request)
        if form.get("client_id") != self.client_id:
            return _oauth_error("invalid_client", 401)
        grant = DeviceGrant(
            device_code=secrets.token_urlsafe(24),
            user_code=f"{secrets.randbelow(10**8):08d}",
            client_id=self.client_id,
            scope=str(form.get("scope", "")),
            expires_at=time.time() + self.device_lifetime,
            interval=self.device_interval,
        )
        with self._lock:
            self.devices[grant.device_code] = grant
        return JSONResponse(
            {
                "device_code": grant.device_code,
                "user_code": grant.user_code,
                "verification_uri": f"{self.issuer}/activate",
                "verification_uri_complete": f"{self.issuer}/activate?user_code={grant.user_code}",
                "expires_in": self.device_lifetime,
                "interval": grant.interval,
            }
        )

    async def _token(self, request: Request) -> Response:
        self.token_requests += 1
        form = await _form(request)
        if form.get("client_id") != self.client_id:
            return _oauth_error("invalid_client", 401)
        grant_type = form.get("grant_type")
        if grant_type == DEVICE_GRANT:
            return self._device_token(str(form.get("device_code", "")))
        if grant_type == "refresh_token":
            with self._lock:
                user = self.refresh_tokens.pop(str(form.get("refresh_token", "")), None)
            return self._tokens(user) if user else _oauth_error("invalid_grant")
        return _oauth_error("unsupported_grant_type")

    def _device_token(self, device_code: str) -> Response:
        with self._lock:
            grant = self.devices.get(device_code)
            if grant is None:
                return _oauth_error("invalid_grant")
            now = time.time()
            too_soon = now - grant.last_poll < grant.interval
            grant.last_poll = now
            if now > grant.expires_at:
                return _oauth_error("expired_token")
            if grant.denied:
                return _oauth_error("access_denied")
            if grant.user is None:
                if too_soon:
                    grant.interval += 5
                    return _oauth_error("slow_down")
                return _oauth_error("authorization_pending")
            del self.devices[device_code]
        return self._tokens(grant.user)

    def _tokens(self, user: User) -> Response:
        refresh = secrets.token_urlsafe(32)
        with self._lock:
            self.refresh_tokens[refresh] = user
        return JSONResponse(
            {
                "token_type": "Bearer",
                "expires_in": self.token_lifetime,
                "id_token": self.token(user),
                "access_token": self.token(user, audience=self.access_audience),
                "refresh_token": refresh,
            },
            headers={"cache-control": "no-store"},
        )

    async def _approve(self, request: Request) -> Response:
        form = await _form(request)
        user_code = str(form.get("user_code", ""))
        try:
            if form.get("deny"):
                self.deny(user_code)
            else:
                groups = tuple(g for g in str(form.get("groups", "")).split(",") if g)
                user = User(str(form["sub"]), str(form["username"]), str(form.get("email", "")), groups)
                self.approve(user_code, user)
        except StopIteration:
            return _oauth_error("invalid_request", 404)
        return JSONResponse({"ok": True})


def hs256_with_public_key(claims: dict[str, Any], key: SigningKey) -> str:
    """The algorithm-confusion forgery: an HMAC whose secret is the published RSA public key (PEM)."""
    public_pem = key.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": "JWT", "kid": key.kid}
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def _form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body (what OAuth clients send), first value per name."""
    return {name: values[0] for name, values in parse_qs((await request.body()).decode()).items()}


def _oauth_error(error: str, status: int = 400) -> Response:
    return JSONResponse({"error": error, "error_description": error.replace("_", " ")}, status_code=status)
