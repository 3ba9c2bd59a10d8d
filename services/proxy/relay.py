"""Relaying a streamed answer chunk by chunk while a tee parses it, recording exactly once.

:class:`RelayResponse` guarantees :meth:`Relay.finish` runs however the response ends: the stream
completed, the upstream failed mid-stream (the client then gets an error event in the provider's
shape), or the client went away (even before the first chunk). A client that goes away is noticed
at once (a task listens for ``http.disconnect``); the upstream request is then closed, not drained:
draining would make the provider generate, and bill, output nobody reads. The interception is recorded
as ``client_disconnected`` with the token counts seen so far, marked ``metadata.partial``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from aibridge.events import Status
from aibridge.proxy.errors import ProxyError
from aibridge.proxy.records import ResponseSummary
from aibridge.proxy.upstream import UpstreamResponse

Finished = Callable[[ResponseSummary, Status, str | None], None]


class Tee(Protocol):
    summary: ResponseSummary

    def feed(self, chunk: bytes) -> bytes: ...

    def close(self) -> bytes: ...


class Relay:
    def __init__(
        self, response: UpstreamResponse, tee: Tee, on_finished: Finished, error_event: Callable[[ProxyError], bytes]
    ) -> None:
        self._response = response
        self._tee = tee
        self._on_finished = on_finished
        self._error_event = error_event
        self._status: Status | None = None
        self._error: str | None = None
        self._tee_closed = False
        self._finished = False
        self.upstream_wait = 0.0  # seconds waiting for the upstream's next chunk
        self.client_wait = 0.0  # seconds the server spent sending chunks to the client

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            upstream = self._response.chunks()
            clock = time.perf_counter
            while True:
                waiting = clock()
                try:
                    chunk = await anext(upstream)
                except StopAsyncIteration:
                    break
                self.upstream_wait += clock() - waiting
                if forwarded := self._tee.feed(chunk):
                    sending = clock()
                    yield forwarded
                    self.client_wait += clock() - sending
            self._tee_closed = True
            if tail := self._tee.close():
                yield tail
            self._status = Status.COMPLETED
        except ProxyError as exc:
            self._status, self._error = Status.UPSTREAM_ERROR, str(exc)
            yield self._error_event(exc)

    async def finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        try:
            await self._response.close()
        finally:
            if not self._tee_closed:
                self._tee.close()
            summary = self._tee.summary
            status = self._status or Status.CLIENT_DISCONNECTED
            error = self._error
            if status is Status.CLIENT_DISCONNECTED:
                error = "the client went away before the stream ended"
                if summary.usage is not None:
                    summary.usage.metadata["partial"] = True
            elif status is Status.COMPLETED and summary.error:
                status, error = Status.UPSTREAM_ERROR, summary.error
            self._on_finished(summary, status, error)


class RelayResponse(StreamingResponse):
    def __init__(self, relay: Relay, status_code: int) -> None:
        super().__init__(relay.chunks(), status_code)
        self._relay = relay

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Starlette listens for ``http.disconnect`` next to the stream only below ASGI spec 2.4; above
        # it a client that left is noticed at the next chunk, which a thinking model may send minutes
        # later. Listening is valid in every version, so always do it: the upstream is closed at once.
        scope = {**scope, "asgi": {**scope.get("asgi", {}), "spec_version": "2.3"}}
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._relay.finish()
