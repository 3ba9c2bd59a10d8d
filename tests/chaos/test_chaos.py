"""Chaos under steady load, with real processes: proxy → Kafka (Tansu) → recorder → store → API.

Two ``aibridge up`` processes (``--components proxy --bus kafka`` and ``--components recorder,api
--bus kafka``) on the test's own broker, three SDK clients sending steadily. Meanwhile: the broker is
frozen (SIGSTOP) for longer than the producer's request timeout, so the proxy spools, and then thawed
(SIGCONT) — Tansu keeps its data only in memory, so a real stop would lose the topic and the offsets
and prove nothing; a freeze is the outage that loses nothing on the broker side; the recorder process
is restarted (SIGTERM, then started again); the proxy process is restarted gracefully (SIGTERM while
streams are open, then started again; clients retry connection errors while it is down).

Afterwards every request a client saw succeed has exactly one interception, with the token usage
the client saw, in the API's query results.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from chaos_support import (
    UP,
    Ledger,
    Service,
    Success,
    anthropic_streaming,
    clean_environment,
    fetch_all_interceptions,
    openai_blocking,
    openai_streaming,
    run_client,
)

from aibridge.auth import Role, generate_keypair, issue_token, load_private_key
from aibridge.testing.broker import Broker, free_port, start_broker

pytestmark = [pytest.mark.slow, pytest.mark.kafka]

FREEZE_SECONDS = 15.0  # longer than the proxy producer's 10 s request timeout: sends fail, events spool
STEADY_SECONDS = 4.0


async def create_topics(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(topic, num_partitions=3, replication_factor=1), NewTopic(f"{topic}.dlq", 1, 1)]
        )
    finally:
        await admin.close()


def up(components: str, port: int, data_dir: Path, *extra: str) -> list[str]:
    listen = f"127.0.0.1:{port}"
    return [*UP, "--components", components, "--bus", "kafka", "--listen", listen, "--data-dir", str(data_dir), *extra]


def services(tmp_path: Path, broker: Broker, topic: str, public_key: Path) -> tuple[Service, Service]:
    env = clean_environment(
        AIBRIDGE_KAFKA_BOOTSTRAP=broker.bootstrap,
        AIBRIDGE_KAFKA_TOPIC=topic,
        AIBRIDGE_AUTH_PUBLIC_KEY_FILE=str(public_key),
        AIBRIDGE_LOG_LEVEL="INFO",
    )
    proxy_port, store_port = free_port(), free_port()
    proxy = Service(
        "proxy",
        up("proxy", proxy_port, tmp_path / "proxy", "--simulate-upstream"),
        env,
        proxy_port,
        tmp_path / "proxy.log",
    )
    recorder = Service(
        "recorder+api",
        up("recorder,api", store_port, tmp_path / "store"),
        env,
        store_port,
        tmp_path / "recorder.log",
    )
    return proxy, recorder


def check(ledger: Ledger, interceptions: list[dict[str, object]]) -> dict[str, int]:
    by_prompt: dict[str, list[dict[str, object]]] = {}
    for interception in interceptions:
        for prompt in interception["user_prompts"]:  # type: ignore[attr-defined]
            by_prompt.setdefault(prompt["prompt"], []).append(interception)
    missing = duplicates = wrong_usage = 0
    for success in ledger.succeeded:
        found = by_prompt.get(success.prompt, [])
        missing += not found
        duplicates += len(found) > 1
        wrong_usage += len(found) == 1 and not usage_matches(found[0], success)
    return {
        "sent": ledger.sent,
        "succeeded": len(ledger.succeeded),
        "failed": ledger.failed,
        "recorded": len(ledger.succeeded) - missing,
        "missing": missing,
        "duplicates": duplicates,
        "wrong_usage": wrong_usage,
        "interceptions_in_store": len(interceptions),
    }


def usage_matches(interception: dict[str, object], success: Success) -> bool:
    usages = interception["token_usages"]
    return (
        interception["status"] == "completed"
        and isinstance(usages, list)
        and len(usages) == 1
        and (usages[0]["input_tokens"], usages[0]["output_tokens"]) == (success.input_tokens, success.output_tokens)
    )


def wait_until_recorded(recorder: Service, admin: str, ledger: Ledger, timeout: float = 120.0) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        counts = check(ledger, fetch_all_interceptions(recorder.url, admin))
        if (counts["missing"] == 0 and counts["wrong_usage"] == 0) or time.monotonic() > deadline:
            return counts
        time.sleep(2)


async def test_every_success_is_recorded_exactly_once_through_broker_recorder_and_proxy_faults(
    tmp_path: Path,
) -> None:
    private, public = generate_keypair(tmp_path / "keys")
    key = load_private_key(private)
    admin = issue_token(key, "admin", role=Role.ADMIN)
    broker = start_broker()
    topic = f"aibridge.chaos.{uuid.uuid4().hex[:8]}"
    proxy, recorder = services(tmp_path, broker, topic, public)
    stop = threading.Event()
    ledger = Ledger()
    threads: list[threading.Thread] = []
    try:
        await create_topics(broker.bootstrap, topic)
        recorder.start()
        proxy.start()
        calls = {
            "openai-blocking": openai_blocking(proxy.url, issue_token(key, "ada")),
            "openai-stream": openai_streaming(proxy.url, issue_token(key, "grace")),
            "anthropic-stream": anthropic_streaming(proxy.url, issue_token(key, "linus")),
        }
        threads = [
            threading.Thread(target=run_client, args=(n, c, ledger, stop), daemon=True) for n, c in calls.items()
        ]
        for thread in threads:
            thread.start()
        timeline(broker, proxy, recorder, ledger)
        stop.set()
        for thread in threads:
            thread.join(60)
        counts = wait_until_recorded(recorder, admin, ledger)
        print("\nchaos counts:", counts, "client errors:", ledger.errors)
    finally:
        stop.set()
        broker.thaw()
        proxy.kill()
        recorder.kill()
        broker.stop()
    assert counts["succeeded"] >= 100, f"too little load to prove anything: {counts}"
    assert counts["missing"] == 0, f"{counts}\n{recorder.tail()}"
    assert counts["duplicates"] == 0, counts
    assert counts["wrong_usage"] == 0, counts
    assert "spooling them to" in proxy.log.read_text(), "the broker outage never reached the spool"


def timeline(broker: Broker, proxy: Service, recorder: Service, ledger: Ledger) -> None:
    def phase(label: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {label}: succeeded={len(ledger.succeeded)} failed={ledger.failed}")

    time.sleep(STEADY_SECONDS)
    phase("freeze broker")
    broker.freeze()
    time.sleep(FREEZE_SECONDS)
    broker.thaw()
    phase("thawed broker")
    time.sleep(STEADY_SECONDS)
    phase("restart recorder")
    assert recorder.terminate() == 0, recorder.tail()
    recorder.start()
    time.sleep(STEADY_SECONDS)
    phase("restart proxy")
    assert proxy.terminate() == 0, proxy.tail()
    proxy.start()
    time.sleep(STEADY_SECONDS)
    phase("stop load")
