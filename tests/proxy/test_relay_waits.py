"""The relay's waits: what the overhead histogram (``aibridge_proxy_overhead_seconds``) leaves out."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from aibridge.events import Status
from aibridge.proxy.errors import ProxyError
from aibridge.proxy.providers.records import ResponseSummary
from aibridge.proxy.relay import Relay

PARSING = 0.05  # seconds the tee spends parsing each chunk after it is sent


class Upstream:
    status = 200
    headers: list[tuple[str, str]] = []

    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = chunks

    def ready(self) -> bytes:
        return b""

    async def _iterate(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            yield chunk

    def chunks(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def close(self) -> None:
        return None


class SlowParsing:
    """A tee whose parsing after each send takes ``PARSING`` seconds of the bridge's own time."""

    def __init__(self) -> None:
        self.summary = ResponseSummary()
        self.parsed = 0

    def feed(self, chunk: bytes) -> bytes:
        return chunk

    def settle(self) -> None:
        time.sleep(PARSING)
        self.parsed += 1

    def end(self) -> bytes:
        return b""

    def close(self) -> bytes:
        return b""


def not_recorded(relay: Relay, summary: ResponseSummary, status: Status, error: str | None) -> None:
    return None


def no_error_event(exc: ProxyError) -> bytes:
    raise exc


async def test_the_parsing_after_a_send_is_not_counted_as_waiting_on_the_client() -> None:
    tee = SlowParsing()
    relay = Relay(Upstream([b"data: 1\n\n", b"data: 2\n\n"]), tee, not_recorded, no_error_event, lambda job: job())
    sent = [chunk async for chunk in relay.chunks()]  # the client takes each chunk at once
    assert sent == [b"data: 1\n\n", b"data: 2\n\n"]
    assert tee.parsed == 2
    assert relay.client_wait < PARSING / 2  # the two parsings (0.1 s) are the bridge's time, not the client's
