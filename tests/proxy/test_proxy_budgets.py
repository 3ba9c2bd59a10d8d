"""Budgets through the proxy: the official SDKs against a replica reading budgets from the store (chDB)."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import fastjsonschema
import openai
import orjson
import pytest
from clickhouse_connect.driver.client import Client
from proxy_support import Proxy, ProxyFactory, wait_for

from aibridge import budgets, pricing
from aibridge.budgets import Budget, Period, Scope
from aibridge.events import Event
from aibridge.proxy.guards.budget_alerts import EXAMPLES_DIR, SCHEMA_PATH

TINY = Decimal("0.000001")


def set_budget(client: Client, scope: Scope, name: str, period: Period, limit: str, *, warn: str = "0.8") -> None:
    budgets.save(
        client, Budget(scope, name, period, Decimal(limit), Decimal(warn)), "admin", datetime.datetime.now(datetime.UTC)
    )


def openai_client(proxy: Proxy, token: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.openai_base_url, api_key=token, max_retries=0)


def chat(client: openai.OpenAI) -> Any:
    return client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Say hello"}]
    )


def cost_of(event: Event) -> Decimal:
    tokens = pricing.Tokens(
        event["input_tokens"],
        event["output_tokens"],
        event["cache_read_input_tokens"],
        event["cache_write_input_tokens"],
    )
    cost = pricing.builtin().cost(event["provider"], event["model"], tokens)
    assert cost is not None and cost > 0
    return cost


@pytest.fixture
def budget_proxy(start_proxy: ProxyFactory, store_client: Client, tmp_path: Path) -> Callable[..., Proxy]:
    groups_file = tmp_path / "groups.yaml"
    groups_file.write_text("groups:\n  eng: [alice]\n  research: [alice]\n")

    def start(**overrides: Any) -> Proxy:
        options = {"budgets": True, "budget_refresh_interval": 0.2, "groups_file": groups_file} | overrides
        proxy = start_proxy(store=store_client, **options)
        guard = proxy.component.budgets
        assert guard is not None and guard.loaded
        return proxy

    return start


async def test_a_spent_budget_refuses_in_the_providers_shape_and_is_recorded(
    budget_proxy: Callable[..., Proxy], store_client: Client, token: str, events_of: Callable[..., Any]
) -> None:
    set_budget(store_client, Scope.USER, "alice", Period.MONTH, str(TINY))
    proxy = budget_proxy()
    client = openai_client(proxy, token)
    first = await asyncio.to_thread(chat, client)  # spend 0 < limit: forwarded; its cost is counted at once
    assert first.status_code == 200
    await wait_for(lambda: proxy.component.deferred.__len__() == 0)

    with pytest.raises(openai.RateLimitError) as refused:
        await asyncio.to_thread(chat, client)
    error = refused.value
    assert error.status_code == 429
    body = orjson.loads(error.response.content)["error"]
    assert body["type"] == body["code"] == "insufficient_quota"
    message = body["message"]
    assert "the month budget of user alice (0.000001 USD) is spent" in message
    reset = budgets.period_reset(Period.MONTH, datetime.datetime.now(datetime.UTC))
    assert reset.isoformat().replace("+00:00", "Z") in message
    retry_after = int(error.response.headers["retry-after"])
    assert 0 < retry_after <= 31 * 86400

    anthropic_client = anthropic.Anthropic(base_url=proxy.anthropic_base_url, api_key=token, max_retries=0)
    with pytest.raises(anthropic.RateLimitError) as refused_anthropic:
        await asyncio.to_thread(
            anthropic_client.messages.create,
            model="claude-sonnet-4-5",
            max_tokens=50,
            messages=[{"role": "user", "content": "hi"}],
        )
    assert orjson.loads(refused_anthropic.value.response.content)["error"]["type"] == "rate_limit_error"

    events = await events_of(3)
    ended = [e for e in events if e["type"] == "interception.ended"]
    statuses = sorted(e["status"] for e in ended)
    assert statuses == ["budget_exceeded", "budget_exceeded", "completed"]
    refused_event = next(e for e in ended if e["status"] == "budget_exceeded")
    assert refused_event["http_status"] == 429 and "is spent" in refused_event["error"]


async def test_past_the_warning_share_the_answer_says_what_is_left_and_an_alert_is_raised(
    budget_proxy: Callable[..., Proxy],
    store_client: Client,
    token: str,
    events_of: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    proxy = budget_proxy()
    client = openai_client(proxy, token)
    first = await asyncio.to_thread(chat, client)
    assert "x-aibridge-budget-remaining" not in first.headers  # no budget applies yet
    usage = next(e for e in await events_of(1) if e["type"] == "token_usage")
    cost = cost_of(usage)
    # Among groups the highest wins: research's 10 x cost, not eng's 2 x cost. Spent: 1 x cost, past its 5% warning.
    set_budget(store_client, Scope.GROUP, "eng", Period.DAY, str(cost * 2), warn="0.5")
    set_budget(store_client, Scope.GROUP, "research", Period.DAY, str(cost * 10), warn="0.05")
    guard = proxy.component.budgets
    assert guard is not None
    await wait_for(lambda: bool(guard.book), timeout=5)  # the next refresh has the budgets

    warned = await asyncio.to_thread(chat, client)
    assert warned.status_code == 200
    assert Decimal(warned.headers["x-aibridge-budget-remaining"]) == cost * 9
    reset = budgets.period_reset(Period.DAY, datetime.datetime.now(datetime.UTC))
    assert warned.headers["x-aibridge-budget-reset"] == reset.isoformat().replace("+00:00", "Z")

    alerts = [orjson.loads(r.getMessage().split(": ", 1)[1]) for r in caplog.records if r.name == "aibridge.alerts"]
    assert len(alerts) == 1
    validate = fastjsonschema.compile(orjson.loads(SCHEMA_PATH.read_bytes()))
    alert = validate(alerts[0])
    assert alert["threshold"] == "warn"
    limit = pricing.format_cost(cost * 10)
    assert alert["budget"] == {"scope": "group", "name": "research", "period": "day", "limit": limit, "warn": "0.05"}
    for example in EXAMPLES_DIR.glob("*.json"):
        validate(orjson.loads(example.read_bytes()))

    # A user's own budget beats their groups': alice alone may spend less than one request.
    set_budget(store_client, Scope.USER, "user-alice-1", Period.DAY, str(cost / 2))
    await wait_for(lambda: ("user-alice-1", Period.DAY) in guard.book.users, timeout=5)
    with pytest.raises(openai.RateLimitError):
        await asyncio.to_thread(chat, client)
