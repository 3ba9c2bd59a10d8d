"""Access audit records on the Kafka topic, through the real broker (Tansu) and the real store (chDB):
the distributed API (``aibridge api``) publishes one record per read of prompts, none for other
routes, and keeps answering through a broker outage, delivering the records once the broker is back."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from api_rows import Spec, user_id
from clickhouse_connect.driver.client import Client
from prometheus_client import REGISTRY
from starlette.applications import Starlette

from aibridge import cli
from aibridge.api.audit import validate_record
from aibridge.api.component import ApiComponent
from aibridge.api.settings import ApiSettings
from aibridge.auth import Role, TokenVerifier
from aibridge.kafka import KafkaProducer
from aibridge.runner import Host, Plan
from aibridge.testing.broker import Broker, create_topics, free_port, start_broker
from aibridge.testing.server import serve_in_thread

PREFIX = "/api/v2/aibridge"
Record = dict[str, Any]


async def read_records(bootstrap: str, topic: str, count: int, timeout: float = 20.0) -> list[tuple[bytes, Record]]:
    """(key, record) of the topic's first ``count`` messages, plus any that follow within half a second."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()  # every partition (a broker that created the topic itself may have made several)
    found: list[tuple[bytes, Record]] = []
    try:
        deadline = time.monotonic() + timeout
        while len(found) < count and time.monotonic() < deadline:
            for messages in (await consumer.getmany(timeout_ms=500)).values():
                found += [(m.key or b"", orjson.loads(m.value or b"")) for m in messages]
        for messages in (await consumer.getmany(timeout_ms=500)).values():
            found += [(m.key or b"", orjson.loads(m.value or b"")) for m in messages]
    finally:
        await consumer.stop()
    return found


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def distributed_api(
    kafka_bootstrap: str, kafka_topic: str, chdb_url: str, shared_store: Client, public_key_file: Path
) -> Iterator[str]:
    """``aibridge api`` as the runner builds it (bus: Kafka), with its audit records on ``kafka_topic``."""
    overrides: dict[str, object] = {
        "kafka_bootstrap": kafka_bootstrap,
        "audit_topic": kafka_topic,
        "clickhouse_url": chdb_url,
        "clickhouse_database": shared_store.database,
        "auth_public_key_file": public_key_file,
        "api_trusted_proxies": "127.0.0.1, 10.0.0.0/8",
    }
    plan = Plan(components=("api",), bus="kafka", host="127.0.0.1", port=0, overrides=overrides)
    with serve_in_thread(Host(plan).build(), proxy_headers=False) as url:
        yield url


def get(url: str, token: str, path: str, **options: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}", **options.pop("headers", {})}
    return httpx.get(f"{url}{PREFIX}{path}", headers=headers, timeout=30, **options)


def anonymous(url: str) -> httpx.Response:
    return httpx.get(url, timeout=30)


async def test_an_auditor_reading_everyones_is_one_record_on_the_topic(
    distributed_api: str, kafka_bootstrap: str, kafka_topic: str, tokens: dict[str, str], specs: list[Spec]
) -> None:
    forwarded = {"X-Forwarded-For": "203.0.113.9, 10.1.2.3", "User-Agent": "siem-test/1"}
    params = {"q": "provider:openai", "limit": 5}
    answer = get(distributed_api, tokens["auditor"], "/interceptions", params=params, headers=forwarded)
    assert answer.status_code == 200
    [(key, record)] = await read_records(kafka_bootstrap, kafka_topic, 1)
    validate_record(record)
    assert key == user_id("audrey").encode()
    assert (record["action"], record["actor"]["username"], record["actor"]["role"]) == (
        "interceptions.list",
        "audrey",
        "auditor",
    )
    assert record["source"] == {"ip": "203.0.113.9", "peer": "127.0.0.1", "user_agent": "siem-test/1"}
    assert record["request"]["filters"] == {"provider": "openai"}
    assert record["request"]["pagination"] == {"limit": 5, "offset": None, "after_id": None}
    openai = [spec for spec in specs if spec.provider == "openai"]
    assert record["result"] == {"status": 200, "outcome": "allowed", "rows": 5, "matched": len(openai), "error": None}
    assert tokens["auditor"] not in json.dumps(record)


async def test_a_member_reading_their_own_and_someone_elses(
    distributed_api: str, kafka_bootstrap: str, kafka_topic: str, tokens: dict[str, str], specs: list[Spec]
) -> None:
    assert get(distributed_api, tokens["alice"], "/interceptions").status_code == 200
    assert get(distributed_api, tokens["alice"], "/interceptions", params={"q": "initiator:bob"}).status_code == 403
    records = [record for _, record in await read_records(kafka_bootstrap, kafka_topic, 2)]
    assert [(r["actor"]["username"], r["actor"]["role"]) for r in records] == [("alice", "member")] * 2
    assert [r["result"]["outcome"] for r in records] == ["allowed", "denied"]
    assert records[0]["result"]["rows"] == len([spec for spec in specs if spec.username == "alice"])
    assert records[1]["request"]["filters"] == {"initiator": "bob"}
    assert records[0]["source"]["ip"] == "127.0.0.1"


async def test_the_cli_export_is_recorded_as_an_export_page_by_page(
    *,
    distributed_api: str,
    kafka_bootstrap: str,
    kafka_topic: str,
    tokens: dict[str, str],
    specs: list[Spec],
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["interceptions", "list", "--all", "--limit", "10", "--url", distributed_api, "--token", tokens["admin"]]
    assert cli.main(argv) == 0
    assert len(json.loads(capsys.readouterr().out)) == len(specs)
    pages = len(specs) // 10 + 1
    records = [record for _, record in await read_records(kafka_bootstrap, kafka_topic, pages)]
    assert len(records) == pages
    assert {r["action"] for r in records} == {"interceptions.export"}
    assert {r["actor"]["role"] for r in records} == {"admin"}
    assert sum(r["result"]["rows"] for r in records) == len(specs)
    assert records[0]["source"]["user_agent"].startswith("aibridge-cli/")
    assert [r["request"]["pagination"]["after_id"] is None for r in records] == [True] + [False] * (pages - 1)


async def test_reads_without_prompts_publish_nothing(
    distributed_api: str, kafka_bootstrap: str, kafka_topic: str, tokens: dict[str, str]
) -> None:
    for path in ("/models", "/clients", "/providers", "/usage"):
        assert get(distributed_api, tokens["auditor"], path).status_code == 200
    for path in ("/healthz", "/readyz", "/metrics"):
        assert anonymous(f"{distributed_api}{path}").status_code == 200
    assert anonymous(f"{distributed_api}{PREFIX}/interceptions").status_code == 401
    assert get(distributed_api, "not-a-token", "/interceptions").status_code == 401
    assert get(distributed_api, tokens["bob"], "/interceptions", params={"limit": 1}).status_code == 200  # marker
    records = [record for _, record in await read_records(kafka_bootstrap, kafka_topic, 1)]
    assert [(r["actor"]["username"], r["result"]["rows"]) for r in records] == [("bob", 1)]


@asynccontextmanager
async def _component_lifespan(component: ApiComponent, app: Starlette) -> AsyncIterator[None]:
    await component.start()
    yield
    await component.stop()


@pytest.fixture
def api_on_broker(chdb_url: str, shared_store: Client, verifier: TokenVerifier) -> Callable[[str, str], Any]:
    """Serves an API component whose audit producer gives up on a send after one second."""

    def serve(bootstrap: str, topic: str) -> Any:
        settings = ApiSettings(
            kafka_bootstrap=bootstrap,
            audit_topic=topic,
            clickhouse_url=chdb_url,
            clickhouse_database=shared_store.database,
        )
        component = ApiComponent(settings, shared_store, verifier, KafkaProducer(settings, request_timeout=1.0))
        app = Starlette(routes=component.routes, lifespan=lambda app: _component_lifespan(component, app))
        return serve_in_thread(app, proxy_headers=False)

    return serve


async def wait_for(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.1)


async def test_a_frozen_broker_delays_records_without_failing_the_reads(
    own_broker: Broker,
    api_on_broker: Callable[[str, str], Any],
    make_token: Callable[..., str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    topic = "aibridge.audit.v1"
    await create_topics(own_broker.bootstrap, topic)
    token = make_token("audrey", Role.AUDITOR)
    failures = sample("aibridge_api_audit_send_failures_total")
    with api_on_broker(own_broker.bootstrap, topic) as url:
        assert get(url, token, "/interceptions", params={"limit": 1}).status_code == 200
        await read_records(own_broker.bootstrap, topic, 1)  # connected and delivering
        own_broker.freeze()
        try:
            started = time.monotonic()
            during = [get(url, token, "/interceptions", params={"limit": 2}) for _ in range(3)]
            assert [answer.status_code for answer in during] == [200] * 3
            assert time.monotonic() - started < 3  # the reads do not wait for the broker
            await wait_for(lambda: sample("aibridge_api_audit_send_failures_total") > failures, 15)
            assert any("not sent, kept for a retry" in r.getMessage() for r in caplog.records if r.levelname == "ERROR")
        finally:
            own_broker.thaw()
        delivered: dict[str, Record] = {}
        deadline = time.monotonic() + 20
        while len(delivered) < 4 and time.monotonic() < deadline:
            delivered = {r["event_id"]: r for _, r in await read_records(own_broker.bootstrap, topic, 4, 5)}
    assert len(delivered) == 4  # the first read and the three during the outage (a retry may repeat one)
    assert sorted(r["result"]["rows"] for r in delivered.values()) == [1, 2, 2, 2]


async def test_an_api_started_without_its_broker_answers_and_delivers_later(
    api_on_broker: Callable[[str, str], Any], make_token: Callable[..., str]
) -> None:
    port, topic = free_port(), "aibridge.audit.v1"
    dropped = sample("aibridge_api_audit_records_total", outcome="dropped")
    with api_on_broker(f"127.0.0.1:{port}", topic) as url:
        answer = get(url, make_token("carol"), "/interceptions")
        assert answer.status_code == 200
        broker = start_broker(port)
        try:
            await create_topics(broker.bootstrap, topic)
            records = [r for _, r in await read_records(broker.bootstrap, topic, 1, timeout=30)]
        finally:
            broker.stop()
    assert [r["actor"]["username"] for r in records] == ["carol"]
    assert sample("aibridge_api_audit_records_total", outcome="dropped") == dropped


async def test_records_made_while_the_broker_is_down_are_sent_when_it_is_back(
    api_on_broker: Callable[[str, str], Any], make_token: Callable[..., str]
) -> None:
    """A stopped broker (not a frozen one, whose client may still deliver the requests it had sent):
    only the sink's own retry can bring these records to the topic."""
    port, topic = free_port(), "aibridge.audit.v1"
    token = make_token("dave")
    failures = sample("aibridge_api_audit_send_failures_total")
    broker = start_broker(port)
    await create_topics(broker.bootstrap, topic)
    with api_on_broker(broker.bootstrap, topic) as url:
        assert get(url, token, "/interceptions", params={"limit": 1}).status_code == 200
        await read_records(broker.bootstrap, topic, 1)
        broker.stop()  # the broker keeps its data in memory: the first record goes with it
        answers = [get(url, token, "/interceptions", params={"offset": n}) for n in (7, 8)]
        assert [answer.status_code for answer in answers] == [200, 200]
        await wait_for(lambda: sample("aibridge_api_audit_send_failures_total") > failures, 15)
        broker = start_broker(port)
        try:
            await create_topics(broker.bootstrap, topic)
            records = [r for _, r in await read_records(broker.bootstrap, topic, 2, timeout=30)]
        finally:
            broker.stop()
    assert sorted({r["event_id"]: r["request"]["pagination"]["offset"] for r in records}.values()) == [7, 8]
