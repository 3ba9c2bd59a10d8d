"""The tool cache: names the model sees, allow/deny, renderings per provider, forwarded servers per request."""

from __future__ import annotations

import re

import pytest

from aibridge.proxy.mcp import AuthKind, McpServerConfig, ToolFormat
from aibridge.proxy.mcp.registry import (
    LONG_SEARCH,
    ServerTools,
    ToolRegistry,
    count_injected,
    exposed_name,
    injected_at,
)

SCHEMA = {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}
OPENAI_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


@pytest.mark.parametrize("size", [0, 40, LONG_SEARCH - 1, LONG_SEARCH, 3 * LONG_SEARCH])
def test_injected_names_are_found_alike_by_both_searches(size: int) -> None:
    """Short bytes are searched with bytes.find, long ones with the vectorised search: the same answers."""
    text = (b'{"name":"bmcp_docs_search"},{"name":"bmcp_","x":"bmcp_bmcp_"}' * (size // 40 + 1))[:size]
    expected = [at for at in range(len(text)) if text.startswith(b"bmcp_", at)]
    assert injected_at(text) == expected
    assert count_injected(text) == len(expected)


def test_names_are_prefixed_and_fit_openai_rules() -> None:
    assert exposed_name("docs", "search") == "bmcp_docs_search"
    long_tool = "a" * 80
    odd_tool = "search.v2/files"
    for name in (exposed_name("docs", long_tool), exposed_name("docs", odd_tool)):
        assert OPENAI_NAME.match(name) and name.startswith("bmcp_docs_")
    assert exposed_name("docs", long_tool) == exposed_name("docs", long_tool)
    assert len(exposed_name("docs", long_tool)) == 64
    assert exposed_name("docs", "a" * 80) != exposed_name("docs", "a" * 81)
    assert exposed_name("docs", "search.v2") != exposed_name("docs", "search_v2")


def test_allow_and_deny_filter_tools_deny_wins() -> None:
    server = McpServerConfig("gh", "http://x/mcp", allow=re.compile(r"^(search|get)_"), deny=re.compile("secret"))
    listed = [(name, f"{name} tool", SCHEMA) for name in ("search_code", "get_secret", "get_issue", "delete_repo")]
    tools = ServerTools.listed(server, listed)
    assert [tool.name for tool in tools.tools] == ["search_code", "get_issue"]
    assert [tool.exposed_name for tool in tools.tools] == ["bmcp_gh_search_code", "bmcp_gh_get_issue"]


def test_each_provider_gets_its_shape_with_the_schema_unchanged() -> None:
    registry = ToolRegistry([McpServerConfig("docs", "http://x/mcp")])
    registry.update(ServerTools.listed(McpServerConfig("docs", "http://x/mcp"), [("search", "Find pages", SCHEMA)]))
    snapshot = registry.snapshot
    assert snapshot.tools_for(ToolFormat.ANTHROPIC, frozenset()) == [
        {"name": "bmcp_docs_search", "description": "Find pages", "input_schema": SCHEMA}
    ]
    assert snapshot.tools_for(ToolFormat.OPENAI_CHAT, frozenset()) == [
        {
            "type": "function",
            "function": {"name": "bmcp_docs_search", "description": "Find pages", "parameters": SCHEMA},
        }
    ]
    assert snapshot.tools_for(ToolFormat.OPENAI_RESPONSES, frozenset()) == [
        {"type": "function", "name": "bmcp_docs_search", "description": "Find pages", "parameters": SCHEMA}
    ]
    assert snapshot.by_exposed["bmcp_docs_search"].name == "search"


def test_forwarded_servers_tools_only_with_the_callers_token_and_swaps_are_whole() -> None:
    static = McpServerConfig("docs", "http://x/mcp")
    forwarded = McpServerConfig("jira", "http://y/mcp", auth=AuthKind.FORWARD)
    registry = ToolRegistry([static, forwarded])
    registry.update(ServerTools.listed(forwarded, [("issue", "", SCHEMA)]))
    before = registry.snapshot
    registry.update(ServerTools.listed(static, [("search", "", SCHEMA)]))
    assert before.tools_for(ToolFormat.ANTHROPIC, frozenset({"jira"})) == [
        {"name": "bmcp_jira_issue", "description": "", "input_schema": SCHEMA}
    ]  # an old snapshot is never changed under a request that holds it
    names = [t["name"] for t in registry.snapshot.tools_for(ToolFormat.ANTHROPIC, frozenset())]
    assert names == ["bmcp_docs_search"]
    names = [t["name"] for t in registry.snapshot.tools_for(ToolFormat.ANTHROPIC, frozenset({"jira"}))]
    assert names == ["bmcp_docs_search", "bmcp_jira_issue"]  # in the order of the servers file
    registry.remove("docs")
    assert registry.snapshot.tools_for(ToolFormat.ANTHROPIC, frozenset()) == []
