"""The intercepted routes are served ahead of Starlette's router; everything else is untouched."""

from __future__ import annotations

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from aibridge.auth import TokenVerifier
from aibridge.bus import InProcessBus
from aibridge.fastpath import FastPathStarlette
from aibridge.proxy.component import ProxyComponent
from aibridge.proxy.settings import ProxySettings


async def direct(request: Request) -> Response:
    return PlainTextResponse(f"direct {request.method} {request.url.path} {'router' in request.scope}")


async def routed(request: Request) -> Response:
    return PlainTextResponse(f"routed {request.method} {request.url.path} {'router' in request.scope}")


async def broken(request: Request) -> Response:
    raise RuntimeError("a bug in a handler")


def app() -> FastPathStarlette:
    routes = [Route("/x", routed, methods=["POST", "GET"]), Route("/y", routed, methods=["POST"])]
    return FastPathStarlette(routes=routes, direct_routes={"/x": direct, "/boom": broken})


async def test_a_direct_route_is_served_without_the_router_and_the_rest_goes_through_it() -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app()), base_url="http://t") as client:
        assert (await client.post("/x", content=b"{}")).text == "direct POST /x False"
        assert (await client.get("/x")).text == "routed GET /x True"  # only POST is direct
        assert (await client.post("/y")).text == "routed POST /y True"
        assert (await client.post("/x/more")).status_code == 404  # exact paths only
        assert (await client.get("/y")).status_code == 405


async def test_an_unanswered_exception_reaches_the_server_as_through_starlette() -> None:
    transport = httpx.ASGITransport(app=app(), raise_app_exceptions=True)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        with pytest.raises(RuntimeError, match="a bug in a handler"):
            await client.post("/boom")


def test_the_proxy_serves_exactly_its_intercepted_routes_directly_with_the_routed_handlers(
    verifier: TokenVerifier,
) -> None:
    component = ProxyComponent(ProxySettings(), InProcessBus().producer(), verifier)
    routed_post = {
        route.path: route.endpoint
        for route in component.routes
        if isinstance(route, Route) and route.methods and "POST" in route.methods and "{" not in route.path
    }
    direct_routes = component.direct_routes
    assert set(direct_routes) == {
        "/api/v2/aibridge/openai/v1/chat/completions",
        "/api/v2/aibridge/openai/v1/responses",
        "/api/v2/aibridge/openai/v1/responses/compact",
        "/api/v2/aibridge/anthropic/v1/messages",
    }
    for path, handler in direct_routes.items():
        assert routed_post[path] == handler
