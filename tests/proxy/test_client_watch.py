"""The client watch under the bridge's own server protocol is told of a lost client by the server (no
task per request), and elsewhere waits on ``receive``; either way the handler's task is cancelled at once."""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aibridge.http_limits import HeaderLimitSettings, limited_protocol
from aibridge.proxy.relay import ClientWatch
from aibridge.testing.broker import free_port


async def _serve_and_leave(http: Any) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def slow(request: Request) -> Response:
        watch = ClientWatch(request.receive)
        seen["task"] = watch._watcher is not None
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            seen["gone"] = watch.gone
            watch.absorb()
        finally:
            watch.stop()
        seen["ended"] = asyncio.get_running_loop().time()
        return Response(status_code=499)

    port = free_port()
    app = Starlette(routes=[Route("/slow", slow, methods=["POST"])])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, http=http, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    try:
        for _ in range(500):
            if server.started:
                break
            await asyncio.sleep(0.01)
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /slow HTTP/1.1\r\nhost: test\r\ncontent-length: 2\r\n\r\n{}")
        await writer.drain()
        await asyncio.sleep(0.2)
        left = asyncio.get_running_loop().time()
        writer.close()
        for _ in range(300):
            if "ended" in seen:
                break
            await asyncio.sleep(0.01)
        seen["noticed_after"] = seen["ended"] - left
    finally:
        server.should_exit = True
        await serving
    return seen


async def test_under_the_bridges_protocol_the_server_tells_the_watch() -> None:
    seen = await _serve_and_leave(limited_protocol(HeaderLimitSettings()))
    assert seen["gone"] is True and seen["task"] is False
    assert seen["noticed_after"] < 1.0


async def test_under_another_server_a_task_waits_on_receive() -> None:
    seen = await _serve_and_leave("httptools")
    assert seen["gone"] is True and seen["task"] is True
    assert seen["noticed_after"] < 1.0
