"""Provider routes forwarded as they are (models, count_tokens, a stored response by id): authenticated
and admitted like interceptions (a rejection is only counted and logged), but not recorded as
interceptions.

A route may name path parameters (``/v1/responses/{response_id}``): each must be an id (letters, digits,
``_`` and ``-``, at most 256) before it is put into the upstream URL, so no ``..`` or ``/`` can move the
request elsewhere on the provider. Metrics and logs name the route's template, never the id.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from aibridge import telemetry
from aibridge.auth import AuthError, Verifier
from aibridge.metrics import PROXY_AUTH_FAILURES, PROXY_PASSTHROUGH_REQUESTS
from aibridge.proxy.errors import ProxyError, error_body
from aibridge.proxy.guards.limits import Admission, Rejection, render_rejection
from aibridge.proxy.incoming import authenticate, forward_headers, header_map, read_body
from aibridge.proxy.providers.records import Provider
from aibridge.proxy.recording.observe import passthrough_span
from aibridge.proxy.upstream.client import Upstream, with_headers

log = logging.getLogger("aibridge.proxy.passthrough")

_PATH_ID = re.compile(r"[A-Za-z0-9_-]{1,256}")
_PARAMETER = re.compile(r"\{(\w+)\}")


class Passthrough:
    """Forwards one route to ``url`` with the central key; the body comes back unchanged.

    ``url`` may hold the route's path parameters as ``{name}``, filled in from the request once checked.
    """

    def __init__(
        self,
        provider: Provider,
        route: str,
        url: str,
        key_headers: dict[str, str],
        *,
        upstream: Upstream,
        verifier: Verifier,
        max_body: int,
        admission: Admission,
    ) -> None:
        self.provider = provider
        self.route = route
        self._url = url
        self._parameters = tuple(_PARAMETER.findall(url))
        self._key_headers = key_headers
        self._upstream = upstream
        self._verifier = verifier
        self._max_body = max_body
        self._admission = admission

    def _error(self, status: int, message: str) -> Response:
        return Response(error_body(self.provider, status, message), status, media_type="application/json")

    async def handle(self, request: Request) -> Response:
        if not telemetry.enabled():
            return await self._handle(request)
        with passthrough_span(request, self.provider.value, self.route) as span:
            response = await self._handle(request)
            span.set_attribute("http.response.status_code", response.status_code)
            return response

    async def _handle(self, request: Request) -> Response:
        client_headers = header_map(request.scope["headers"])
        try:
            identity = await authenticate(client_headers, self._verifier)
        except AuthError as exc:
            PROXY_AUTH_FAILURES.labels(type(exc).__name__).inc()
            return self._error(401, str(exc))
        response = await self._answer(request, client_headers, identity.user_id)
        PROXY_PASSTHROUGH_REQUESTS.labels(self.provider.value, self.route, str(response.status_code)).inc()
        log.info(
            "passthrough %s %s -> %d",
            request.method,
            self.route,
            response.status_code,
            extra={"user_id": identity.user_id, "provider": self.provider.value, "route": self.route},
        )
        return response

    async def _answer(self, request: Request, client_headers: dict[str, str], user_id: str) -> Response:
        url = self._upstream_url(request.path_params)
        if url is None:
            return self._error(400, f"invalid {' or '.join(self._parameters)}: expected letters, digits, _ or -")
        admitted = self._admission.admit(user_id)
        if isinstance(admitted, Rejection):
            status, headers, body = render_rejection(self.provider.value, admitted)
            return Response(body, status, headers)
        with admitted:
            return await self._forward(request, client_headers, url)

    def _upstream_url(self, path_params: Mapping[str, object]) -> str | None:
        """``url`` with each path parameter filled in, or None when one is not an id."""
        url = self._url
        for name in self._parameters:
            value = path_params.get(name)
            if not isinstance(value, str) or _PATH_ID.fullmatch(value) is None:
                return None
            url = url.replace(f"{{{name}}}", value)
        return url

    async def _forward(self, request: Request, client_headers: dict[str, str], url: str) -> Response:
        url = url if not request.url.query else f"{url}?{request.url.query}"
        try:
            raw = request.scope["headers"]
            body = None
            if request.method == "POST":
                body = await read_body(request.receive, client_headers, self._max_body)
            headers = forward_headers(raw, self._key_headers)
            telemetry.trace_http_headers(headers)  # tracing on: the provider continues the Passthrough span
            if body is None:
                headers.pop("content-type", None)
            upstream = await self._upstream.request(request.method, url, headers, body)
            answer = await upstream.read()
        except ClientDisconnect:
            return Response(status_code=499)
        except ProxyError as exc:
            return self._error(exc.status, str(exc))
        return with_headers(Response(answer, upstream.status), upstream.headers)


def not_found(provider: Provider) -> Response:
    message = "this route is not served by AI Bridge"
    return Response(error_body(provider, 404, message), 404, media_type="application/json")
