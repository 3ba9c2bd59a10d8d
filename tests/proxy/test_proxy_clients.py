"""Client classification against real User-Agent strings and client-specific headers."""

from __future__ import annotations

import pytest
from starlette.datastructures import Headers

from aibridge.proxy.clients import Client, classify, session_id

# (user agent, extra headers, expected client, where the string comes from)
CASES = [
    ("claude-cli/2.1.332 (external, sdk-cli)", {}, Client.CLAUDE_CODE, "observed from Claude Code 2.1.332"),
    ("claude-cli/2.0.67 (external, cli)", {}, Client.CLAUDE_CODE, "coder/aibridge client_test.go"),
    ("", {"x-claude-code-session-id": "0b7e"}, Client.CLAUDE_CODE, "observed header, Claude Code"),
    (
        "codex_exec/0.171.0 (Debian 12.0.0; x86_64) xterm (codex_exec; 0.171.0)",
        {},
        Client.CODEX,
        "observed from Codex 0.171.0",
    ),
    (
        "codex_cli_rs/0.87.0 (Mac OS 26.2.0; arm64) ghostty/1.3.0-main_250877ef",
        {},
        Client.CODEX,
        "coder/aibridge client_test.go",
    ),
    ("Zed/0.219.4+stable.119.abc123 (macos; aarch64)", {}, Client.ZED, "coder/aibridge client_test.go"),
    ("GitHubCopilotChat/0.37.2026011603", {}, Client.COPILOT_VSCODE, "coder/aibridge client_test.go"),
    ("copilot/0.0.403 (client/cli linux v24.11.1)", {}, Client.COPILOT_CLI, "coder/aibridge client_test.go"),
    ("kilo-code/5.1.0 (darwin 25.2.0; arm64) node/22.21.1", {}, Client.KILO_CODE, "coder/aibridge client_test.go"),
    ("OpenAI/JS 5.10.1", {"originator": "kilo-code"}, Client.KILO_CODE, "coder/aibridge client_test.go"),
    ("roo-code/3.45.0 (darwin 25.2.0; arm64) node/22.21.1", {}, Client.ROO_CODE, "coder/aibridge client_test.go"),
    ("OpenAI/JS 5.10.1", {"originator": "Roo-Code"}, Client.ROO_CODE, "coder/aibridge client_test.go"),
    ("connect-es/1.6.1", {"x-cursor-client-version": "0.50.0"}, Client.CURSOR, "coder/aibridge client_test.go"),
    ("ccclaude-cli/calude-with-wrong-prefix", {}, Client.UNKNOWN, "coder/aibridge client_test.go"),
    ("", {}, Client.UNKNOWN, "no user agent"),
    ("AsyncOpenAI/Python 3.57.0", {}, Client.UNKNOWN, "the openai SDK installed here"),
    ("Anthropic/Python 2.14.0", {}, Client.UNKNOWN, "the anthropic SDK installed here"),
    ("mux/0.14.0", {}, Client.UNKNOWN, "Mux: not one of the documented names"),
]


@pytest.mark.parametrize(("user_agent", "headers", "expected", "source"), CASES, ids=[c[0] or str(c[1]) for c in CASES])
def test_classify(user_agent: str, headers: dict[str, str], expected: Client, source: str) -> None:
    assert classify(user_agent, Headers(headers)) is expected, source


def test_every_documented_name_is_reachable_and_nothing_else() -> None:
    documented = {
        "Claude Code",
        "Codex",
        "Zed",
        "GitHub Copilot (VS Code)",
        "GitHub Copilot (CLI)",
        "Kilo Code",
        "Roo Code",
        "Cursor",
        "Unknown",
    }
    assert {client.value for client in Client} == documented
    assert {case[2] for case in CASES} == set(Client)


# (client, headers, body, expected session key)
SESSION_CASES = [
    (Client.CLAUDE_CODE, {"x-claude-code-session-id": "cc-1"}, {}, "cc-1"),
    (Client.CODEX, {"session-id": "cx-1", "thread-id": "cx-1"}, {"prompt_cache_key": "other"}, "cx-1"),
    (Client.CODEX, {"session_id": "cx-old"}, {}, "cx-old"),
    (Client.CODEX, {}, {"prompt_cache_key": "cx-body"}, "cx-body"),
    (Client.CODEX, {}, {"prompt_cache_key": 42}, ""),
    (Client.UNKNOWN, {"x-aibridge-session-id": " generic "}, {}, "generic"),
    (Client.CLAUDE_CODE, {"x-aibridge-session-id": "g", "x-claude-code-session-id": "cc"}, {}, "g"),
    (Client.UNKNOWN, {"session-id": "x", "x-claude-code-session-id": "y"}, {"prompt_cache_key": "z"}, ""),
    (Client.CURSOR, {}, {}, ""),
]


@pytest.mark.parametrize(("client", "headers", "body", "expected"), SESSION_CASES)
def test_session_key_is_read_where_the_client_sends_it(
    client: Client, headers: dict[str, str], body: dict[str, object], expected: str
) -> None:
    assert session_id(client, headers, body) == expected


def test_every_rule_is_reached_past_the_quick_test_for_no_match() -> None:
    """The quick test for a request no rule matches must let every rule's own match through."""
    from aibridge.proxy.clients import RULES, classify

    for rule in RULES:
        agent = f"{rule.agent_prefix}1.0" if rule.agent_prefix else "python-httpx/0.28"
        headers = {rule.header: rule.header_value or "x"} if rule.header else {}
        expected = next(r.client for r in RULES if r.matches(agent.lower(), headers))
        assert classify(agent, headers) == expected  # the first matching rule, as without the quick test
        assert expected is not Client.UNKNOWN
