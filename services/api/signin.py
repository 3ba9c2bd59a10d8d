"""Signing in to the web pages: the token a person pastes, kept in a cookie the page's scripts cannot read.

The cookie holds the token itself (a bridge token or the identity provider's, both already signed), and
every page request verifies it again through the same verifier as the JSON routes, so expiry and
revocation apply at once and no second secret is needed. It is ``HttpOnly``, ``SameSite=Strict``,
``Path=/aibridge``, ``Secure`` when the page was served over https, and expires with the token (at most
:data:`MAX_AGE_SECONDS`). A POST whose ``Origin`` is another site is refused (with SameSite=Strict, the
second guard against cross-site requests); the token is never written into a page.
"""

from __future__ import annotations

import time
from typing import Final
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from aibridge.auth import AuthError, Identity, MissingToken, Verifier
from aibridge.identity import verify

COOKIE: Final = "aibridge_session"
PATH: Final = "/aibridge"
MAX_AGE_SECONDS: Final = 12 * 3600
MAX_TOKEN_LENGTH: Final = 16 * 1024


class ForeignOrigin(Exception):
    """A form was posted from another site."""


async def identify(request: Request) -> Identity:
    """The signed-in person, from the cookie; :class:`AuthError` when there is none or it is no longer valid."""
    token = request.cookies.get(COOKIE, "")
    if not token:
        raise MissingToken("not signed in")
    return await check(request, token)


async def check(request: Request, token: str) -> Identity:
    """The identity of a pasted token, verified like the API's bearer tokens."""
    token = token.strip()
    if not token:
        raise MissingToken("paste a token to sign in")
    if len(token) > MAX_TOKEN_LENGTH:
        raise AuthError("that is not a token: it is too long")
    verifier: Verifier = request.app.state.verifier
    return await verify(verifier, token)


def remember(response: Response, request: Request, token: str, identity: Identity) -> None:
    """Set the session cookie; it expires with the token."""
    lifetime = int(min(identity.expires_at - time.time(), MAX_AGE_SECONDS))
    response.set_cookie(
        COOKIE,
        token.strip(),
        max_age=max(lifetime, 0),
        path=PATH,
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )


def forget(response: Response, request: Request) -> None:
    response.delete_cookie(COOKIE, path=PATH, secure=request.url.scheme == "https", httponly=True, samesite="strict")


def check_origin(request: Request) -> None:
    """Refuse a POST whose ``Origin`` (or, without one, ``Referer``) names another host than this one.

    Browsers send ``Origin`` on every cross-site POST; a request with neither header comes from a
    program, not from a page on another site."""
    sent = request.headers.get("origin") or request.headers.get("referer")
    if not sent:
        return
    if sent == "null":
        raise ForeignOrigin("a form from a page without an origin may not post here")
    origin = urlsplit(sent)
    if (origin.scheme, origin.netloc) != (request.url.scheme, request.url.netloc):
        raise ForeignOrigin(f"a form from {origin.scheme}://{origin.netloc} may not post here")


def safe_next(target: str | None, default: str) -> str:
    """Where to go after signing in: a path on these pages only (never another site)."""
    if not target or not target.startswith(PATH + "/") or target.startswith("//") or "\\" in target:
        return default
    return target
