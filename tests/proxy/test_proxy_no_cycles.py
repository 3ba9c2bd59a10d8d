"""A finished interception's objects are freed when the last reference goes, not by the garbage collector.

A reference cycle through one request's objects (a callback of the relay closing over the relay was
one) makes every object of the request (the flow, the observation, the parsed body, the upstream
response, the task) wait for a collection; under load that was a large part of a streamed request's
CPU. The proxy here serves in this process, so the collector's debug mode sees what it frees.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from proxy_support import Proxy, wait_for

from aibridge.proxy.component import GC_YOUNG_THRESHOLD

pytestmark = pytest.mark.kafka

CHAT = (
    "/api/v2/aibridge/openai/v1/chat/completions",
    {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
)
MESSAGES = (
    "/api/v2/aibridge/anthropic/v1/messages",
    {"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]},
)
RESPONSES = ("/api/v2/aibridge/openai/v1/responses", {"model": "gpt-5", "input": "hi"})


@pytest.mark.parametrize("stream", [False, True], ids=["blocking", "streaming"])
@pytest.mark.parametrize(("path", "body"), [CHAT, MESSAGES, RESPONSES], ids=["chat", "messages", "responses"])
async def test_a_finished_interception_leaves_no_reference_cycle(  # noqa: PLR0917
    proxy: Proxy,
    token: str,
    events_of: Callable[..., Any],
    collected: Callable[[], list[Any]],
    path: str,
    body: dict[str, Any],
    stream: bool,
) -> None:
    headers = {"Authorization": f"Bearer {token}", "x-api-key": token}
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10, headers=headers) as client:
        for _ in range(3):
            response = await client.post(path, json=body | {"stream": stream})
            assert response.status_code == 200
    await events_of(3)
    await wait_for(lambda: not proxy.component.deferred and proxy.component.in_flight.count == 0)
    assert collected() == []


def test_a_started_proxy_keeps_its_start_out_of_the_collectors_sight_and_collects_less_often(proxy: Proxy) -> None:
    """What the proxy built to start is frozen (never walked again); the young generation is collected
    every GC_YOUNG_THRESHOLD allocations, not Python's 700 (the objects of a request are freed without it)."""
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD > 700
