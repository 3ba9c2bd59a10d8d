"""``aibridge proxy --workers 2``: two processes answer on one port, their metrics add up on any
worker's ``/metrics``, SIGTERM drains an open stream on each, a killed worker is started again."""

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
import openai
import pytest
from proxy_support import OPENAI_KEY, Simulator, ended_count, read_events

from aibridge.testing.broker import free_port

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

OPENAI_PATH = "/api/v2/aibridge/openai/v1/chat/completions"
STREAM = {"model": "gpt-4o", "messages": [{"role": "user", "content": "stream slowly"}], "stream": True}
ENDED = "aibridge_proxy_interceptions_ended_total"


@pytest.fixture
def workers(
    simulator: Simulator, kafka_bootstrap: str, kafka_topic: str, public_key_file: Path, tmp_path: Path
) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    port = free_port()
    env = os.environ | {
        "AIBRIDGE_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "AIBRIDGE_KAFKA_TOPIC": kafka_topic,
        "AIBRIDGE_AUTH_PUBLIC_KEY_FILE": str(public_key_file),
        "AIBRIDGE_OPENAI_KEY": OPENAI_KEY,
        "AIBRIDGE_OPENAI_BASE_URL": simulator.openai_base_url,
        "AIBRIDGE_SPOOL_DIR": str(tmp_path / "spool"),
    }
    log_path = tmp_path / "proxy.log"
    with log_path.open("wb") as log_file:
        command = [sys.executable, "-m", "aibridge.cli", "proxy", "--listen", f"127.0.0.1:{port}", "--workers", "2"]
        process = subprocess.Popen(command, env=env, stdout=log_file, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        assert answering_workers(process, url, log_path) == {0, 1}
        yield process, url, log_path
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(40)
            except subprocess.TimeoutExpired:
                process.kill()  # its workers follow it (they get SIGTERM when it dies)
                process.wait(10)


def answering_workers(process: subprocess.Popen[bytes], url: str, log_path: Path, timeout: float = 60.0) -> set[int]:
    """Which workers answer /readyz over fresh connections, once both do (or ``timeout`` passes)."""
    seen: set[int] = set()
    deadline = time.monotonic() + timeout
    while seen != {0, 1} and time.monotonic() < deadline:
        assert process.poll() is None, f"the proxy exited:\n{log_path.read_text()}"
        try:
            with httpx.Client(base_url=url, timeout=2) as fresh:
                if fresh.get("/readyz").status_code == 200:
                    seen.add(fresh.get("/healthz").json()["worker"])
        except httpx.TransportError:
            time.sleep(0.1)
    return seen


def worker_pids(supervisor: int) -> list[int]:
    """The supervisor's children that run a worker (not multiprocessing's resource tracker)."""
    pids = []
    for task in Path(f"/proc/{supervisor}/task").glob("*"):
        for child in (task / "children").read_text().split():
            if "multiprocessing.spawn" in Path(f"/proc/{child}/cmdline").read_text().replace("\0", " "):
                pids.append(int(child))
    return pids


def scraped(url: str, metric: str) -> float:
    """``metric`` summed over its series, as one scrape (a fresh connection: any worker) shows it."""
    with httpx.Client(base_url=url, timeout=5) as fresh:
        text = fresh.get("/metrics").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(metric + "{"))


def test_requests_spread_over_both_workers_and_every_scrape_counts_them_all(
    workers: tuple[subprocess.Popen[bytes], str, Path], token: str, kafka_bootstrap: str, kafka_topic: str
) -> None:
    _, url, _ = workers
    served = 20
    for _ in range(served):  # a new client each time: a new connection, placed by the kernel
        client = openai.OpenAI(base_url=f"{url}/api/v2/aibridge/openai/v1", api_key=token, max_retries=0)
        with client:
            answer = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
        assert answer.choices[0].message.content
    for _ in range(6):  # whichever worker answers the scrape, it reports both workers' interceptions
        assert scraped(url, ENDED) == served
    events = asyncio.run(read_events(kafka_bootstrap, kafka_topic, until=ended_count(served), timeout=20))
    assert len({e["interception_id"] for e in events}) == served


async def stream_on_worker(url: str, token: str, wanted: int) -> tuple[httpx.AsyncClient, httpx.Response]:
    """A slow stream on a connection that worker ``wanted`` serves (found with /healthz on it)."""
    for _ in range(50):
        client = httpx.AsyncClient(base_url=url, timeout=30, headers={"x-api-key": token})
        if (await client.get("/healthz")).json()["worker"] == wanted:
            request = client.build_request(
                "POST", OPENAI_PATH, json=STREAM, headers={"x-simulator-chunk-delay-ms": "300"}
            )
            return client, await client.send(request, stream=True)
        await client.aclose()
    raise AssertionError(f"no connection reached worker {wanted}")


async def test_sigterm_drains_an_open_stream_on_each_worker_and_publishes_their_events(
    workers: tuple[subprocess.Popen[bytes], str, Path], token: str, kafka_bootstrap: str, kafka_topic: str
) -> None:
    process, url, log_path = workers
    streams = [await stream_on_worker(url, token, index) for index in (0, 1)]
    chunks = [response.aiter_raw() for _, response in streams]
    firsts = [await anext(chunk) for chunk in chunks]
    process.send_signal(signal.SIGTERM)
    rests = [b"".join([piece async for piece in rest]) for rest in chunks]
    for client, response in streams:
        await response.aclose()
        await client.aclose()
    assert all(first.startswith(b"data: {") for first in firsts)
    assert all(rest.endswith(b"data: [DONE]\n\n") for rest in rests), "an in-flight stream was cut"
    assert await asyncio.to_thread(process.wait, 40) == 0, log_path.read_text()
    events = await read_events(kafka_bootstrap, kafka_topic, until=ended_count(2), timeout=15)
    assert [e["status"] for e in events if e["type"] == "interception.ended"] == ["completed", "completed"]
    assert log_path.read_text().count("Application shutdown complete.") == 2
    assert token not in log_path.read_text()


def test_workers_end_when_the_supervisor_is_killed(workers: tuple[subprocess.Popen[bytes], str, Path]) -> None:
    process, url, _ = workers
    pids = worker_pids(process.pid)
    assert len(pids) == 2
    process.kill()
    process.wait(10)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in pids):
        time.sleep(0.1)
    assert not [pid for pid in pids if Path(f"/proc/{pid}").exists()], "workers outlived their supervisor"
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/healthz", timeout=2)


def test_a_killed_worker_is_started_again_and_the_port_keeps_answering(
    workers: tuple[subprocess.Popen[bytes], str, Path],
) -> None:
    process, url, log_path = workers
    before = worker_pids(process.pid)
    assert len(before) == 2
    os.kill(before[0], signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (set(worker_pids(process.pid)) - set(before)):
        time.sleep(0.2)
    after = worker_pids(process.pid)
    assert len(after) == 2 and before[0] not in after, log_path.read_text()
    assert answering_workers(process, url, log_path) == {0, 1}
    assert "exited with code -9: restarting" in log_path.read_text()
