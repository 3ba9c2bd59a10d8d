"""What verifying a caller costs on the hot path: bridge tokens and the identity provider's tokens.

Times, in one process, ``TokenVerifier.verify`` alone (the bridge-token verifier, a cached token), the
combined verifier (:class:`aibridge.identity.Verifiers`, both kinds configured) for each kind of cached
token, the async ``aibridge.identity.verify`` the services call, and the first verification of fresh
RS256, ES256 and EdDSA tokens from a local OIDC provider (a signature check each).

    .venv/bin/python bench/identity_verify.py
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from aibridge.auth import (
    RevocationList,
    TokenVerifier,
    generate_keypair,
    issue_token,
    load_private_key,
    load_public_key,
)
from aibridge.identity import Verifiers, verify
from aibridge.jwks import KeySource
from aibridge.oidc import OidcVerifier
from aibridge.testing.oidc_provider import OidcProvider

CACHED_RUNS = 200_000
FRESH_TOKENS = 300


def per_call_ns(call: Callable[[], object], runs: int = CACHED_RUNS) -> float:
    start = time.perf_counter()
    for _ in range(runs):
        call()
    return (time.perf_counter() - start) / runs * 1e9


async def main() -> None:
    keys = Path(tempfile.mkdtemp())
    generate_keypair(keys)
    bridge = TokenVerifier(load_public_key(keys / "signing_key.pub.pem"), RevocationList(None))
    bridge_token = issue_token(load_private_key(keys / "signing_key.pem"), "alice")
    with OidcProvider().serve() as idp:
        both = Verifiers(bridge, OidcVerifier(KeySource(idp.issuer), idp.client_id))
        oidc_token = idp.token()
        await verify(both, oidc_token)
        await verify(both, bridge_token)
        print(
            f"bridge token, TokenVerifier alone (cached):  {per_call_ns(lambda: bridge.verify(bridge_token)):6.0f} ns"
        )
        print(f"bridge token, Verifiers (cached):            {per_call_ns(lambda: both.verify(bridge_token)):6.0f} ns")
        print(f"OIDC token, Verifiers (cached):              {per_call_ns(lambda: both.verify(oidc_token)):6.0f} ns")
        start = time.perf_counter()
        for _ in range(CACHED_RUNS):
            await verify(both, oidc_token)
        print(
            f"OIDC token, await identity.verify (cached):  {(time.perf_counter() - start) / CACHED_RUNS * 1e9:6.0f} ns"
        )
        for algorithm in ("RS256", "ES256", "EdDSA"):
            fresh = [idp.token(algorithm=algorithm) for _ in range(FRESH_TOKENS)]
            start = time.perf_counter()
            for token in fresh:
                both.verify(token)
            per_token = (time.perf_counter() - start) / FRESH_TOKENS * 1e6
            print(f"OIDC token, first verification ({algorithm}):{' ' * (6 - len(algorithm))}  {per_token:6.0f} us")


if __name__ == "__main__":
    asyncio.run(main())
