"""Malformed provider streams through the real proxy: the upstream is a scripted socket server that answers
a recorded stream (chat completions, Responses, Anthropic messages) mangled as a faulty provider or network
would: cut before its final event, invalid UTF-8, a giant line, events out of order, any chunking, and
framed as chunked (its end sent or the connection dropped mid-chunk) or delimited by closing.

Whatever it sends, the client gets the stream's status and bytes or a mapped error (502 and an error event
in the provider's shape), never a 500 of the proxy's own, and every interception is recorded on the real
broker with status ``upstream_error``.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from proxy_support import ProxyFactory, of_type

pytestmark = pytest.mark.kafka

FIXTURES = Path(__file__).parent / "fixtures"
STREAMS = {
    "/api/v2/aibridge/openai/v1/chat/completions": (FIXTURES / "openai_stream_tool_calls.sse").read_bytes(),
    "/api/v2/aibridge/openai/v1/responses": (FIXTURES / "openai_responses_stream_codex.sse").read_bytes(),
    "/api/v2/aibridge/anthropic/v1/messages": (FIXTURES / "anthropic_stream_tool_use.sse").read_bytes(),
}
FINAL_EVENTS = (b"data: [DONE]", b"event: response.completed", b"event: message_stop")
BODY = b'{"model":"m","stream":true,"max_tokens":8,"messages":[{"role":"user","content":"hi"}],"input":"hi"}'
EXAMPLES = 25


@dataclass(frozen=True)
class Script:
    """What the scripted provider sends: ``parts`` of the body, framed as ``framing``."""

    parts: list[bytes]
    framing: str  # "chunked" | "chunked_dropped" | "close"

    def wire(self) -> Iterator[bytes]:
        yield b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
        if self.framing == "close":
            yield b"connection: close\r\n\r\n"
            yield from self.parts
            return
        yield b"transfer-encoding: chunked\r\n\r\n"
        for part in self.parts:
            if part:
                yield b"%x\r\n%s\r\n" % (len(part), part)
        if self.framing == "chunked":
            yield b"0\r\n\r\n"
        else:
            yield b"ffff\r\npartial"  # a chunk announced and never finished: the connection drops


class ScriptedProvider:
    """A socket server answering every request with :attr:`script` (one example at a time)."""

    def __init__(self) -> None:
        self.script = Script([], "chunked")
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.2)
        self.port = self._server.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                peer, _ = self._server.accept()
            except TimeoutError:
                continue
            with peer:
                self._answer(peer)

    def _answer(self, peer: socket.socket) -> None:
        peer.settimeout(5)
        request = b""
        while b"\r\n\r\n" not in request:
            request += peer.recv(65536)
        head, _, body = request.partition(b"\r\n\r\n")
        length = next(
            int(v)
            for k, _, v in (line.partition(b":") for line in head.split(b"\r\n"))
            if k.lower() == b"content-length"
        )
        while len(body) < length:
            body += peer.recv(65536)
        for piece in self.script.wire():
            peer.sendall(piece)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._server.close()


def cut_before_final(stream: bytes) -> bytes:
    """The stream up to its final event (exclusive): what a provider that stopped early sent."""
    at = min(i for i in (stream.find(marker) for marker in FINAL_EVENTS) if i >= 0)
    return stream[:at]


@st.composite
def scripts(draw: st.DrawFn) -> tuple[str, Script]:
    path = draw(st.sampled_from(sorted(STREAMS)))
    raw = cut_before_final(STREAMS[path])
    raw = raw[: draw(st.integers(0, len(raw)))]
    if draw(st.booleans()):
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.sampled_from([b"\xff\xfe", b"\xc3", b"data: \x80\xff\n\n"])) + raw[at:]
    if draw(st.booleans()):
        raw += b"data: " + b"x" * draw(st.integers(64 * 1024, 512 * 1024)) + b"\n\n"
    if draw(st.booleans()):
        events = raw.split(b"\n\n")
        events.reverse()  # wrong order
        raw = b"\n\n".join(events)
    cuts = sorted(draw(st.lists(st.integers(0, len(raw)), max_size=6)))
    parts = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    return path, Script(parts, draw(st.sampled_from(["chunked", "chunked_dropped", "close"])))


@pytest.fixture
def provider() -> Iterator[ScriptedProvider]:
    server = ScriptedProvider()
    yield server
    server.close()


def test_malformed_streams_get_no_500_and_are_recorded_as_upstream_errors(
    start_proxy: ProxyFactory, provider: ScriptedProvider, token: str, events_of: Callable[..., Any]
) -> None:
    base = f"http://127.0.0.1:{provider.port}"
    proxy = start_proxy(openai_base_url=f"{base}/v1", anthropic_base_url=base, upstream_read_timeout=5.0)
    answers: list[int] = []

    with httpx.Client(base_url=proxy.url, timeout=20, headers={"x-api-key": token}) as client:

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        )
        @given(case=scripts())
        def relay(case: tuple[str, Script]) -> None:
            path, script = case
            provider.script = script
            response = client.post(path, content=BODY, headers={"content-type": "application/json"})
            assert response.status_code in (200, 502), response.text[:300]
            if script.framing == "chunked_dropped":
                assert b"error" in response.content[-400:]  # the stream ends with the provider-shaped error event
            answers.append(response.status_code)

        relay()

    events = asyncio.run(events_of(len(answers), timeout=30))
    started = of_type(events, "interception.started")
    ended = of_type(events, "interception.ended")
    assert len(started) == len(ended) == len(answers)
    assert {e["interception_id"] for e in started} == {e["interception_id"] for e in ended}
    assert [e["status"] for e in ended] == ["upstream_error"] * len(answers)
    assert all(e["error"] for e in ended)
