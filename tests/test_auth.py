from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import jwt
import pytest

from aibridge.auth import (
    ExpiredToken,
    InvalidToken,
    MissingToken,
    RevokedToken,
    Role,
    TokenVerifier,
    generate_keypair,
    issue_token,
    load_private_key,
    token_from_headers,
)
from aibridge.cli import main


def test_issued_token_carries_identity(make_token: Callable[..., str], verifier: TokenVerifier) -> None:
    token = make_token("bob", Role.AUDITOR, user_id="u-42")
    identity = verifier.verify(token)
    assert (identity.user_id, identity.username, identity.role) == ("u-42", "bob", Role.AUDITOR)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert jwt.get_unverified_header(token)["alg"] == "EdDSA"
    assert claims["jti"] == identity.token_id and claims["exp"] > time.time()


def test_default_user_id_is_stable(make_token: Callable[..., str], verifier: TokenVerifier) -> None:
    assert verifier.verify(make_token("carol")).user_id == verifier.verify(make_token("carol")).user_id


def test_expired_token_is_refused(keys_dir: Path, verifier: TokenVerifier) -> None:
    key = load_private_key(keys_dir / "signing_key.pem")
    token = issue_token(key, "dave", ttl_seconds=10, now=time.time() - 60)
    with pytest.raises(ExpiredToken):
        verifier.verify(token)


def test_token_signed_by_another_key_is_refused(tmp_path: Path, verifier: TokenVerifier) -> None:
    private_path, _ = generate_keypair(tmp_path)
    token = issue_token(load_private_key(private_path), "mallory", role=Role.ADMIN)
    with pytest.raises(InvalidToken, match="signature"):
        verifier.verify(token)


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "Bearer x"])
def test_malformed_token_is_refused(token: str, verifier: TokenVerifier) -> None:
    with pytest.raises(InvalidToken):
        verifier.verify(token)


def test_revoked_token_is_refused(make_token: Callable[..., str], public_key_file: Path, tmp_path: Path) -> None:
    revoked = tmp_path / "revoked"
    verifier = TokenVerifier.from_files(public_key_file, revoked)
    token = make_token("erin")
    identity = verifier.verify(token)
    revoked.write_text(f"# revoked after a laptop was lost\n{identity.token_id}\n")
    verifier = TokenVerifier.from_files(public_key_file, revoked)
    with pytest.raises(RevokedToken):
        verifier.verify(token)


def test_token_from_headers() -> None:
    assert token_from_headers("Bearer abc", None) == "abc"
    assert token_from_headers(None, "xyz") == "xyz"
    assert token_from_headers("bearer abc", "xyz") == "abc"
    with pytest.raises(MissingToken):
        token_from_headers(None, None)
    with pytest.raises(InvalidToken):
        token_from_headers("Basic dXNlcg==", None)


def test_cli_keygen_and_issue(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["token", "keygen", "--out", str(tmp_path)]) == 0
    monkeypatch.setenv("AIBRIDGE_AUTH_PRIVATE_KEY_FILE", str(tmp_path / "signing_key.pem"))
    capsys.readouterr()
    assert main(["token", "issue", "--user", "frank", "--role", "admin", "--ttl", "1h"]) == 0
    token = capsys.readouterr().out.strip()
    identity = TokenVerifier.from_files(tmp_path / "signing_key.pub.pem").verify(token)
    assert identity.username == "frank" and identity.role is Role.ADMIN
    assert 3500 < identity.expires_at - time.time() <= 3600
