"""Prices and cost: the built-in table, name resolution, long-context tiers, unknown models, override files."""

from __future__ import annotations

import textwrap
from decimal import Decimal
from pathlib import Path

import pytest

from aibridge import pricing
from aibridge.pricing import PricingError, Tokens, format_cost

SIMULATED_MODELS = {
    "openai": ("gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-5", "o3-mini"),
    "anthropic": ("claude-sonnet-4-5", "claude-opus-4-1", "claude-haiku-4-5"),
}
REQUIRED = {
    "openai": ("gpt-5", "gpt-5-mini", "gpt-5-nano", "gpt-5-codex", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano",
               "gpt-4o", "gpt-4o-mini", "o3", "o4-mini"),
    "anthropic": ("claude-opus-4-1", "claude-opus-4-5", "claude-sonnet-4", "claude-sonnet-4-5", "claude-haiku-4-5",
                  "claude-3-5-haiku"),
}  # fmt: skip


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "prices.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_the_builtin_table_is_dated_and_prices_every_required_and_simulated_model() -> None:
    table = pricing.builtin()
    assert table.checked == "2026-12-04"
    for provider, models in (*REQUIRED.items(), *SIMULATED_MODELS.items()):
        for model in models:
            assert table.resolve(provider, model) is not None, f"{provider} {model} has no price"


def test_cost_is_tokens_times_price_per_million_exactly() -> None:
    usage = Tokens(input_tokens=1_000, output_tokens=500, cache_read_input_tokens=2_000, cache_write_input_tokens=100)
    # claude-sonnet-4-5: 3 in, 15 out, 0.30 cache read, 3.75 cache write
    expected = (1_000 * Decimal(3) + 500 * Decimal(15) + 2_000 * Decimal("0.30") + 100 * Decimal("3.75")) / 10**6
    assert pricing.builtin().cost("anthropic", "claude-sonnet-4-5", usage) == expected == Decimal("0.011475")
    # gpt-5: 1.25 in, 10 out, 0.125 cached
    gpt5 = pricing.builtin().cost("openai", "gpt-5", Tokens(input_tokens=1, cache_read_input_tokens=1))
    assert gpt5 == Decimal("0.000001375")
    assert format_cost(gpt5) == "0.000001375"


@pytest.mark.parametrize(
    ("provider", "name", "family"),
    [
        ("openai", "gpt-5-2025-08-07", "gpt-5"),
        ("openai", "GPT-4o-2024-11-20", "gpt-4o"),
        ("openai", "openai/gpt-4.1-mini", "gpt-4.1-mini"),
        ("openai", "gpt-5-chat-latest", "gpt-5"),
        ("openai", "chatgpt-4o-latest", "gpt-4o"),
        ("anthropic", "claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("anthropic", "claude-sonnet-4-20250514", "claude-sonnet-4"),
        ("anthropic", "claude-sonnet-4-0", "claude-sonnet-4"),
        ("anthropic", "claude-3-5-haiku-latest", "claude-3-5-haiku"),
        ("anthropic", "claude-3-5-haiku-20241022", "claude-3-5-haiku"),
        ("anthropic", "claude-opus-4-6[1m]", "claude-opus-4-6"),
        ("anthropic", "anthropic/claude-haiku-4-5-20251001", "claude-haiku-4-5"),
    ],
)
def test_model_names_resolve_to_their_family(provider: str, name: str, family: str) -> None:
    price = pricing.builtin().resolve(provider, name)
    assert price is not None and price.family == family


@pytest.mark.parametrize(
    ("provider", "name"),
    [
        ("openai", "gpt-7-ultra"),
        ("openai", "claude-sonnet-4-5"),  # a model is priced under its own provider only
        ("anthropic", "gpt-5"),
        ("anthropic", "claude-sonnet-4-5-extra"),
        ("gemini", "gpt-5"),
    ],
)
def test_an_unknown_model_costs_none_never_zero(provider: str, name: str) -> None:
    assert pricing.builtin().cost(provider, name, Tokens(input_tokens=1000)) is None


def test_a_long_prompt_prices_every_token_at_the_tier_counting_cached_tokens() -> None:
    table = pricing.builtin()
    at_limit = Tokens(input_tokens=100_000, cache_read_input_tokens=100_000, output_tokens=1_000)
    above = Tokens(100_000, 1_000, cache_read_input_tokens=100_000, cache_write_input_tokens=1)
    # 200,000 prompt tokens is not above the 200k threshold: base prices
    assert table.cost("anthropic", "claude-sonnet-4-5", at_limit) == Decimal("0.345")  # 0.3 + 0.03 + 0.015
    # one more (a cache write) is: 6 in, 0.60 cache read, 7.50 cache write, 22.50 out
    assert table.cost("anthropic", "claude-sonnet-4-5", above) == Decimal("0.6825075")
    assert table.cost("anthropic", "claude-haiku-4-5", above) == Decimal("0.11500125")  # no tier


def test_an_override_file_replaces_and_adds_models(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        checked: 2026-12-01
        models:
          gpt-5:
            provider: openai
            input: "1"
            output: "2"
            cache_read: "0.5"
            cache_write: "0"
          acme-coder:
            provider: openai
            input: "0.000001"
            output: "3"
            cache_read: "0"
            cache_write: "0"
            aliases: [acme-coder-fast]
        """,
    )
    table = pricing.load(path)
    assert table.checked == "2026-12-01"
    assert table.cost("openai", "gpt-5-2025-08-07", Tokens(input_tokens=10**6)) == Decimal(1)
    assert table.cost("openai", "acme-coder-fast", Tokens(input_tokens=1)) == Decimal("0.000000000001")
    assert table.cost("anthropic", "claude-haiku-4-5", Tokens(output_tokens=10**6)) == Decimal(5)  # kept


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("models: []", "'models' must be a non-empty mapping"),
        ("- 1", "expected a mapping with 'checked' and 'models'"),
        ("prices: {}", "unknown top-level key(s) prices"),
        ("models: {m: {provider: azure, input: '1', output: '1', cache_read: '0', cache_write: '0'}}",
         "model 'm': provider must be one of openai, anthropic"),
        ("models: {m: {provider: openai, input: 1.25, output: '1', cache_read: '0', cache_write: '0'}}",
         "model 'm': input: write the price as a string"),
        ("models: {m: {provider: openai, input: '1', output: '1', cache_read: '0'}}",
         "model 'm': cache_write is missing"),
        ("models: {m: {provider: openai, input: 'cheap', output: '1', cache_read: '0', cache_write: '0'}}",
         "model 'm': input: 'cheap' is not a number"),
        ("models: {m: {provider: openai, input: '-1', output: '1', cache_read: '0', cache_write: '0'}}",
         "must be a price of 0 or more"),
        ("models: {m: {provider: openai, input: '0.0000001', output: '1', cache_read: '0', cache_write: '0'}}",
         "has more than 6 decimals"),
        ("models: {m: {provider: openai, inptu: '1', input: '1', output: '1', cache_read: '0', cache_write: '0'}}",
         "model 'm': unknown field(s) inptu"),
        ("models: {m: {provider: openai, input: '1', output: '1', cache_read: '0', cache_write: '0',"
         " tiers: [{above_input_tokens: 0, input: '1', output: '1', cache_read: '0', cache_write: '0'}]}}",
         "model 'm' tier 1: above_input_tokens must be a positive whole number"),
        ("models: {a: {provider: openai, input: '1', output: '1', cache_read: '0', cache_write: '0', aliases: [b]},"
         " b: {provider: openai, input: '1', output: '1', cache_read: '0', cache_write: '0'}}",
         "the name 'b' belongs to both"),
        ("models: {m: [", "not valid YAML"),
    ],
)  # fmt: skip
def test_a_bad_price_file_is_refused_naming_the_file_and_entry(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(PricingError) as raised:
        pricing.load(path)
    assert str(raised.value).startswith(str(path))
    assert message in str(raised.value)


def test_a_missing_price_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PricingError, match="cannot read the price file"):
        pricing.load(tmp_path / "absent.yaml")


def test_resolution_is_remembered_per_name() -> None:
    table = pricing.load()
    for _ in range(3):
        table.cost("openai", "gpt-5-2025-08-07", Tokens(input_tokens=1))
    info = table.resolve.cache_info()  # type: ignore[attr-defined]
    assert (info.hits, info.misses) == (2, 1)


@pytest.mark.parametrize(
    ("value", "text"),
    [(None, None), (Decimal(0), "0"), (Decimal("1.500000000000"), "1.5"), (Decimal("1E-12"), "0.000000000001"),
     (Decimal("12345678.90"), "12345678.9"), (Decimal("100"), "100")],
)  # fmt: skip
def test_costs_are_shown_as_plain_decimals(value: Decimal | None, text: str | None) -> None:
    assert format_cost(value) == text
