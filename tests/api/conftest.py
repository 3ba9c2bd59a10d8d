"""Fixtures for the API: a module-wide store holding :func:`api_rows.dataset` twice over (every row
duplicated in another part, as after a redelivery), the API serving it, and tokens per role."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest
from api_rows import Spec, api_settings, dataset, insert, new_database
from clickhouse_connect.driver.client import Client

from aibridge.api.app import create_api_app
from aibridge.auth import Role, TokenVerifier
from aibridge.testing.server import serve_in_thread


@pytest.fixture(scope="module")
def specs() -> list[Spec]:
    return dataset()


@pytest.fixture(scope="module")
def shared_store(chdb_url: str, specs: list[Spec]) -> Client:
    client = new_database(chdb_url)
    insert(client, specs, duplicate=True)
    return client


@pytest.fixture(scope="module")
def api_url(chdb_url: str, shared_store: Client, verifier: TokenVerifier) -> Iterator[str]:
    app = create_api_app(api_settings(chdb_url, shared_store), shared_store, verifier)
    with serve_in_thread(app) as url:
        yield url


@pytest.fixture(scope="module")
def tokens(make_token: Callable[..., str]) -> dict[str, str]:
    return {
        "alice": make_token("alice"),
        "bob": make_token("bob"),
        "auditor": make_token("audrey", Role.AUDITOR),
        "admin": make_token("root", Role.ADMIN),
    }


@pytest.fixture
def as_user(api_url: str, tokens: dict[str, str]) -> Iterator[Callable[[str], httpx.Client]]:
    """``as_user("auditor")`` is an httpx client sending that user's token."""
    clients: list[httpx.Client] = []

    def make(name: str) -> httpx.Client:
        client = httpx.Client(base_url=api_url, headers={"Authorization": f"Bearer {tokens[name]}"}, timeout=30)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
