"""Recording after the answer (services/proxy/recording/deferred.py): jobs wait for their delay and run together,
a failing job is logged without stopping the others, the times recorded are the answer's (its end's
events all carry it), and
stopping the proxy records what is still pending."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from proxy_support import Proxy, ProxyFactory, of_type

from aibridge.events import parse_time
from aibridge.proxy.recording.deferred import Deferred

OPENAI_PATH = "/api/v2/aibridge/openai/v1/chat/completions"
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}


async def test_jobs_wait_for_the_delay_then_run_together_in_order() -> None:
    deferred = Deferred(delay=0.05)
    ran: list[tuple[int, float]] = []
    started = time.perf_counter()
    for number in range(3):
        deferred.call(lambda n: ran.append((n, time.perf_counter() - started)), number)
    assert len(deferred) == 3
    await asyncio.sleep(0)
    assert ran == [], "nothing runs before the delay"
    await asyncio.sleep(0.1)
    assert [number for number, _ in ran] == [0, 1, 2]
    assert all(at >= 0.045 for _, at in ran)
    assert len(deferred) == 0


async def test_flush_runs_what_is_pending_at_once_and_the_timer_then_finds_nothing() -> None:
    deferred = Deferred(delay=0.05)
    ran: list[str] = []
    deferred.call(ran.append, "first")
    deferred.flush()
    assert ran == ["first"]
    await asyncio.sleep(0.1)
    assert ran == ["first"], "the cancelled timer did not run it again"
    deferred.call(ran.append, "second")  # a new timer after a flush
    await asyncio.sleep(0.1)
    assert ran == ["first", "second"]


async def test_a_failing_job_is_logged_and_the_others_still_run(caplog: pytest.LogCaptureFixture) -> None:
    deferred = Deferred(delay=0.0)
    ran: list[str] = []

    def fail() -> None:
        raise RuntimeError("boom")

    deferred.call(ran.append, "before")
    deferred.call(fail)
    deferred.call(ran.append, "after")
    with caplog.at_level(logging.ERROR, logger="aibridge.proxy"):
        await asyncio.sleep(0.02)
    assert ran == ["before", "after"]
    assert [record.getMessage() for record in caplog.records] == ["recording an interception failed"]
    assert caplog.records[0].exc_info is not None and "boom" in str(caplog.records[0].exc_info[1])


@pytest.mark.kafka
@pytest.mark.parametrize("stream", [False, True], ids=["blocking", "streaming"])
async def test_the_recorded_end_is_the_answers_end_not_the_recordings(
    proxy: Proxy, token: str, events_of: Callable[..., Any], stream: bool
) -> None:
    proxy.component.deferred.delay = 1.0  # recorded a second after the answer
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as client:
        response = await client.post(
            OPENAI_PATH, json=CHAT | {"stream": stream}, headers={"Authorization": f"Bearer {token}"}
        )
        answered = datetime.now(UTC)
    assert response.status_code == 200
    assert len(proxy.component.deferred) == 1, "the recording waits"
    events = await events_of(1)
    recorded = datetime.now(UTC)
    assert (recorded - answered).total_seconds() >= 0.9
    ended = of_type(events, "interception.ended")[0]
    assert ended["status"] == "completed"
    lag = (answered - parse_time(ended["ended_at"])).total_seconds()
    assert -0.1 < lag < 0.5, f"ended_at is {lag:.3f}s before the client had its answer"
    assert [event["type"] for event in events] == [
        "interception.started",
        "prompt",
        "token_usage",
        "interception.ended",
    ]
    # the events of the end all carry the answer's end, not the time the recording ran
    assert {event["occurred_at"] for event in events[1:]} == {ended["ended_at"]}
    assert proxy.component.in_flight.count == 0


@pytest.mark.kafka
@pytest.mark.parametrize("stream", [False, True], ids=["blocking", "streaming"])
async def test_stopping_the_proxy_records_what_is_still_pending(
    start_proxy: ProxyFactory, token: str, events_of: Callable[..., Any], stream: bool
) -> None:
    proxy = start_proxy()
    proxy.component.deferred.delay = 3600.0  # never by the timer
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as client:
        response = await client.post(
            OPENAI_PATH, json=CHAT | {"stream": stream}, headers={"Authorization": f"Bearer {token}"}
        )
    assert response.status_code == 200
    assert len(proxy.component.deferred) == 1
    await asyncio.to_thread(proxy.stop)
    events = await events_of(1)
    ended = of_type(events, "interception.ended")[0]
    assert ended["status"] == "completed"
    assert len(of_type(events, "token_usage")) == 1
