"""Processes, load and the ledger of the chaos test (tests/chaos/test_chaos.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai

UP = [sys.executable, "-m", "aibridge.cli", "up"]


def clean_environment(**settings: str) -> dict[str, str]:
    """This process's environment without any AIBRIDGE_ setting, plus ``settings``."""
    return {k: v for k, v in os.environ.items() if not k.startswith("AIBRIDGE_")} | settings


@dataclass
class Service:
    """One ``aibridge up`` process that can be stopped with SIGTERM and started again."""

    name: str
    args: list[str]
    env: dict[str, str]
    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90.0) -> None:
        with self.log.open("ab") as sink:
            self.process = subprocess.Popen(self.args, env=self.env, stdout=sink, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited at start:\n{self.tail()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"{self.name} was not ready in {timeout}s:\n{self.tail()}")

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM, then wait for the graceful exit."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@dataclass(frozen=True)
class Success:
    prompt: str
    input_tokens: int
    output_tokens: int


@dataclass
class Ledger:
    """What the clients saw: every attempt, and the usage of every request they saw succeed."""

    sent: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    succeeded: list[Success] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def attempt(self) -> None:
        with self.lock:
            self.sent += 1

    def failure(self, exc: Exception) -> None:
        with self.lock:
            self.failed += 1
            name = type(exc).__name__
            self.errors[name] = self.errors.get(name, 0) + 1

    def success(self, success: Success) -> None:
        with self.lock:
            self.succeeded.append(success)


Call = Callable[[str], Success]


def openai_blocking(base_url: str, token: str) -> Call:
    client = openai.OpenAI(base_url=f"{base_url}/api/v2/aibridge/openai/v1", api_key=token, max_retries=0, timeout=60)

    def call(prompt: str) -> Success:
        answer = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": prompt}])
        assert answer.usage is not None and answer.choices[0].message.content
        cached = answer.usage.prompt_tokens_details.cached_tokens if answer.usage.prompt_tokens_details else 0
        return Success(prompt, answer.usage.prompt_tokens - (cached or 0), answer.usage.completion_tokens)

    return call


def openai_streaming(base_url: str, token: str) -> Call:
    client = openai.OpenAI(base_url=f"{base_url}/api/v2/aibridge/openai/v1", api_key=token, max_retries=0, timeout=60)

    def call(prompt: str) -> Success:
        stream = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": prompt}],
            stream=True,
            stream_options={"include_usage": True},
        )
        usage = None
        for chunk in stream:
            usage = chunk.usage or usage
        assert usage is not None, "the stream ended without its usage chunk"
        return Success(prompt, usage.prompt_tokens, usage.completion_tokens)

    return call


def anthropic_streaming(base_url: str, token: str) -> Call:
    client = anthropic.Anthropic(
        base_url=f"{base_url}/api/v2/aibridge/anthropic", api_key=token, max_retries=0, timeout=60
    )

    def call(prompt: str) -> Success:
        with client.messages.stream(
            model="claude-sonnet-4-5", max_tokens=256, messages=[{"role": "user", "content": prompt}]
        ) as stream:
            final = stream.get_final_message()
        assert final.stop_reason == "end_turn"
        return Success(prompt, final.usage.input_tokens, final.usage.output_tokens)

    return call


RETRYABLE = (openai.APIConnectionError, anthropic.APIConnectionError)


def run_client(name: str, call: Call, ledger: Ledger, stop: threading.Event, pause: float = 0.05) -> None:
    """Send requests until ``stop``: a new prompt per attempt, retry connection errors after a pause."""
    attempt = 0
    while not stop.is_set():
        attempt += 1
        prompt = f"chaos {name} #{attempt}"
        ledger.attempt()
        try:
            ledger.success(call(prompt))
        except RETRYABLE as exc:
            ledger.failure(exc)
            time.sleep(0.2)
            continue
        except Exception as exc:  # any other failure is counted and shown; the load goes on
            ledger.failure(exc)
        time.sleep(pause)


def fetch_all_interceptions(api_url: str, admin_token: str) -> list[dict[str, Any]]:
    """Every interception the API returns, newest first, paged with ``after_id``."""
    results: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 1000}
    with httpx.Client(base_url=api_url, timeout=60, headers={"authorization": f"Bearer {admin_token}"}) as client:
        while True:
            response = client.get("/api/v2/aibridge/interceptions", params=params)
            response.raise_for_status()
            page = response.json()["results"]
            results.extend(page)
            if len(page) < params["limit"]:
                return results
            params["after_id"] = page[-1]["id"]
