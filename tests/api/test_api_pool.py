"""The API's pool of store clients: concurrent leases get distinct clients of the same store, a lease
beyond the pool's size waits for a returned client, and pooled work keeps the caller's context."""

from __future__ import annotations

import contextvars
import threading
from contextlib import ExitStack

from clickhouse_connect.driver.client import Client

from aibridge.api.pool import ClientSource
from aibridge.api.settings import ApiSettings

_marker: contextvars.ContextVar[str] = contextvars.ContextVar("marker", default="unset")


def _source(chdb_url: str, client: Client) -> ClientSource:
    return ClientSource(ApiSettings(clickhouse_url=chdb_url, clickhouse_database=str(client.database)), client)


def test_concurrent_leases_get_distinct_clients_of_the_same_store(chdb_url: str, store_client: Client) -> None:
    source = _source(chdb_url, store_client)
    with ExitStack() as stack:
        clients = [stack.enter_context(source.lease()) for _ in range(3)]
        assert len({id(client) for client in clients}) == 3 and clients[0] is store_client
        databases = {client.query("SELECT currentDatabase()").result_rows[0][0] for client in clients}
        assert databases == {store_client.database}

        waited = threading.Event()

        def fourth() -> None:
            with source.lease() as client:
                assert client in clients
                waited.set()

        thread = threading.Thread(target=fourth)
        thread.start()
        assert not waited.wait(0.3)  # all three are lent out
    thread.join(timeout=10)
    assert waited.is_set()


def test_pooled_work_keeps_the_callers_context(chdb_url: str, store_client: Client) -> None:
    source = _source(chdb_url, store_client)
    _marker.set("request")
    assert source.submit(_marker.get).result(timeout=10) == "request"


def test_work_submitted_after_close_still_runs(chdb_url: str, store_client: Client) -> None:
    source = _source(chdb_url, store_client)
    source.close()
    assert source.submit(lambda: 42).result(timeout=10) == 42
