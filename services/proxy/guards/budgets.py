"""Budget enforcement in one proxy replica: in memory on the request path, refreshed from the store.

A background task reads every budget and what each user spent this day and month from the store
(:mod:`aibridge.budgets`) every ``AIBRIDGE_BUDGET_REFRESH_INTERVAL`` seconds. Between two reads the
replica adds the cost of each token usage it records itself (:meth:`BudgetGuard.spent`), keyed by
the usage's event id; a read first asks which of those ids the store already has, drops them, and
then takes the store's sums, so a usage is never missing from the figure (at worst it is counted
twice, until the next read). :meth:`BudgetGuard.check` is a dictionary lookup and two comparisons:
no store query per request.

Before the first successful read nothing is known: requests are refused (503) rather than let
through unchecked. After it, a failed read keeps the last figures plus this replica's own spending,
counted in ``aibridge_proxy_budget_refresh_failures_total`` and shown by
``aibridge_proxy_budget_state_age_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from aibridge import budgets, metrics, pricing
from aibridge.auth import Identity
from aibridge.budgets import Budget, BudgetBook, Period
from aibridge.events import Event, EventType
from aibridge.groups import GroupMap
from aibridge.proxy.guards.limits import Rejection, RejectReason, retry_after_seconds

log = logging.getLogger("aibridge.proxy.budgets")

Clock = Callable[[], float]
"""Seconds since 1970 (``time.time`` unless a test injects another)."""
StoreClient = Any


class BudgetSettings(BaseSettings):
    """Mix into ``ProxySettings`` (env prefix ``AIBRIDGE_``)."""

    model_config = SettingsConfigDict(env_prefix="AIBRIDGE_", extra="ignore", populate_by_name=True)

    budgets: bool = Field(
        default=False,
        description="Enforce spending budgets (needs the store: AIBRIDGE_CLICKHOUSE_URL, read only).",
    )
    budget_refresh_interval: float = Field(
        default=10.0, gt=0, description="Seconds between reads of budgets and spend from the store."
    )
    budget_alerts_topic: str = Field(
        default="aibridge.alerts.v1", min_length=1, description="Topic of budget alert events (for the SIEM)."
    )


@dataclass(frozen=True, slots=True)
class Standing:
    """A user's position against the budget nearest its limit, for the warning headers and alerts."""

    budget: Budget
    spent: Decimal
    resets_at: datetime.datetime

    @property
    def remaining(self) -> Decimal:
        return max(Decimal(0), self.budget.limit - self.spent)

    @property
    def exceeded(self) -> bool:
        return self.spent >= self.budget.limit

    @property
    def warned(self) -> bool:
        return self.spent >= self.budget.limit * self.budget.warn


@dataclass(slots=True)
class _Period:
    """One period's figures: the store's at the last read, plus this replica's since."""

    start: datetime.datetime
    resets_at: datetime.datetime
    resets_ts: float
    stored: dict[str, Decimal] = field(default_factory=dict)
    local: dict[str, Decimal] = field(default_factory=dict)

    @classmethod
    def at(cls, period: Period, now: datetime.datetime) -> _Period:
        reset = budgets.period_reset(period, now)
        return cls(budgets.period_start(period, now), reset, reset.timestamp())

    def spent(self, user: str) -> Decimal:
        return self.stored.get(user, Decimal(0)) + self.local.get(user, Decimal(0))


AlertSink = Callable[[Identity, Standing, str], None]
_STORED_TIME_MARGIN = 300.0  # seconds


class BudgetGuard:
    """The budgets of one replica: :meth:`check` per request, :meth:`spent` per recorded usage."""

    def __init__(
        self,
        client: StoreClient,
        groups: GroupMap,
        prices: pricing.PriceTable,
        *,
        interval: float = 10.0,
        alert: AlertSink | None = None,
        clock: Clock = time.time,
    ) -> None:
        self._client = client
        self._groups = groups
        self._prices = prices
        self._interval = interval
        self._alert = alert
        self._clock = clock
        self._book = BudgetBook({}, {})
        self._resolved: dict[tuple[str, str, tuple[str, ...]], tuple[Budget, ...]] = {}
        now = self._now()
        self._periods = {period: _Period.at(period, now) for period in Period}
        self._pending: dict[str, tuple[str, Decimal, float]] = {}  # usage id -> (user, cost, when)
        self._alerted: set[tuple[str, str, str, str, str]] = set()
        self._loaded_at: float | None = None
        self._task: asyncio.Task[None] | None = None
        metrics.track(metrics.BUDGET_STATE_AGE_SECONDS, self._age)

    # ---- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.create_task(self._refresh_forever(), name="aibridge-budget-refresh")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def book(self) -> BudgetBook:
        """The budgets as last read from the store."""
        return self._book

    @property
    def loaded(self) -> bool:
        return self._loaded_at is not None

    async def _refresh_forever(self) -> None:
        while True:
            # Until the first read succeeds requests are refused: try again soon, not a whole interval later.
            await asyncio.sleep(self._interval if self.loaded else min(1.0, self._interval))
            await self.refresh()

    async def refresh(self) -> bool:
        """Read budgets and spend from the store; False (counted, logged) when the store did not answer."""
        started = self._clock()
        try:
            book, spent, seen = await asyncio.to_thread(self._read, self._waiting(), self._now())
        except Exception as exc:  # the driver raises many kinds; every one means "not read this time"
            metrics.BUDGET_REFRESH_FAILURES.inc()
            known = "the last figures read" if self.loaded else "nothing: requests are refused"
            log.warning("budgets and spend could not be read from the store (%s); enforcing %s", exc, known)
            return False
        self._apply(book, spent, seen, started)
        return True

    def _waiting(self) -> tuple[list[str], datetime.datetime]:
        """The users with usages the store may not have yet, and since when (with a margin for the gap
        between a usage's time in the store, set when it was recorded, and the time counted here)."""
        if not self._pending:
            return [], self._now()
        users = {user for user, _, _ in self._pending.values()}
        oldest = min(when for _, _, when in self._pending.values()) - _STORED_TIME_MARGIN
        month_start = self._periods[Period.MONTH].start
        return sorted(users), max(month_start, datetime.datetime.fromtimestamp(oldest, datetime.UTC))

    def _read(
        self, waiting: tuple[list[str], datetime.datetime], now: datetime.datetime
    ) -> tuple[BudgetBook, budgets.Spent, set[str]]:
        # The ids first: a usage the store has now is in the sums read after, so dropping it loses nothing.
        seen = budgets.stored_usages(self._client, *waiting)
        spent = budgets.spent(self._client, now)
        return BudgetBook.of(budgets.load(self._client)), spent, seen

    def _apply(self, book: BudgetBook, spent: budgets.Spent, seen: set[str], started: float) -> None:
        for usage_id in seen:
            self._pending.pop(usage_id, None)
        self._roll(self._now())
        month_start = self._periods[Period.MONTH].start.timestamp()
        self._pending = {key: entry for key, entry in self._pending.items() if entry[2] >= month_start}
        day, month = self._periods[Period.DAY], self._periods[Period.MONTH]
        day.stored = dict(spent.day) if spent.day_start == day.start else {}
        month.stored = dict(spent.month) if spent.month_start == month.start else {}
        day.local, month.local = {}, {}
        for user, cost, when in self._pending.values():
            self._add_local(user, cost, when)
        if book != self._book:
            self._book, self._resolved = book, {}
        self._loaded_at = started

    # ---- the request path ------------------------------------------------------------------------

    def check(self, identity: Identity) -> Rejection | Standing | None:
        """Refuse a user at or over a budget; else their standing when past a warning threshold."""
        if self._loaded_at is None:
            metrics.BUDGET_DECISIONS.labels("unknown").inc()
            return _UNKNOWN
        applying = self._applying(identity)
        if not applying:
            return None
        now = self._clock()
        if now >= self._periods[Period.DAY].resets_ts:
            self._roll(self._now())
        standing = self._nearest(identity.user_id, applying)
        if standing.exceeded:
            self._raise_alert(identity, standing, "exceeded")
            metrics.BUDGET_DECISIONS.labels("exceeded").inc()
            return self._rejection(standing, now)
        if standing.warned:
            self._raise_alert(identity, standing, "warn")
            metrics.BUDGET_DECISIONS.labels("warned").inc()
            return standing
        metrics.BUDGET_DECISIONS.labels("within").inc()
        return None

    def recorded(self, event: Event) -> None:
        """Count a ``token_usage`` event this replica published, at the price the recorder will store."""
        if event["type"] != EventType.TOKEN_USAGE:
            return
        tokens = pricing.Tokens(
            event["input_tokens"],
            event["output_tokens"],
            event["cache_read_input_tokens"],
            event["cache_write_input_tokens"],
        )
        cost = self._prices.cost(event["provider"], event["model"], tokens)
        if cost is not None:
            self.spent(event["initiator"]["id"], event["event_id"], cost)

    def spent(self, user: str, usage_id: str, cost: Decimal) -> None:
        """Count a usage this replica recorded until the store has it."""
        if not cost:
            return
        now = self._clock()
        self._pending[usage_id] = (user, cost, now)
        self._add_local(user, cost, now)

    def _applying(self, identity: Identity) -> tuple[Budget, ...]:
        key = (identity.user_id, identity.username, identity.groups)
        applying = self._resolved.get(key)
        if applying is None:
            groups = self._groups.groups_of(identity.user_id, identity.username, identity.groups)
            applying = self._resolved[key] = budgets.effective(self._book, identity.user_id, identity.username, groups)
        return applying

    def _nearest(self, user: str, applying: tuple[Budget, ...]) -> Standing:
        standings = [self._standing(user, budget) for budget in applying]
        return max(standings, key=lambda s: (s.exceeded, s.spent / s.budget.limit if s.budget.limit else 1))

    def _standing(self, user: str, budget: Budget) -> Standing:
        period = self._periods[budget.period]
        return Standing(budget, period.spent(user), period.resets_at)

    def _rejection(self, standing: Standing, now: float) -> Rejection:
        budget = standing.budget
        message = (
            f"aibridge: {budget.label} is spent: {_usd(standing.spent)} USD this {budget.period.value}; "
            f"it resets at {standing.resets_at.isoformat().replace('+00:00', 'Z')}"
        )
        wait = standing.resets_at.timestamp() - now
        return Rejection(429, RejectReason.BUDGET_EXCEEDED, message, retry_after_seconds(wait))

    def _raise_alert(self, identity: Identity, standing: Standing, threshold: str) -> None:
        budget = standing.budget
        key = (identity.user_id, budget.scope.value, budget.name, budget.period.value, threshold)
        if key in self._alerted or self._alert is None:
            return
        self._alerted.add(key)
        metrics.BUDGET_ALERTS.labels(threshold).inc()
        self._alert(identity, standing, threshold)

    # ---- periods ---------------------------------------------------------------------------------

    def _roll(self, now: datetime.datetime) -> None:
        """Start the periods that began since the last look: their figures start from nothing."""
        for period, current in list(self._periods.items()):
            if now.timestamp() >= current.resets_ts:
                self._periods[period] = _Period.at(period, now)
                self._alerted = {key for key in self._alerted if key[3] != period.value}

    def _add_local(self, user: str, cost: Decimal, when: float) -> None:
        for current in self._periods.values():
            if when >= current.start.timestamp():
                current.local[user] = current.local.get(user, Decimal(0)) + cost

    def _now(self) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(self._clock(), datetime.UTC)

    def _age(self) -> float:
        return -1.0 if self._loaded_at is None else max(0.0, self._clock() - self._loaded_at)


_UNKNOWN = Rejection(
    503,
    RejectReason.BUDGET_UNKNOWN,
    "aibridge: budgets are enforced but could not be read from the store yet; retry shortly",
    5,
)


REMAINING_HEADER = "x-aibridge-budget-remaining"
RESET_HEADER = "x-aibridge-budget-reset"


def standing_headers(standing: Standing) -> list[tuple[bytes, bytes]]:
    """What is left of the budget (USD) and when it resets (RFC 3339, UTC)."""
    reset = standing.resets_at.isoformat().replace("+00:00", "Z")
    return [
        (REMAINING_HEADER.encode(), _usd(standing.remaining).encode()),
        (RESET_HEADER.encode(), reset.encode()),
    ]


def _usd(value: Decimal) -> str:
    return pricing.format_cost(value) or "0"
