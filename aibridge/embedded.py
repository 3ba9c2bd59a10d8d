"""The data directory of the embedded bridge (``aibridge up``): keys, admin token, store, dead letters.

First start creates a signing key pair and an admin token there; later starts reuse them, so data and
tokens survive restarts. Settings from the environment always win over what is derived here.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aibridge.auth import (
    PRIVATE_KEY_NAME,
    PUBLIC_KEY_NAME,
    AuthError,
    Role,
    TokenVerifier,
    generate_keypair,
    issue_token,
    load_private_key,
)
from aibridge.settings import CommonSettings, StoreSettings

ADMIN_USER = "admin"
ADMIN_TOKEN_TTL = 365 * 86400


@dataclass
class EmbeddedHome:
    root: Path
    public_key_file: Path
    admin_token: str
    created: bool
    simulated: list[str] = field(default_factory=list)

    @classmethod
    def prepare(cls, root: Path) -> EmbeddedHome:
        root = root.resolve()
        keys = root / "keys"
        created = not (keys / PRIVATE_KEY_NAME).exists()
        if created:
            generate_keypair(keys)
        configured = CommonSettings().auth_public_key_file
        public_key_file = configured or keys / PUBLIC_KEY_NAME
        token = _admin_token(root / "admin.token", keys, public_key_file)
        return cls(root, public_key_file, token, created)

    def overrides(self, host: str, port: int, *, simulate: bool, prefix: str) -> dict[str, object]:
        """Settings for every component of this process, on top of the environment."""
        from aibridge.proxy.settings import ProxySettings

        values: dict[str, object] = {"auth_public_key_file": self.public_key_file}
        if "clickhouse_url" not in StoreSettings().model_fields_set:
            values["clickhouse_url"] = f"chdb://{self.root / 'store'}"
        proxy = ProxySettings()
        if "spool_dir" not in proxy.model_fields_set:
            values["spool_dir"] = self.root / "spool"  # used with --bus kafka only
        base = f"http://{_loopback(host)}:{port}{prefix}"
        if simulate or not proxy.openai_key:
            values |= {"openai_base_url": f"{base}/v1", "openai_key": "simulated"}
            self.simulated.append("openai")
        if simulate or not proxy.anthropic_key:
            values |= {"anthropic_base_url": base, "anthropic_key": "simulated"}
            self.simulated.append("anthropic")
        return values


def _loopback(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "", "localhost", "::") else host


def _admin_token(path: Path, keys: Path, public_key_file: Path) -> str:
    if path.exists():
        token = path.read_text().strip()
        try:
            identity = TokenVerifier.from_files(public_key_file).verify(token)
        except AuthError:
            identity = None
        if identity is not None and identity.expires_at - time.time() > 86400:
            return token
    token = issue_token(
        load_private_key(keys / PRIVATE_KEY_NAME), ADMIN_USER, role=Role.ADMIN, ttl_seconds=ADMIN_TOKEN_TTL
    )
    path.touch(mode=0o600, exist_ok=True)
    path.write_text(token + "\n")
    return token


def _command() -> str:
    """How to call this installation's ``aibridge`` command (the virtualenv may not be on PATH)."""
    beside = Path(sys.executable).parent / "aibridge"
    return str(beside) if beside.exists() and shutil.which("aibridge") != str(beside) else "aibridge"


def print_banner(home: EmbeddedHome, host: str, port: int, components: Sequence[str], bus: str) -> None:
    url = f"http://{_loopback(host)}:{port}"
    token = home.admin_token
    lines = [
        "",
        f"AI Bridge is starting on {url}  (components: {', '.join(components)}; bus: {bus})",
        f"  data directory: {home.root}" + ("  (created: new signing keys and admin token)" if home.created else ""),
    ]
    if home.simulated:
        lines += [
            "",
            "  !!! SIMULATING " + " AND ".join(p.upper() for p in home.simulated) + ": no provider key is set"
            " (or --simulate-upstream); a built-in simulated provider answers. Set AIBRIDGE_OPENAI_KEY /"
            " AIBRIDGE_ANTHROPIC_KEY to proxy to the real providers. !!!",
        ]
    lines += [
        "",
        "Your admin token (also in " + str(home.root / "admin.token") + "):",
        f"  export AIBRIDGE_URL={url} AIBRIDGE_TOKEN={token}",
        "Claude Code:",
        "  export ANTHROPIC_BASE_URL=$AIBRIDGE_URL/api/v2/aibridge/anthropic ANTHROPIC_API_KEY=$AIBRIDGE_TOKEN",
        "Codex / the OpenAI SDK:",
        "  export OPENAI_BASE_URL=$AIBRIDGE_URL/api/v2/aibridge/openai/v1 OPENAI_API_KEY=$AIBRIDGE_TOKEN",
        "Try it:",
        "  curl -s $AIBRIDGE_URL/api/v2/aibridge/openai/v1/chat/completions \\",
        '    -H "Authorization: Bearer $AIBRIDGE_TOKEN" \\',
        "    -H 'Content-Type: application/json' \\",
        '    -d \'{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}\'',
        "Export what was recorded:",
        f"  {_command()} interceptions list --output table",
        '  curl -s $AIBRIDGE_URL/api/v2/aibridge/interceptions -H "Authorization: Bearer $AIBRIDGE_TOKEN"',
        f"Issue tokens for people: AIBRIDGE_AUTH_PRIVATE_KEY_FILE={home.root / 'keys' / PRIVATE_KEY_NAME}"
        f" {_command()} token issue --user NAME",
        "",
    ]
    print("\n".join(lines), flush=True)
