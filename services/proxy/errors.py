"""The proxy's errors and the provider-shaped JSON bodies clients understand.

Exceptions::

    ProxyError                 answered in the provider's error shape with ``status``
    ├── InvalidRequestBody     400: not JSON, not an object, no model or messages
    ├── RequestTooLarge        413
    ├── UpstreamUnreachable    502: connect refused, reset, DNS, protocol error
    └── UpstreamTimeout        504: connect or read timeout
"""

from __future__ import annotations

from typing import ClassVar

import orjson

from aibridge.proxy.providers.records import Provider


class ProxyError(Exception):
    status: ClassVar[int] = 500


class InvalidRequestBody(ProxyError):
    status = 400


class RequestTooLarge(ProxyError):
    status = 413


class UpstreamUnreachable(ProxyError):
    status = 502


class UpstreamTimeout(ProxyError):
    status = 504


_OPENAI_TYPES: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", None),
    404: ("invalid_request_error", None),
    413: ("invalid_request_error", "request_too_large"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
    502: ("server_error", "upstream_unreachable"),
    503: ("server_error", None),
    504: ("server_error", "upstream_timeout"),
}

_ANTHROPIC_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    502: "api_error",
    503: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def openai_error(status: int, message: str) -> dict[str, object]:
    kind, code = _OPENAI_TYPES.get(status, ("server_error", None))
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def anthropic_error(status: int, message: str) -> dict[str, object]:
    return {"type": "error", "error": {"type": _ANTHROPIC_TYPES.get(status, "api_error"), "message": message}}


def error_body(provider: Provider, status: int, message: str) -> bytes:
    """The JSON body ``provider`` would send for an error with this HTTP status."""
    if provider is Provider.OPENAI:
        return orjson.dumps(openai_error(status, message))
    return orjson.dumps(anthropic_error(status, message))
