"""A Starlette app that serves a few exact-path POST routes directly, before its router and middleware.

The proxy's intercepted routes (chat completions, responses, compaction, messages) are on every keystroke of
an AI coding session. Through Starlette they pass ``ServerErrorMiddleware``, ``ExceptionMiddleware``,
the router's match over every route, and ``request_response``'s exception wrapper, each wrapping
``send`` again: about 6 % of the proxy's CPU per request in a profile at 200 req/s
(docs/performance.md). Their handlers need none of it: they answer every error themselves, in the
provider's shape. Anything else (other methods, other paths, a path with a ``root_path`` prefix)
goes through Starlette unchanged, to the same handlers, so the fast path changes no answer.

An exception a fast handler does not answer propagates to the server, as it would through Starlette's
``ServerErrorMiddleware`` (which re-raises it): uvicorn logs it and answers 500 if nothing was sent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

Handler = Callable[[Request], Awaitable[Response]]


class FastPathStarlette(Starlette):
    def __init__(self, *args: object, direct_routes: Mapping[str, Handler] | None = None, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.direct_routes: dict[str, Handler] = dict(direct_routes or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            handler = self.direct_routes.get(scope["path"])
            if handler is not None:
                scope["app"] = self
                response = await handler(Request(scope, receive, send))
                await response(scope, receive, send)
                return
        await super().__call__(scope, receive, send)
