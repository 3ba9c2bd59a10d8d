"""Which AI client sent a request, from its User-Agent and client-specific headers (best effort), and
where that client puts its session key.

The names are exactly those of Coder's AI Bridge documentation, so filters written for it work here.
Rules are tried in order; the first match wins. Sources of the patterns: what Claude Code 2.1 and Codex
0.171 (installed from npm) were seen sending to a local upstream, and coder/aibridge's own classification
(client.go).

Session keys (:data:`SESSION_KEYS`): Claude Code 2.1.332 sends ``x-claude-code-session-id`` on every
request; Codex 0.171.0 sends ``session-id`` (and ``thread-id``, the same id) and puts the same id in the
Responses body's ``prompt_cache_key``; older codex-rs sent ``session_id``. Any client may send
``x-aibridge-session-id``, which wins over a client's own key. A request without one has no session: the
bridge never groups requests it cannot tell belong together.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final


class Client(StrEnum):
    CLAUDE_CODE = "Claude Code"
    CODEX = "Codex"
    ZED = "Zed"
    COPILOT_VSCODE = "GitHub Copilot (VS Code)"
    COPILOT_CLI = "GitHub Copilot (CLI)"
    KILO_CODE = "Kilo Code"
    ROO_CODE = "Roo Code"
    CURSOR = "Cursor"
    UNKNOWN = "Unknown"


@dataclass(frozen=True, slots=True)
class Rule:
    """Matches when the lower-cased User-Agent starts with ``agent_prefix``, or when ``header``
    is present (and equals ``header_value`` when one is given, case-insensitively)."""

    client: Client
    agent_prefix: str | None = None
    header: str | None = None
    header_value: str | None = None

    def matches(self, user_agent: str, headers: Mapping[str, str]) -> bool:
        if self.agent_prefix is not None and user_agent.startswith(self.agent_prefix):
            return True
        if self.header is None:
            return False
        value = headers.get(self.header)
        if value is None:
            return False
        return self.header_value is None or value.strip().lower() == self.header_value


RULES: tuple[Rule, ...] = (
    Rule(Client.CLAUDE_CODE, agent_prefix="claude-cli/"),
    Rule(Client.CLAUDE_CODE, agent_prefix="claude-code/"),
    Rule(Client.CLAUDE_CODE, header="x-claude-code-session-id"),
    Rule(Client.CODEX, agent_prefix="codex_"),
    Rule(Client.CODEX, agent_prefix="codex/"),
    Rule(Client.CODEX, header="originator", header_value="codex_cli_rs"),
    Rule(Client.CODEX, header="originator", header_value="codex_exec"),
    Rule(Client.ZED, agent_prefix="zed/"),
    Rule(Client.COPILOT_VSCODE, agent_prefix="githubcopilotchat/"),
    Rule(Client.COPILOT_CLI, agent_prefix="copilot/"),
    Rule(Client.KILO_CODE, agent_prefix="kilo-code/"),
    Rule(Client.KILO_CODE, header="originator", header_value="kilo-code"),
    Rule(Client.ROO_CODE, agent_prefix="roo-code/"),
    Rule(Client.ROO_CODE, header="originator", header_value="roo-code"),
    Rule(Client.CURSOR, header="x-cursor-client-version"),
)


_AGENT_PREFIXES: Final = tuple(rule.agent_prefix for rule in RULES if rule.agent_prefix is not None)
_HEADER_NAMES: Final = frozenset(rule.header for rule in RULES if rule.header is not None)


def classify(user_agent: str | None, headers: Mapping[str, str]) -> Client:
    """``headers`` must answer lower-case names (Starlette's ``Headers`` does)."""
    agent = (user_agent or "").strip().lower()
    if not agent.startswith(_AGENT_PREFIXES) and _HEADER_NAMES.isdisjoint(headers):
        return Client.UNKNOWN  # no rule can match: one test for all (most SDKs and scripts)
    for rule in RULES:
        if rule.matches(agent, headers):
            return rule.client
    return Client.UNKNOWN


GENERIC_SESSION_HEADER: Final = "x-aibridge-session-id"


@dataclass(frozen=True, slots=True)
class SessionKey:
    """Where ``client`` sends its session key: the first of ``headers`` present, else the request body's
    ``body_field`` (a string)."""

    client: Client
    headers: tuple[str, ...] = ()
    body_field: str | None = None


SESSION_KEYS: Final[dict[Client, SessionKey]] = {
    key.client: key
    for key in (
        SessionKey(Client.CLAUDE_CODE, headers=("x-claude-code-session-id",)),
        SessionKey(Client.CODEX, headers=("session-id", "session_id"), body_field="prompt_cache_key"),
    )
}


def session_id(client: Client, headers: Mapping[str, str], body: Mapping[str, Any]) -> str:
    """The request's session key ("" when it has none): the generic header, else where ``client`` sends
    one (:data:`SESSION_KEYS`). ``headers`` must answer lower-case names."""
    generic = headers.get(GENERIC_SESSION_HEADER, "").strip()
    if generic:
        return generic
    key = SESSION_KEYS.get(client)
    if key is None:
        return ""
    for name in key.headers:
        value = headers.get(name, "").strip()
        if value:
            return value
    found = body.get(key.body_field) if key.body_field is not None else None
    return found.strip() if isinstance(found, str) else ""
