"""The identity provider's signing keys: found by OIDC discovery, fetched as a JWKS, kept in memory.

Keys are fetched on first need, again in the background once older than ``max_age``, and at once when
a token names a key id that is not cached (the provider rotated its keys). Fetches are at most one per
``min_interval`` whatever asks for them, so a flood of tokens with made-up key ids costs the provider
one request per interval. A failed fetch keeps the keys already held: while the provider is down,
tokens signed with known keys keep working. Only keys for the accepted algorithms are kept.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

import httpx
import jwt

from aibridge.metrics import OIDC_KEY_FETCHES

log = logging.getLogger("aibridge.oidc")

ALGORITHMS = frozenset({"RS256", "ES256", "EdDSA"})
DISCOVERY_PATH = "/.well-known/openid-configuration"


class KeyFetchError(Exception):
    """Discovery or the JWKS could not be fetched or was not usable; the message says which."""


def discovery_url(issuer: str) -> str:
    return issuer.rstrip("/") + DISCOVERY_PATH


def parse_jwks(document: object) -> dict[str, jwt.PyJWK]:
    """Signing keys by key id (``""`` for a key without one), for the accepted algorithms only."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise KeyFetchError("the JWKS is not a JSON object with a 'keys' list")
    keys: dict[str, jwt.PyJWK] = {}
    for entry in document["keys"]:
        key = _signing_key(entry)
        if key is not None:
            keys[str(entry.get("kid", ""))] = key
    return keys


def _signing_key(entry: object) -> jwt.PyJWK | None:
    if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
        return None
    try:
        key = jwt.PyJWK(entry)
    except (jwt.PyJWKError, jwt.InvalidKeyError):
        return None
    return key if key.algorithm_name in ALGORITHMS else None


class KeySource:
    """The keys of one issuer, refreshed as the module docstring says."""

    def __init__(
        self,
        issuer: str,
        *,
        min_interval: float = 30.0,
        max_age: float = 3600.0,
        timeout: float = 5.0,
    ) -> None:
        self.issuer = issuer
        self._min_interval = min_interval
        self._max_age = max_age
        self._timeout = timeout
        self._keys: Mapping[str, jwt.PyJWK] = {}
        self._jwks_uri: str | None = None
        self._fetched_at = -float("inf")
        self._attempted_at = -float("inf")
        self._running: asyncio.Task[bool] | None = None
        self.generation = 0
        """Counts fetches that dropped a key, so caches of tokens signed with it can be cleared."""

    def key_for(self, kid: str | None) -> jwt.PyJWK | None:
        if kid is not None:
            return self._keys.get(kid)
        return next(iter(self._keys.values())) if len(self._keys) == 1 else None

    def stale(self) -> bool:
        return time.monotonic() - self._fetched_at >= self._max_age

    async def refresh(self) -> bool:
        """Fetch the keys unless a fetch ran less than ``min_interval`` ago; True if new keys arrived.

        Concurrent callers share one fetch. A failure is logged and leaves the cached keys in place.
        """
        running = self._running
        if running is not None and not running.done() and running.get_loop() is asyncio.get_running_loop():
            return await asyncio.shield(running)
        if time.monotonic() - self._attempted_at < self._min_interval:
            return False
        self._attempted_at = time.monotonic()
        self._running = asyncio.ensure_future(self._fetch_logged())
        return await asyncio.shield(self._running)

    def refresh_in_background(self) -> None:
        """Start :meth:`refresh` without waiting for it (from code running on the event loop)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if time.monotonic() - self._attempted_at >= self._min_interval:
            task = loop.create_task(self.refresh())
            task.add_done_callback(lambda done: done.cancelled() or done.exception())

    async def _fetch_logged(self) -> bool:
        try:
            keys = await self._fetch()
        except KeyFetchError as exc:
            OIDC_KEY_FETCHES.labels("failed").inc()
            log.warning("identity provider keys not refreshed (%d cached keys kept): %s", len(self._keys), exc)
            return False
        OIDC_KEY_FETCHES.labels("ok").inc()
        self._install(keys)
        return True

    def _install(self, keys: dict[str, jwt.PyJWK]) -> None:
        if set(self._keys) - set(keys):
            self.generation += 1
        added = sorted(set(keys) - set(self._keys))
        self._keys, self._fetched_at = keys, time.monotonic()
        if added:
            log.info("identity provider keys: %d, new key ids %s", len(keys), ", ".join(added))

    async def _fetch(self) -> dict[str, jwt.PyJWK]:
        async with httpx.AsyncClient(timeout=self._timeout, trust_env=True) as client:
            if self._jwks_uri is None:
                self._jwks_uri = self._jwks_uri_from(await _get_json(client, discovery_url(self.issuer)))
            keys = parse_jwks(await _get_json(client, self._jwks_uri))
        if not keys:
            raise KeyFetchError(f"{self._jwks_uri} holds no RS256, ES256 or EdDSA signing key")
        return keys

    def _jwks_uri_from(self, discovery: Any) -> str:
        if not isinstance(discovery, dict):
            raise KeyFetchError("the discovery document is not a JSON object")
        if discovery.get("issuer") != self.issuer:
            raise KeyFetchError(f"the discovery document names issuer {discovery.get('issuer')!r}, not {self.issuer!r}")
        uri = discovery.get("jwks_uri")
        if not isinstance(uri, str) or not uri.startswith(("https://", "http://")):
            raise KeyFetchError("the discovery document has no jwks_uri")
        return uri


async def _get_json(client: httpx.AsyncClient, url: str) -> Any:
    try:
        response = await client.get(url, headers={"accept": "application/json"})
    except httpx.HTTPError as exc:
        raise KeyFetchError(f"GET {url}: {type(exc).__name__}: {exc}") from exc
    if response.status_code != 200:
        raise KeyFetchError(f"GET {url}: HTTP {response.status_code}")
    try:
        return response.json()
    except ValueError as exc:
        raise KeyFetchError(f"GET {url}: not JSON") from exc
