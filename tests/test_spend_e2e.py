"""End to end through the Kafka protocol: ``aibridge up --bus kafka`` (proxy, recorder, API) with the
simulated provider, the official SDKs as clients, the real broker (Tansu) and chDB; the API and
``aibridge usage`` then show what the traffic cost."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from aibridge import pricing
from aibridge.auth import Role, issue_token, load_private_key
from aibridge.testing.broker import free_port

pytestmark = pytest.mark.slow


@pytest.fixture
def bridge(tmp_path: Path, kafka_bootstrap: str) -> Iterator[tuple[str, Path]]:
    data_dir, port = tmp_path / "data", free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIBRIDGE_")}
    env |= {"AIBRIDGE_KAFKA_BOOTSTRAP": kafka_bootstrap, "AIBRIDGE_KAFKA_TOPIC": f"spend.{port}"}
    command = [sys.executable, "-m", "aibridge.cli", "up", "--listen", f"127.0.0.1:{port}"]
    command += ["--data-dir", str(data_dir), "--bus", "kafka", "--simulate-upstream"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    output: list[str] = []
    threading.Thread(target=lambda: output.extend(process.stdout or []), daemon=True).start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process, output)
        yield url, data_dir
    finally:
        process.terminate()
        process.wait(60)


def wait_ready(url: str, process: subprocess.Popen[str], output: list[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError("aibridge up exited:\n" + "".join(output))
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError("aibridge up did not become ready:\n" + "".join(output))


def interceptions(url: str, token: str, expect: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 30
    while True:
        answer = httpx.get(f"{url}/api/v2/aibridge/interceptions", headers={"Authorization": f"Bearer {token}"})
        results: list[dict[str, Any]] = answer.json()["results"]
        done = [r for r in results if r["ended_at"] is not None and r["token_usages"]]
        if len(done) == expect or time.monotonic() > deadline:
            return done
        time.sleep(0.2)


def test_sdk_traffic_is_priced_and_reported(bridge: tuple[str, Path]) -> None:
    url, data_dir = bridge
    key = load_private_key(data_dir / "keys" / "signing_key.pem")
    alice, auditor = issue_token(key, "alice"), issue_token(key, "audrey", role=Role.AUDITOR)
    oai = openai.OpenAI(base_url=f"{url}/api/v2/aibridge/openai/v1", api_key=alice, max_retries=0)
    ant = anthropic.Anthropic(base_url=f"{url}/api/v2/aibridge/anthropic", api_key=alice, max_retries=0)
    messages: Any = [{"role": "user", "content": "What is the weather in Paris?"}]
    completion = oai.chat.completions.create(model="gpt-4o", messages=messages)
    message = ant.messages.create(model="claude-sonnet-4-5", max_tokens=256, messages=messages)
    unknown = oai.chat.completions.create(model="house-model-1", messages=messages)
    assert completion.usage is not None and message.usage and unknown.usage

    results = {r["model"]: r for r in interceptions(url, auditor, expect=3)}
    cached = completion.usage.prompt_tokens_details.cached_tokens if completion.usage.prompt_tokens_details else 0
    gpt = pricing.Tokens(
        completion.usage.prompt_tokens - (cached or 0), completion.usage.completion_tokens, cached or 0
    )
    claude = pricing.Tokens(
        message.usage.input_tokens,
        message.usage.output_tokens,
        message.usage.cache_read_input_tokens or 0,
        message.usage.cache_creation_input_tokens or 0,
    )
    prices = pricing.builtin()
    expected = {
        "gpt-4o": prices.cost("openai", "gpt-4o", gpt),
        "claude-sonnet-4-5": prices.cost("anthropic", "claude-sonnet-4-5", claude),
    }
    for model, cost in expected.items():
        assert cost is not None and cost > 0
        assert Decimal(results[model]["cost"]) == cost
        assert results[model]["token_usages"][0]["cost"] == results[model]["cost"]
    assert results["house-model-1"]["cost"] is None and results["house-model-1"]["cost_unpriced"] is True

    env = os.environ | {"AIBRIDGE_URL": url, "AIBRIDGE_TOKEN": auditor}
    command = [sys.executable, "-m", "aibridge.cli", "usage", "--group-by", "provider", "-o", "csv"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=True)
    rows = {line.split(",")[0]: line.split(",") for line in done.stdout.splitlines()[1:]}
    assert Decimal(rows["anthropic"][6]) == expected["claude-sonnet-4-5"]
    assert Decimal(rows["openai"][6]) == expected["gpt-4o"]
    assert rows["openai"][7] == "1"  # house-model-1 has no price
