"""The MCP servers file (``AIBRIDGE_MCP_SERVERS_FILE``): parsed once, every mistake named by its line.

.. code-block:: yaml

    servers:
      - name: docs                      # [a-z0-9-]+, unique; tools are exposed as bmcp_docs_<tool>
        url: https://mcp.example.com/mcp  # Streamable HTTP endpoint
      - name: github
        url: https://mcp.github.example/mcp
        auth: {kind: bearer, token_file: /var/run/secrets/aibridge-mcp/github}
        tool_allow_regex: "^(search|get)_"
        tool_deny_regex: "delete"       # deny wins over allow
      - name: jira
        url: https://jira.example/mcp
        auth: {kind: forward, discovery_token_file: /var/run/secrets/aibridge-mcp/jira-discovery}

``auth`` kinds: ``none`` (the default), ``bearer`` (a static token read from ``token_file``) and
``forward`` (each caller's own token from the ``X-Aibridge-Mcp-Token-<name>`` request header; the tool
list is fetched with the token in ``discovery_token_file`` if set, else without a token).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Final

import yaml
from pydantic import SecretStr

from aibridge.secret_files import read_secret_file

NAME_PATTERN: Final = re.compile(r"[a-z0-9-]+")
SERVER_KEYS: Final = frozenset({"name", "url", "auth", "tool_allow_regex", "tool_deny_regex"})
AUTH_KEYS: Final = {
    "none": frozenset({"kind"}),
    "bearer": frozenset({"kind", "token_file"}),
    "forward": frozenset({"kind", "discovery_token_file"}),
}


class McpConfigError(ValueError):
    """The servers file is unusable; the message names the file and line."""


class AuthKind(StrEnum):
    NONE = "none"
    BEARER = "bearer"
    FORWARD = "forward"


@dataclass(frozen=True)
class McpServerConfig:
    name: str
    url: str
    auth: AuthKind = AuthKind.NONE
    token: SecretStr | None = None
    """The bearer token (``bearer``) or the discovery token (``forward``), read from its file at start."""
    allow: re.Pattern[str] | None = None
    deny: re.Pattern[str] | None = None

    def admits(self, tool: str) -> bool:
        """Whether a tool of this server is injected: not denied, and allowed when an allow rule exists."""
        if self.deny is not None and self.deny.search(tool):
            return False
        return self.allow is None or self.allow.search(tool) is not None


def load_servers(path: Path) -> tuple[McpServerConfig, ...]:
    """The servers declared in ``path``, validated; :class:`McpConfigError` naming the line otherwise."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise McpConfigError(f"AIBRIDGE_MCP_SERVERS_FILE: cannot read {path}: {exc}") from None
    return parse_servers(text, str(path))


def parse_servers(text: str, source: str) -> tuple[McpServerConfig, ...]:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        raise McpConfigError(f"{source}:{line}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    reader = _Reader(source)
    if root is None:
        raise McpConfigError(f"{source}:1: empty file; expected 'servers:' with a list of servers")
    top = reader.mapping(root, frozenset({"servers"}), "the file")
    servers_node = top.get("servers")
    if not isinstance(servers_node, yaml.SequenceNode):
        raise reader.error(servers_node or root, "'servers' must be a list of servers")
    servers = tuple(reader.server(node) for node in servers_node.value)
    reader.check_unique(servers_node, servers)
    return servers


class _Reader:
    """Turns composed YAML nodes into configs; every error carries the node's line."""

    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, node: yaml.Node, message: str) -> McpConfigError:
        return McpConfigError(f"{self.source}:{node.start_mark.line + 1}: {message}")

    def mapping(self, node: yaml.Node, allowed: frozenset[str], what: str) -> dict[str, yaml.Node]:
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, f"{what} must be a mapping")
        found: dict[str, yaml.Node] = {}
        for key, value in node.value:
            name = str(key.value)
            if name not in allowed:
                raise self.error(key, f"unknown key {name!r} in {what} (allowed: {', '.join(sorted(allowed))})")
            if name in found:
                raise self.error(key, f"{name!r} appears twice in {what}")
            found[name] = value
        return found

    def string(self, fields: dict[str, yaml.Node], key: str, parent: yaml.Node, *, required: bool) -> str | None:
        node = fields.get(key)
        if node is None:
            if required:
                raise self.error(parent, f"'{key}' is required")
            return None
        if not isinstance(node, yaml.ScalarNode) or node.tag != "tag:yaml.org,2002:str" or not node.value:
            raise self.error(node, f"'{key}' must be a non-empty string")
        return str(node.value)

    def server(self, node: yaml.Node) -> McpServerConfig:
        fields = self.mapping(node, SERVER_KEYS, "a server")
        name = self.string(fields, "name", node, required=True) or ""
        if not NAME_PATTERN.fullmatch(name):
            raise self.error(fields["name"], f"name {name!r} must match [a-z0-9-]+")
        url = self.string(fields, "url", node, required=True) or ""
        if not url.startswith(("http://", "https://")):
            raise self.error(fields["url"], f"url of {name!r} must start with http:// or https://")
        kind, token = self.auth(fields.get("auth"))
        return McpServerConfig(
            name=name,
            url=url,
            auth=kind,
            token=token,
            allow=self.regex(fields, "tool_allow_regex", node),
            deny=self.regex(fields, "tool_deny_regex", node),
        )

    def auth(self, node: yaml.Node | None) -> tuple[AuthKind, SecretStr | None]:
        if node is None:
            return AuthKind.NONE, None
        if isinstance(node, yaml.ScalarNode) and node.value in ("none", "forward"):
            return AuthKind(node.value), None
        kind_node = node.value if isinstance(node, yaml.MappingNode) else []
        kind = next((str(v.value) for k, v in kind_node if k.value == "kind"), None)
        if kind not in AUTH_KEYS:
            raise self.error(node, "auth must be none, forward or a mapping with kind: none, bearer or forward")
        fields = self.mapping(node, AUTH_KEYS[kind], f"auth of kind {kind}")
        file_key = "token_file" if kind == "bearer" else "discovery_token_file"
        path = self.string(fields, file_key, node, required=kind == "bearer")
        if path is None:
            return AuthKind(kind), None
        try:
            return AuthKind(kind), SecretStr(read_secret_file(Path(path), file_key))
        except ValueError as exc:
            raise self.error(fields[file_key], str(exc)) from None

    def regex(self, fields: dict[str, yaml.Node], key: str, parent: yaml.Node) -> re.Pattern[str] | None:
        pattern = self.string(fields, key, parent, required=False)
        if pattern is None:
            return None
        try:
            return re.compile(pattern)
        except re.error as exc:
            raise self.error(fields[key], f"{key} is not a valid regular expression: {exc}") from None

    def check_unique(self, node: yaml.SequenceNode, servers: tuple[McpServerConfig, ...]) -> None:
        seen: set[str] = set()
        for item, server in zip(node.value, servers, strict=True):
            if server.name in seen:
                raise self.error(item, f"server name {server.name!r} is used twice")
            seen.add(server.name)
