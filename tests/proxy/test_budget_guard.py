"""The budget guard against the real store (chDB): which budget applies, a usage counted once whether
or not the store has it yet, and what it enforces when the store does not answer."""

from __future__ import annotations

import datetime
import uuid
from decimal import Decimal

from clickhouse_connect.driver.client import Client

from aibridge import budgets, metrics, pricing, store
from aibridge.auth import Identity, Role
from aibridge.budgets import Budget, Period, Scope
from aibridge.groups import GroupMap
from aibridge.proxy.guards.budgets import BudgetGuard, Standing
from aibridge.proxy.guards.limits import Rejection, RejectReason

ALICE = Identity("user-alice-1", "alice", Role.MEMBER, "jti", 0.0, groups=("from-idp",))


def guard_on(client: Client) -> BudgetGuard:
    return BudgetGuard(client, GroupMap({"eng": ["alice"]}), pricing.builtin(), interval=60)


def save(client: Client, scope: Scope, name: str, period: Period, limit: str) -> None:
    budgets.save(client, Budget(scope, name, period, Decimal(limit)), "admin", datetime.datetime.now(datetime.UTC))


def store_usage(client: Client, usage_id: str, cost: str) -> None:
    now = datetime.datetime.now(datetime.UTC)
    row = [uuid.UUID(usage_id), uuid.uuid4(), "user-alice-1", "alice", "openai", "gpt-4o", "", now, Decimal(cost)]
    columns = ["id", "interception_id", "initiator_id", "initiator_username", "provider", "model", "client"]
    store.insert(client, store.TOKEN_USAGES, [row], [*columns, "created_at", "cost"])


async def test_the_users_own_budget_beats_the_highest_of_their_groups(store_client: Client) -> None:
    save(store_client, Scope.GROUP, "eng", Period.MONTH, "10")
    save(store_client, Scope.GROUP, "from-idp", Period.MONTH, "30")  # a group named only in the token
    guard = guard_on(store_client)
    assert await guard.refresh()
    guard.spent("user-alice-1", str(uuid.uuid4()), Decimal("25"))
    standing = guard.check(ALICE)
    assert isinstance(standing, Standing) and standing.budget.name == "from-idp" and standing.remaining == 5

    save(store_client, Scope.USER, "alice", Period.MONTH, "20")
    assert await guard.refresh()
    refused = guard.check(ALICE)
    assert isinstance(refused, Rejection) and refused.reason is RejectReason.BUDGET_EXCEEDED
    assert "the month budget of user alice (20 USD) is spent: 25 USD this month" in refused.message


async def test_a_usage_is_counted_once_before_and_after_the_store_has_it(store_client: Client) -> None:
    save(store_client, Scope.USER, "alice", Period.DAY, "10")
    guard = guard_on(store_client)
    assert await guard.refresh()
    usage_id = str(uuid.uuid4())
    guard.spent("user-alice-1", usage_id, Decimal("9"))
    assert remaining(guard) == 1  # counted at once by the replica that recorded it
    assert await guard.refresh()
    assert remaining(guard) == 1  # not stored yet: still counted from the replica's own figure
    store_usage(store_client, usage_id, "9")
    assert await guard.refresh()
    assert remaining(guard) == 1  # stored: counted from the store, the replica's own copy dropped
    store_usage(store_client, str(uuid.uuid4()), "0.5")  # another replica's usage
    assert await guard.refresh()
    assert remaining(guard) == Decimal("0.5")


async def test_with_the_store_down_the_last_figures_are_enforced_and_it_says_so(chdb_url: str) -> None:
    database = f"test_{uuid.uuid4().hex[:12]}"
    client = store.connect(chdb_url, database, create_database=True)
    store.migrate(client)
    never_read = guard_on(client)
    client.command(f"DROP DATABASE {database}")
    failures = refresh_failures()
    assert not await never_read.refresh()
    unknown = never_read.check(ALICE)  # nothing known: refused, not let through
    assert isinstance(unknown, Rejection) and unknown.status == 503
    assert state_age() == -1

    client.command(f"CREATE DATABASE {database}")
    store.migrate(client)
    save(client, Scope.USER, "alice", Period.MONTH, "10")
    guard = guard_on(client)
    assert await guard.refresh()
    client.command(f"DROP DATABASE {database}")
    assert not await guard.refresh()
    assert refresh_failures() == failures + 2
    assert state_age() >= 0
    guard.spent("user-alice-1", str(uuid.uuid4()), Decimal("10"))
    assert isinstance(guard.check(ALICE), Rejection)  # the last budgets plus its own spending, still enforced


def remaining(guard: BudgetGuard) -> Decimal:
    standing = guard.check(ALICE)
    assert isinstance(standing, Standing), standing
    return standing.remaining


def state_age() -> float:
    return float(metrics.BUDGET_STATE_AGE_SECONDS.collect()[0].samples[0].value)


def refresh_failures() -> float:
    return float(metrics.BUDGET_REFRESH_FAILURES.collect()[0].samples[0].value)
