"""Spending budgets: what they are, which one applies to a user, their periods, and how they are stored.

A budget caps what one user may spend (USD, at :mod:`aibridge.pricing`'s prices) in a calendar day or
month in UTC. It is set for a user or for a group (:mod:`aibridge.groups`); a group's budget applies
to each member on their own, not to the group's total. For each period the user's own budget wins;
without one, the highest of their groups' budgets applies (:func:`effective`).

Budgets live in the ``budgets`` table (ReplacingMergeTree by scope, name and period: the newest
version of a row wins, a deletion is a row with ``deleted = 1``). The API changes them; the proxy
reads them, and what each user spent this period, into memory (``services/proxy/guards/budgets.py``).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any, Final

from aibridge import store

TABLE: Final = store.BUDGETS
DEFAULT_WARN: Final = Decimal("0.8")
LIMIT_DECIMALS: Final = 6


class Scope(StrEnum):
    USER = "user"
    GROUP = "group"


class Period(StrEnum):
    DAY = "day"
    MONTH = "month"


class BudgetError(ValueError):
    """A budget that cannot be set; the message says which value and why."""


@dataclass(frozen=True, slots=True)
class Budget:
    scope: Scope
    name: str
    period: Period
    limit: Decimal  # USD
    warn: Decimal = DEFAULT_WARN  # the share of the limit whose spending warns
    updated_at: datetime.datetime | None = None
    updated_by: str = ""

    @property
    def label(self) -> str:
        """How a message names it, e.g. ``the month budget of group eng (100 USD)``."""
        return f"the {self.period.value} budget of {self.scope.value} {self.name} ({_plain(self.limit)} USD)"


def validated(scope: str, name: str, period: str, limit: Decimal, warn: Decimal = DEFAULT_WARN) -> Budget:
    """A :class:`Budget` from values as given; :class:`BudgetError` naming the first bad one."""
    try:
        parsed_scope, parsed_period = Scope(scope), Period(period)
    except ValueError as exc:
        raise BudgetError(f"scope must be user or group and period day or month: {exc}") from exc
    if not name.strip() or len(name) > 256:
        raise BudgetError("name must be 1 to 256 characters")
    if not limit.is_finite() or limit < 0 or -limit.as_tuple().exponent > LIMIT_DECIMALS:  # type: ignore[operator]
        raise BudgetError(f"limit must be 0 or more USD with at most {LIMIT_DECIMALS} decimals (got {limit})")
    if not warn.is_finite() or not Decimal(0) < warn <= 1:
        raise BudgetError(f"warn must be a share of the limit above 0 and at most 1 (got {warn})")
    return Budget(parsed_scope, name, parsed_period, limit, warn)


# ---- which budget applies ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BudgetBook:
    """Every budget, indexed for :func:`effective`."""

    users: Mapping[tuple[str, Period], Budget]
    groups: Mapping[tuple[str, Period], Budget]

    @classmethod
    def of(cls, budgets: Iterable[Budget]) -> BudgetBook:
        users: dict[tuple[str, Period], Budget] = {}
        groups: dict[tuple[str, Period], Budget] = {}
        for budget in budgets:
            target = users if budget.scope is Scope.USER else groups
            target[(budget.name, budget.period)] = budget
        return cls(users, groups)

    def __bool__(self) -> bool:
        return bool(self.users or self.groups)


def effective(book: BudgetBook, user_id: str, username: str, groups: Sequence[str]) -> tuple[Budget, ...]:
    """The budgets that apply to a user, one per period at most: their own (by id, then by username),
    else the highest of their groups' (ties: the group whose name sorts first)."""
    chosen = []
    for period in Period:
        own = book.users.get((user_id, period)) or book.users.get((username, period))
        if own is None:
            candidates = [book.groups[(group, period)] for group in sorted(groups) if (group, period) in book.groups]
            own = max(candidates, key=lambda budget: budget.limit, default=None)
        if own is not None:
            chosen.append(own)
    return tuple(chosen)


# ---- periods -------------------------------------------------------------------------------------


def period_start(period: Period, now: datetime.datetime) -> datetime.datetime:
    """The first instant (UTC) of the period ``now`` falls in."""
    day = now.astimezone(datetime.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day if period is Period.DAY else day.replace(day=1)


def period_reset(period: Period, now: datetime.datetime) -> datetime.datetime:
    """The first instant (UTC) of the next period: when the spend of this one stops counting."""
    start = period_start(period, now)
    if period is Period.DAY:
        return start + datetime.timedelta(days=1)
    return start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)


# ---- the store -----------------------------------------------------------------------------------

_COLUMNS: Final = ("scope", "name", "period", "limit_usd", "warn", "deleted", "version", "updated_at", "updated_by")


def load(client: Any) -> list[Budget]:
    """Every budget in force (the newest version of each, deletions left out)."""
    rows = client.query(
        f"SELECT scope, name, period, limit_usd, warn, updated_at, updated_by FROM {TABLE} FINAL "
        "WHERE deleted = 0 ORDER BY scope, name, period"
    ).result_rows
    return [
        Budget(Scope(scope), name, Period(period), Decimal(limit), Decimal(warn), _utc(at), by)
        for scope, name, period, limit, warn, at, by in rows
    ]


def find(client: Any, scope: Scope, name: str, period: Period) -> Budget | None:
    return next(
        (b for b in load(client) if (b.scope, b.name, b.period) == (scope, name, period)),
        None,
    )


def save(client: Any, budget: Budget, actor: str, now: datetime.datetime) -> Budget:
    """Write ``budget`` as the newest version of its row; the stored budget (with who and when)."""
    stored = Budget(budget.scope, budget.name, budget.period, budget.limit, budget.warn, now, actor)
    _write(client, stored, deleted=False)
    return stored


def delete(client: Any, budget: Budget, actor: str, now: datetime.datetime) -> None:
    """Delete ``budget``'s row (scope, name and period): a newer version marked deleted."""
    gone = Budget(budget.scope, budget.name, budget.period, budget.limit, budget.warn, now, actor)
    _write(client, gone, deleted=True)


def _write(client: Any, budget: Budget, *, deleted: bool) -> None:
    assert budget.updated_at is not None
    version = int(budget.updated_at.timestamp() * 1_000_000)
    row = [
        budget.scope.value,
        budget.name,
        budget.period.value,
        budget.limit,
        budget.warn,
        int(deleted),
        version,
        budget.updated_at,
        budget.updated_by,
    ]
    store.insert(client, TABLE, [row], _COLUMNS)


@dataclass(frozen=True, slots=True)
class Spent:
    """What users spent in the current day and month (USD), as the store has it."""

    day_start: datetime.datetime
    month_start: datetime.datetime
    day: Mapping[str, Decimal]
    month: Mapping[str, Decimal]


def spent(client: Any, now: datetime.datetime) -> Spent:
    """Per user id, the cost of the token usages stored for this day and month (exact sums; a usage of a
    model without a price costs nothing here)."""
    day, month = period_start(Period.DAY, now), period_start(Period.MONTH, now)
    rows = client.query(
        f"SELECT initiator_id, sumIf(cost, created_at >= {{day:DateTime64(6, 'UTC')}}), sum(cost) "
        f"FROM {store.TOKEN_USAGES} FINAL WHERE created_at >= {{month:DateTime64(6, 'UTC')}} "
        "AND cost IS NOT NULL GROUP BY initiator_id",
        parameters={"day": day, "month": month},
    ).result_rows
    return Spent(
        day,
        month,
        {user: Decimal(d) for user, d, _ in rows if d},
        {user: Decimal(m) for user, _, m in rows},
    )


def stored_usages(client: Any, users: Sequence[str], since: datetime.datetime) -> set[str]:
    """The ids of the token usages of ``users`` the store has from ``since`` on.

    Asked by user and time, not by sending the ids a replica waits for: that list grows while the recorder
    lags, and formatting it into the query took the replica's CPU (14 ms for 2,000 ids). The answer holds
    only rows the store has in the window, which is short while the recorder keeps up and empty while it is
    down."""
    if not users:
        return set()
    rows = client.query(
        f"SELECT toString(id) FROM {store.TOKEN_USAGES} "
        "WHERE created_at >= {since:DateTime64(6, 'UTC')} AND initiator_id IN {users:Array(String)}",
        parameters={"since": since, "users": sorted(set(users))},
    ).result_rows
    return {row[0] for row in rows}


def _utc(moment: datetime.datetime) -> datetime.datetime:
    return moment.replace(tzinfo=datetime.UTC) if moment.tzinfo is None else moment.astimezone(datetime.UTC)


def _plain(value: Decimal) -> str:
    text = f"{value:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text
