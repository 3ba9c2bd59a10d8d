"""The store's error classes, decided on errors the real engine (chDB) and driver raise."""

from __future__ import annotations

import socket
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client

from aibridge import store
from aibridge.recorder.isolation import isolate
from aibridge.recorder.rows import COLUMNS
from aibridge.testing.broker import free_port

COLUMN_NAMES = COLUMNS[store.TOKEN_USAGES]


def token_row(input_tokens: int) -> tuple[Any, ...]:
    """A token_usages row in the recorder's column order (columns it does not name here stay at their default)."""
    values: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "interception_id": str(uuid.uuid4()),
        "initiator_id": "user-1",
        "initiator_username": "alice",
        "provider": "openai",
        "model": "gpt-4o",
        "client": "Codex",
        "provider_response_id": "chatcmpl-1",
        "input_tokens": input_tokens,
        "output_tokens": 2,
        "cache_read_input_tokens": 0,
        "cache_write_input_tokens": 0,
        "metadata": "{}",
        "created_at": datetime.now(UTC),
    }
    return tuple(values.get(name) for name in COLUMN_NAMES)


def insert(client: Client, *rows: tuple[Any, ...]) -> None:
    store.insert(client, store.TOKEN_USAGES, rows, COLUMN_NAMES)


def stored_tokens(client: Client) -> list[int]:
    query = f"SELECT input_tokens FROM {store.TOKEN_USAGES} ORDER BY input_tokens"
    return [int(row[0]) for row in client.query(query).result_rows]


def test_a_value_the_narrowed_column_cannot_take_is_rejected(store_client: Client) -> None:
    store_client.command(f"ALTER TABLE {store.TOKEN_USAGES} MODIFY COLUMN input_tokens UInt32")  # an older schema
    with pytest.raises(store.StoreRejected, match=r"input_tokens.*\(error: .*format requires") as caught:
        insert(store_client, token_row(1), token_row(5_000_000_000))
    assert str(caught.value).startswith("insert into token_usages failed: ")
    assert stored_tokens(store_client) == []


def test_a_violated_constraint_is_rejected(store_client: Client) -> None:
    store_client.command(f"ALTER TABLE {store.TOKEN_USAGES} ADD CONSTRAINT sane CHECK input_tokens < 1000000")
    with pytest.raises(store.StoreRejected, match=r"Code: 469\..*VIOLATED_CONSTRAINT"):
        insert(store_client, token_row(1), token_row(5_000_000))
    assert stored_tokens(store_client) == []


def test_a_string_the_column_cannot_take_is_rejected(store_client: Client) -> None:
    store_client.command(f"ALTER TABLE {store.TOKEN_USAGES} MODIFY COLUMN provider_response_id UUID")
    with pytest.raises(store.StoreRejected, match="ValueError: invalid literal"):
        insert(store_client, token_row(1))


def test_columns_that_do_not_match_are_rejected(store_client: Client) -> None:
    """A newer writer against a table its migration has not reached yet (a partial upgrade)."""
    with pytest.raises(store.StoreRejected, match="Unrecognized column 'reasoning_tokens'"):
        store.insert(store_client, store.TOKEN_USAGES, [(*token_row(1), 7)], (*COLUMN_NAMES, "reasoning_tokens"))


def test_too_many_parts_is_transient(store_client: Client) -> None:
    store_client.command(f"SYSTEM STOP MERGES {store.TOKEN_USAGES}")
    store_client.command(f"ALTER TABLE {store.TOKEN_USAGES} MODIFY SETTING parts_to_throw_insert = 1")
    insert(store_client, token_row(1))
    with pytest.raises(store.StoreUnavailable, match=r"Code: 252\..*TOO_MANY_PARTS"):
        insert(store_client, token_row(2))


def test_a_missing_table_is_transient(store_client: Client) -> None:
    store_client.command(f"DETACH TABLE {store.TOKEN_USAGES}")  # an operator's maintenance, or a restore
    try:
        with pytest.raises(store.StoreUnavailable, match=r"Code: 60\..*UNKNOWN_TABLE"):
            insert(store_client, token_row(1))
    finally:
        store_client.command(f"ATTACH TABLE {store.TOKEN_USAGES}")


def test_a_connection_error_is_transient() -> None:
    with pytest.raises(ConnectionRefusedError) as refused:
        socket.create_connection(("127.0.0.1", free_port()), timeout=2)
    error = store.classify(refused.value, "insert into token_usages failed")
    assert isinstance(error, store.StoreUnavailable)
    assert "ConnectionRefusedError" in str(error)


async def test_isolation_stores_every_accepted_row_once_and_finds_each_refused_one(store_client: Client) -> None:
    store_client.command(f"SYSTEM STOP MERGES {store.TOKEN_USAGES}")  # a second copy of a row would stay visible
    store_client.command(f"ALTER TABLE {store.TOKEN_USAGES} ADD CONSTRAINT sane CHECK input_tokens < 1000000")
    bad = {0, 17, 18, 63}
    rows = [token_row(5_000_000 + index if index in bad else index) for index in range(64)]

    async def insert_part(part: Any) -> None:
        insert(store_client, *part)

    with pytest.raises(store.StoreRejected) as whole:
        insert(store_client, *rows)
    outcome = await isolate(insert_part, rows, whole.value)
    assert sorted(refusal.index for refusal in outcome.refused) == sorted(bad)
    assert all("VIOLATED_CONSTRAINT" in str(refusal.error) for refusal in outcome.refused)
    assert outcome.inserts <= 2 * len(bad) * 6  # 2·b·log2(64)
    assert stored_tokens(store_client) == [index for index in range(64) if index not in bad]
