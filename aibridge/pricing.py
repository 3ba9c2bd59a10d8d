"""Model prices and the cost of token usage, in exact decimals: one module for the API, the recorder
and the proxy's budget check.

The built-in table is ``aibridge/prices.yaml`` (USD per million tokens, with the date it was
checked); ``AIBRIDGE_PRICES_FILE`` names a file of the same shape whose models replace or add to it.
A model name resolves to its family: exactly, then without a provider prefix (``openai/``), a date
suffix (``-2025-08-07``, ``-20250929``), ``-latest`` or a ``[1m]`` context marker, then by an alias.
An unknown model has no price: :meth:`PriceTable.cost` answers ``None``, never 0.

Token convention (the proxy's ``records`` module): ``input_tokens`` excludes cached tokens, so a
request's whole prompt is ``input + cache_read + cache_write``; that sum chooses a long-context tier.
"""

from __future__ import annotations

import datetime
import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from importlib import resources
from pathlib import Path
from typing import Any, Final, Protocol

import yaml

PROVIDERS: Final = ("openai", "anthropic")
RATE_FIELDS: Final = ("input", "output", "cache_read", "cache_write")
# Prices have at most 6 decimals, so a cost (tokens x price / 10^6) has at most 12: the store's
# Decimal(38, 12) holds every cost exactly.
PRICE_DECIMALS: Final = 6
COST_DECIMALS: Final = 12
_MILLION: Final = Decimal(1_000_000)
_MODEL_FIELDS: Final = frozenset({"provider", "aliases", "tiers", *RATE_FIELDS})
_TIER_FIELDS: Final = frozenset({"above_input_tokens", *RATE_FIELDS})
_DATE_SUFFIX: Final = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{8})$")
_CONTEXT_MARKER: Final = re.compile(r"\[[0-9a-z]+\]$")
_RESOLVED_CACHE_SIZE: Final = 4096


class PricingError(ValueError):
    """A price file cannot be used; the message names the file and the entry."""


class TokenCounts(Protocol):
    """What a cost is computed from (the proxy's parsed ``Usage`` is one)."""

    @property
    def input_tokens(self) -> int: ...
    @property
    def output_tokens(self) -> int: ...
    @property
    def cache_read_input_tokens(self) -> int: ...
    @property
    def cache_write_input_tokens(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Tokens:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_write_input_tokens: int = 0


@dataclass(frozen=True, slots=True)
class Rates:
    """USD per million tokens of each kind."""

    input: Decimal
    output: Decimal
    cache_read: Decimal
    cache_write: Decimal

    def cost(self, usage: TokenCounts) -> Decimal:
        micro = (
            usage.input_tokens * self.input
            + usage.output_tokens * self.output
            + usage.cache_read_input_tokens * self.cache_read
            + usage.cache_write_input_tokens * self.cache_write
        )
        return micro / _MILLION


@dataclass(frozen=True, slots=True)
class Tier:
    above_input_tokens: int
    rates: Rates


@dataclass(frozen=True, slots=True)
class ModelPrice:
    family: str
    provider: str
    rates: Rates
    tiers: tuple[Tier, ...] = ()  # highest threshold first
    aliases: tuple[str, ...] = ()

    def rates_for(self, prompt_tokens: int) -> Rates:
        """The rates of a request whose whole prompt is ``prompt_tokens``."""
        for tier in self.tiers:
            if prompt_tokens > tier.above_input_tokens:
                return tier.rates
        return self.rates

    def cost(self, usage: TokenCounts) -> Decimal:
        prompt = usage.input_tokens + usage.cache_read_input_tokens + usage.cache_write_input_tokens
        return self.rates_for(prompt).cost(usage)


class PriceTable:
    """Prices by provider and family; resolving a model name is remembered (the proxy asks per request)."""

    def __init__(self, checked: str, models: Mapping[str, ModelPrice]) -> None:
        self.checked = checked
        self.models = dict(models)
        self._names: dict[tuple[str, str], ModelPrice] = {}
        for price in self.models.values():
            for name in (price.family, *price.aliases):
                self._names[(price.provider, name.lower())] = price
        self.resolve: Callable[[str, str], ModelPrice | None] = functools.lru_cache(maxsize=_RESOLVED_CACHE_SIZE)(
            self._resolve
        )

    def cost(self, provider: str, model: str, usage: TokenCounts) -> Decimal | None:
        """What ``usage`` of ``model`` costs in USD, or None when the model has no price."""
        price = self.resolve(provider, model)
        return None if price is None else price.cost(usage)

    def _resolve(self, provider: str, model: str) -> ModelPrice | None:
        for name in candidate_names(model, provider):
            price = self._names.get((provider, name))
            if price is not None:
                return price
        return None


def candidate_names(model: str, provider: str) -> list[str]:
    """The names ``model`` is looked up by, most specific first."""
    name = model.strip().lower()
    names = [name]
    prefix = f"{provider}/"
    if name.startswith(prefix):
        name = name[len(prefix) :]
        names.append(name)
    for pattern in (_CONTEXT_MARKER, _DATE_SUFFIX):
        stripped = pattern.sub("", name)
        if stripped != name:
            name = stripped
            names.append(name)
    if name.endswith("-latest"):
        names.append(name.removesuffix("-latest"))
    return names


def format_cost(value: Decimal | None) -> str | None:
    """A cost as the API and CLI show it: a plain decimal string (no exponent), or None."""
    if value is None:
        return None
    text = f"{value:f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


# ---- loading -----------------------------------------------------------------------------------


def load(override: Path | None = None) -> PriceTable:
    """The built-in table, with ``override``'s models replacing or adding to it."""
    base = _read_builtin()
    if override is None:
        return base
    extra = parse(_read_yaml(override), str(override))
    return PriceTable(extra.checked or base.checked, base.models | extra.models)


@functools.cache
def builtin() -> PriceTable:
    """The table shipped in the package (``aibridge/prices.yaml``)."""
    return _read_builtin()


def _read_builtin() -> PriceTable:
    text = resources.files("aibridge").joinpath("prices.yaml").read_text(encoding="utf-8")
    return parse(yaml.safe_load(text), "aibridge/prices.yaml")


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PricingError(f"{path}: cannot read the price file: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise PricingError(f"{path}: not valid YAML: {exc}") from exc


def parse(document: Any, source: str) -> PriceTable:
    """A table from a parsed price file; raise :class:`PricingError` naming the first bad entry."""
    if not isinstance(document, dict):
        raise PricingError(f"{source}: expected a mapping with 'checked' and 'models'")
    unknown = set(document) - {"checked", "models"}
    if unknown:
        raise PricingError(f"{source}: unknown top-level key(s) {', '.join(sorted(map(str, unknown)))}")
    checked = document.get("checked", "")
    if isinstance(checked, datetime.date):
        checked = checked.isoformat()
    models = document.get("models")
    if not isinstance(models, dict) or not models:
        raise PricingError(f"{source}: 'models' must be a non-empty mapping of model name to prices")
    parsed = {str(name): _model(str(name), entry, f"{source}: model {name!r}") for name, entry in models.items()}
    _check_unique_names(parsed, source)
    return PriceTable(str(checked), parsed)


def _model(family: str, entry: Any, where: str) -> ModelPrice:
    if not isinstance(entry, dict):
        raise PricingError(f"{where}: expected a mapping of provider and prices")
    _no_unknown_fields(entry, _MODEL_FIELDS, where)
    provider = entry.get("provider")
    if provider not in PROVIDERS:
        raise PricingError(f"{where}: provider must be one of {', '.join(PROVIDERS)} (got {provider!r})")
    aliases = entry.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(alias, str) and alias for alias in aliases):
        raise PricingError(f"{where}: aliases must be a list of model names")
    tiers = entry.get("tiers", [])
    if not isinstance(tiers, list):
        raise PricingError(f"{where}: tiers must be a list")
    parsed_tiers = [_tier(tier, f"{where} tier {index + 1}") for index, tier in enumerate(tiers)]
    return ModelPrice(
        family=family.lower(),
        provider=provider,
        rates=_rates(entry, where),
        tiers=tuple(sorted(parsed_tiers, key=lambda tier: -tier.above_input_tokens)),
        aliases=tuple(alias.lower() for alias in aliases),
    )


def _tier(entry: Any, where: str) -> Tier:
    if not isinstance(entry, dict):
        raise PricingError(f"{where}: expected a mapping with above_input_tokens and prices")
    _no_unknown_fields(entry, _TIER_FIELDS, where)
    threshold = entry.get("above_input_tokens")
    if not isinstance(threshold, int) or isinstance(threshold, bool) or threshold <= 0:
        raise PricingError(f"{where}: above_input_tokens must be a positive whole number (got {threshold!r})")
    return Tier(threshold, _rates(entry, where))


def _rates(entry: dict[str, Any], where: str) -> Rates:
    return Rates(**{name: _price(entry.get(name), f"{where}: {name}") for name in RATE_FIELDS})


def _price(value: Any, where: str) -> Decimal:
    if value is None:
        raise PricingError(f'{where} is missing (USD per million tokens, as a string such as "1.25")')
    if isinstance(value, float | bool):
        raise PricingError(f'{where}: write the price as a string ("{value}"), so it is read as an exact decimal')
    try:
        price = Decimal(str(value))
    except InvalidOperation as exc:
        raise PricingError(f"{where}: {value!r} is not a number") from exc
    if not price.is_finite() or price < 0:
        raise PricingError(f"{where}: {value!r} must be a price of 0 or more")
    if -price.as_tuple().exponent > PRICE_DECIMALS:  # type: ignore[operator]
        raise PricingError(f"{where}: {value!r} has more than {PRICE_DECIMALS} decimals")
    return price


def _no_unknown_fields(entry: dict[str, Any], allowed: frozenset[str], where: str) -> None:
    unknown = set(map(str, entry)) - allowed
    if unknown:
        raise PricingError(
            f"{where}: unknown field(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(allowed))}"
        )


def _check_unique_names(models: dict[str, ModelPrice], source: str) -> None:
    seen: dict[tuple[str, str], str] = {}
    for price in models.values():
        for name in (price.family, *price.aliases):
            owner = seen.setdefault((price.provider, name), price.family)
            if owner != price.family:
                raise PricingError(f"{source}: the name {name!r} belongs to both {owner!r} and {price.family!r}")
