"""A real MCP server (the ``mcp`` SDK over Streamable HTTP on uvicorn) for tests and benchmarks.

Tools: ``add(a, b)``, ``slow(seconds)``, ``fail()`` (raises: an ``isError`` result), ``rpc_error()`` (a JSON-RPC
error), ``big(kib)`` (a large text),
``whoami()`` (the bearer token the server received) and, when built with ``extra_tools``, ``echo(text)``.
Every ``Authorization`` header the server receives is kept in :attr:`McpTestServer.tokens_seen`, and
``required_token`` makes the server refuse any other with a 401, so tests assert which token reached it.
The port stays the same across :meth:`stop` and :meth:`start`, for "down at start, then up" and
"killed in the middle of a call".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import threading
import time
from types import TracebackType
from typing import Any

import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.exceptions import MCPError
from starlette.types import ASGIApp, Receive, Scope, Send

from aibridge.testing.broker import free_port


def build_server(*, extra_tools: bool = False) -> MCPServer:
    server = MCPServer("aibridge-test", log_level="WARNING")

    @server.tool(description="Add two integers.")
    def add(a: int, b: int) -> int:
        return a + b

    @server.tool(description="Sleep for the given seconds, then say so.")
    async def slow(seconds: float) -> str:
        await asyncio.sleep(seconds)
        return f"slept {seconds}"

    @server.tool(description="Always fails.")
    def fail() -> str:
        raise ToolError("this tool always fails")  # the SDK answers isError: true

    @server.tool(description="Always answers with a JSON-RPC error.")
    def rpc_error() -> str:
        raise MCPError(-32050, "backend unavailable")

    @server.tool(description="Return a text of the given size in KiB.")
    def big(kib: int) -> str:
        return "x" * (kib * 1024)

    @server.tool(description="The bearer token this server received.")
    def whoami(ctx: Context) -> str:
        request = ctx.request_context.request
        header = request.headers.get("authorization", "") if request is not None else ""
        return str(header).removeprefix("Bearer ")

    if extra_tools:

        @server.tool(description="Echo the text.")
        def echo(text: str) -> str:
            return text

    return server


class _TokenGate:
    """Keeps every Authorization header seen; with ``required`` set, answers 401 to any other."""

    def __init__(self, app: ASGIApp, owner: McpTestServer) -> None:
        self.app = app
        self.owner = owner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            token = headers.get(b"authorization", b"").decode().removeprefix("Bearer ")
            self.owner.tokens_seen.append(token)
            if self.owner.required_token is not None and token != self.owner.required_token:
                await send({"type": "http.response.start", "status": 401, "headers": []})
                await send({"type": "http.response.body", "body": b"unauthorized"})
                return
        await self.app(scope, receive, send)


class McpTestServer:
    """Serves a fresh :func:`build_server` at ``http://127.0.0.1:PORT/mcp`` in a background thread."""

    def __init__(self, port: int | None = None, *, required_token: str | None = None) -> None:
        self.port = port or free_port()
        self.required_token = required_token
        self.extra_tools = False
        self.tokens_seen: list[str] = []
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> McpTestServer:
        app = _TokenGate(build_server(extra_tools=self.extra_tools).streamable_http_app(), self)
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on", timeout_graceful_shutdown=1
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name=f"mcp-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the MCP test server on port {self.port} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop at once: open connections are cut, like a server that dies."""
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._server.force_exit = True
        self._thread.join(15)
        self._server = None
        self._thread = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> McpTestServer:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def serve_forever(port: int, **options: Any) -> None:  # pragma: no cover - a manual helper
    """``python -m aibridge.testing.mcp_server --port 8765``: the server until interrupted."""
    with McpTestServer(port, **options) as server:
        print(f"MCP test server at {server.url}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)


def main(argv: list[str] | None = None) -> None:  # pragma: no cover - a manual helper
    parser = argparse.ArgumentParser(
        description="A small MCP server (add, slow, fail, whoami, ...) for trying injection."
    )
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--required-token", default=None, help="refuse any other bearer token with a 401")
    args = parser.parse_args(argv)
    serve_forever(args.port, required_token=args.required_token)


if __name__ == "__main__":  # pragma: no cover
    main()
