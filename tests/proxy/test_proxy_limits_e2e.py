"""Admission limits and circuit breakers through the real proxy: exact statuses, headers and bodies,
nothing forwarded when the bridge answers itself, and every rejection recorded and attributed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import anthropic
import httpx
import openai
import pytest
from prometheus_client import REGISTRY
from proxy_support import ProxyFactory, Simulator, of_type, wait_for

from aibridge.testing.broker import free_port

pytestmark = pytest.mark.kafka

OPENAI_PATH = "/api/v2/aibridge/openai/v1/chat/completions"
ANTHROPIC_PATH = "/api/v2/aibridge/anthropic/v1/messages"
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
MESSAGE = {"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}


def rejections(reason: str) -> float:
    return REGISTRY.get_sample_value("aibridge_proxy_rejections_total", {"reason": reason}) or 0.0


def breaker_state(provider: str, model: str) -> float | None:
    return REGISTRY.get_sample_value("aibridge_circuit_breaker_state", {"provider": provider, "model": model})


def exact(response: httpx.Response, status: int, retry_after: str, body: bytes) -> None:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.headers["retry-after"] == retry_after
    assert response.content == body


def rejected_ended(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in of_type(events, "interception.ended") if e["status"] == "rejected"]


async def test_replica_rps_limit_answers_429_in_each_providers_shape_and_records_the_rejection(
    start_proxy: ProxyFactory, simulator: Simulator, token: str, events_of: Callable[..., Any]
) -> None:
    proxy = start_proxy(max_rps=0.2)  # one request, then one every 5 s
    before = rejections("rate_limit")
    message = b"aibridge: this replica's limit of 0.2 requests per second is reached; retry later"
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10, headers={"x-api-key": token}) as client:
        assert (await client.post(OPENAI_PATH, json=CHAT)).status_code == 200
        seen = len(simulator.state.requests)
        exact(
            await client.post(OPENAI_PATH, json=CHAT),
            429,
            "5",
            b'{"error":{"message":"' + message + b'","type":"requests","param":null,"code":"rate_limit_exceeded"}}',
        )
        exact(
            await client.post(ANTHROPIC_PATH, json=MESSAGE),
            429,
            "5",
            b'{"type":"error","error":{"type":"rate_limit_error","message":"' + message + b'"}}',
        )
    assert len(simulator.state.requests) == seen, "a rejected request reached the upstream"
    assert rejections("rate_limit") == before + 2
    events = await events_of(3)
    rejected = rejected_ended(events)
    assert sorted((e["provider"], e["http_status"]) for e in rejected) == [("anthropic", 429), ("openai", 429)]
    for event in rejected:
        assert event["initiator"] == {"id": "user-alice-1", "username": "alice"}
        assert event["error"] == message.decode() and event["model"] == ""
    assert len(of_type(events, "interception.started")) == 3
    completed = [e["interception_id"] for e in of_type(events, "interception.ended") if e["status"] == "completed"]
    assert [e["interception_id"] for e in of_type(events, "prompt")] == completed, "only forwarded prompts"


async def test_per_user_rpm_limits_one_user_not_the_others_and_the_sdks_understand_it(
    start_proxy: ProxyFactory, make_token: Callable[..., str], token: str, events_of: Callable[..., Any]
) -> None:
    proxy = start_proxy(user_max_rpm=2)
    alice = openai.AsyncOpenAI(base_url=proxy.openai_base_url, api_key=token, max_retries=0)
    for _ in range(2):
        await alice.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.RateLimitError) as limited:
        await alice.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert (limited.value.code, limited.value.type) == ("rate_limit_exceeded", "requests")
    assert limited.value.response.headers["retry-after"] == "30"
    assert limited.value.message.endswith("your limit of 2 requests per minute is reached; retry later")
    alice_claude = anthropic.AsyncAnthropic(base_url=proxy.anthropic_base_url, api_key=token, max_retries=0)
    with pytest.raises(anthropic.RateLimitError) as claude_limited:
        await alice_claude.messages.create(model="claude-x", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert claude_limited.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10, headers={"x-api-key": token}) as client:
        models = await client.get("/api/v2/aibridge/openai/v1/models")
    assert (models.status_code, models.headers["retry-after"]) == (429, "30"), "passthrough is limited too"
    bob = openai.AsyncOpenAI(base_url=proxy.openai_base_url, api_key=make_token("bob"), max_retries=0)
    await bob.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])

    events = await events_of(5)
    rejected = rejected_ended(events)
    assert [(e["initiator"]["username"], e["http_status"]) for e in rejected] == [("alice", 429)] * 2
    completed = [e for e in of_type(events, "interception.ended") if e["status"] == "completed"]
    assert sorted(e["initiator"]["username"] for e in completed) == ["alice", "alice", "bob"]


async def test_concurrency_limit_answers_503_while_a_stream_holds_the_only_slot(
    start_proxy: ProxyFactory, token: str, events_of: Callable[..., Any]
) -> None:
    proxy = start_proxy(max_concurrent=1)
    message = b"aibridge: this replica is at its limit of 1 concurrent requests; retry shortly"
    headers = {"x-api-key": token, "x-simulator-chunk-delay-ms": "100"}
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10, headers=headers) as client:
        async with client.stream("POST", OPENAI_PATH, json=CHAT | {"stream": True}) as stream:
            chunks = stream.aiter_raw()
            await anext(chunks)
            exact(
                await client.post(OPENAI_PATH, json=CHAT),
                503,
                "1",
                b'{"error":{"message":"' + message + b'","type":"service_unavailable_error","param":null,'
                b'"code":"server_is_overloaded"}}',
            )
            exact(
                await client.post(ANTHROPIC_PATH, json=MESSAGE),
                503,
                "1",
                b'{"type":"error","error":{"type":"overloaded_error","message":"' + message + b'"}}',
            )
            rest = b"".join([chunk async for chunk in chunks])
        assert rest.endswith(b"data: [DONE]\n\n")
        await wait_for(lambda: proxy.component.in_flight.count == 0)
        assert (await client.post(OPENAI_PATH, json=CHAT)).status_code == 200, "the stream's slot was not freed"
        assert (await client.post(ANTHROPIC_PATH, json=MESSAGE)).status_code == 200
    assert proxy.component.admission.concurrency is not None
    assert proxy.component.admission.concurrency.in_flight == 0
    rejected = rejected_ended(await events_of(5))
    assert sorted((e["provider"], e["http_status"]) for e in rejected) == [("anthropic", 503), ("openai", 503)]


async def test_breaker_opens_on_repeated_529_answers_fast_then_probes_and_closes(
    start_proxy: ProxyFactory, simulator: Simulator, token: str, events_of: Callable[..., Any]
) -> None:
    proxy = start_proxy(breaker_failures=2, breaker_open_seconds=1)
    model = "claude-breaker-test"
    body = MESSAGE | {"model": model}
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10, headers={"x-api-key": token}) as client:
        for _ in range(2):
            overloaded = await client.post(ANTHROPIC_PATH, json=body, headers={"x-simulator-status": "529"})
            assert overloaded.status_code == 529, "the upstream's own answer is relayed until the breaker opens"
        assert breaker_state("anthropic", model) == 1
        seen = len(simulator.state.requests)
        exact(
            await client.post(ANTHROPIC_PATH, json=body),
            503,
            "1",
            b'{"type":"error","error":{"type":"overloaded_error","message":"aibridge: anthropic is failing for model '
            + model.encode()
            + b' (last failure: HTTP 529); requests are paused, retry in 1 s"}}',
        )
        assert len(simulator.state.requests) == seen, "an open breaker must not reach the upstream"
        other = await client.post(ANTHROPIC_PATH, json=MESSAGE)
        assert other.status_code == 200, "breakers are per model"
        await asyncio.sleep(1.1)
        probe = await client.post(ANTHROPIC_PATH, json=body)
        assert probe.status_code == 200
        assert breaker_state("anthropic", model) == 0
    events = await events_of(5)
    rejected = rejected_ended(events)
    assert [(e["model"], e["http_status"]) for e in rejected] == [(model, 503)]
    assert rejected[0]["initiator"]["username"] == "alice"


async def test_breaker_opens_on_connect_errors_and_answers_in_the_openai_shape(
    start_proxy: ProxyFactory, token: str
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    proxy = start_proxy(openai_base_url=f"{closed}/v1", breaker_failures=2, breaker_open_seconds=30)
    before = rejections("circuit_open")
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10, headers={"x-api-key": token}) as client:
        statuses = [(await client.post(OPENAI_PATH, json=CHAT)).status_code for _ in range(2)]
        assert statuses == [502, 502]
        fast = await client.post(OPENAI_PATH, json=CHAT)
    assert fast.status_code == 503
    assert fast.headers["retry-after"] in {"29", "30"}
    error = fast.json()["error"]
    assert (error["type"], error["code"], error["param"]) == ("service_unavailable_error", "server_is_overloaded", None)
    assert "(last failure: UpstreamUnreachable)" in error["message"]
    assert rejections("circuit_open") == before + 1
    assert breaker_state("openai", "gpt-4o") == 1
