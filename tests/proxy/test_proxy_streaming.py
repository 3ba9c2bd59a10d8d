"""Streams are relayed as they arrive and exactly as asked for; a dead broker never hurts a request."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client import REGISTRY
from proxy_support import Proxy, ProxyFactory, wait_for

from aibridge.kafka import KafkaProducer
from aibridge.proxy.settings import ProxySettings
from aibridge.testing.broker import free_port

pytestmark = pytest.mark.kafka

OPENAI_PATH = "/api/v2/aibridge/openai/v1/chat/completions"
ANTHROPIC_PATH = "/api/v2/aibridge/anthropic/v1/messages"
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "stream please"}], "stream": True}


async def test_first_chunk_reaches_the_client_before_the_upstream_has_finished(proxy: Proxy, token: str) -> None:
    headers = {"x-api-key": token, "x-simulator-chunk-delay-ms": "250"}
    arrivals: list[float] = []
    async with (
        httpx.AsyncClient(base_url=proxy.url, timeout=20, headers=headers) as client,
        client.stream("POST", OPENAI_PATH, json=CHAT) as response,
    ):
        start = time.monotonic()
        async for chunk in response.aiter_raw():
            arrivals.append(time.monotonic() - start)
            if len(arrivals) == 1:
                assert chunk.startswith(b"data: {")
    # The simulator sends about nine chunks 250 ms apart: the first must not wait for the rest.
    assert len(arrivals) >= 5, "chunks were merged: the stream was buffered"
    assert arrivals[-1] - arrivals[0] >= 1.0
    assert arrivals[0] < arrivals[-1] - 1.0


async def raw_stream(proxy: Proxy, token: str, path: str, body: dict[str, Any]) -> bytes:
    async with (
        httpx.AsyncClient(base_url=proxy.url, timeout=20, headers={"x-api-key": token}) as client,
        client.stream("POST", path, json=body) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return b"".join([chunk async for chunk in response.aiter_raw()])


def data_lines(raw: bytes) -> list[bytes]:
    return [line[6:] for line in raw.split(b"\n") if line.startswith(b"data: ")]


async def test_openai_stream_without_usage_requested_is_exactly_what_the_client_asked_for(
    proxy: Proxy, token: str, events_of: Callable[..., Any]
) -> None:
    raw = await raw_stream(proxy, token, OPENAI_PATH, CHAT)
    assert b'"usage"' not in raw, "the client did not ask for usage: neither the chunk nor null members"
    chunks = data_lines(raw)
    assert chunks[-1] == b"[DONE]"
    assert all(orjson.loads(chunk)["choices"] for chunk in chunks[:-1])
    usage = [e for e in await events_of(1) if e["type"] == "token_usage"]
    assert len(usage) == 1 and usage[0]["output_tokens"] > 0


async def test_openai_stream_with_usage_requested_keeps_usage_chunk_and_null_members(proxy: Proxy, token: str) -> None:
    raw = await raw_stream(proxy, token, OPENAI_PATH, CHAT | {"stream_options": {"include_usage": True}})
    chunks = [orjson.loads(chunk) for chunk in data_lines(raw)[:-1]]
    assert all("usage" in chunk for chunk in chunks)
    assert [chunk["choices"] for chunk in chunks if chunk["usage"] is not None] == [[]]
    assert chunks[-1]["usage"]["prompt_tokens"] > 0


async def test_anthropic_stream_is_relayed_byte_for_byte(proxy: Proxy, token: str) -> None:
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 64,
        "stream": True,
        "messages": [{"role": "user", "content": "x"}],
    }
    raw = await raw_stream(proxy, token, ANTHROPIC_PATH, body)
    names = [line[7:] for line in raw.split(b"\n") if line.startswith(b"event: ")]
    assert names[:2] == [b"message_start", b"ping"]
    assert names[-2:] == [b"message_delta", b"message_stop"]
    assert raw.endswith(b"\n\n")


def dropped(reason: str) -> float:
    return REGISTRY.get_sample_value("aibridge_proxy_events_dropped_total", {"reason": reason}) or 0.0


async def test_dead_broker_neither_fails_nor_slows_requests_and_unpublished_events_are_counted(
    start_proxy: ProxyFactory, token: str
) -> None:
    settings = ProxySettings(kafka_bootstrap=f"127.0.0.1:{free_port()}")
    before = dropped("shutdown")
    proxy = start_proxy(producer=KafkaProducer(settings, request_timeout=1.0), event_flush_timeout=0.5)
    durations = []
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10, headers={"x-api-key": token}) as client:
        for _ in range(5):
            started = time.monotonic()
            response = await client.post(OPENAI_PATH, json=CHAT | {"stream": False})
            durations.append(time.monotonic() - started)
            assert response.status_code == 200
    assert max(durations) < 0.5, f"requests were slowed by the dead broker: {durations}"
    emitter = proxy.component.emitter
    assert emitter.published == 0 and not emitter.connected
    await wait_for(lambda: emitter.buffered == 5 * 4)  # started, prompt, token_usage, ended per request
    proxy.stop()
    assert emitter.dropped == 20
    assert dropped("shutdown") - before == 20


async def test_full_event_buffer_drops_and_counts_instead_of_blocking(start_proxy: ProxyFactory, token: str) -> None:
    settings = ProxySettings(kafka_bootstrap=f"127.0.0.1:{free_port()}")
    before = dropped("buffer_full")
    proxy = start_proxy(producer=KafkaProducer(settings, request_timeout=1.0), event_buffer_size=3)
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10, headers={"x-api-key": token}) as client:
        response = await client.post(OPENAI_PATH, json=CHAT | {"stream": False})
    assert response.status_code == 200
    await wait_for(lambda: proxy.component.emitter.dropped == 1)
    assert dropped("buffer_full") - before == 1
