"""End to end: ``aibridge up`` as a subprocess, driven by the official SDKs, the CLI and the REST API."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from aibridge.auth import Role, issue_token, load_private_key
from aibridge.testing.broker import free_port

pytestmark = pytest.mark.slow

WEATHER_TOOL_OPENAI = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
WEATHER_TOOL_ANTHROPIC = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@dataclass
class Bridge:
    url: str
    data_dir: Path
    process: subprocess.Popen[str]
    output: list[str]

    @property
    def admin_token(self) -> str:
        return (self.data_dir / "admin.token").read_text().strip()

    def token(self, user: str, role: Role = Role.MEMBER) -> str:
        return issue_token(load_private_key(self.data_dir / "keys" / "signing_key.pem"), user, role=role)

    def stop(self) -> int:
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(60)


def start_bridge(data_dir: Path, port: int) -> Bridge:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIBRIDGE_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "aibridge.cli", "up", "--listen", f"127.0.0.1:{port}", "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    output: list[str] = []
    assert process.stdout is not None
    threading.Thread(target=lambda: output.extend(process.stdout or []), daemon=True).start()
    bridge = Bridge(f"http://127.0.0.1:{port}", data_dir, process, output)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError("aibridge up exited:\n" + "".join(output))
        try:
            if httpx.get(f"{bridge.url}/readyz", timeout=1).status_code == 200:
                return bridge
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    raise AssertionError("aibridge up did not become ready:\n" + "".join(output))


@pytest.fixture
def bridge(tmp_path: Path) -> Iterator[Bridge]:
    running = start_bridge(tmp_path / "data", free_port())
    yield running
    if running.process.poll() is None:
        running.process.kill()
        running.process.wait()


def list_interceptions(bridge: Bridge, token: str, q: str = "", expect: int | None = None) -> dict[str, Any]:
    """Poll the REST API until ``expect`` finished interceptions are listed (recording is asynchronous)."""
    deadline = time.monotonic() + 30
    while True:
        response = httpx.get(
            f"{bridge.url}/api/v2/aibridge/interceptions",
            params={"q": q, "limit": 1000},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        finished = [r for r in body["results"] if r["ended_at"] is not None]
        if expect is None or len(finished) == expect or time.monotonic() > deadline:
            return body
        time.sleep(0.2)


def send_traffic(bridge: Bridge, token: str) -> None:
    oai = openai.OpenAI(base_url=f"{bridge.url}/api/v2/aibridge/openai/v1", api_key=token, max_retries=0)
    ant = anthropic.Anthropic(base_url=f"{bridge.url}/api/v2/aibridge/anthropic", api_key=token, max_retries=0)
    messages: Any = [{"role": "user", "content": "What is the weather in Paris?"}]
    completion = oai.chat.completions.create(model="gpt-4o", messages=messages)
    assert completion.choices[0].message.content
    with_tool = oai.chat.completions.create(model="gpt-4o", messages=messages, tools=[WEATHER_TOOL_OPENAI])
    assert with_tool.choices[0].message.tool_calls
    chunks = list(oai.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True))
    assert chunks and all(chunk.usage is None for chunk in chunks)
    message = ant.messages.create(model="claude-sonnet-4-5", max_tokens=256, messages=messages)
    assert message.content
    with ant.messages.stream(
        model="claude-sonnet-4-5", max_tokens=256, messages=messages, tools=[WEATHER_TOOL_ANTHROPIC]
    ) as stream:
        final = stream.get_final_message()
    assert any(block.type == "tool_use" for block in final.content)


def run_cli(bridge: Bridge, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"AIBRIDGE_URL": bridge.url, "AIBRIDGE_TOKEN": token}
    command = [sys.executable, "-m", "aibridge.cli", "interceptions", "list", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)


def test_up_records_sdk_traffic_lists_it_and_keeps_it_across_restarts(bridge: Bridge) -> None:
    admin = bridge.admin_token
    alice = bridge.token("alice")
    send_traffic(bridge, alice)
    send_traffic(bridge, bridge.token("bob"))

    everything = list_interceptions(bridge, admin, expect=10)
    assert everything["count"] == 10
    by_provider = list_interceptions(bridge, admin, "provider:anthropic initiator:alice")
    assert by_provider["count"] == 2
    assert {r["initiator"]["username"] for r in by_provider["results"]} == {"alice"}
    streamed = list_interceptions(bridge, admin, "model:gpt-4o-mini")["results"]
    assert len(streamed) == 2 and all(r["token_usages"] and r["user_prompts"] for r in streamed)
    assert streamed[0]["user_prompts"][0]["prompt"] == "What is the weather in Paris?"
    tools = [t for r in list_interceptions(bridge, admin)["results"] for t in r["tool_usages"]]
    assert len(tools) == 4 and {t["tool"] for t in tools} == {"get_weather"}

    own = list_interceptions(bridge, alice)
    assert own["count"] == 5 and {r["initiator"]["username"] for r in own["results"]} == {"alice"}
    forbidden = httpx.get(
        f"{bridge.url}/api/v2/aibridge/interceptions",
        params={"q": "initiator:bob"},
        headers={"Authorization": f"Bearer {alice}"},
    )
    assert forbidden.status_code == 403

    cli = run_cli(bridge, admin, "--provider", "openai", "--initiator", "bob", "--output", "jsonl")
    assert cli.returncode == 0, cli.stderr
    rows = [json.loads(line) for line in cli.stdout.splitlines()]
    assert len(rows) == 3 and {r["provider"] for r in rows} == {"openai"}
    ids_before = sorted(r["id"] for r in everything["results"])

    assert bridge.stop() == 0
    restarted = start_bridge(bridge.data_dir, free_port())
    try:
        after = list_interceptions(restarted, admin)
        assert sorted(r["id"] for r in after["results"]) == ids_before
    finally:
        restarted.stop()


def test_ctrl_c_lets_an_in_flight_stream_finish_and_stores_it(bridge: Bridge) -> None:
    token = bridge.admin_token
    client = openai.OpenAI(base_url=f"{bridge.url}/api/v2/aibridge/openai/v1", api_key=token, max_retries=0)
    stream = client.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "Tell me a long story"}],
        stream=True,
        extra_headers={"x-simulator-chunk-delay-ms": "150"},
    )
    first = next(iter(stream))
    assert first is not None
    bridge.process.send_signal(signal.SIGINT)
    rest = list(stream)
    assert rest and rest[-1].choices[0].finish_reason == "stop"
    assert bridge.process.wait(60) == 0

    restarted = start_bridge(bridge.data_dir, free_port())
    try:
        body = list_interceptions(restarted, token, expect=1)
        (interception,) = body["results"]
        assert interception["ended_at"] is not None and interception["token_usages"]
    finally:
        restarted.stop()


def test_bad_listen_address_is_a_clear_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "aibridge.cli", "up", "--listen", "nonsense", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "--listen must be HOST:PORT" in result.stderr
