"""Who is calling: one verifier for every service, answering for bridge tokens and the IdP's tokens alike.

:class:`Verifiers` holds the configured verifiers (a bridge-token one, an OIDC one, or both) and hands
each token to the one that issued it: a token either has already verified here (a dictionary lookup)
or its unverified ``iss`` claim picks the verifier, which then checks everything. Services call
:func:`verify`, which also fetches the identity provider's rotated keys when a token names a new one;
they never learn which verifier answered.
"""

from __future__ import annotations

import base64
import binascii
import logging

import orjson

from aibridge.auth import Identity, RevocationList, TokenVerifier, Verifier, load_public_key
from aibridge.oidc import OidcVerifier, UnknownSigningKey
from aibridge.settings import CommonSettings

log = logging.getLogger("aibridge.identity")


class NoVerifierConfigured(Exception):
    """Neither bridge tokens nor an identity provider are configured."""


class Verifiers:
    """Routes each token to the verifier of its issuer; see the module docstring."""

    def __init__(self, bridge: TokenVerifier | None = None, oidc: OidcVerifier | None = None) -> None:
        if bridge is None and oidc is None:
            raise NoVerifierConfigured(
                "set AIBRIDGE_AUTH_PUBLIC_KEY_FILE (bridge tokens) or AIBRIDGE_OIDC_ISSUER and AIBRIDGE_OIDC_AUDIENCE"
                " (the identity provider's tokens)"
            )
        self.bridge = bridge
        self.oidc = oidc

    @classmethod
    def from_settings(cls, settings: CommonSettings) -> Verifiers:
        revoked = RevocationList(settings.auth_revoked_file)
        bridge = None
        if settings.auth_public_key_file is not None:
            bridge = TokenVerifier(load_public_key(settings.auth_public_key_file), revoked)
        oidc = OidcVerifier.from_settings(settings, revoked) if settings.oidc_issuer else None
        return cls(bridge, oidc)

    def verify(self, token: str) -> Identity:
        return self._verifier_for(token).verify(token)

    async def start(self) -> None:
        """Fetch the identity provider's keys ahead of the first token (a failure is logged, not raised)."""
        if self.oidc is not None:
            await self.oidc.keys.refresh()

    def _verifier_for(self, token: str) -> Verifier:
        if self.oidc is None:
            assert self.bridge is not None
            return self.bridge
        if self.bridge is None or self.oidc.knows(token):
            return self.oidc
        if self.bridge.knows(token) or unverified_issuer(token) != self.oidc.issuer:
            return self.bridge
        return self.oidc


def unverified_issuer(token: str) -> str | None:
    """The ``iss`` claim of a JWT without checking anything: only to choose who verifies it."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = orjson.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError):
        return None
    issuer = payload.get("iss") if isinstance(payload, dict) else None
    return issuer if isinstance(issuer, str) else None


async def verify(verifier: Verifier, token: str) -> Identity:
    """``verifier.verify(token)``; a token signed with a key not yet fetched waits for one (rate-limited) fetch."""
    try:
        return verifier.verify(token)
    except UnknownSigningKey as exc:
        if not await exc.keys.refresh():
            raise
    return verifier.verify(token)
