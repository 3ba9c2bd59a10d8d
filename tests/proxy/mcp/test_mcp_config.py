"""The servers file: a full example loads; each kind of mistake is refused with its line."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from aibridge.proxy.mcp import AuthKind, McpConfigError, McpSettings, load_servers, parse_servers


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "servers.yaml"
    path.write_text(text)
    return path


def test_full_example_loads(tmp_path: Path) -> None:
    (tmp_path / "github").write_text("ghp-static\n")
    (tmp_path / "discovery").write_text("discover-me")
    servers = load_servers(
        _write(
            tmp_path,
            f"""
servers:
  - name: docs
    url: https://docs.example/mcp
  - name: github
    url: https://github.example/mcp
    auth: {{kind: bearer, token_file: {tmp_path / "github"}}}
    tool_allow_regex: "^(search|get)_"
    tool_deny_regex: "delete"
  - name: jira-cloud
    url: http://jira.example/mcp
    auth:
      kind: forward
      discovery_token_file: {tmp_path / "discovery"}
  - name: wiki
    url: http://wiki.example/mcp
    auth: forward
""",
        )
    )
    docs, github, jira, wiki = servers
    assert (docs.name, docs.url, docs.auth, docs.token) == ("docs", "https://docs.example/mcp", AuthKind.NONE, None)
    assert github.auth is AuthKind.BEARER and github.token is not None
    assert github.token.get_secret_value() == "ghp-static"
    assert "ghp-static" not in repr(github)
    assert jira.auth is AuthKind.FORWARD and jira.token is not None
    assert jira.token.get_secret_value() == "discover-me"
    assert wiki.auth is AuthKind.FORWARD and wiki.token is None
    assert [github.admits(t) for t in ("search_code", "get_issue", "get_and_delete", "create_issue")] == [
        True,
        True,
        False,
        False,
    ]
    assert docs.admits("anything")


BAD_FILES = [
    ("servers:\n  - name: a\n    url: http://x: y\n", 3, "not valid YAML"),
    ("servers: {}\n", 1, "'servers' must be a list"),
    ("other: 1\n", 1, "unknown key 'other'"),
    ("servers:\n  - name: ok\n    url: http://x/mcp\n  - name: Bad_Name\n    url: http://y/mcp\n", 4, "[a-z0-9-]+"),
    ("servers:\n  - name: a\n    url: ftp://x/mcp\n", 3, "http:// or https://"),
    ("servers:\n  - name: a\n\n    urll: http://x\n", 4, "unknown key 'urll'"),
    ("servers:\n  - name: a\n    url: http://x\n    auth: {kind: bearer}\n", 4, "'token_file' is required"),
    ("servers:\n  - name: a\n    url: http://x\n    auth: {kind: magic}\n", 4, "kind: none, bearer or forward"),
    ("servers:\n  - name: a\n    url: http://x\n    auth: {kind: forward, token_file: /x}\n", 4, "unknown key"),
    (
        "servers:\n  - name: a\n    url: http://x\n    auth:\n      kind: bearer\n      token_file: /nonexistent/t\n",
        6,
        "cannot read",
    ),
    ("servers:\n  - name: a\n    url: http://x\n    tool_deny_regex: '(['\n", 4, "not a valid regular expression"),
    ("servers:\n  - name: a\n    url: http://x\n  - name: a\n    url: http://y\n", 4, "used twice"),
    ("servers:\n  - name: a\n", 2, "'url' is required"),
    ("servers:\n  - name: 7\n    url: http://x\n", 2, "must be a non-empty string"),
    ("", 1, "empty file"),
]


@pytest.mark.parametrize(("text", "line", "message"), BAD_FILES)
def test_a_bad_file_is_refused_naming_the_line(text: str, line: int, message: str) -> None:
    with pytest.raises(McpConfigError) as caught:
        parse_servers(text, "servers.yaml")
    assert str(caught.value).startswith(f"servers.yaml:{line}: "), str(caught.value)
    assert message in str(caught.value)


def test_settings_refuse_a_bad_file_at_start(tmp_path: Path) -> None:
    path = _write(tmp_path, "servers:\n  - name: ok\n    url: http://x/mcp\n    auth: {kind: bearer}\n")
    with pytest.raises(ValidationError) as caught:
        McpSettings(mcp_servers_file=path)
    assert f"{path}:4: 'token_file' is required" in str(caught.value)


def test_injection_is_off_without_a_file() -> None:
    from aibridge.proxy.mcp import McpInjector

    assert McpInjector.from_settings(McpSettings()) is None
