"""The shared upstream HTTP client. Third-party errors become :mod:`aibridge.proxy.errors` here only.

Three implementations of one seam: the builtin HTTP/1.1 client (``http1.py``, the default, chosen by
measurement: see docs/proxy.md), aiohttp and httpx. Bodies arrive decompressed, so
``content-encoding`` and ``content-length`` are never copied to the client.

An egress proxy from the environment (``HTTPS_PROXY``/``HTTP_PROXY``, minus ``NO_PROXY``) is honoured:
aiohttp and httpx read it; the builtin client has no proxy support, so when one applies to a
provider's base URL, the proxy uses aiohttp instead and says so (:func:`create_upstream`).
"""

from __future__ import annotations

import asyncio
import logging
import urllib.request
from collections.abc import AsyncIterator, Mapping
from typing import Protocol, TypeVar
from urllib.parse import urlsplit

import aiohttp
import httpx
from starlette.responses import Response

from aibridge.proxy.errors import UpstreamTimeout, UpstreamUnreachable
from aibridge.proxy.settings import ProxySettings

log = logging.getLogger("aibridge.proxy")

HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "trailers"}
    | {"transfer-encoding", "upgrade", "proxy-connection"}
)
_NOT_TO_CLIENT = HOP_BY_HOP | {"content-length", "content-encoding", "date", "server"}


Body = bytes | list[bytes | memoryview]
"""A request body: bytes, or its parts in order (a body spliced from the client's bytes and more: the
builtin client writes the parts with one ``writev``, never joined; aiohttp and httpx get them joined)."""


def body_length(body: Body) -> int:
    return len(body) if isinstance(body, bytes) else sum(len(part) for part in body)


def joined(body: Body | None) -> bytes | None:
    return body if body is None or isinstance(body, bytes) else b"".join(body)


def client_headers(headers: Mapping[str, str] | list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Upstream response headers worth passing to the client."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    return [(name, value) for name, value in items if name.lower() not in _NOT_TO_CLIENT]


class UpstreamResponse(Protocol):
    status: int

    @property
    def headers(self) -> list[tuple[str, str]]: ...

    async def read(self) -> bytes: ...

    def ready(self) -> bytes:
        """Body bytes already received, consumed without waiting (b"" when none, or unknown)."""

    def chunks(self) -> AsyncIterator[bytes]: ...

    async def close(self) -> None: ...


class Upstream(Protocol):
    async def start(self) -> None: ...

    async def request(self, method: str, url: str, headers: dict[str, str], body: Body | None) -> UpstreamResponse:
        """Send and wait for the status line and headers; the body is read later."""

    async def stop(self) -> None: ...


class _AiohttpResponse:
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status = response.status

    @property
    def headers(self) -> list[tuple[str, str]]:
        return client_headers(list(self._response.headers.items()))

    async def read(self) -> bytes:
        try:
            return await self._response.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _map_aiohttp(exc) from exc
        finally:
            self._response.release()

    def ready(self) -> bytes:
        try:
            return self._response.content.read_nowait()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _map_aiohttp(exc) from exc

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _map_aiohttp(exc) from exc

    async def close(self) -> None:
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()  # an unfinished body: drop the connection so the upstream stops


def _map_aiohttp(exc: BaseException) -> Exception:
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return UpstreamTimeout(f"the provider did not answer in time ({type(exc).__name__})")
    return UpstreamUnreachable(f"the provider could not be reached: {type(exc).__name__}: {exc}")


class AiohttpUpstream:
    def __init__(self, settings: ProxySettings) -> None:
        self._settings = settings
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        settings = self._settings
        connector = aiohttp.TCPConnector(
            limit=settings.upstream_max_connections, limit_per_host=0, ttl_dns_cache=300, keepalive_timeout=60
        )
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=settings.upstream_connect_timeout, sock_read=settings.upstream_read_timeout
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            skip_auto_headers=("User-Agent",),
            raise_for_status=False,
            trust_env=True,  # HTTP(S)_PROXY and NO_PROXY
        )

    async def request(self, method: str, url: str, headers: dict[str, str], body: Body | None) -> UpstreamResponse:
        assert self._session is not None, "the upstream client is not started"
        try:
            response = await self._session.request(
                method, url, headers=headers, data=joined(body), allow_redirects=False
            )
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _map_aiohttp(exc) from exc
        return _AiohttpResponse(response)

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class _HttpxResponse:
    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status = response.status_code

    @property
    def headers(self) -> list[tuple[str, str]]:
        return client_headers(list(self._response.headers.items()))

    async def read(self) -> bytes:
        try:
            return await self._response.aread()
        except httpx.HTTPError as exc:
            raise _map_httpx(exc) from exc
        finally:
            await self._response.aclose()

    def ready(self) -> bytes:
        return b""

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.aiter_bytes():
                yield chunk
        except httpx.HTTPError as exc:
            raise _map_httpx(exc) from exc

    async def close(self) -> None:
        await self._response.aclose()


def _map_httpx(exc: httpx.HTTPError) -> Exception:
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamTimeout(f"the provider did not answer in time ({type(exc).__name__})")
    return UpstreamUnreachable(f"the provider could not be reached: {type(exc).__name__}: {exc}")


class HttpxUpstream:
    def __init__(self, settings: ProxySettings) -> None:
        self._settings = settings
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        settings = self._settings
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(
                connect=settings.upstream_connect_timeout, read=settings.upstream_read_timeout, write=60.0, pool=None
            ),
            limits=httpx.Limits(max_connections=settings.upstream_max_connections, max_keepalive_connections=200),
            follow_redirects=False,
        )

    async def request(self, method: str, url: str, headers: dict[str, str], body: Body | None) -> UpstreamResponse:
        assert self._client is not None, "the upstream client is not started"
        request = self._client.build_request(method, url, headers=headers, content=joined(body))
        try:
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise _map_httpx(exc) from exc
        return _HttpxResponse(response)

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def create_upstream(settings: ProxySettings) -> Upstream:
    if settings.upstream_client == "httpx":
        return HttpxUpstream(settings)
    if settings.upstream_client == "aiohttp":
        return AiohttpUpstream(settings)
    if proxied := egress_proxied(settings.openai_base_url, settings.anthropic_base_url):
        log.warning(
            "an egress proxy from the environment (HTTP_PROXY/HTTPS_PROXY) applies to %s; the builtin upstream"
            " client cannot use one, so aiohttp, which does, forwards instead (AIBRIDGE_UPSTREAM_CLIENT)",
            ", ".join(proxied),
        )
        return AiohttpUpstream(settings)
    from aibridge.proxy.upstream.http1 import Http1Upstream

    return Http1Upstream(settings)


def egress_proxied(*urls: str) -> list[str]:
    """Those of ``urls`` an egress proxy from the environment applies to (``NO_PROXY`` respected)."""
    proxies = urllib.request.getproxies_environment()
    found = []
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme in proxies and not urllib.request.proxy_bypass(parts.hostname or ""):
            found.append(url)
    return found


ResponseT = TypeVar("ResponseT", bound=Response)


def with_headers(response: ResponseT, headers: list[tuple[str, str]]) -> ResponseT:
    """Add the upstream's headers to ``response`` (repeated names kept)."""
    response.raw_headers.extend((name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers)
    return response
