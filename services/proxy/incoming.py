"""The client's request as the hot path reads it: headers once as a dict, the body straight from ASGI.

Starlette's ``Headers.get`` scans and decodes the raw header list on every call; an interception asks
for six to ten names (credentials, length, user agent, client classification), so the headers are
decoded once into a dict. The body is read from ``receive`` directly rather than through
``Request.stream()`` (an async generator per request).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from starlette.requests import ClientDisconnect
from starlette.types import Receive

from aibridge.auth import Identity, Verifier, token_from_headers
from aibridge.identity import verify
from aibridge.proxy.errors import RequestTooLarge
from aibridge.proxy.upstream.client import HOP_BY_HOP

# coder-session-token: the bridge credential in Coder's header (the API accepts it), never for the provider
DROPPED_REQUEST_HEADERS = HOP_BY_HOP | {
    "host",
    "content-length",
    "authorization",
    "x-api-key",
    "coder-session-token",
    "accept-encoding",
}

RawHeaders = Iterable[tuple[bytes, bytes]]


def header_map(raw: RawHeaders) -> dict[str, str]:
    """Lower-case name → value; the first of repeated names wins (as ``Headers.get`` answers)."""
    headers: dict[str, str] = {}
    for name, value in raw:
        headers.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
    return headers


async def authenticate(headers: Mapping[str, str], verifier: Verifier) -> Identity:
    return await verify(verifier, token_from_headers(headers.get("authorization"), headers.get("x-api-key")))


async def read_body(receive: Receive, headers: Mapping[str, str], limit: int) -> bytes:
    """The whole request body; :class:`RequestTooLarge` past ``limit`` bytes (declared or sent)."""
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestTooLarge(f"the request body is larger than {limit} bytes")
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        part: bytes = message.get("body", b"")
        if part:
            size += len(part)
            if size > limit:
                raise RequestTooLarge(f"the request body is larger than {limit} bytes")
            parts.append(part)
        if not message.get("more_body", False):
            break
    return parts[0] if len(parts) == 1 else b"".join(parts)


BRIDGE_ONLY_PREFIX = "x-aibridge-mcp"


def forward_headers(raw: RawHeaders, template: dict[str, str]) -> dict[str, str]:
    """The client's headers minus credentials, hop-by-hop ones and those meant for the bridge alone
    (``X-Aibridge-Mcp``, ``X-Aibridge-Mcp-Token-<server>``), plus the central key."""
    headers: dict[str, str] = {}
    for raw_name, raw_value in raw:
        name = raw_name.decode("latin-1")
        lowered = name.lower()
        if lowered not in DROPPED_REQUEST_HEADERS and not lowered.startswith(BRIDGE_ONLY_PREFIX):
            headers[name] = raw_value.decode("latin-1")
    headers.setdefault("content-type", "application/json")
    headers.update(template)
    return headers
