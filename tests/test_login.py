"""``aibridge login`` end to end against a local OIDC provider: the device flow (the test approves the
code as the person would), the saved token file (0600), the exports, reuse, refresh, denial; and the
polling rules of RFC 8628."""

from __future__ import annotations

import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from aibridge.cli import main as cli
from aibridge.identity import verify
from aibridge.jwks import KeySource
from aibridge.login import LoginError, load, next_interval, save
from aibridge.oidc import ClaimMapping, OidcVerifier
from aibridge.testing.oidc_provider import OidcProvider, User

BRIDGE = "http://bridge.example:8080"
ALICE = User("00u-alice", "alice", "alice@example.com", ("sec-auditors",))


@pytest.fixture
def idp() -> Iterator[OidcProvider]:
    with OidcProvider(device_interval=1, device_lifetime=10).serve() as served:
        yield served


def login(idp: OidcProvider, token_file: Path, *extra: str) -> int:
    return cli(["login", "--issuer", idp.issuer, "--client-id", idp.client_id, "--url", BRIDGE,
                "--token-file", str(token_file), *extra])  # fmt: skip


def approve_when_asked(idp: OidcProvider, user: User | None, timeout: float = 10.0) -> threading.Thread:
    """Stand in for the person: once a device code is pending, approve it as ``user`` (None: deny)."""

    def person() -> None:
        deadline = time.monotonic() + timeout
        while not idp.devices and time.monotonic() < deadline:
            time.sleep(0.02)
        code = next(iter(idp.devices.values())).user_code
        idp.approve(code, user) if user else idp.deny(code)

    thread = threading.Thread(target=person, daemon=True)
    thread.start()
    return thread


def exported(output: str) -> dict[str, str]:
    pairs = [word.split("=", 1) for line in output.splitlines() if line.startswith("export ") for word in line.split()]
    return {name: value for name, value in (p for p in pairs if len(p) == 2)}


async def test_device_flow_signs_in_saves_the_token_and_prints_the_exports(
    idp: OidcProvider, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token_file = tmp_path / "config" / "token.json"
    person = approve_when_asked(idp, ALICE)
    assert login(idp, token_file) == 0
    person.join()
    out, err = capsys.readouterr()
    assert "To sign in, open" in err and "confirm the code" in err
    exports = exported(out)
    token = exports["AIBRIDGE_TOKEN"]
    assert exports["ANTHROPIC_API_KEY"] == exports["OPENAI_API_KEY"] == token
    assert exports["ANTHROPIC_BASE_URL"] == f"{BRIDGE}/api/v2/aibridge/anthropic"
    assert exports["OPENAI_BASE_URL"] == f"{BRIDGE}/api/v2/aibridge/openai/v1"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    saved = load(token_file)
    assert saved is not None and saved.id_token == token and saved.refresh_token
    mapping = ClaimMapping(auditor_groups=frozenset({"sec-auditors"}))
    identity = await verify(OidcVerifier(KeySource(idp.issuer), idp.client_id, mapping), token)
    assert (identity.user_id, identity.username, identity.role.value) == ("00u-alice", "alice", "auditor")


def test_a_saved_valid_token_is_reused_and_refreshed_on_request_or_near_expiry(
    idp: OidcProvider, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token_file = tmp_path / "token.json"
    approve_when_asked(idp, ALICE)
    assert login(idp, token_file, "--print-token") == 0
    first = capsys.readouterr().out.strip()
    requests = idp.token_requests
    assert login(idp, token_file, "--print-token") == 0
    assert capsys.readouterr().out.strip() == first and idp.token_requests == requests, "reused, no IdP call"
    assert login(idp, token_file, "--print-token", "--refresh") == 0
    refreshed = capsys.readouterr().out.strip()
    assert refreshed != first and idp.token_requests == requests + 1 and not idp.devices
    saved = load(token_file)
    assert saved is not None
    save(token_file, replace(saved, id_token=idp.token(ALICE, lifetime=30)))  # inside the refresh margin
    assert login(idp, token_file, "--print-token") == 0
    assert capsys.readouterr().out.strip() not in (first, refreshed), "refreshed without being asked"
    assert idp.token_requests == requests + 2 and not idp.devices


def test_a_refused_refresh_falls_back_to_a_new_sign_in(
    idp: OidcProvider, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token_file = tmp_path / "token.json"
    approve_when_asked(idp, ALICE)
    assert login(idp, token_file) == 0
    idp.refresh_tokens.clear()  # the provider revoked the refresh token
    approve_when_asked(idp, ALICE)
    assert login(idp, token_file, "--refresh") == 0
    assert "could not refresh the saved token" in capsys.readouterr().err


def test_a_denied_sign_in_fails_with_a_clear_message_and_saves_nothing(
    idp: OidcProvider, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token_file = tmp_path / "token.json"
    approve_when_asked(idp, None)
    assert login(idp, token_file) == 1
    out, err = capsys.readouterr()
    assert "denied" in err and out == "" and not token_file.exists()


def test_missing_configuration_is_named(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIBRIDGE_OIDC_ISSUER", raising=False)
    assert cli(["login", "--client-id", "x", "--url", BRIDGE]) == 2
    assert "AIBRIDGE_OIDC_ISSUER" in capsys.readouterr().err


def test_polling_follows_rfc_8628() -> None:
    assert next_interval("authorization_pending", 5) == 5
    assert next_interval("slow_down", 5) == 10
    for error, message in [("expired_token", "expired"), ("access_denied", "denied"), ("invalid_grant", "refused")]:
        with pytest.raises(LoginError, match=message):
            next_interval(error, 5)
