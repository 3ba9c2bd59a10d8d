"""Shared fixtures: the real Kafka-protocol broker, the real ClickHouse engine (chDB), bridge tokens.

The broker comes from ``AIBRIDGE_TEST_KAFKA_BOOTSTRAP`` (``scripts/test`` starts one) or, when unset,
is started here for the session. chDB opens one data directory per process, so each pytest process
uses one directory and each test gets its own database in it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from clickhouse_connect.driver.client import Client

from aibridge import store
from aibridge.auth import Role, TokenVerifier, generate_keypair, issue_token, load_private_key
from aibridge.testing.broker import Broker, create_topics, start_broker


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    configured = os.environ.get("AIBRIDGE_TEST_KAFKA_BOOTSTRAP")
    if configured:
        yield configured
        return
    broker = start_broker()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture
def own_broker() -> Iterator[Broker]:
    """A broker of the test's own, for tests that freeze or stop it."""
    broker = start_broker()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
async def kafka_topic(kafka_bootstrap: str) -> AsyncIterator[str]:
    """A fresh topic (and its ``.dlq``) for one test."""
    topic = f"aibridge.test.{uuid.uuid4().hex[:12]}"
    await create_topics(kafka_bootstrap, topic, f"{topic}.dlq")
    yield topic


@pytest.fixture(scope="session")
def chdb_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"chdb://{tmp_path_factory.mktemp('chdb')}"


@pytest.fixture
def store_database(chdb_url: str) -> str:
    return f"test_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def store_client(chdb_url: str, store_database: str) -> Client:
    """A migrated, empty database in the session's embedded ClickHouse engine."""
    client = store.connect(chdb_url, store_database, create_database=True)
    store.migrate(client)
    return client


@pytest.fixture(scope="session")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("keys")
    generate_keypair(directory)
    return directory


@pytest.fixture(scope="session")
def public_key_file(keys_dir: Path) -> Path:
    return keys_dir / "signing_key.pub.pem"


@pytest.fixture(scope="session")
def make_token(keys_dir: Path) -> Callable[..., str]:
    key = load_private_key(keys_dir / "signing_key.pem")

    def make(username: str = "alice", role: Role = Role.MEMBER, **kwargs: object) -> str:
        return issue_token(key, username, role=role, **kwargs)  # type: ignore[arg-type]

    return make


@pytest.fixture(scope="session")
def verifier(public_key_file: Path) -> TokenVerifier:
    return TokenVerifier.from_files(public_key_file)
