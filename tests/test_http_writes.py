"""The server's writes of one loop turn leave together, in order; closing writes them first; aborting drops
them; flow control sees them; and a real server's answers (blocking, streamed, ending the connection)
arrive whole through it."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from aibridge.http_limits import HeaderLimitSettings, limited_protocol
from aibridge.http_writes import CoalescingTransport
from aibridge.testing.broker import free_port


class _Transport:
    """Records what reaches the connection's transport."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.buffered = 0

    def write(self, data: bytes) -> None:
        self.calls.append(("write", data))

    def writelines(self, chunks: list[bytes]) -> None:
        self.calls.append(("writelines", list(chunks)))

    def close(self) -> None:
        self.calls.append(("close", None))

    def abort(self) -> None:
        self.calls.append(("abort", None))

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


async def test_the_writes_of_one_turn_go_out_together_at_the_next() -> None:
    inner = _Transport()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
    transport.write(b"")
    transport.write(b"body")
    assert inner.calls == []
    assert transport.get_write_buffer_size() == len(b"HTTP/1.1 200 OK\r\n\r\nbody")
    await asyncio.sleep(0)
    assert inner.calls == [("writelines", [b"HTTP/1.1 200 OK\r\n\r\n", b"body"])]
    transport.write(b"alone")
    await asyncio.sleep(0)
    assert inner.calls[-1] == ("write", b"alone")
    assert transport.get_write_buffer_size() == 0
    assert transport.get_extra_info("peername") == "info:peername"  # the rest is the transport's


async def test_closing_writes_what_is_kept_first_and_aborting_drops_it() -> None:
    loop = asyncio.get_running_loop()
    inner = _Transport()
    transport = CoalescingTransport(inner, loop)  # type: ignore[arg-type]
    transport.write(b"last words")
    transport.close()
    await asyncio.sleep(0)  # the scheduled flush finds nothing left
    assert inner.calls == [("write", b"last words"), ("close", None)]
    aborted = _Transport()
    transport = CoalescingTransport(aborted, loop)  # type: ignore[arg-type]
    transport.write(b"never sent")
    transport.abort()
    await asyncio.sleep(0)
    assert aborted.calls == [("abort", None)]


async def _numbers(request: Request) -> StreamingResponse:
    async def parts() -> Any:
        for number in range(5):
            yield f"data: {number}\n\n".encode()
            await asyncio.sleep(0.01)

    return StreamingResponse(parts(), media_type="text/event-stream")


async def _hello(request: Request) -> Response:
    close = {"connection": "close"} if request.query_params.get("close") else {}
    return Response(b"x" * int(request.query_params.get("size", "5")), headers=close)


async def test_a_real_server_answers_whole_through_it() -> None:
    """uvicorn with the server's protocol: a blocking answer, a large one, one that closes the
    connection, and a stream whose chunks come apart in time, read off a raw socket."""
    app = Starlette(routes=[Route("/hello", _hello), Route("/numbers", _numbers)])
    port = free_port()
    protocol = limited_protocol(HeaderLimitSettings())
    config = uvicorn.Config(app, host="127.0.0.1", port=port, http=protocol, log_level="warning")  # type: ignore[arg-type]
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    try:
        await _until(lambda: server.started)
        _, idle = await asyncio.open_connection("127.0.0.1", port)
        await _until(lambda: bool(server.server_state.connections))
        assert all(isinstance(c.transport, CoalescingTransport) for c in server.server_state.connections)
        idle.close()
        assert (await _get(port, "/hello")).endswith(b"\r\n\r\nxxxxx")
        large = await _get(port, "/hello?size=300000")
        assert large.endswith(b"\r\n\r\n" + b"x" * 300000)
        closing = await _get(port, "/hello?close=1", until_closed=True)
        assert b"connection: close" in closing and closing.endswith(b"xxxxx")
        stream = await _get(port, "/numbers", until_closed=False, end=b"0\r\n\r\n")
        assert all(f"data: {number}".encode() in stream for number in range(5))
    finally:
        server.should_exit = True
        await serving


async def _until(condition: Any) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("not within 5 s")


async def _get(port: int, path: str, *, until_closed: bool = False, end: bytes | None = None) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    writer.write(f"GET {path} HTTP/1.1\r\nhost: test\r\n\r\n".encode())
    data = b""
    try:
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), 5)
            if not chunk:
                break
            data += chunk
            if until_closed:
                continue
            if end is not None and data.endswith(end):
                break
            head, _, body = data.partition(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            length = next((line.split(b":")[1] for line in lines if line.lower().startswith(b"content-length")), None)
            if length is not None and len(body) >= int(length):
                break
    finally:
        writer.close()
    return data
