"""SIGTERM to a running ``aibridge proxy`` process: it stops accepting, lets the open stream finish,
publishes the stream's events and exits 0."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from proxy_support import ANTHROPIC_KEY, OPENAI_KEY, Simulator, ended_count, read_events

from aibridge.testing.broker import free_port

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

OPENAI_PATH = "/api/v2/aibridge/openai/v1/chat/completions"
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "stream slowly"}], "stream": True}


@pytest.fixture
def proxy_process(
    simulator: Simulator, kafka_bootstrap: str, kafka_topic: str, public_key_file: Path, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    port = free_port()
    env = os.environ | {
        "AIBRIDGE_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "AIBRIDGE_KAFKA_TOPIC": kafka_topic,
        "AIBRIDGE_AUTH_PUBLIC_KEY_FILE": str(public_key_file),
        "AIBRIDGE_OPENAI_KEY": OPENAI_KEY,
        "AIBRIDGE_OPENAI_BASE_URL": simulator.openai_base_url,
        "AIBRIDGE_ANTHROPIC_KEY": ANTHROPIC_KEY,
        "AIBRIDGE_ANTHROPIC_BASE_URL": simulator.url,
        "AIBRIDGE_SPOOL_DIR": str(tmp_path / "spool"),
        "AIBRIDGE_LOG_LEVEL": "INFO",
    }
    log_path = tmp_path / "proxy.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "aibridge.cli", "proxy", "--listen", f"127.0.0.1:{port}"],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(process, url, log_path)
        yield process, url, log_path
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def wait_until_ready(process: subprocess.Popen[bytes], url: str, log_path: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the proxy exited at start:\n{log_path.read_text()}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"the proxy was not ready in {timeout}s:\n{log_path.read_text()}")


async def refuses_connections(url: str, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            async with httpx.AsyncClient(timeout=1) as probe:
                await probe.get(f"{url}/healthz")
        except httpx.ConnectError:
            return True
        await asyncio.sleep(0.05)
    return False


async def test_sigterm_mid_stream_finishes_the_stream_publishes_its_events_and_exits(
    proxy_process: tuple[subprocess.Popen[bytes], str, Path], token: str, kafka_bootstrap: str, kafka_topic: str
) -> None:
    process, url, log_path = proxy_process
    headers = {"x-api-key": token, "x-simulator-chunk-delay-ms": "250"}
    async with (
        httpx.AsyncClient(base_url=url, timeout=20, headers=headers) as client,
        client.stream("POST", OPENAI_PATH, json=CHAT) as response,
    ):
        chunks = response.aiter_raw()
        first = await anext(chunks)
        process.send_signal(signal.SIGTERM)
        assert await refuses_connections(url), "the proxy kept accepting connections after SIGTERM"
        rest = b"".join([chunk async for chunk in chunks])
    assert first.startswith(b"data: {")
    assert rest.endswith(b"data: [DONE]\n\n"), "the in-flight stream was cut"
    assert process.wait(30) == 0, log_path.read_text()

    events = await read_events(kafka_bootstrap, kafka_topic, until=ended_count(1), timeout=10)
    assert [e["type"] for e in events] == ["interception.started", "prompt", "token_usage", "interception.ended"]
    assert events[-1]["status"] == "completed"
    log = log_path.read_text()
    assert "Application shutdown complete." in log
    assert "alice (Unknown) openai/gpt-4o completed 200 in=" in log, log
    [line] = [orjson.loads(text) for text in log.splitlines() if '"logger":"aibridge.interceptions"' in text]
    assert (line["level"], line["status"], line["http_status"], line["username"]) == ("info", "completed", 200, "alice")
    assert token not in log
