"""``promtool check metrics`` (Prometheus' own linter) on what the services expose.

Two outputs: every metric declared in :mod:`aibridge.metrics` with one sample each (rendered in a fresh
process so this test adds no series to the suite's registry), and the real ``/metrics`` of an
``aibridge up`` process after a request went through its proxy, recorder and API.
promtool comes from Debian's ``prometheus`` package (``scripts/test`` installs it): without it the tests
skip, except in CI (``CI=true``), where they fail.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from aibridge.auth import issue_token, load_private_key
from aibridge.testing.broker import free_port

EVERY_METRIC_WITH_A_SAMPLE = """
from prometheus_client import Counter, Gauge, Histogram, generate_latest
from aibridge import metrics

for name in dir(metrics):
    metric = getattr(metrics, name)
    if isinstance(metric, (Counter, Gauge, Histogram)):
        child = metric.labels(*["x"] * len(metric._labelnames)) if metric._labelnames else metric
        if isinstance(metric, Histogram):
            child.observe(0.3)
        elif isinstance(metric, Counter):
            child.inc()
        else:
            child.set(1)
print(generate_latest().decode(), end="")
"""


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        reason = "promtool is not installed (Debian package 'prometheus'; scripts/test installs it as root)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason + " and CI=true requires this check")
        pytest.skip("SKIPPED, NOT CHECKED: " + reason)
    return found


def check_metrics(promtool: str, exposition: str) -> None:
    result = subprocess.run(
        [promtool, "check", "metrics"], input=exposition, capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, f"promtool check metrics:\n{result.stdout}{result.stderr}"


def test_promtool_rejects_what_it_should(promtool: str) -> None:
    bad = "# HELP aibridge_x_requests Requests.\n# TYPE aibridge_x_requests counter\naibridge_x_requests 1\n"
    with pytest.raises(AssertionError, match='"_total" suffix'):
        check_metrics(promtool, bad)


def test_every_declared_metric_passes_promtool(promtool: str) -> None:
    rendered = subprocess.run(
        [sys.executable, "-c", EVERY_METRIC_WITH_A_SAMPLE], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert "aibridge_proxy_interceptions_ended_total{" in rendered
    assert "aibridge_proxy_overhead_seconds_bucket{" in rendered
    check_metrics(promtool, rendered)


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """``aibridge up`` (all three components, simulated upstream) as a subprocess."""
    data_dir, port = tmp_path_factory.mktemp("up") / "data", free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIBRIDGE_")}
    command = [sys.executable, "-m", "aibridge.cli", "up", "--listen", f"127.0.0.1:{port}", "--data-dir", str(data_dir)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, process)
        yield url, data_dir
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_until_ready(url: str, process: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"aibridge up exited:\n{process.stderr.read() if process.stderr else ''}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError("aibridge up did not become ready")


def sample(exposition: str, prefix: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in exposition.splitlines() if line.startswith(prefix))


def test_metrics_of_aibridge_up_after_traffic_pass_promtool(promtool: str, bridge: tuple[str, Path]) -> None:
    url, data_dir = bridge
    token = issue_token(load_private_key(data_dir / "keys" / "signing_key.pem"), "alice")
    headers = {"Authorization": f"Bearer {token}"}
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    answer = httpx.post(f"{url}/api/v2/aibridge/openai/v1/chat/completions", json=body, headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text
    assert httpx.get(f"{url}/api/v2/aibridge/interceptions", headers=headers, timeout=30).status_code == 200

    deadline = time.monotonic() + 30
    exposition = httpx.get(f"{url}/metrics", timeout=10).text
    while sample(exposition, 'aibridge_recorder_rows_written_total{table="interceptions"}') < 1:
        assert time.monotonic() < deadline, "the recorder stored nothing within 30 s"
        time.sleep(0.2)
        exposition = httpx.get(f"{url}/metrics", timeout=10).text
    assert sample(exposition, "aibridge_api_requests_total{") >= 1
    check_metrics(promtool, exposition)
