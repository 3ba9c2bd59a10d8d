"""Which AI client sent a request, from its User-Agent and client-specific headers (best effort).

The names are exactly those of Coder's AI Bridge documentation, so filters written for it work here.
Rules are tried in order; the first match wins. Sources of the patterns: what Claude Code 2.1 and Codex
0.171 (installed from npm) were seen sending to a local upstream, and coder/aibridge's own classification
(client.go).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum


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


def classify(user_agent: str | None, headers: Mapping[str, str]) -> Client:
    """``headers`` must answer lower-case names (Starlette's ``Headers`` does)."""
    agent = (user_agent or "").strip().lower()
    for rule in RULES:
        if rule.matches(agent, headers):
            return rule.client
    return Client.UNKNOWN
