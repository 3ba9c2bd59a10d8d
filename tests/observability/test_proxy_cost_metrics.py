"""The proxy counts what answered token usages cost (by provider, model and initiator) and the usages of
models without a price, through the real proxy and the simulated provider."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from telemetry_support import OPENAI_CHAT, PROVIDER_KEY, Deltas, running_proxy, wait_until

from aibridge import pricing
from aibridge.auth import TokenVerifier
from aibridge.bus import InProcessBus
from aibridge.simulator import create_simulator_app
from aibridge.testing.server import serve_in_thread

COST = "aibridge_proxy_cost_usd_total"
UNPRICED = "aibridge_proxy_unpriced_interceptions_total"


@pytest.fixture(scope="module")
def simulator() -> Iterator[str]:
    with serve_in_thread(create_simulator_app(openai_key=PROVIDER_KEY, anthropic_key=PROVIDER_KEY)) as url:
        yield url


def chat(url: str, token: str, model: str) -> pricing.Tokens:
    body = {"model": model, "messages": [{"role": "user", "content": "weather in Lisbon?"}]}
    headers = {"authorization": f"Bearer {token}", "x-simulator-cache-read-tokens": "40"}
    answer = httpx.post(f"{url}{OPENAI_CHAT}", json=body, headers=headers, timeout=30)
    assert answer.status_code == 200
    usage = answer.json()["usage"]
    cached = usage["prompt_tokens_details"]["cached_tokens"]
    return pricing.Tokens(usage["prompt_tokens"] - cached, usage["completion_tokens"], cached, 0)


def test_cost_and_unpriced_usages_are_counted(
    simulator: str, verifier: TokenVerifier, make_token: Callable[..., str]
) -> None:
    deltas = Deltas(
        (COST, {"provider": "openai", "model": "gpt-5", "initiator": "dora"}),
        (UNPRICED, {"provider": "openai", "model": "house-model-1"}),
        (COST, {"provider": "openai", "model": "house-model-1", "initiator": "dora"}),
    )
    token = make_token("dora")
    with running_proxy(simulator, InProcessBus().producer(), verifier) as (url, proxy):
        first, second = chat(url, token, "gpt-5"), chat(url, token, "gpt-5")
        chat(url, token, "house-model-1")
        wait_until(lambda: proxy.emitter.published == 12, what="12 events published")
    expected = sum(pricing.builtin().cost("openai", "gpt-5", usage) or Decimal(0) for usage in (first, second))
    cost, unpriced, unknown_cost = deltas.now().values()
    assert expected > 0 and cost == pytest.approx(float(expected), rel=1e-9)
    assert (unpriced, unknown_cost) == (1, 0)


def test_the_prices_file_prices_the_metric(
    simulator: str, verifier: TokenVerifier, make_token: Callable[..., str], tmp_path: Path
) -> None:
    prices_file = tmp_path / "prices.yaml"
    prices_file.write_text(
        'models:\n  house-model-2:\n    provider: openai\n    input: "1000000"\n    output: "0"\n'
        '    cache_read: "0"\n    cache_write: "0"\n'
    )
    deltas = Deltas(
        (COST, {"provider": "openai", "model": "house-model-2", "initiator": "erin"}),
        (UNPRICED, {"provider": "openai", "model": "house-model-2"}),
    )
    with running_proxy(simulator, InProcessBus().producer(), verifier, prices_file=prices_file) as (url, proxy):
        usage = chat(url, make_token("erin"), "house-model-2")
        wait_until(lambda: proxy.emitter.published == 4, what="4 events published")
    assert list(deltas.now().values()) == [usage.input_tokens, 0]  # a dollar per input token
