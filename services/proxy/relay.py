"""Relaying a streamed answer chunk by chunk while a tee parses it, recording exactly once.

:class:`RelayResponse` guarantees :meth:`Relay.finish` runs however the response ends: the stream
completed, the upstream failed mid-stream (the client then gets an error event in the provider's
shape), or the client went away (even before the first chunk). A client that goes away is noticed
at once (a task listens for ``http.disconnect``); the upstream request is then closed, not drained:
draining would make the provider generate, and bill, output nobody reads. The interception is recorded
as ``client_disconnected`` with the token counts seen so far, marked ``metadata.partial``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any, Protocol

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from aibridge.events import Status
from aibridge.proxy.errors import ProxyError
from aibridge.proxy.providers.records import ResponseSummary
from aibridge.proxy.upstream.client import UpstreamResponse

Finished = Callable[["Relay", ResponseSummary, Status, str | None], None]
"""Called with the relay (not a closure over it: a relay that a callback of its own refers to is a
reference cycle, and the whole request's objects would wait for the garbage collector)."""
Later = Callable[[Callable[[], None]], None]


class Tee(Protocol):
    """Parses a stream on the side. ``feed`` answers what to forward for a chunk and may leave the
    parsing to ``settle``, which the relay calls once those bytes are sent. ``end`` answers the last
    bytes to forward once the upstream has finished (without parsing them); ``close`` parses whatever
    is left and completes :attr:`summary` (and returns the bytes ``end`` would have, if it was not called)."""

    summary: ResponseSummary

    def feed(self, chunk: bytes) -> bytes: ...

    def settle(self) -> None: ...

    def end(self) -> bytes: ...

    def close(self) -> bytes: ...


class Handover(Exception):
    """Raised by a tee's ``feed`` or ``end``: the relay reads ``rest`` from now on instead of the upstream's
    chunks (bytes the tee's owner has edited already, fed to the tee all the same). MCP injection uses it:
    the relay reads the provider's first round directly, the tee checking each chunk, until an injected
    tool's name shows; then the injection loop's editor takes the stream over."""

    def __init__(self, rest: AsyncIterator[bytes]) -> None:
        super().__init__("the stream is handed over")
        self.rest = rest


class Relay:
    """One streamed answer: its chunks through the tee, then (:meth:`finish`) its recording.

    The recording (the tee's last parsing, then ``on_finished``) is handed to ``later``, which runs
    it after the answer is out (:class:`~aibridge.proxy.recording.deferred.Deferred`); :attr:`ended` is when
    the relay finished, in ``time.perf_counter`` seconds.
    """

    def __init__(
        self,
        response: UpstreamResponse,
        tee: Tee,
        on_finished: Finished,
        error_event: Callable[[ProxyError], bytes],
        later: Later,
    ) -> None:
        self._response = response
        self._tee = tee
        self._on_finished = on_finished
        self._error_event = error_event
        self._later = later
        self._status: Status | None = None
        self._error: str | None = None
        self._finished = False
        self._rest: AsyncIterator[bytes] | None = None  # what the tee handed over to in ready()
        self.upstream_wait = 0.0  # seconds waiting for the upstream's next chunk
        self.client_wait = 0.0  # seconds the server spent sending chunks to the client
        self.ended = 0.0

    def ready(self) -> bytes:
        """What the upstream has already sent, through the tee, without waiting (b"" when nothing).

        The response sends it right behind its headers, so a client finds both in one read. An error
        here is left for :meth:`chunks`: the upstream's next read raises it again.
        """
        try:
            chunk = self._response.ready()
        except ProxyError:
            return b""
        if not chunk:
            return b""
        try:
            return self._tee.feed(chunk)
        except Handover as handover:
            self._rest = handover.rest
            return b""

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        try:
            upstream = self._rest or self._response.chunks()
            clock = time.perf_counter
            while True:
                waiting = clock()
                try:
                    chunk = await anext(upstream)
                except StopAsyncIteration:
                    try:
                        tail = self._tee.end()
                    except Handover as handover:
                        upstream = handover.rest
                        continue
                    break
                self.upstream_wait += clock() - waiting
                try:
                    forwarded = self._tee.feed(chunk)
                except Handover as handover:
                    upstream = handover.rest
                    continue
                if forwarded:
                    sending = clock()
                    try:
                        yield forwarded
                    finally:
                        self.client_wait += clock() - sending  # the send alone: the parsing is the bridge's time
                        self._tee.settle()  # parsed once sent (or the client left: parsed for the record)
                else:
                    self._tee.settle()
            if tail:
                yield tail
            self._status = Status.COMPLETED
        except ProxyError as exc:
            self._status, self._error = Status.UPSTREAM_ERROR, str(exc)
            yield self._error_event(exc)

    async def finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        self.ended = time.perf_counter()
        try:
            await self._response.close()
        finally:
            self._later(self._report)

    def _report(self) -> None:
        self._tee.close()  # a last event without its blank line, if end() was never reached, included
        summary = self._tee.summary
        status = self._status or Status.CLIENT_DISCONNECTED
        error = self._error
        if status is Status.CLIENT_DISCONNECTED:
            error = "the client went away before the stream ended"
            if summary.usage is not None:
                summary.usage.metadata["partial"] = True
        elif status is Status.COMPLETED and summary.error:
            status, error = Status.UPSTREAM_ERROR, summary.error
        self._on_finished(self, summary, status, error)


class ClientWatch:
    """Cancels the task that starts it as soon as the client goes away (``http.disconnect``).

    From the moment the request goes upstream a client that leaves
    is noticed at once wherever the request waits (the provider's headers, a blocking answer's body,
    the next chunk of a stream, which a thinking model may send minutes later, or a send), and the
    upstream request is then closed rather than waited for. The task catches the ``CancelledError``
    and asks :attr:`gone`: only a cancellation the watch caused is absorbed (:meth:`absorb`); any
    other (a server shutting down) goes on. A streamed answer's :class:`RelayResponse` takes the
    watch over from the handler (same task). No task group: anyio's task group and cancel scopes
    cost more per request than the relaying itself.

    Under the bridge's own server protocol (:mod:`aibridge.http_limits`) the server calls the watch
    when the connection is lost (the request's ``on_disconnect``); elsewhere a watcher task waits on
    ``receive`` for ``http.disconnect``.
    """

    def __init__(self, receive: Receive, *, start: bool = True) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        self._receive = receive
        self.gone = False  # the client left and the watch cancelled the task
        self._done = False  # too late to cancel: the task no longer expects it
        self._watcher: asyncio.Task[None] | None = None
        self._told: Any = None  # the server's request (uvicorn's cycle) that calls on_disconnect
        if start:
            self.start()

    def start(self) -> None:
        """Start watching (a client that already left is seen at once: ``receive`` says so)."""
        if self._watcher is not None or self._told is not None or self._done:
            return
        cycle = getattr(self._receive, "__self__", None)
        if cycle is not None and hasattr(cycle, "on_disconnect") and not cycle.disconnected:
            self._told = cycle
            cycle.on_disconnect = self._disconnected
            return
        self._watcher = asyncio.create_task(self._run(self._receive))

    async def _run(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self._disconnected()

    def _disconnected(self) -> None:
        if not self._done:
            self.gone = True
            self._task.cancel()

    def absorb(self) -> None:
        """The task caught the cancellation this watch caused: it goes on (to record the end)."""
        self._task.uncancel()

    def stop(self) -> None:
        self._done = True
        if self._told is not None:
            self._told.on_disconnect = None
            self._told = None
        if self._watcher is not None:
            self._watcher.cancel()


class RelayResponse(StreamingResponse):
    """A plain ASGI streaming response: start, then the relay's chunks, then the end of the body;
    a client that leaves is noticed at once by the :class:`ClientWatch` (the handler's, or its own)."""

    def __init__(self, relay: Relay, status_code: int, watch: ClientWatch | None = None) -> None:
        self._chunks = relay.chunks()
        super().__init__(self._chunks, status_code)
        self._relay = relay
        self._watch = watch

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        watch = self._watch or ClientWatch(receive)
        try:
            await self._stream(send)
        except asyncio.CancelledError:
            if not watch.gone:
                raise
            watch.absorb()
        except OSError:  # the transport failed under a send: the client is gone
            pass
        finally:
            watch.stop()
            try:
                await self._chunks.aclose()
            finally:
                await self._relay.finish()

    async def _stream(self, send: Send) -> None:
        ready = self._relay.ready()
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        if ready:  # parsed with the next chunk's bytes, or at the end
            await send({"type": "http.response.body", "body": ready, "more_body": True})
        async for chunk in self._chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
