"""``aibridge login``: sign in at the company's identity provider and get the exports for each client.

The OAuth 2.0 device authorization grant (RFC 8628): the command asks the provider for a code, the
person opens the printed URL and approves, the command polls the token endpoint (honouring
``interval``, ``slow_down``, ``authorization_pending``, ``expired_token`` and ``access_denied``) and
saves the token set to a file readable by its owner only (0600). A later run reuses the saved token
while it is valid, refreshes it with the refresh token when it is about to expire, and only then
starts a new sign-in.

The token sent to the bridge is the **ID token** by default: its ``aud`` is the CLI's client id, so the
bridge is configured with ``AIBRIDGE_OIDC_AUDIENCE=<client id>``. ``--send access_token`` sends the
access token instead, for providers that issue JWT access tokens for an API audience of their own.
Instructions go to stderr; stdout holds only the exports (``eval "$(aibridge login)"``) or, with
``--print-token``, the token alone (for Claude Code's ``apiKeyHelper``).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import httpx

from aibridge.jwks import discovery_url
from aibridge.settings import LoginSettings

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
EXPIRY_MARGIN = 60.0
SLOW_DOWN_STEP = 5
TokenKind = Literal["id_token", "access_token"]


class LoginError(Exception):
    """Signing in did not work; the message says why (never a token)."""


@dataclass(frozen=True)
class TokenSet:
    issuer: str
    client_id: str
    id_token: str | None
    access_token: str
    refresh_token: str | None
    expires_at: float
    """When the access token expires (from ``expires_in``); an ID token's own ``exp`` is read from it."""

    def bridge_token(self, kind: TokenKind) -> str:
        token = self.id_token if kind == "id_token" else self.access_token
        if not token:
            raise LoginError(f"the identity provider returned no {kind}")
        return token

    def expires(self, kind: TokenKind) -> float:
        exp = _unverified_exp(self.bridge_token(kind))
        return exp if exp is not None else self.expires_at

    def fresh(self, kind: TokenKind, now: float) -> bool:
        return self.expires(kind) - EXPIRY_MARGIN > now


def _unverified_exp(token: str) -> float | None:
    """The ``exp`` of a JWT, read without verifying (the client only decides when to refresh)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, int | float) else None


def save(path: Path, tokens: TokenSet) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)
    with os.fdopen(descriptor, "w") as file:
        json.dump(asdict(tokens), file)


def load(path: Path) -> TokenSet | None:
    try:
        return TokenSet(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError):
        return None


@dataclass(frozen=True)
class DeviceAuthorization:
    device_code: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    expires_in: float
    interval: float


def next_interval(error: str, interval: float) -> float:
    """How long to wait before the next poll after ``error``; raises when polling must stop (RFC 8628 3.5)."""
    if error == "authorization_pending":
        return interval
    if error == "slow_down":
        return interval + SLOW_DOWN_STEP
    if error == "expired_token":
        raise LoginError("the sign-in code expired before it was approved; run 'aibridge login' again")
    if error == "access_denied":
        raise LoginError("the sign-in was denied at the identity provider")
    raise LoginError(f"the identity provider refused the sign-in: {error}")


class IdentityProvider:
    """The provider's device-authorization and token endpoints, found by discovery."""

    def __init__(self, issuer: str, client_id: str, http: httpx.Client) -> None:
        self.issuer, self.client_id, self._http = issuer, client_id, http
        discovery = self._json("GET", discovery_url(issuer))
        self._token_endpoint = _endpoint(discovery, "token_endpoint")
        self._device_endpoint = _endpoint(discovery, "device_authorization_endpoint")

    def start_device(self, scope: str) -> DeviceAuthorization:
        answer = self._json("POST", self._device_endpoint, {"client_id": self.client_id, "scope": scope})
        try:
            return DeviceAuthorization(
                device_code=str(answer["device_code"]),
                user_code=str(answer["user_code"]),
                verification_uri=str(answer.get("verification_uri") or answer["verification_url"]),
                verification_uri_complete=answer.get("verification_uri_complete"),
                expires_in=float(answer.get("expires_in", 600)),
                interval=float(answer.get("interval", 5)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise LoginError(f"the device authorization answer lacks {exc}") from exc

    def poll(
        self,
        device: DeviceAuthorization,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> TokenSet:
        deadline, interval = clock() + device.expires_in, device.interval
        grant = {"grant_type": DEVICE_GRANT, "device_code": device.device_code, "client_id": self.client_id}
        while clock() < deadline:
            sleep(interval)
            answer = self._form(self._token_endpoint, grant)
            if "error" not in answer:
                return self._token_set(answer, None)
            interval = next_interval(str(answer["error"]), interval)
        raise LoginError("the sign-in code expired before it was approved; run 'aibridge login' again")

    def refresh(self, tokens: TokenSet) -> TokenSet:
        if not tokens.refresh_token:
            raise LoginError("no refresh token was saved")
        grant = {"grant_type": "refresh_token", "refresh_token": tokens.refresh_token, "client_id": self.client_id}
        answer = self._form(self._token_endpoint, grant)
        if "error" in answer:
            raise LoginError(f"the identity provider refused the refresh: {answer['error']}")
        return self._token_set(answer, tokens)

    def _token_set(self, answer: dict[str, Any], previous: TokenSet | None) -> TokenSet:
        if not isinstance(answer.get("access_token"), str):
            raise LoginError("the identity provider's token answer has no access_token")
        return TokenSet(
            issuer=self.issuer,
            client_id=self.client_id,
            id_token=answer.get("id_token") or (previous.id_token if previous else None),
            access_token=answer["access_token"],
            refresh_token=answer.get("refresh_token") or (previous.refresh_token if previous else None),
            expires_at=time.time() + float(answer.get("expires_in", 3600)),
        )

    def _form(self, url: str, data: dict[str, str]) -> dict[str, Any]:
        """A token-endpoint call: a 400 with an OAuth ``error`` is an answer, not a failure."""
        try:
            response = self._http.post(url, data=data, headers={"accept": "application/json"})
            body = response.json()
        except httpx.HTTPError as exc:
            raise LoginError(f"POST {url}: {type(exc).__name__}") from exc
        except ValueError as exc:
            raise LoginError(f"POST {url}: HTTP {response.status_code}, not JSON") from exc
        if not isinstance(body, dict) or (response.status_code != 200 and "error" not in body):
            raise LoginError(f"POST {url}: HTTP {response.status_code}")
        return body

    def _json(self, method: str, url: str, data: dict[str, str] | None = None) -> dict[str, Any]:
        try:
            response = self._http.request(method, url, data=data, headers={"accept": "application/json"})
            response.raise_for_status()
            body = response.json()
        except httpx.HTTPError as exc:
            raise LoginError(f"{method} {url}: {exc}") from exc
        except ValueError as exc:
            raise LoginError(f"{method} {url}: not JSON") from exc
        if not isinstance(body, dict):
            raise LoginError(f"{method} {url}: not a JSON object")
        return body


def _endpoint(discovery: dict[str, Any], name: str) -> str:
    value = discovery.get(name)
    if not isinstance(value, str):
        raise LoginError(f"the identity provider's discovery document has no {name}")
    return value


def exports(bridge_url: str, token: str) -> str:
    """Shell lines that point Claude Code, Codex and the SDKs at the bridge with ``token``."""
    url = bridge_url.rstrip("/")
    return "\n".join(
        [
            f"export AIBRIDGE_URL={url} AIBRIDGE_TOKEN={token}",
            "# Claude Code and the Anthropic SDK",
            f"export ANTHROPIC_BASE_URL={url}/api/v2/aibridge/anthropic ANTHROPIC_API_KEY={token}",
            "# Codex (its [model_providers] entry reads OPENAI_API_KEY, see the README) and the OpenAI SDK",
            f"export OPENAI_BASE_URL={url}/api/v2/aibridge/openai/v1 OPENAI_API_KEY={token}",
        ]
    )


def obtain(
    provider: IdentityProvider,
    saved: TokenSet | None,
    *,
    kind: TokenKind,
    scope: str,
    force_refresh: bool = False,
    say: Callable[[str], None],
) -> TokenSet:
    """A token set whose ``kind`` token is valid: the saved one, refreshed, or from a new sign-in."""
    usable = saved if saved and (saved.issuer, saved.client_id) == (provider.issuer, provider.client_id) else None
    if usable and not force_refresh and usable.fresh(kind, time.time()):
        return usable
    if usable and usable.refresh_token:
        try:
            refreshed = provider.refresh(usable)
            if refreshed.fresh(kind, time.time()):
                return refreshed
            say(f"the refresh brought no new {kind}; signing in again")
        except LoginError as exc:
            say(f"could not refresh the saved token ({exc}); signing in again")
    device = provider.start_device(scope)
    say(f"To sign in, open {device.verification_uri_complete or device.verification_uri}")
    say(f"and confirm the code {device.user_code} (valid for {round(device.expires_in / 60)} minutes).")
    return provider.poll(device)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _configuration(args: argparse.Namespace) -> tuple[str, str, str, Path, str]:
    settings = LoginSettings()
    issuer, client_id = args.issuer or settings.oidc_issuer, args.client_id or settings.oidc_client_id
    bridge_url = args.url or settings.url or ""
    if not issuer or not client_id:
        raise LoginError("set AIBRIDGE_OIDC_ISSUER and AIBRIDGE_OIDC_CLIENT_ID (or pass --issuer, --client-id)")
    if not bridge_url and not args.print_token:
        raise LoginError("set AIBRIDGE_URL to the bridge (or pass --url)")
    path = Path(args.token_file) if args.token_file else settings.oidc_token_file
    return issuer, client_id, bridge_url, path, settings.oidc_scopes


def main(args: argparse.Namespace) -> int:
    try:
        issuer, client_id, bridge_url, path, scope = _configuration(args)
    except LoginError as exc:
        _say(f"error: {exc}")
        return 2
    saved = load(path)
    try:
        with httpx.Client(timeout=30.0, trust_env=True) as http:
            provider = IdentityProvider(issuer, client_id, http)
            tokens = obtain(provider, saved, kind=args.send, scope=scope, force_refresh=args.refresh, say=_say)
            token = tokens.bridge_token(args.send)
    except LoginError as exc:
        _say(f"error: {exc}")
        return 1
    if tokens is not saved:
        save(path, tokens)
        _say(f"signed in; token saved to {path}")
    print(token if args.print_token else exports(bridge_url, token), flush=True)
    return 0
