"""Request head limits (AIBRIDGE_MAX_HEADER_BYTES, AIBRIDGE_MAX_HEADERS) on a real uvicorn server with the
protocol class ``aibridge up``/``proxy``/``api`` serve with: 431 and a closed connection past either
limit, whatever the route, the app never called; a request within them is served as before."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from aibridge.http_limits import HeaderLimitSettings, limited_protocol
from aibridge.testing.server import serve_in_thread

calls: list[int] = []


async def echo(request: Request) -> JSONResponse:
    await request.body()  # read whole, so a large body is not cut off by the answer's close
    calls.append(len(request.headers))
    return JSONResponse({"headers": len(request.headers)})


@pytest.fixture(scope="module")
def address() -> Iterator[tuple[str, int]]:
    app = Starlette(routes=[Route("/{path:path}", echo, methods=["GET", "POST"])])
    protocol = limited_protocol(HeaderLimitSettings(max_header_bytes=8192, max_headers=20))
    with serve_in_thread(app, http=protocol) as url:
        host, port = url.removeprefix("http://").split(":")
        yield host, int(port)


def exchange(address: tuple[str, int], request: bytes) -> bytes:
    """Send ``request`` (as far as the server reads it) and return everything until the server closes."""
    with socket.create_connection(address, timeout=10) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # refused mid-send: answered first
            sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


def request_with(headers: list[bytes]) -> bytes:
    return b"GET /api/v2/aibridge/anything HTTP/1.1\r\nHost: x\r\n" + b"".join(headers) + b"Connection: close\r\n\r\n"


def test_a_request_within_the_limits_is_served(address: tuple[str, int]) -> None:
    answer = exchange(address, request_with([b"X-N-%d: v\r\n" % i for i in range(17)]))
    assert answer.startswith(b"HTTP/1.1 200") and b'{"headers":19}' in answer


def test_too_many_header_lines_are_a_431_and_the_app_is_not_called(address: tuple[str, int]) -> None:
    before = len(calls)
    answer = exchange(address, request_with([b"X-N-%d: v\r\n" % i for i in range(25)]))
    assert answer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert answer.endswith(b"the request has more than 20 header lines")
    assert len(calls) == before


def test_a_head_larger_than_the_limit_is_a_431(address: tuple[str, int]) -> None:
    before = len(calls)
    answer = exchange(address, request_with([b"X-Big-%d: %s\r\n" % (i, b"v" * 1000) for i in range(10)]))
    assert answer.startswith(b"HTTP/1.1 431 ") and answer.endswith(b"the request head is larger than 8192 bytes")
    assert len(calls) == before


def test_one_endless_header_line_is_cut_off_without_waiting_for_its_end(address: tuple[str, int]) -> None:
    """httptools would keep the whole line in memory until its CRLF: the server refuses before it comes."""
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Endless: ")
        answer = b""
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for _ in range(64):  # up to 4 MiB offered, never the end of the line
                sock.sendall(b"v" * 65536)
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 431 ")


def test_a_small_head_with_a_large_body_in_the_same_read_is_served(address: tuple[str, int]) -> None:
    """The head ends inside a read that also holds the start of a body far past the head limit (a coding
    agent's 200 KB request): the head is small, so the request is served."""
    body = b'{"pad": "' + b"x" * 200_000 + b'"}'
    head = b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    request = head + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body
    answer = exchange(address, request)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]


def test_keep_alive_requests_each_get_the_whole_allowance(address: tuple[str, int]) -> None:
    """The head count restarts with every request on a connection: many requests under the limit pass."""
    one = b"GET /a HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"v" * 5000 + b"\r\n\r\n"
    with socket.create_connection(address, timeout=10) as sock:
        for _ in range(5):
            sock.sendall(one)
            answer = b""
            while b'{"headers":2}' not in answer:
                chunk = sock.recv(65536)
                assert chunk, "the server closed the connection"
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200")


def test_the_settings_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIBRIDGE_MAX_HEADER_BYTES", "16384")
    monkeypatch.setenv("AIBRIDGE_MAX_HEADERS", "50")
    protocol = limited_protocol(HeaderLimitSettings())
    assert (protocol.max_header_bytes, protocol.max_headers) == (16384, 50)
