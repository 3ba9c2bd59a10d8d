"""One user's pages, counts and usernames come from the tables the views keep (``interceptions_by_initiator``,
``initiators``): the same rows, order, cursors and counts as a plain reference query over ``interceptions``
with ``FINAL``, on a store with redelivered copies, ended rows in later parts than their started rows,
in-flight rows and a username shared by two user ids."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from api_rows import BASE, USERS, Spec, api_settings, dataset, insert, new_database, user_id
from clickhouse_connect.driver.client import Client
from prometheus_client import REGISTRY

from aibridge import store
from aibridge.api import service, sql
from aibridge.api.query import Filters
from aibridge.api.render import Row, render_interception
from aibridge.api.repository import ClientSource, InterceptionReader
from aibridge.auth import Identity, Role

DANA_IDS = ("dana-1", "dana-2")


@dataclass
class Renamed(Spec):
    """An interception of a user id other than the one derived from the username (a renamed account)."""

    other_id: str = ""

    @property
    def initiator_id(self) -> str:
        return self.other_id


def dana(count: int) -> list[Spec]:
    return [
        Renamed("dana", "openai", "o3", "Codex", BASE + timedelta(minutes=n, seconds=30), other_id=DANA_IDS[n % 2])
        for n in range(count)
    ]


@pytest.fixture(scope="module")
def copies_store(chdb_url: str) -> Client:
    client = new_database(chdb_url)
    for table in (store.INTERCEPTIONS, store.INTERCEPTIONS_BY_INITIATOR):
        client.command(f"SYSTEM STOP MERGES {table}")  # the copies stay apart, as before a merge
    specs = dataset(60) + dana(9)
    insert(client, specs, duplicate=True)
    insert(client, specs[::5])  # a third copy of some, in yet another part
    return client


@pytest.fixture(scope="module")
def reader(chdb_url: str, copies_store: Client) -> Iterator[InterceptionReader]:
    source = ClientSource(api_settings(chdb_url, copies_store), copies_store)
    yield InterceptionReader(source)
    source.close()


def reference(client: Client, criteria: sql.Criteria) -> list[Row]:
    """What the page path must return: every matching interception once, its highest version, newest first."""
    filters = sql.where(criteria)
    rows = client.query(
        f"SELECT {', '.join(sql.INTERCEPTION_COLUMNS)} FROM {store.INTERCEPTIONS} FINAL {filters.sql} "
        "ORDER BY started_at DESC, id DESC",
        parameters=filters.parameters,
    ).result_rows
    return without_children(
        [render_interception(dict(zip(sql.INTERCEPTION_COLUMNS, row, strict=True))) for row in rows]
    )


def without_children(results: list[Row]) -> list[Row]:
    derived = {*sql.CHILD_COLUMNS, "cost", "cost_unpriced"}  # the cost is the sum of the token usages'
    return [{key: value for key, value in result.items() if key not in derived} for result in results]


CRITERIA = [
    *(sql.Criteria(initiator_ids=(user_id(name),)) for name in USERS),
    sql.Criteria(initiator_ids=DANA_IDS),
    sql.Criteria(initiator_ids=(user_id("alice"), user_id("bob"))),
    sql.Criteria(initiator_ids=(user_id("alice"),), model="o3"),
    sql.Criteria(
        initiator_ids=(user_id("bob"),),
        started_after=BASE + timedelta(minutes=10),
        started_before=BASE + timedelta(minutes=50),
    ),
    sql.Criteria(initiator_ids=("nobody",)),
]


@pytest.mark.parametrize("criteria", CRITERIA)
@pytest.mark.parametrize("size", [1, 7, 100])
def test_offset_pages_and_count_match_the_reference(
    copies_store: Client, reader: InterceptionReader, criteria: sql.Criteria, size: int
) -> None:
    expected = reference(copies_store, criteria)
    pages = [reader.page(criteria, size, offset, None) for offset in range(0, len(expected) + size, size)]
    assert without_children([row for page in pages for row in page]) == expected
    assert reader.count(criteria) == len(expected)


def test_the_reference_holds_in_flight_rows_and_several_copies(copies_store: Client) -> None:
    expected = reference(copies_store, sql.Criteria(initiator_ids=(user_id("carol"),)))
    assert expected[0]["ended_at"] is None  # the newest interception is carol's, in flight
    assert all(row["ended_at"] is not None for row in expected[1:])
    copies = copies_store.query(
        f"SELECT max(n) FROM (SELECT count() AS n FROM {store.INTERCEPTIONS_BY_INITIATOR} GROUP BY id)"
    ).result_rows[0][0]
    assert copies >= 3  # started + ended, written twice or three times


def walk(reader: InterceptionReader, identity: Identity, filters: Filters, size: int) -> tuple[list[Row], set[int]]:
    """Every page through the service's cursor path: the results and the counts it answered."""
    results: list[Row] = []
    counts: set[int] = set()
    after = None
    while True:
        body = service.list_interceptions(reader, identity, filters, limit=size, offset=None, after_id=after)
        counts.add(body["count"])
        if not body["results"]:
            return results, counts
        results += body["results"]
        after = body["results"][-1]["id"]


def identity(username: str, role: Role = Role.MEMBER) -> Identity:
    return Identity(user_id(username), username, role, "test", time.time() + 3600)


@pytest.mark.parametrize("size", [3, 100])
@pytest.mark.parametrize(
    "case",
    [
        (identity("alice"), Filters(), (user_id("alice"),)),
        (identity("carol"), Filters(model="gpt-5"), (user_id("carol"),)),
        (identity("root", Role.ADMIN), Filters(initiator="bob"), (user_id("bob"),)),
        (identity("root", Role.ADMIN), Filters(initiator="dana"), DANA_IDS),
        (identity("audrey", Role.AUDITOR), Filters(initiator=DANA_IDS[1]), DANA_IDS[1:]),
    ],
)
def test_cursor_pages_of_members_and_named_users_match_the_reference(
    copies_store: Client, reader: InterceptionReader, case: tuple[Identity, Filters, tuple[str, ...]], size: int
) -> None:
    caller, filters, ids = case
    results, counts = walk(reader, caller, filters, size)
    expected = reference(copies_store, sql.Criteria(initiator_ids=ids, model=filters.model))
    assert expected and without_children(results) == expected
    assert counts == {len(expected)}
    assert all(len(result["user_prompts"]) == 1 for result in results)


def page_queries() -> float:
    return REGISTRY.get_sample_value("aibridge_api_store_query_seconds_count", {"query": "page"}) or 0.0


@pytest.mark.parametrize(
    ("size", "queries"),
    [
        (100, 1),  # 300 rows fetched hold all of carol's ids: one query
        (7, 2),  # 21 rows hold ~5 ids (4-6 copies each): the exact query follows
    ],
)
def test_a_page_falls_back_to_the_exact_query_when_the_fetched_rows_hold_too_few_ids(
    copies_store: Client, reader: InterceptionReader, size: int, queries: int
) -> None:
    criteria = sql.Criteria(initiator_ids=(user_id("carol"),))
    before = page_queries()
    assert without_children(reader.page(criteria, size, 0, None)) == reference(copies_store, criteria)[:size]
    assert page_queries() - before == queries


def test_usernames_and_ids_resolve_from_the_initiators_table(reader: InterceptionReader) -> None:
    assert reader.initiator_ids("dana") == DANA_IDS
    assert reader.initiator_ids(DANA_IDS[0]) == DANA_IDS[:1]
    assert reader.initiator_ids(user_id("bob")) == (user_id("bob"),)
    assert reader.initiator_ids("nobody") == ()


def test_usage_of_one_user_reads_the_index_table_and_counts_once(
    copies_store: Client, reader: InterceptionReader
) -> None:
    criteria = sql.Criteria(initiator_ids=DANA_IDS)
    assert sql.usage_interceptions(criteria, ("user",)).sql.count(store.INTERCEPTIONS_BY_INITIATOR) == 1
    counts, _ = reader.usage(criteria, ("user",))
    assert sorted((str(key), str(name), int(n)) for key, name, n in counts) == [
        (DANA_IDS[0], "dana", 5),
        (DANA_IDS[1], "dana", 4),
    ]


def test_every_page_query_limited_to_users_reads_the_index_table() -> None:
    statements: list[Any] = [
        sql.page(CRITERIA[0], 10, 0, None),
        sql.page(CRITERIA[0], 10, 0, sql.Position(BASE, uuid.uuid4())),
        sql.user_rows(CRITERIA[0], 30, sql.Position(BASE, uuid.uuid4())),
        sql.count(CRITERIA[0]),
    ]
    assert all(f"FROM {store.INTERCEPTIONS_BY_INITIATOR} " in statement.sql for statement in statements)
    assert f"FROM {store.INTERCEPTIONS} " in sql.page(sql.Criteria(), 10, 0, None).sql
