"""Three proxy replicas against one store under concurrent load: the spend past a budget stays within
the bound docs/spend.md states, C x (F + N x q x (I + L)).

The replicas publish to the real broker (Tansu), one recorder writes the events into chDB, and each
replica refreshes its budgets and spend from there every I seconds. Twelve OpenAI SDK clients (four
per replica, each one request at a time: F = 12 in flight at most) send the same request, whose cost
C is the same every time, until each has been refused three times.
"""

from __future__ import annotations

import asyncio
import datetime
import time
import uuid
from collections.abc import Callable
from decimal import Decimal

import openai
from clickhouse_connect.driver.client import Client
from proxy_support import Proxy, ProxyFactory

from aibridge import budgets, pricing
from aibridge.budgets import Budget, Period, Scope
from aibridge.kafka import KafkaConsumer, KafkaProducer
from aibridge.recorder.component import RecorderComponent
from aibridge.recorder.settings import RecorderSettings

REPLICAS = 3
CLIENTS_PER_REPLICA = 4
INTERVAL = 0.5  # I: seconds between a replica's reads of the store
RECORDER_BATCH_SECONDS = 0.2
BUDGET_REQUESTS = 40  # the budget is this many requests' cost
MESSAGES = [{"role": "user", "content": "Say hello"}]


async def test_three_replicas_stay_within_the_overshoot_bound(
    *,
    start_proxy: ProxyFactory,
    store_client: Client,
    kafka_bootstrap: str,
    kafka_topic: str,
    chdb_url: str,
    store_database: str,
    make_token: Callable[..., str],
) -> None:
    recorder = await start_recorder(kafka_bootstrap, kafka_topic, chdb_url, store_database, store_client)
    try:
        proxies = [
            start_proxy(store=store_client, budgets=True, budget_refresh_interval=INTERVAL) for _ in range(REPLICAS)
        ]
        token = make_token("alice", user_id="user-alice-1")
        cost = await calibrate(proxies[0], token, store_client)
        limit = cost * BUDGET_REQUESTS
        budgets.save(
            store_client,
            Budget(Scope.USER, "alice", Period.MONTH, limit, Decimal("0.5")),
            "admin",
            datetime.datetime.now(datetime.UTC),
        )
        await asyncio.sleep(INTERVAL * 2.5)  # every replica has read the budget

        started = time.monotonic()
        admitted: list[list[float]] = [[] for _ in proxies]
        await asyncio.gather(*(
            load(proxy, token, admitted[index], started)
            for index, proxy in enumerate(proxies)
            for _ in range(CLIENTS_PER_REPLICA)
        ))  # fmt: skip
        total = 1 + sum(len(times) for times in admitted)  # the calibration request too

        stored = await stored_spend(store_client, total)
        assert stored == cost * total  # every admitted request is in the store, at C each
        overshoot = max(Decimal(0), stored - limit)

        # q: the highest rate of admissions one replica had over the run; L: the recorder's batch time plus
        # its write (measured: the longest wait for a stored row seen here is far below a second).
        duration = max(max(times, default=0.0) for times in admitted) or 1.0
        q = max(len(times) for times in admitted) / duration
        lag = RECORDER_BATCH_SECONDS + 0.5
        in_flight = REPLICAS * CLIENTS_PER_REPLICA
        bound = cost * (in_flight + Decimal(REPLICAS * q * (INTERVAL + lag)))
        print(
            f"budget {limit} USD ({BUDGET_REQUESTS} requests), admitted {total} requests, overshoot {overshoot} USD"
            f" = {overshoot / cost:.0f} requests; bound {bound:.6f} USD = {bound / cost:.1f} requests"
            f" (F={in_flight}, N={REPLICAS}, q={q:.1f}/s, I={INTERVAL}s, L={lag}s)"
        )
        assert total > BUDGET_REQUESTS  # the budget was reached under load
        assert overshoot <= bound
    finally:
        await recorder.stop()


async def calibrate(proxy: Proxy, token: str, client: Client) -> Decimal:
    sdk = openai.AsyncOpenAI(base_url=proxy.openai_base_url, api_key=token, max_retries=0)
    answer = await sdk.chat.completions.create(model="gpt-4o", messages=MESSAGES)  # type: ignore[arg-type]
    assert answer.usage is not None
    usage = answer.usage
    cached = usage.prompt_tokens_details.cached_tokens if usage.prompt_tokens_details else 0
    tokens = pricing.Tokens(usage.prompt_tokens - (cached or 0), usage.completion_tokens, cached or 0, 0)
    cost = pricing.builtin().cost("openai", "gpt-4o", tokens)
    assert cost is not None and cost > 0
    await stored_spend(client, 1)
    return cost


async def load(proxy: Proxy, token: str, admitted: list[float], started: float) -> None:
    """One request at a time until refused three times in a row (bounded: 30 s)."""
    sdk = openai.AsyncOpenAI(base_url=proxy.openai_base_url, api_key=token, max_retries=0)
    refusals = 0
    deadline = time.monotonic() + 30
    while refusals < 3 and time.monotonic() < deadline:
        try:
            await sdk.chat.completions.create(model="gpt-4o", messages=MESSAGES)  # type: ignore[arg-type]
        except openai.RateLimitError as exc:
            assert "budget of user alice" in str(exc)
            refusals += 1
            await asyncio.sleep(0.05)
        else:
            admitted.append(time.monotonic() - started)
            refusals = 0
    assert refusals == 3


async def stored_spend(client: Client, usages: int, timeout: float = 20.0) -> Decimal:
    """The store's spend of alice this month once it has ``usages`` token usages."""
    deadline = time.monotonic() + timeout
    while True:
        rows = client.query(
            "SELECT count(), sum(cost) FROM token_usages FINAL WHERE initiator_id = 'user-alice-1'"
        ).result_rows
        if rows[0][0] >= usages or time.monotonic() > deadline:
            assert rows[0][0] == usages
            return Decimal(rows[0][1])
        await asyncio.sleep(0.1)


async def start_recorder(bootstrap: str, topic: str, chdb_url: str, database: str, client: Client) -> RecorderComponent:
    settings = RecorderSettings(
        kafka_bootstrap=bootstrap,
        kafka_topic=topic,
        clickhouse_url=chdb_url,
        clickhouse_database=database,
        batch_max_seconds=RECORDER_BATCH_SECONDS,
        shutdown_timeout=5.0,
    )
    group = f"recorder-{uuid.uuid4().hex[:8]}"
    consumer = KafkaConsumer(settings, group_id=group, **settings.kafka_consumer_options())
    component = RecorderComponent(settings, consumer, KafkaProducer(settings), client)
    await component.start()
    return component
