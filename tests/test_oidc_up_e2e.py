"""End to end with the identity provider: ``aibridge up`` as a subprocess configured with a local OIDC
provider, a person signing in with ``aibridge login`` (the test approves the device code), their SDK
traffic recorded under the provider's user, an auditor by group seeing it through the API."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from aibridge.testing.broker import free_port
from aibridge.testing.oidc_provider import OidcProvider, User

pytestmark = pytest.mark.slow

ALICE = User("00u-alice", "alice", "alice@example.com", ("engineering",))
AUDREY = User("00u-audrey", "audrey", "audrey@example.com", ("sec-auditors",))


@pytest.fixture
def idp() -> Iterator[OidcProvider]:
    with OidcProvider().serve() as served:
        yield served


@pytest.fixture
def bridge_url(tmp_path: Path, idp: OidcProvider) -> Iterator[str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIBRIDGE_")} | {
        "AIBRIDGE_OIDC_ISSUER": idp.issuer,
        "AIBRIDGE_OIDC_AUDIENCE": idp.client_id,
        "AIBRIDGE_OIDC_AUDITOR_GROUPS": "sec-auditors",
    }
    command = [sys.executable, "-m", "aibridge.cli", "up", "--listen", f"127.0.0.1:{port}", "--data-dir", str(tmp_path)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    output: list[str] = []
    threading.Thread(target=lambda: output.extend(process.stdout or []), daemon=True).start()
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process, output)
        assert idp.jwks_requests == 1, "the keys are fetched at start"
        yield url
    finally:
        process.terminate()
        process.wait(60)


def _wait_ready(url: str, process: subprocess.Popen[str], output: list[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, "aibridge up exited:\n" + "".join(output)
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError("aibridge up did not become ready:\n" + "".join(output))


def sign_in(idp: OidcProvider, bridge_url: str, token_file: Path, user: User) -> str:
    """``aibridge login`` as a subprocess; the test approves the code as ``user`` would in the browser."""
    env = os.environ | {"AIBRIDGE_OIDC_ISSUER": idp.issuer, "AIBRIDGE_OIDC_CLIENT_ID": idp.client_id}
    command = [sys.executable, "-m", "aibridge.cli", "login", "--url", bridge_url, "--token-file", str(token_file)]
    login = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while not idp.devices and time.monotonic() < deadline:
        time.sleep(0.05)
    idp.approve(next(iter(idp.devices.values())).user_code, user)
    out, err = login.communicate(timeout=30)
    assert login.returncode == 0, err
    exports = dict(word.split("=", 1) for line in out.splitlines() for word in line.split()[1:] if "=" in word)
    assert exports["OPENAI_BASE_URL"] == f"{bridge_url}/api/v2/aibridge/openai/v1"
    return exports["OPENAI_API_KEY"]


def interceptions(bridge_url: str, token: str, expect: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 30
    while True:
        answer = httpx.get(f"{bridge_url}/api/v2/aibridge/interceptions", headers={"authorization": f"Bearer {token}"})
        assert answer.status_code == 200, answer.text
        results: list[dict[str, Any]] = answer.json()["results"]
        if len([r for r in results if r["ended_at"]]) >= expect or time.monotonic() > deadline:
            return results
        time.sleep(0.2)


def test_a_person_signs_in_and_their_traffic_is_recorded_under_their_identity(
    idp: OidcProvider, bridge_url: str, tmp_path: Path
) -> None:
    token = sign_in(idp, bridge_url, tmp_path / "alice.json", ALICE)
    client = openai.OpenAI(base_url=f"{bridge_url}/api/v2/aibridge/openai/v1", api_key=token, max_retries=0)
    assert client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}]).choices
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(
            base_url=f"{bridge_url}/api/v2/aibridge/openai/v1", api_key=idp.token(ALICE, lifetime=-600), max_retries=0
        ).chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "expired"}])
    seen_by_auditor = interceptions(bridge_url, idp.token(AUDREY, algorithm="ES256"), expect=1)
    assert [(r["initiator"]["id"], r["initiator"]["username"]) for r in seen_by_auditor] == [("00u-alice", "alice")]
    assert [r["id"] for r in interceptions(bridge_url, token, expect=1)] == [seen_by_auditor[0]["id"]]
    assert interceptions(bridge_url, idp.token(User("00u-bob", "bob", "bob@example.com")), expect=0) == []
