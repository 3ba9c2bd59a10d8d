"""The builtin HTTP/1.1 upstream client (``aibridge.proxy.upstream.http1``) against scripted peers on real sockets.

Each peer is an ``asyncio.start_server`` on 127.0.0.1 that reads the request and writes exact raw
bytes, so wire formats and misbehaviour (stalls, early closes, garbage) are exact. Every case runs on
the default asyncio loop and on uvloop (the loop production runs on).
"""

from __future__ import annotations

import asyncio
import datetime
import gzip
import hashlib
import random
import socket
import ssl
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from aibridge.proxy.errors import UpstreamTimeout, UpstreamUnreachable
from aibridge.proxy.settings import ProxySettings
from aibridge.proxy.upstream.client import Body, create_upstream
from aibridge.proxy.upstream.http1 import HIGH_WATER, Http1Response, Http1Upstream, _head, _Target

READ_TIMEOUT = 0.3
CONNECT_TIMEOUT = 0.3
CASE_TIMEOUT = 10.0  # a hang fails the case instead of the whole run
SOON = 1.0  # what the server must observe (EOF, a request) arrives well within this

Main = Callable[[], Awaitable[None]]
Run = Callable[[Main], None]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Run:
    factory = uvloop.new_event_loop if request.param == "uvloop" else asyncio.new_event_loop

    def run_case(main: Main) -> None:
        async def bounded() -> None:
            assert isinstance(asyncio.get_running_loop(), uvloop.Loop) == (request.param == "uvloop")
            await asyncio.wait_for(main(), CASE_TIMEOUT)

        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(bounded())

    return run_case


# the scripted peer


@dataclass
class Request:
    head: bytes
    body: bytes = b""

    @property
    def line(self) -> str:
        return self.head.split(b"\r\n", 1)[0].decode("latin-1")

    @property
    def headers(self) -> list[tuple[str, str]]:
        lines = self.head.decode("latin-1").split("\r\n")[1:]
        pairs = [line.split(":", 1) for line in lines if line]
        return [(name.lower(), value.strip()) for name, value in pairs]

    def values(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name]


@dataclass(eq=False)
class Conn:
    """One accepted connection, as the server sees it."""

    index: int
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    requests: list[Request] = field(default_factory=list)
    eof: asyncio.Event = field(default_factory=asyncio.Event)  # the client closed its side

    async def send(self, *parts: bytes, pause: float = 0.0) -> None:
        for part in parts:
            self.writer.write(part)
            await self.writer.drain()
            if pause:
                await asyncio.sleep(pause)

    async def wait_eof(self) -> None:
        """Read (and drop) until the client closes the connection."""
        try:
            while await self.reader.read(65536):
                pass
        except ConnectionError:
            pass
        self.eof.set()


Script = Callable[[Conn, Request], Awaitable[bool | None]]  # False: the server closes after answering


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise AssertionError(f"a partial request head: {exc.partial!r}") from exc
        return None
    request = Request(head)
    length = request.values("content-length")
    request.body = await reader.readexactly(int(length[0])) if length else b""
    return request


class Peer:
    def __init__(self, script: Script, host: str) -> None:
        self.script = script
        self.host = host
        self.port = 0
        self.conns: list[Conn] = []
        self.requests: list[Request] = []
        self.errors: list[BaseException] = []
        self.arrived = asyncio.Event()  # set at every request
        self.tasks: set[asyncio.Task[None]] = set()

    @property
    def accepted(self) -> int:
        return len(self.conns)

    def url(self, path: str = "/", scheme: str = "http", host: str | None = None) -> str:
        host = host or (f"[{self.host}]" if ":" in self.host else self.host)
        return f"{scheme}://{host}:{self.port}{path}"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Conn(len(self.conns), reader, writer)
        self.conns.append(conn)
        self.tasks.add(asyncio.current_task())  # type: ignore[arg-type]
        try:
            while (request := await read_request(reader)) is not None:
                conn.requests.append(request)
                self.requests.append(request)
                self.arrived.set()
                if await self.script(conn, request) is False:
                    break
            else:
                conn.eof.set()
        except (ConnectionError, ssl.SSLError):
            conn.eof.set()
        except asyncio.CancelledError:  # serve() ends the script; a cancelled handler task makes 3.11 log an error
            pass
        except Exception as exc:  # reported by serve(): a broken script must fail the case
            self.errors.append(exc)
        finally:
            writer.close()


@asynccontextmanager
async def serve(
    script: Script, *, host: str = "127.0.0.1", ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[Peer]:
    peer = Peer(script, host)
    server = await asyncio.start_server(peer.handle, host, 0, ssl=ssl_context)
    peer.port = server.sockets[0].getsockname()[1]
    try:
        yield peer
    finally:
        server.close()
        for task in peer.tasks:
            task.cancel()
        await asyncio.gather(*peer.tasks, return_exceptions=True)
        await server.wait_closed()
    assert not peer.errors, peer.errors


def reply(*parts: bytes, close: bool = False, pause: float = 0.0) -> Script:
    """Answer every request with ``parts`` (separate writes)."""

    async def script(conn: Conn, request: Request) -> bool:
        await conn.send(*parts, pause=pause)
        return not close

    return script


def per_connection(*scripts: Script) -> Script:
    """Connection ``i`` is answered by ``scripts[i]`` (the last one for any later connection)."""

    async def script(conn: Conn, request: Request) -> bool | None:
        return await scripts[min(conn.index, len(scripts) - 1)](conn, request)

    return script


async def never_answer(conn: Conn, request: Request) -> bool:
    await conn.wait_eof()
    return False


def ok(body: bytes = b"ok", *headers: bytes) -> bytes:
    extra = b"".join(header + b"\r\n" for header in headers)
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n%s" % (len(body), extra, body)


def chunked(body: bytes, size: int) -> bytes:
    pieces = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"


@asynccontextmanager
async def upstream(
    *, keepalive: float = 60.0, ssl_context: ssl.SSLContext | None = None, **settings: Any
) -> AsyncIterator[Http1Upstream]:
    options = {"upstream_connect_timeout": CONNECT_TIMEOUT, "upstream_read_timeout": READ_TIMEOUT} | settings
    client = Http1Upstream(ProxySettings(**options), keepalive=keepalive, ssl_context=ssl_context)
    await client.start()
    try:
        yield client
    finally:
        await client.stop()


async def fetch(client: Http1Upstream, url: str, method: str = "GET", body: Body | None = None) -> bytes:
    response = await client.request(method, url, {}, body)
    return await response.read()


async def wait_until(condition: Callable[[], bool], timeout: float = SOON) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 - the client's state has no event to wait on
            await asyncio.sleep(0.005)


async def seen(event: asyncio.Event) -> None:
    await asyncio.wait_for(event.wait(), SOON)


def names(response: Http1Response) -> set[str]:
    return {name.lower() for name, _ in response.headers}


# bodies


def test_body_framed_by_content_length(run: Run) -> None:
    async def main() -> None:
        wire = (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\nX-Request-Id: r1\r\n\r\n"
            b'{"ok":true}'
        )
        async with serve(reply(wire)) as peer, upstream() as client:
            response = await client.request("GET", peer.url("/v1/models"), {}, None)
            assert response.status == 200
            assert response.headers == [("Content-Type", "application/json"), ("X-Request-Id", "r1")]
            assert await response.read() == b'{"ok":true}'

    run(main)


def test_chunked_body_streams_before_the_server_finished(run: Run) -> None:
    async def main() -> None:
        go = asyncio.Event()

        async def script(conn: Conn, request: Request) -> None:
            await conn.send(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
            await conn.send(b"7\r\ndata: 1\r\n")
            await go.wait()
            await conn.send(b"a;ext=x\r\n\ndata: 2\n\n\r\n", b"A\r\ndata: 3\n\n\n\r\n", b"0\r\n\r\n", pause=0.01)

        async with serve(script) as peer, upstream() as client:
            response = await client.request("POST", peer.url("/v1/chat/completions"), {}, b"{}")
            assert response.status == 200
            assert response.headers == [("Content-Type", "text/event-stream")]
            pieces = response.chunks()
            assert await anext(pieces) == b"data: 1"  # the server waits for `go`: this arrived mid-stream
            go.set()
            rest = [piece async for piece in pieces]
            assert len(rest) >= 2
            assert b"".join(rest) == b"\ndata: 2\n\ndata: 3\n\n\n"
            assert await fetch(client, peer.url()) == b"data: 1\ndata: 2\n\ndata: 3\n\n\n"  # the connection is kept
            assert peer.accepted == 1

    run(main)


@pytest.mark.parametrize("status_line", [b"HTTP/1.1 200 OK", b"HTTP/1.0 200 OK"])
def test_body_until_the_connection_closes(run: Run, status_line: bytes) -> None:
    async def main() -> None:
        head = status_line + b"\r\nContent-Type: text/plain\r\n\r\n"
        script = reply(head, b"part one, ", b"part two", close=True, pause=0.01)
        async with serve(script) as peer, upstream() as client:
            response = await client.request("GET", peer.url(), {}, None)
            assert response.headers == [("Content-Type", "text/plain")]
            assert await response.read() == b"part one, part two"
            assert [piece async for piece in (await client.request("GET", peer.url(), {}, None)).chunks()] in (
                [b"part one, ", b"part two"],
                [b"part one, part two"],
            )
            assert peer.accepted == 2

    run(main)


@pytest.mark.parametrize("status", [b"204 No Content", b"304 Not Modified"])
def test_no_body_statuses(run: Run, status: bytes) -> None:
    async def main() -> None:
        async with serve(reply(b"HTTP/1.1 " + status + b"\r\nX-A: 1\r\n\r\n")) as peer, upstream() as client:
            response = await client.request("GET", peer.url(), {}, None)
            assert response.status == int(status[:3])
            assert response.headers == [("X-A", "1")]
            assert await response.read() == b""
            assert await fetch(client, peer.url()) == b""
            assert peer.accepted == 1  # nothing pending: the connection was reused

    run(main)


# the request on the wire


def test_request_as_sent_on_the_wire(run: Run) -> None:
    async def main() -> None:
        body = b'{"model":"gpt-4o-mini","messages":[]}'
        caller = {
            "Authorization": "Bearer sk-1",
            "Content-Type": "application/json",
            "X-Trace": "t-1",
            "Host": "evil.example",
            "Content-Length": "999",
            "Connection": "close",
            "Transfer-Encoding": "chunked",
            "Keep-Alive": "timeout=5",
        }
        async with serve(reply(ok())) as peer, upstream() as client:
            url = peer.url("/v1/chat/completions?api-version=2024-06-01&q=a%20b")
            assert await (await client.request("POST", url, caller, body)).read() == b"ok"
            sent = peer.requests[0]
            assert sent.line == "POST /v1/chat/completions?api-version=2024-06-01&q=a%20b HTTP/1.1"
            assert sent.values("host") == [f"127.0.0.1:{peer.port}"]
            assert sent.values("content-length") == [str(len(body))]
            assert sent.values("accept-encoding") == ["gzip, deflate"]
            assert b"\r\nAuthorization: Bearer sk-1\r\n" in sent.head
            assert sent.values("content-type") == ["application/json"]
            assert sent.values("x-trace") == ["t-1"]
            assert {name for name, _ in sent.headers} == {
                "host",
                "authorization",
                "content-type",
                "x-trace",
                "accept-encoding",
                "content-length",
            }
            assert sent.body == body

            await (await client.request("GET", peer.url(), {"Accept-Encoding": "identity"}, None)).read()
            sent = peer.requests[1]
            assert sent.line == "GET / HTTP/1.1"
            assert sent.values("accept-encoding") == ["identity"]  # the caller's, no default added
            assert sent.values("content-length") == []  # a GET without a body says nothing

            await (await client.request("POST", peer.url("/empty"), {}, None)).read()
            assert peer.requests[2].values("content-length") == ["0"]
            assert peer.accepted == 1  # the caller's `Connection: close` was not forwarded

    run(main)


def test_large_request_body_arrives_whole(run: Run) -> None:
    async def main() -> None:
        body = random.Random(7).randbytes(3 * 1024 * 1024 + 5)  # handed over with the head uncopied (writev)

        async def script(conn: Conn, request: Request) -> None:
            await conn.send(ok(hashlib.sha256(request.body).hexdigest().encode()))

        async with serve(script) as peer, upstream() as client:
            assert await fetch(client, peer.url("/upload"), "POST", body) == hashlib.sha256(body).hexdigest().encode()
            assert peer.requests[0].values("content-length") == [str(len(body))]

    run(main)


@pytest.mark.parametrize("kind", ["builtin", "aiohttp", "httpx"])
@pytest.mark.parametrize("size", [700, 300 * 1024], ids=["joined to the head", "handed over in parts"])
def test_a_body_in_parts_arrives_whole_in_order(run: Run, size: int, kind: str) -> None:
    """A body spliced from the client's bytes (views of them and bytes between) is sent as one body, by
    every upstream client (the builtin one writes the parts as they are)."""

    async def main() -> None:
        whole = random.Random(size).randbytes(size)
        view = memoryview(whole)
        parts: list[bytes | memoryview] = [view[:100], b"", b"-injected-", view[100:-3], view[-3:], b"}"]
        expected = b"".join(parts)

        async def script(conn: Conn, request: Request) -> None:
            await conn.send(ok(hashlib.sha256(request.body).hexdigest().encode()))

        settings = ProxySettings(upstream_connect_timeout=CONNECT_TIMEOUT, upstream_read_timeout=READ_TIMEOUT)
        client = create_upstream(settings.model_copy(update={"upstream_client": kind}))
        await client.start()
        try:
            async with serve(script) as peer:
                answer = await client.request("POST", peer.url("/v1/chat/completions"), {}, parts)
                assert await answer.read() == hashlib.sha256(expected).hexdigest().encode()
                assert peer.requests[0].values("content-length") == [str(len(expected))]
        finally:
            await client.stop()

    run(main)


@pytest.mark.parametrize(
    ("url", "request_head"),
    [
        ("http://api.example.com/v1/x?a=1", b"GET /v1/x?a=1 HTTP/1.1\r\nhost: api.example.com\r\n"),
        ("https://api.example.com", b"GET / HTTP/1.1\r\nhost: api.example.com\r\n"),
        ("https://api.example.com:8443/v1", b"GET /v1 HTTP/1.1\r\nhost: api.example.com:8443\r\n"),
        ("http://api.example.com:443/v1", b"GET /v1 HTTP/1.1\r\nhost: api.example.com:443\r\n"),
        ("http://[::1]:8080/v1", b"GET /v1 HTTP/1.1\r\nhost: [::1]:8080\r\n"),
    ],
)
def test_host_header_omits_only_the_default_port(url: str, request_head: bytes) -> None:
    assert _head("GET", _Target(url), {}, None).startswith(request_head)


def test_ipv6_peer(run: Run) -> None:
    try:
        socket.socket(socket.AF_INET6).close()
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")

    async def main() -> None:
        async with serve(reply(ok(b"six")), host="::1") as peer, upstream() as client:
            assert await fetch(client, peer.url("/v1")) == b"six"
            assert peer.requests[0].values("host") == [f"[::1]:{peer.port}"]

    run(main)


@pytest.mark.parametrize(
    "headers",
    [
        {"X-A": "v\r\nX-Injected: 1"},
        {"X-A": "v\nX-Injected: 1"},
        {"X-A": "v\rX-Injected: 1"},
        {"X-A\r\nX-Injected": "1"},
        {"X-A": "\u2713 not latin-1"},
    ],
)
def test_unsafe_header_raises_and_sends_nothing(run: Run, headers: dict[str, str]) -> None:
    async def main() -> None:
        async with serve(reply(ok())) as peer, upstream() as client:
            with pytest.raises(UpstreamUnreachable):
                await client.request("POST", peer.url(), headers, b"{}")
            await asyncio.sleep(0.02)
            assert peer.accepted == 0
            assert client.open_connections == 0
            assert await fetch(client, peer.url()) == b"ok"

    run(main)


def test_not_an_http_url_raises(run: Run) -> None:
    async def main() -> None:
        async with upstream() as client:
            with pytest.raises(UpstreamUnreachable):
                await client.request("GET", "ftp://example.com/x", {}, None)

    run(main)


# content-encoding

PLAIN = b"".join(b'data: {"index": %d, "text": "hello"}\n\n' % i for i in range(3000))
ENCODED = {"gzip": gzip.compress(PLAIN), "x-gzip": gzip.compress(PLAIN), "deflate": zlib.compress(PLAIN)}


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
@pytest.mark.parametrize("encoding", list(ENCODED))
def test_compressed_bodies_are_decoded(run: Run, encoding: str, framing: str) -> None:
    async def main() -> None:
        body = ENCODED[encoding]
        common = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Encoding: %s\r\n" % encoding.encode()
        if framing == "chunked":
            head, wire = common + b"Transfer-Encoding: chunked\r\n\r\n", chunked(body, len(body) // 3 + 1)
        else:
            head, wire = common + b"Content-Length: %d\r\n\r\n" % len(body), body
        cut = len(wire) // 2
        parts = [head, wire[:100], wire[100:cut], wire[cut:]]  # writes cut across the framing
        async with serve(reply(*parts, pause=0.005)) as peer, upstream() as client:
            response = await client.request("GET", peer.url(), {}, None)
            assert response.headers == [("Content-Type", "text/event-stream")]
            assert not names(response) & {"content-encoding", "content-length", "transfer-encoding"}
            assert await response.read() == PLAIN
            assert await fetch(client, peer.url()) == PLAIN  # decoded to its end: the connection is kept
            assert peer.accepted == 1

    run(main)


def test_identity_encoding_passes_through(run: Run) -> None:
    async def main() -> None:
        async with serve(reply(ok(b"plain", b"Content-Encoding: identity"))) as peer, upstream() as client:
            assert await fetch(client, peer.url()) == b"plain"

    run(main)


def test_unsupported_encoding_raises(run: Run) -> None:
    async def main() -> None:
        script = per_connection(reply(ok(b"\x1b\x00\x00", b"Content-Encoding: br")), reply(ok()))
        async with serve(script) as peer, upstream() as client:
            with pytest.raises(UpstreamUnreachable, match="content-encoding"):
                await client.request("GET", peer.url(), {}, None)
            await seen(peer.conns[0].eof)
            assert await fetch(client, peer.url()) == b"ok"
            assert peer.accepted == 2

    run(main)


@pytest.mark.parametrize("together", [True, False], ids=["with-headers", "after-headers"])
def test_corrupt_gzip_raises(run: Run, together: bool) -> None:
    async def main() -> None:
        body = b"\x1f\x8b\x08\x00 this is not a gzip stream at all"
        head = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(body)
        parts = [head + body] if together else [head, body]
        async with serve(per_connection(reply(*parts, pause=0.02), reply(ok()))) as peer, upstream() as client:
            with pytest.raises(UpstreamUnreachable, match="corrupt"):
                await fetch(client, peer.url())
            assert await fetch(client, peer.url()) == b"ok"
            assert peer.accepted == 2  # the connection with the corrupt body is not reused

    run(main)


def test_truncated_gzip_body_raises(run: Run) -> None:
    async def main() -> None:
        body = gzip.compress(PLAIN)[:-40]  # framing complete, the gzip stream cut before its end marker
        head = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(body)
        async with serve(reply(head + body)) as peer, upstream() as client:
            with pytest.raises(UpstreamUnreachable, match="end marker"):
                await fetch(client, peer.url())

    run(main)


def test_a_gzip_header_on_an_empty_body_is_no_error(run: Run) -> None:
    async def main() -> None:
        head = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 0\r\n\r\n"
        async with serve(reply(head)) as peer, upstream() as client:
            assert await fetch(client, peer.url()) == b""

    run(main)


# keep-alive


def test_sequential_requests_share_one_connection(run: Run) -> None:
    async def main() -> None:
        async with serve(reply(ok(b"one"))) as peer, upstream() as client:
            assert await fetch(client, peer.url("/a")) == b"one"
            assert await fetch(client, peer.url("/b"), "POST", b"x") == b"one"
            assert peer.accepted == 1
            assert [request.line for request in peer.conns[0].requests] == ["GET /a HTTP/1.1", "POST /b HTTP/1.1"]
            assert client.open_connections == 1

    run(main)


@pytest.mark.parametrize("server_closes", [True, False])
def test_connection_close_from_the_server(run: Run, server_closes: bool) -> None:
    async def main() -> None:
        async def first(conn: Conn, request: Request) -> bool:
            await conn.send(ok(b"bye", b"Connection: close"))
            if not server_closes:
                await conn.wait_eof()  # the client must close it
            return False

        async with serve(per_connection(first, reply(ok(b"hi")))) as peer, upstream() as client:
            assert await fetch(client, peer.url()) == b"bye"
            if not server_closes:
                await seen(peer.conns[0].eof)
            assert await fetch(client, peer.url()) == b"hi"
            assert peer.accepted == 2
            assert len(peer.conns[0].requests) == 1

    run(main)


def test_pooled_connection_closed_by_the_server_is_replaced(run: Run) -> None:
    async def main() -> None:
        async with serve(reply(ok(b"fresh"), close=True)) as peer, upstream() as client:
            assert await fetch(client, peer.url()) == b"fresh"
            await wait_until(lambda: client.open_connections == 0)  # the idle connection's EOF is noticed
            assert await fetch(client, peer.url()) == b"fresh"
            assert peer.accepted == 2

    run(main)


def test_idle_connection_expires_after_keepalive(run: Run) -> None:
    async def main() -> None:
        async with serve(reply(ok())) as peer, upstream(keepalive=0.05) as client:
            assert await fetch(client, peer.url()) == b"ok"
            await asyncio.sleep(0.1)
            assert await fetch(client, peer.url()) == b"ok"
            assert peer.accepted == 2
            await seen(peer.conns[0].eof)  # the stale one was closed by the client

    run(main)


def test_extra_bytes_after_a_response_drop_the_connection(run: Run) -> None:
    async def main() -> None:
        async with serve(reply(ok(b"12345") + b"junk")) as peer, upstream() as client:
            assert await fetch(client, peer.url()) == b"12345"
            assert await fetch(client, peer.url()) == b"12345"
            assert peer.accepted == 2  # a connection out of step is never reused

    run(main)


# ready()


def test_ready_returns_what_arrived_without_waiting(run: Run) -> None:
    async def main() -> None:
        first, second = asyncio.Event(), asyncio.Event()

        async def script(conn: Conn, request: Request) -> None:
            await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n")
            await first.wait()
            await conn.send(b"abc")
            await second.wait()
            await conn.send(b"def")

        async with serve(script) as peer, upstream() as client:
            response = await client.request("GET", peer.url(), {}, None)
            assert response.ready() == b""
            first.set()
            received = b""
            async with asyncio.timeout(SOON):
                while not received:
                    received = response.ready()
                    await asyncio.sleep(0.005)
            assert received == b"abc"
            assert response.ready() == b""
            second.set()
            assert await response.read() == b"def"

    run(main)


# errors


def test_connection_refused(run: Run) -> None:
    async def main() -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        async with serve(reply(ok())) as peer, upstream(upstream_max_connections=1) as client:
            with pytest.raises(UpstreamUnreachable, match="could not be reached"):
                await client.request("GET", f"http://127.0.0.1:{port}/", {}, None)
            assert client.open_connections == 0
            assert await fetch(client, peer.url()) == b"ok"  # the failed attempt gave its slot back

    run(main)


def test_connect_timeout(run: Run) -> None:
    async def main() -> None:
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(0)  # never accepted: once the backlog is full, connects hang
            port = listener.getsockname()[1]
            fillers = [socket.socket() for _ in range(3)]
            try:
                for filler in fillers:
                    filler.setblocking(False)
                    filler.connect_ex(("127.0.0.1", port))
                await asyncio.sleep(0.05)
                async with upstream(upstream_max_connections=1) as client:
                    started = time.monotonic()
                    with pytest.raises(UpstreamTimeout):
                        await client.request("GET", f"http://127.0.0.1:{port}/", {}, None)
                    assert CONNECT_TIMEOUT * 0.8 <= time.monotonic() - started < CONNECT_TIMEOUT + 0.5
                    assert client.open_connections == 0
            finally:
                for filler in fillers:
                    filler.close()

    run(main)


def test_no_answer_times_out_and_the_connection_is_not_reused(run: Run) -> None:
    async def main() -> None:
        async with serve(per_connection(never_answer, reply(ok()))) as peer, upstream() as client:
            started = time.monotonic()
            with pytest.raises(UpstreamTimeout):
                await client.request("GET", peer.url(), {}, None)
            assert READ_TIMEOUT * 0.8 <= time.monotonic() - started < READ_TIMEOUT + 0.5
            await seen(peer.conns[0].eof)
            assert client.open_connections == 0
            assert await fetch(client, peer.url()) == b"ok"
            assert peer.accepted == 2

    run(main)


def test_the_read_timeout_is_per_wait_and_the_deadline_timer_stops_when_nothing_waits(run: Run) -> None:
    """A body whose pieces come a little faster than the timeout never times out, however long it
    takes in all; the one timer that keeps the deadlines runs only while a wait is open."""

    async def main() -> None:
        head = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
        drip = reply(head, *[bytes([byte]) for byte in b"abcde"], pause=READ_TIMEOUT * 0.6)
        async with serve(drip) as peer, upstream() as client:
            started = time.monotonic()
            response = await client.request("GET", peer.url(), {}, None)
            received: list[bytes] = []
            await collect(response, received)
            assert b"".join(received) == b"abcde"
            assert time.monotonic() - started > READ_TIMEOUT * 2, "five pauses, each within the timeout"
            deadlines = client._deadlines
            assert deadlines is not None
            await wait_until(lambda: deadlines._timer is None, timeout=READ_TIMEOUT)
            assert not deadlines._waiting

    run(main)


async def collect(response: Http1Response, into: list[bytes]) -> None:
    async for piece in response.chunks():
        into.append(piece)


@pytest.mark.parametrize("consume", ["read", "chunks"])
def test_stall_mid_body_times_out(run: Run, consume: str) -> None:
    async def main() -> None:
        async def stall(conn: Conn, request: Request) -> bool:
            await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
            await conn.wait_eof()
            return False

        async with serve(per_connection(stall, reply(ok()))) as peer, upstream() as client:
            response = await client.request("GET", peer.url(), {}, None)
            received: list[bytes] = []
            started = time.monotonic()
            with pytest.raises(UpstreamTimeout):
                await (response.read() if consume == "read" else collect(response, received))
            assert time.monotonic() - started < READ_TIMEOUT + 0.5
            assert received == ([] if consume == "read" else [b"abc"])
            await seen(peer.conns[0].eof)
            assert await fetch(client, peer.url()) == b"ok"
            assert peer.accepted == 2

    run(main)


@pytest.mark.parametrize("consume", ["read", "chunks"])
@pytest.mark.parametrize(
    "wire",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
    ],
    ids=["content-length", "chunked"],
)
def test_close_mid_body_raises_unreachable(run: Run, consume: str, wire: bytes) -> None:
    async def main() -> None:
        async with serve(per_connection(reply(wire, close=True), reply(ok()))) as peer, upstream() as client:
            response = await client.request("GET", peer.url(), {}, None)
            received: list[bytes] = []
            with pytest.raises(UpstreamUnreachable, match="closed the connection"):
                await (response.read() if consume == "read" else collect(response, received))
            assert received == ([] if consume == "read" else [b"abc"])
            assert client.open_connections == 0
            assert await fetch(client, peer.url()) == b"ok"
            assert peer.accepted == 2

    run(main)


@pytest.mark.parametrize(
    "answer",
    [
        b"SSH-2.0-OpenSSH_9.6\r\n",
        b"HTTP/1.1 abc Broken\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n",
        b"",  # accepted, read the request, closed without a word
    ],
    ids=["ssh-banner", "bad-status", "bad-length", "bad-header", "silent-close"],
)
def test_garbage_instead_of_a_response(run: Run, answer: bytes) -> None:
    async def main() -> None:
        async def garbage(conn: Conn, request: Request) -> bool:
            if answer:
                await conn.send(answer)
                await conn.wait_eof()  # the client must drop it without waiting for a timeout
            return False

        async with serve(per_connection(garbage, reply(ok()))) as peer, upstream() as client:
            started = time.monotonic()
            with pytest.raises(UpstreamUnreachable):
                await fetch(client, peer.url())
            assert time.monotonic() - started < READ_TIMEOUT
            if answer:
                await seen(peer.conns[0].eof)
            assert await fetch(client, peer.url()) == b"ok"

    run(main)


# close() and cancellation


def test_close_of_an_unfinished_response_drops_the_connection(run: Run) -> None:
    async def partial(conn: Conn, request: Request) -> bool:
        await conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789")
        await conn.wait_eof()
        return False

    async def main() -> None:
        async with serve(per_connection(partial, reply(ok()))) as peer, upstream() as client:
            response = await client.request("GET", peer.url(), {}, None)
            assert response.status == 200
            await response.close()
            await seen(peer.conns[0].eof)
            assert client.open_connections == 0
            assert await fetch(client, peer.url()) == b"ok"
            assert peer.accepted == 2

    run(main)


def test_close_of_a_finished_response_keeps_the_connection(run: Run) -> None:
    async def main() -> None:
        async with serve(reply(ok(b"done"))) as peer, upstream() as client:
            response = await client.request("GET", peer.url(), {}, None)  # the whole answer is one write
            await response.close()  # fully received though never read
            assert await fetch(client, peer.url()) == b"done"
            assert peer.accepted == 1

    run(main)


def test_cancelled_request_closes_its_connection(run: Run) -> None:
    async def main() -> None:
        async with serve(per_connection(never_answer, reply(ok()))) as peer, upstream() as client:
            task = asyncio.create_task(client.request("POST", peer.url(), {}, b"{}"))
            await seen(peer.arrived)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await seen(peer.conns[0].eof)
            assert client.open_connections == 0
            assert await fetch(client, peer.url()) == b"ok"
            assert await fetch(client, peer.url()) == b"ok"
            assert peer.accepted == 2

    run(main)


# the connection limit


def held(go: asyncio.Event, answer: bytes) -> Script:
    async def script(conn: Conn, request: Request) -> None:
        await go.wait()
        await conn.send(answer)

    return script


def test_max_connections_one_queues_and_reuses(run: Run) -> None:
    async def main() -> None:
        go = asyncio.Event()
        async with serve(held(go, ok(b"x"))) as peer, upstream(upstream_max_connections=1) as client:
            first = asyncio.create_task(fetch(client, peer.url("/1")))
            await seen(peer.arrived)
            second = asyncio.create_task(fetch(client, peer.url("/2")))
            await asyncio.sleep(0.05)
            assert not second.done()
            assert peer.accepted == 1
            assert len(peer.requests) == 1
            go.set()
            assert list(await asyncio.wait_for(asyncio.gather(first, second), SOON)) == [b"x", b"x"]
            assert peer.accepted == 1
            assert [request.line for request in peer.conns[0].requests] == ["GET /1 HTTP/1.1", "GET /2 HTTP/1.1"]

    run(main)


def test_max_connections_one_after_the_connection_closed(run: Run) -> None:
    async def main() -> None:
        go = asyncio.Event()
        async with serve(held(go, ok(b"x", b"Connection: close"))) as peer, upstream(upstream_max_connections=1) as c:
            first = asyncio.create_task(fetch(c, peer.url()))
            await seen(peer.arrived)
            second = asyncio.create_task(fetch(c, peer.url()))
            await asyncio.sleep(0.02)
            go.set()
            assert list(await asyncio.wait_for(asyncio.gather(first, second), SOON)) == [b"x", b"x"]
            assert peer.accepted == 2

    run(main)


def test_max_connections_one_cancelled_waiter_leaves_the_pool_usable(run: Run) -> None:
    async def main() -> None:
        go = asyncio.Event()
        async with serve(held(go, ok(b"x"))) as peer, upstream(upstream_max_connections=1) as client:
            first = asyncio.create_task(fetch(client, peer.url()))
            await seen(peer.arrived)
            waiting = asyncio.create_task(fetch(client, peer.url()))
            await asyncio.sleep(0.02)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            go.set()
            assert await asyncio.wait_for(first, SOON) == b"x"
            third = asyncio.create_task(fetch(client, peer.url()))
            fourth = asyncio.create_task(fetch(client, peer.url()))
            assert list(await asyncio.wait_for(asyncio.gather(third, fourth), SOON)) == [b"x", b"x"]
            assert peer.accepted == 1
            assert client.open_connections == 1

    run(main)


def test_max_connections_one_evicts_an_idle_connection_to_another_host(run: Run) -> None:
    async def main() -> None:
        async with serve(reply(ok(b"a"))) as a, serve(reply(ok(b"b"))) as b, upstream(upstream_max_connections=1) as c:
            assert await fetch(c, a.url()) == b"a"
            assert await fetch(c, b.url()) == b"b"
            await seen(a.conns[0].eof)
            assert c.open_connections == 1

    run(main)


def test_stop_fails_waiting_and_in_flight_requests(run: Run) -> None:
    async def main() -> None:
        async with serve(never_answer) as peer:
            client = Http1Upstream(ProxySettings(upstream_max_connections=1, upstream_read_timeout=5.0))
            await client.start()
            in_flight = asyncio.create_task(client.request("GET", peer.url(), {}, None))
            await seen(peer.arrived)
            waiting = asyncio.create_task(client.request("GET", peer.url(), {}, None))
            await asyncio.sleep(0.02)
            await client.stop()
            for task in (in_flight, waiting):
                with pytest.raises(UpstreamUnreachable):
                    await asyncio.wait_for(task, SOON)
            await seen(peer.conns[0].eof)

    run(main)


def test_a_stopped_client_refuses_new_requests_until_started_again(run: Run) -> None:
    async def main() -> None:
        async with serve(reply(ok())) as peer:
            client = Http1Upstream(ProxySettings())
            await client.start()
            await client.stop()
            with pytest.raises(UpstreamUnreachable, match="shutting down"):
                await client.request("GET", peer.url(), {}, None)
            assert peer.accepted == 0
            await client.start()
            assert await fetch(client, peer.url()) == b"ok"
            await client.stop()

    run(main)


# back-pressure

LARGE = random.Random(3).randbytes(8 * 1024 * 1024)
FRAMINGS = {
    "content-length": b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(LARGE), LARGE),
    "chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(LARGE, 100_000),
    "until-close": b"HTTP/1.1 200 OK\r\n\r\n" + LARGE,
}


@pytest.mark.parametrize("framing", list(FRAMINGS))
def test_slow_consumer_gets_every_byte_with_bounded_buffering(run: Run, framing: str) -> None:
    async def main() -> None:
        async with serve(reply(FRAMINGS[framing], close=framing == "until-close")) as peer, upstream() as client:
            response = await client.request("GET", peer.url(), {}, None)
            digest, total, largest, slow = hashlib.sha256(), 0, 0, 5
            async for piece in response.chunks():
                digest.update(piece)
                total += len(piece)
                largest = max(largest, len(piece))
                if slow:  # let the server get far ahead: only back-pressure bounds what piles up
                    slow -= 1
                    await asyncio.sleep(0.03)
            assert total == len(LARGE)
            assert digest.digest() == hashlib.sha256(LARGE).digest()
            assert largest <= HIGH_WATER + 512 * 1024, largest

    run(main)


@pytest.mark.parametrize("framing", list(FRAMINGS))
def test_read_of_a_body_larger_than_the_buffer(run: Run, framing: str) -> None:
    async def main() -> None:
        async with serve(reply(FRAMINGS[framing], close=framing == "until-close")) as peer, upstream() as client:
            body = await fetch(client, peer.url())
            assert len(body) == len(LARGE)
            assert hashlib.sha256(body).digest() == hashlib.sha256(LARGE).digest()

    run(main)


def test_read_of_a_large_gzip_body(run: Run) -> None:
    async def main() -> None:
        plain = LARGE[: 2 * 1024 * 1024] + bytes(2 * 1024 * 1024)
        async with serve(reply(ok(gzip.compress(plain, 1), b"Content-Encoding: gzip"))) as peer, upstream() as client:
            assert await fetch(client, peer.url()) == plain

    run(main)


# informational answers and HEAD


@pytest.mark.parametrize("separate", [False, True], ids=["one-write", "separate-writes"])
def test_informational_responses_are_skipped(run: Run, separate: bool) -> None:
    async def main() -> None:
        parts = [
            b"HTTP/1.1 100 Continue\r\n\r\n",
            b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n",
            ok(b"final", b"Content-Type: text/plain"),
        ]
        script = reply(*parts, pause=0.01) if separate else reply(b"".join(parts))
        async with serve(script) as peer, upstream() as client:
            response = await client.request("POST", peer.url(), {}, b"{}")
            assert response.status == 200
            assert response.headers == [("Content-Type", "text/plain")]
            assert await response.read() == b"final"
            assert await fetch(client, peer.url()) == b"final"
            assert peer.accepted == 1

    run(main)


def test_head_response_completes_without_a_body(run: Run) -> None:
    async def main() -> None:
        head = b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nContent-Type: application/json\r\n\r\n"
        async with serve(per_connection(reply(head), reply(ok(b"after")))) as peer, upstream() as client:
            started = time.monotonic()
            response = await client.request("HEAD", peer.url(), {}, None)
            assert response.status == 200
            assert response.headers == [("Content-Type", "application/json")]
            assert await response.read() == b""
            assert [piece async for piece in response.chunks()] == []
            assert time.monotonic() - started < READ_TIMEOUT / 2
            assert peer.requests[0].line == "HEAD / HTTP/1.1"
            assert await fetch(client, peer.url()) == b"after"

    run(main)


# TLS


@dataclass
class Pki:
    ca: Path
    cert: Path
    key: Path


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A throwaway CA and a server certificate for ``localhost`` signed by it."""
    folder = tmp_path_factory.mktemp("pki")
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("aibridge test CA"))
        .issuer_name(_name("aibridge test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pki = Pki(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    pki.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    pki.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pki.key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return pki


def server_context(pki: Pki, server_names: list[str | None]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.cert, pki.key)

    def record(_socket: ssl.SSLObject, name: str | None, _context: ssl.SSLContext) -> None:
        server_names.append(name)

    context.sni_callback = record
    return context


def test_tls_with_a_trusted_ca(run: Run, pki: Pki) -> None:
    async def main() -> None:
        server_names: list[str | None] = []
        trusting = ssl.create_default_context(cafile=pki.ca)
        tls = server_context(pki, server_names)
        async with serve(reply(ok(b"secure")), ssl_context=tls) as peer, upstream(ssl_context=trusting) as client:
            url = peer.url("/v1/models", scheme="https", host="localhost")
            assert await fetch(client, url) == b"secure"
            assert await fetch(client, url) == b"secure"
            assert peer.accepted == 1
            assert server_names == ["localhost"]
            assert peer.requests[0].values("host") == [f"localhost:{peer.port}"]

    run(main)


@pytest.mark.parametrize("size", [700, 300 * 1024], ids=["joined to the head", "handed over in parts"])
def test_tls_a_body_in_parts_arrives_whole_in_order(run: Run, pki: Pki, size: int) -> None:
    """The parts go through the TLS layer in order, as one body (a provider is reached over TLS)."""

    async def main() -> None:
        view = memoryview(random.Random(size).randbytes(size))
        parts: list[bytes | memoryview] = [b"{", view[: size // 2], b"-injected-", view[size // 2 :], b"}"]
        expected = b"".join(parts)

        async def script(conn: Conn, request: Request) -> None:
            await conn.send(ok(hashlib.sha256(request.body).hexdigest().encode()))

        trusting = ssl.create_default_context(cafile=pki.ca)
        tls = server_context(pki, [])
        async with serve(script, ssl_context=tls) as peer, upstream(ssl_context=trusting) as client:
            url = peer.url("/v1/chat/completions", scheme="https", host="localhost")
            assert await fetch(client, url, "POST", parts) == hashlib.sha256(expected).hexdigest().encode()
            assert peer.requests[0].values("content-length") == [str(len(expected))]

    run(main)


def test_tls_untrusted_certificate_is_refused(run: Run, pki: Pki) -> None:
    async def main() -> None:
        async with serve(reply(ok()), ssl_context=server_context(pki, [])) as peer, upstream() as client:
            with pytest.raises(UpstreamUnreachable, match="CERTIFICATE_VERIFY_FAILED"):
                await client.request("GET", peer.url(scheme="https", host="localhost"), {}, None)
            assert client.open_connections == 0
            assert peer.requests == []

    run(main)


def test_tls_wrong_host_name_is_refused(run: Run, pki: Pki) -> None:
    async def main() -> None:
        trusting = ssl.create_default_context(cafile=pki.ca)
        tls = server_context(pki, [])
        async with serve(reply(ok()), ssl_context=tls) as peer, upstream(ssl_context=trusting) as client:
            with pytest.raises(UpstreamUnreachable, match="CERTIFICATE_VERIFY_FAILED"):
                await client.request("GET", peer.url(scheme="https"), {}, None)  # 127.0.0.1: not in the cert
            assert peer.requests == []

    run(main)
