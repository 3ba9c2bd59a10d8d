"""AIBRIDGE_MAX_BODY_BYTES through the real proxy: a declared length over the limit is refused before a
byte of the body is read, a chunked body as soon as it passes the limit; 413 in the provider's shape,
nothing forwarded, and (after authentication) the interception recorded as invalid_request."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import orjson
import pytest
from proxy_support import ProxyFactory, Simulator, of_type

pytestmark = pytest.mark.kafka

LIMIT = 4096
CHAT = "/api/v2/aibridge/openai/v1/chat/completions"
MESSAGES = "/api/v2/aibridge/anthropic/v1/messages"
COUNT_TOKENS = "/api/v2/aibridge/anthropic/v1/messages/count_tokens"
MESSAGE = f"the request body is larger than {LIMIT} bytes"
OPENAI_413 = {
    "error": {"message": MESSAGE, "type": "invalid_request_error", "param": None, "code": "request_too_large"}
}
ANTHROPIC_413 = {"type": "error", "error": {"type": "request_too_large", "message": MESSAGE}}


def big_body() -> bytes:
    padding = "x" * (LIMIT + 1)
    return orjson.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": padding}], "max_tokens": 8})


async def declared_only(url: str, path: str, token: str, length: int) -> tuple[int, dict[str, Any]]:
    """Send headers declaring ``length`` bytes and no body at all: the answer must come without it."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nX-Api-Key: {token}\r\nContent-Type: application/json\r\n"
    writer.write(f"{head}Content-Length: {length}\r\n\r\n".encode())
    await writer.drain()
    try:
        status_line = await asyncio.wait_for(reader.readline(), 5)
        headers = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        size = next(
            int(line.split(b":")[1]) for line in headers.split(b"\r\n") if line.lower().startswith(b"content-length")
        )
        body = await asyncio.wait_for(reader.readexactly(size), 5)
    finally:
        writer.close()
    return int(status_line.split()[1]), orjson.loads(body)


async def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_sent(
    start_proxy: ProxyFactory, simulator: Simulator, token: str, events_of: Callable[..., Any]
) -> None:
    proxy = start_proxy(max_body_bytes=LIMIT)
    seen = len(simulator.state.requests)
    assert await declared_only(proxy.url, CHAT, token, 10 * 1024 * 1024) == (413, OPENAI_413)
    assert await declared_only(proxy.url, MESSAGES, token, LIMIT + 1) == (413, ANTHROPIC_413)
    assert len(simulator.state.requests) == seen
    ended = of_type(await events_of(2), "interception.ended")
    assert sorted(e["route"] for e in ended) == ["/v1/chat/completions", "/v1/messages"]
    assert all(e["status"] == "invalid_request" and e["http_status"] == 413 for e in ended)
    assert all(e["initiator"]["id"] == "user-alice-1" and e["error"] == MESSAGE for e in ended)


async def test_a_chunked_body_is_refused_once_it_passes_the_limit(
    start_proxy: ProxyFactory, simulator: Simulator, token: str
) -> None:
    proxy = start_proxy(max_body_bytes=LIMIT)
    seen = len(simulator.state.requests)
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(64):  # 64 KiB offered; the proxy stops reading after a little over 4
            sent += 1024
            yield b" " * 1024

    async with httpx.AsyncClient(base_url=proxy.url, timeout=10, headers={"x-api-key": token}) as client:
        for path, shape in ((CHAT, OPENAI_413), (MESSAGES, ANTHROPIC_413), (COUNT_TOKENS, ANTHROPIC_413)):
            response = await client.post(path, content=chunks(), headers={"content-type": "application/json"})
            assert response.status_code == 413, path
            assert response.json() == shape
    assert len(simulator.state.requests) == seen


async def test_a_body_within_the_limit_goes_through_and_the_old_name_still_sets_the_limit(
    start_proxy: ProxyFactory, simulator: Simulator, token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIBRIDGE_MAX_REQUEST_BYTES", str(LIMIT))
    proxy = start_proxy()
    assert proxy.settings.max_body_bytes == LIMIT
    small = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10, headers={"x-api-key": token}) as client:
        assert (await client.post(CHAT, json=small)).status_code == 200
        assert (await client.post(CHAT, content=big_body())).status_code == 413


async def test_an_unauthenticated_request_is_refused_before_its_body_is_read(
    start_proxy: ProxyFactory, simulator: Simulator
) -> None:
    proxy = start_proxy(max_body_bytes=LIMIT)
    status, body = await declared_only(proxy.url, CHAT, "not-a-token", 10 * 1024 * 1024)
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
