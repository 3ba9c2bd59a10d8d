"""A server span per HTTP request for any ASGI app, continuing the caller's W3C trace.

:class:`ServerSpans` wraps an app (the query API wraps its FastAPI app with it). Each ``http`` request
gets one span of kind server named ``"{method} {route}"`` — the route *template*
(``/api/v2/aibridge/interceptions``), known only once the router matched, so the span starts as
``"{method}"`` and is renamed at the end; unmatched requests keep the bare method, as the OpenTelemetry
HTTP conventions ask (raw paths would make names unbounded). An incoming ``traceparent`` is honoured.

With tracing off the wrapper only checks :func:`aibridge.telemetry.enabled` and calls the app.
"""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aibridge import telemetry


class ServerSpans:
    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not telemetry.enabled():
            await self.app(scope, receive, send)
            return
        method = str(scope.get("method", "GET"))
        span = telemetry.tracer(self.service).start_span(
            method,
            context=telemetry.extract_from_http(scope.get("headers") or ()),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": str(scope.get("path", ""))},
        )
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        with trace.use_span(span, end_on_exit=True, record_exception=True, set_status_on_exception=True):
            try:
                await self.app(scope, receive, record_status)
            finally:
                _finish(span, scope, method, status)


def _finish(span: trace.Span, scope: Scope, method: str, status: int) -> None:
    route = getattr(scope.get("route"), "path", None)
    if isinstance(route, str) and route:  # a bare Mount("") is no route
        span.update_name(f"{method} {route}")
        span.set_attribute("http.route", route)
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR))
