"""A lean HTTP/1.1 upstream client: asyncio protocols and httptools (llhttp), pooled keep-alive.

Why not aiohttp's client: on this hot path, the provider call is the largest piece of the proxy's
own CPU per request. aiohttp builds a request object, URL objects, a timer context, a trace context,
cookie handling and a response object per call; here a request is one write (a large body, or one in
parts, handed over with its head uncopied: one ``writev``) and a response is parsed by llhttp straight
into a small buffer. Measured in ``bench/proxy_overhead.py``
against aiohttp (docs/proxy.md#upstream-client).

What a gateway needs of it, and nothing more:
- Keep-alive pools per (scheme, host, port), newest idle connection first, closed after
  ``keepalive`` idle seconds; at most ``max_connections`` open in all (callers wait for a slot).
- TLS with the system's trust store (``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` are honoured) and SNI.
- Bodies by ``Content-Length``, chunked, or until the connection closes; ``gzip`` and ``deflate``
  decoded (they are the only encodings asked for), so the client always gets identity bytes.
- Timeouts: ``connect_timeout`` for the TCP and TLS set-up, ``read_timeout`` for each wait on the
  provider (the headers, then every next piece of the body; kept by one timer per client, so a wait
  ends between ``read_timeout`` and an eighth more, at most a second more). A timed-out or abandoned
  response's connection is closed, never reused.
- Back-pressure: a response buffers at most ``HIGH_WATER`` bytes before the socket stops being read.
- Errors become :class:`UpstreamUnreachable` (502) and :class:`UpstreamTimeout` (504) here only.

A request is never retried: a POST to a model is not idempotent (it bills). A pooled connection the
provider closed while it sat idle is noticed (EOF) and skipped before it is used.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
import zlib
from collections import deque
from collections.abc import AsyncIterator
from typing import cast
from urllib.parse import urlsplit

import httptools

from aibridge.proxy.errors import UpstreamTimeout, UpstreamUnreachable
from aibridge.proxy.settings import ProxySettings
from aibridge.proxy.upstream.client import Body, body_length, client_headers

HIGH_WATER = 256 * 1024  # bytes buffered per response before reading from the provider pauses
_JOINED = 16 * 1024  # bodies up to this size are joined to the head (a small copy beats a writev's cost)
_NOT_FORWARDED = frozenset({"host", "content-length", "connection", "transfer-encoding", "keep-alive"})
_DECODED = {b"gzip": 16 + zlib.MAX_WBITS, b"x-gzip": 16 + zlib.MAX_WBITS, b"deflate": zlib.MAX_WBITS}

Key = tuple[str, str, int]  # scheme, host, port


class _Target:
    __slots__ = ("host_header", "key", "path")

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UpstreamUnreachable(f"not an http(s) URL: {parts.scheme}://{parts.hostname or ''}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        self.key: Key = (parts.scheme, parts.hostname, port)
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        default = (parts.scheme == "https" and port == 443) or (parts.scheme == "http" and port == 80)
        self.host_header = host if default else f"{host}:{port}"
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


class _Connection(asyncio.Protocol):
    """One keep-alive connection; parses one response at a time into :attr:`response`."""

    def __init__(self, client: Http1Upstream, key: Key) -> None:
        self._client = client
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: Http1Response | None = None
        self.closed = False
        self.idle_since = 0.0
        self._paused = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not an asyncio.Transport subclass
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self.response is None:  # bytes nobody asked for: the connection is out of step
            self.close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamUnreachable(f"the provider sent an invalid HTTP response: {exc}"))

    def eof_received(self) -> bool:
        response = self.response
        if response is not None and response.until_eof and response.headers_done:
            self.response = None
            response.complete()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._client._forget(self)
        response, self.response = self.response, None
        if response is not None:
            if response.until_eof and response.headers_done:
                response.complete()
            else:
                reason = f": {type(exc).__name__}: {exc}" if exc else ""
                response.fail(UpstreamUnreachable(f"the provider closed the connection{reason}"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.response is not None
        self.response.raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        response = self.response
        assert response is not None
        status = self.parser.get_status_code()
        if 100 <= status < 200:  # informational (100 Continue, 103 Early Hints): the real answer follows
            response.raw_headers.clear()
            response.informational = True
            return
        response.headers_complete(status, self)

    def on_body(self, body: bytes) -> None:
        if self.response is not None:
            self.response.feed(body)

    def on_message_complete(self) -> None:
        response = self.response
        if response is None:
            return
        if response.informational:
            response.informational = False
            return
        self.response = None
        keep = self.parser.should_keep_alive()
        response.complete()
        self.resume()
        if keep:
            self._client._release(self)
        else:
            self.close()

    # used by the client and the response
    def send(self, head: bytes, body: Body | None, size: int, response: Http1Response) -> None:
        """The request: ``head``, then ``body`` (``size`` bytes, in parts or not) in one system call; a
        large body is handed over as it is (one ``writev``: a copy of it costs more than the call)."""
        assert self.transport is not None
        self.response = response
        if not body:
            self.transport.write(head)
        elif size <= _JOINED:
            self.transport.write(head + body if isinstance(body, bytes) else b"".join([head, *body]))
        else:
            self.transport.writelines([head, body] if isinstance(body, bytes) else [head, *body])

    def pause(self) -> None:
        if not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()

    def _fail(self, error: Exception) -> None:
        response, self.response = self.response, None
        self.close()
        if response is not None:
            response.fail(error)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._client._forget(self)
            if self.transport is not None:
                self.transport.close()


class ReadDeadlines:
    """The read timeout of every waiting response, kept by one timer per client instead of a timer per wait.

    A wait on the provider happens once or more per request (the headers, every next piece of a
    stream); a timer each (``call_later`` then ``cancel``) was most of a wait's own cost.
    Here a wait notes when it began and joins a set; one timer, running only while anything waits,
    looks every ``tick`` seconds (an eighth of the timeout, at most one second) for waits older than
    the timeout. A wait is so timed out between ``read_timeout`` and ``read_timeout + tick`` after it
    began.
    """

    __slots__ = ("_loop", "_timer", "_waiting", "tick", "timeout")

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self._loop = loop
        self.timeout = timeout
        self.tick = min(1.0, timeout / 8)
        self._waiting: set[Http1Response] = set()
        self._timer: asyncio.TimerHandle | None = None

    def watch(self, response: Http1Response) -> None:
        self._waiting.add(response)
        if self._timer is None:
            self._timer = self._loop.call_later(self.tick, self._check)

    def forget(self, response: Http1Response) -> None:
        self._waiting.discard(response)

    def _check(self) -> None:
        self._timer = None
        oldest = self._loop.time() - self.timeout
        for response in [waiting for waiting in self._waiting if waiting.waiting_since <= oldest]:
            self._waiting.discard(response)
            response.timed_out()
        if self._waiting:
            self._timer = self._loop.call_later(self.tick, self._check)


class Http1Response:
    """A provider's answer: status and headers known, the body arriving into a bounded buffer."""

    def __init__(self, loop: asyncio.AbstractEventLoop, deadlines: ReadDeadlines, method: str) -> None:
        self._loop = loop
        self._deadlines = deadlines
        self.waiting_since = 0.0
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self._headers: list[tuple[str, str]] | None = None
        self.status = 0
        self.headers_done = False
        self.until_eof = False
        self.informational = False
        self._head_only = method == "HEAD"
        self._connection: _Connection | None = None
        self._buffer: deque[bytes] = deque()
        self._buffered = 0
        self._decoder: zlib._Decompress | None = None
        self._compressed_bytes = 0
        self._done = False
        self._error: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None

    # fed by the connection
    def headers_complete(self, status: int, connection: _Connection) -> None:
        self.status = status
        self.headers_done = True
        self._connection = connection
        framed = False
        for name, value in self.raw_headers:
            lowered = name.lower()
            if lowered == b"content-length" or (lowered == b"transfer-encoding" and b"chunked" in value.lower()):
                framed = True
            elif lowered == b"content-encoding":
                encoding = value.strip().lower()
                if encoding in _DECODED:
                    self._decoder = zlib.decompressobj(_DECODED[encoding])
                elif encoding != b"identity":
                    self.fail(UpstreamUnreachable(f"the provider sent an unsupported content-encoding: {encoding!r}"))
                    connection.close()
                    return
        self.until_eof = not framed and status not in (204, 304) and not self._head_only
        self._wake()
        if self._head_only:  # no body follows; llhttp cannot be told so: the connection is not reused
            connection.response = None
            self.complete()
            connection.close()

    def feed(self, data: bytes) -> None:
        if self._decoder is not None:
            self._compressed_bytes += len(data)
            try:
                data = self._decoder.decompress(data)
            except zlib.error as exc:
                connection = self._connection  # fail() forgets it
                self.fail(UpstreamUnreachable(f"the provider's compressed body is corrupt: {exc}"))
                if connection is not None:
                    connection.close()
                return
        if data:
            self._buffer.append(data)
            self._buffered += len(data)
            if self._buffered > HIGH_WATER and self._connection is not None:
                self._connection.pause()
            self._wake()

    def complete(self) -> None:
        if self._done or self._error is not None:
            return
        decoder = self._decoder
        if decoder is not None:
            tail = decoder.flush()
            if tail:
                self._buffer.append(tail)
                self._buffered += len(tail)
            if self._compressed_bytes and not decoder.eof:  # the body stopped before the stream's end
                self.fail(UpstreamUnreachable("the provider's compressed body ended before its end marker"))
                return
        self._done = True
        self._connection = None
        self._wake()

    def fail(self, error: Exception) -> None:
        if self._done or self._error is not None:
            return
        self._error = error
        self._connection = None
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self) -> None:
        """Until something happens (headers, bytes, the end, an error), at most ``read_timeout``
        (:class:`ReadDeadlines`)."""
        loop = self._loop
        waiter = self._waiter = loop.create_future()
        self.waiting_since = loop.time()
        deadlines = self._deadlines
        deadlines.watch(self)
        try:
            await waiter
        finally:
            deadlines.forget(self)
            self._waiter = None

    def timed_out(self) -> None:
        """Called by :class:`ReadDeadlines` when the current wait has lasted ``read_timeout``."""
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        error = UpstreamTimeout(f"the provider sent nothing for {self._deadlines.timeout:g} seconds")
        connection = self._connection
        self.fail(error)
        if not waiter.done():
            waiter.set_exception(error)
        if connection is not None:
            connection.close()

    async def wait_headers(self) -> None:
        while not self.headers_done:
            if self._error is not None:
                raise self._error
            await self._wait()
        if self._error is not None and not self._buffer:
            raise self._error

    # read by the proxy (the UpstreamResponse protocol)
    @property
    def headers(self) -> list[tuple[str, str]]:
        if self._headers is None:
            raw = self.raw_headers
            self._headers = client_headers([(name.decode("latin-1"), value.decode("latin-1")) for name, value in raw])
        return self._headers

    def _take(self) -> bytes:
        buffer = self._buffer
        data = buffer.popleft() if len(buffer) == 1 else b"".join(buffer)
        buffer.clear()
        self._buffered = 0
        if self._connection is not None:
            self._connection.resume()
        return data

    def ready(self) -> bytes:
        if self._buffer:
            return self._take()
        if self._error is not None:
            raise self._error
        return b""

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            if self._buffer:
                yield self._take()
            elif self._done:
                return
            elif self._error is not None:
                raise self._error
            else:
                await self._wait()

    async def read(self) -> bytes:
        parts: list[bytes] = []
        try:
            while not self._done:
                if self._error is not None:
                    raise self._error
                if self._buffered > HIGH_WATER:  # the socket is paused: move the bytes out so reading goes on
                    parts.append(self._take())
                await self._wait()
            if self._buffer:
                parts.append(self._take())
            return parts[0] if len(parts) == 1 else b"".join(parts)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Done with the answer; an unfinished body drops the connection so the provider stops."""
        if not self._done:
            connection = self._connection
            self.fail(UpstreamUnreachable("the response was closed before its end"))
            if connection is not None:
                connection.close()
        self._buffer.clear()


class Http1Upstream:
    """The :class:`~aibridge.proxy.upstream.client.Upstream` seam on :class:`_Connection` pools."""

    def __init__(
        self,
        settings: ProxySettings,
        *,
        keepalive: float = 60.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._connect_timeout = settings.upstream_connect_timeout
        self._read_timeout = settings.upstream_read_timeout
        self._max_connections = settings.upstream_max_connections
        self._keepalive = keepalive
        self._ssl = ssl_context
        self._idle: dict[Key, list[_Connection]] = {}
        self._open: set[_Connection] = set()
        self._connecting = 0
        self._slots: deque[asyncio.Future[None]] = deque()
        self._targets: dict[str, _Target] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._deadlines: ReadDeadlines | None = None
        self._stopped = False

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._deadlines = ReadDeadlines(self._loop, self._read_timeout)
        self._stopped = False
        if self._ssl is None:
            self._ssl = ssl.create_default_context()

    async def stop(self) -> None:
        self._stopped = True
        for waiter in self._slots:  # first: a closing connection would hand its slot to a waiter
            if not waiter.done():
                waiter.set_exception(UpstreamUnreachable("the proxy is shutting down"))
        self._slots.clear()
        for connection in list(self._open):
            connection.close()
        self._idle.clear()

    @property
    def open_connections(self) -> int:
        return len(self._open)

    async def request(self, method: str, url: str, headers: dict[str, str], body: Body | None) -> Http1Response:
        loop = self._loop
        assert loop is not None, "the upstream client is not started"
        if self._stopped:
            raise UpstreamUnreachable("the proxy is shutting down")
        target = self._targets.get(url)
        if target is None:
            target = _Target(url)
            if len(self._targets) < 4096:  # a few base URLs times a few dozen paths
                self._targets[url] = target
        size = body_length(body) if body else 0
        head = _head(method, target, headers, None if body is None else size)
        connection = self._idle_connection(target.key) or await self._connect(target.key)
        assert self._deadlines is not None
        response = Http1Response(loop, self._deadlines, method)
        try:
            connection.send(head, body, size, response)
            await response.wait_headers()
        except BaseException:  # a timeout, an error, the client gone (cancelled): the connection is spent
            connection.close()
            raise
        return response

    # the pool
    def _idle_connection(self, key: Key) -> _Connection | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if (
                connection.closed
                or connection.transport is None
                or connection.transport.is_closing()
                or now - connection.idle_since > self._keepalive
            ):
                connection.close()
            else:
                return connection
        return None

    async def _connect(self, key: Key) -> _Connection:
        while len(self._open) + self._connecting >= self._max_connections:
            if self._evict_idle():  # an idle connection to another host makes room
                continue
            assert self._loop is not None
            slot = self._loop.create_future()
            self._slots.append(slot)
            try:
                await slot
            except asyncio.CancelledError:
                if slot.done() and not slot.cancelled():
                    self._free_slot()  # pass the slot we were given on
                raise
            if connection := self._idle_connection(key):
                return connection
        scheme, host, port = key
        loop = self._loop
        assert loop is not None
        secure = scheme == "https"
        self._connecting += 1
        try:
            async with asyncio.timeout(self._connect_timeout):
                transport, connection = await loop.create_connection(
                    lambda: _Connection(self, key),
                    host,
                    port,
                    ssl=self._ssl if secure else None,
                    server_hostname=host if secure else None,
                )
        except TimeoutError as exc:
            raise UpstreamTimeout(f"connecting to the provider took over {self._connect_timeout:g} seconds") from exc
        except OSError as exc:  # refused, reset, DNS (gaierror), TLS (SSLError)
            raise UpstreamUnreachable(f"the provider could not be reached: {type(exc).__name__}: {exc}") from exc
        finally:
            self._connecting -= 1
            self._free_slot()
        if connection.transport is None:
            connection.transport = transport
        self._open.add(connection)
        return connection

    def _evict_idle(self) -> bool:
        oldest: _Connection | None = None
        for idle in self._idle.values():
            if idle and (oldest is None or idle[0].idle_since < oldest.idle_since):
                oldest = idle[0]
        if oldest is None:
            return False
        oldest.close()
        return True

    def _release(self, connection: _Connection) -> None:
        if connection.closed:
            return
        connection.idle_since = time.monotonic()
        self._idle.setdefault(connection.key, []).append(connection)
        self._free_slot()

    def _forget(self, connection: _Connection) -> None:
        if connection in self._open:
            self._open.discard(connection)
            idle = self._idle.get(connection.key)
            if idle and connection in idle:
                idle.remove(connection)
            self._free_slot()

    def _free_slot(self) -> None:
        while self._slots:
            slot = self._slots.popleft()
            if not slot.done():
                slot.set_result(None)
                return


def _head(method: str, target: _Target, headers: dict[str, str], size: int | None) -> bytes:
    """The request line and headers; ``size``: the body's length (None: no body)."""
    lines = [f"{method} {target.path} HTTP/1.1\r\nhost: {target.host_header}\r\n"]
    encoding = False
    for name, value in headers.items():
        lowered = name.lower()
        if lowered in _NOT_FORWARDED:
            continue
        encoding = encoding or lowered == "accept-encoding"
        lines.append(f"{name}: {value}\r\n")
    if not encoding:
        lines.append("accept-encoding: gzip, deflate\r\n")
    if size is not None or method in ("POST", "PUT", "PATCH"):
        lines.append(f"content-length: {size or 0}\r\n")
    lines.append("\r\n")
    head = "".join(lines)
    if head.count("\n") != len(lines) + 1 or head.count("\r") != len(lines) + 1:
        raise UpstreamUnreachable("a header name or value holds a line break; not forwarded")
    try:
        return head.encode("latin-1")
    except UnicodeEncodeError as exc:
        raise UpstreamUnreachable("a header value is not Latin-1 text; not forwarded") from exc
