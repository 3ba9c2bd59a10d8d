"""Token usages are priced when recorded: the cost column, exact in the store, NULL for unknown models."""

from __future__ import annotations

import copy
import random
import uuid
from decimal import Decimal
from pathlib import Path

from clickhouse_connect.driver.client import Client

from aibridge import pricing, store
from aibridge.events import example_events
from aibridge.recorder.rows import COLUMNS, process_event

EXAMPLE = example_events()["token_usage"]


def usage_event(**changes: object) -> dict[str, object]:
    event = copy.deepcopy(EXAMPLE) | {"event_id": str(uuid.uuid4())}
    return event | changes


def test_a_token_usage_row_carries_its_cost_at_the_builtin_prices() -> None:
    fields = process_event(EXAMPLE).fields()
    # claude-sonnet-4-5: 1204 x 3 + 356 x 15 + 18211 x 0.30 + 2048 x 3.75, per million
    assert (
        fields["cost"]
        == Decimal("0.0220953")
        == pricing.builtin().cost("anthropic", "claude-sonnet-4-5", pricing.Tokens(1204, 356, 18211, 2048))
    )


def test_an_unknown_model_is_stored_with_no_cost_and_a_dated_one_with_its_familys() -> None:
    assert process_event(usage_event(model="claude-imaginary-9")).fields()["cost"] is None
    dated = process_event(usage_event(model="claude-sonnet-4-5-20250929")).fields()["cost"]
    assert dated == process_event(EXAMPLE).fields()["cost"]


def test_the_recorder_prices_with_the_override_file(tmp_path: Path) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text(
        'models:\n  claude-imaginary-9:\n    provider: anthropic\n    input: "1"\n    output: "0"\n'
        '    cache_read: "0"\n    cache_write: "0"\n'
    )
    row = process_event(usage_event(model="claude-imaginary-9"), pricing.load(path))
    assert row.fields()["cost"] == Decimal("0.001204")


def test_costs_are_stored_and_summed_exactly(store_client: Client) -> None:
    """A million costs with 12 decimals, summed by the store as Decimal(38, 12), equal Python's exact sum."""
    rng = random.Random(7)
    template = process_event(EXAMPLE).fields()
    columns = COLUMNS[store.TOKEN_USAGES]
    costs = [Decimal(rng.randint(1, 999_999)) / 10**12 + Decimal(rng.randint(0, 3)) for _ in range(1_000_000)]
    rows = [[template[name] for name in columns] for _ in range(len(costs))]
    cost_at = columns.index("cost")
    for index, (row, cost) in enumerate(zip(rows, costs, strict=True)):
        row[0] = uuid.UUID(int=index + 1)
        row[cost_at] = cost
    store.insert(store_client, store.TOKEN_USAGES, rows, columns)
    stored = store_client.query(f"SELECT sum(cost), count() FROM {store.TOKEN_USAGES}").result_rows[0]
    exact = sum(costs, Decimal(0))
    assert stored == (exact, 1_000_000)


def test_rows_stored_before_the_migration_keep_a_null_cost(chdb_url: str) -> None:
    client = store.connect(chdb_url, f"test_{uuid.uuid4().hex[:12]}", create_database=True)
    before = [migration for migration in store.MIGRATIONS if migration.version < 6]
    for migration in before:
        for statement in migration.statements:
            client.command(statement)
    old_columns = [name for name in COLUMNS[store.TOKEN_USAGES] if name != "cost"]
    fields = process_event(EXAMPLE).fields()
    client.insert(store.TOKEN_USAGES, [[fields[name] for name in old_columns]], column_names=old_columns)
    for statement in store.MIGRATIONS[[m.version for m in store.MIGRATIONS].index(6)].statements:
        client.command(statement)
    rows = client.query(f"SELECT input_tokens, cost FROM {store.TOKEN_USAGES}").result_rows
    assert rows == [(1204, None)]
