"""The tool cache: each server's tools, named for the model, rendered once per provider format per refresh.

A :class:`ToolSnapshot` is immutable; a refresh builds a new one and :class:`ToolRegistry` swaps it in
with one assignment, so a request sees either the old list or the new one, never a mix. Requests only
read: the tool definitions they add are lists built here, never per request.

Exposed names are ``bmcp_<server>_<tool>``. OpenAI accepts function names of at most 64 characters from
``[a-zA-Z0-9_-]``: other characters become ``_``, and a name that was changed or is longer than 64
keeps its first 55 characters followed by ``_`` and 8 hex digits of the SHA-256 of the full name, so
the same tool always gets the same name and two tools never share one.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final

from ahocorasick_rs import BytesAhoCorasick

from aibridge.proxy.mcp.config import AuthKind, McpServerConfig

PREFIX: Final = "bmcp_"
INJECTED: Final = PREFIX.encode()  # as it shows in the bytes of a request or an answer
# Bytes from which the vectorised search beats bytes.find/count. With its code in the CPU's caches it does
# from about 1 KiB, but a proxy between requests has had its caches taken by other work, and then a call of
# it costs more than bytes.find over a few KiB (bench/mcp_overhead.py reads the effect on whole requests).
LONG_SEARCH: Final = 4 * 1024
_FINDER: Final = BytesAhoCorasick([INJECTED])
MAX_NAME: Final = 64
_HASH_DIGITS: Final = 8
_INVALID: Final = re.compile(r"[^a-zA-Z0-9_-]")

JsonObject = dict[str, Any]


def count_injected(raw: bytes) -> int:
    """How often ``bmcp_`` occurs in ``raw`` (on long bytes by a vectorised search: bytes.count takes about
    11 µs for an echo event of 27 KiB)."""
    return len(_FINDER.find_matches_as_indexes(raw)) if len(raw) >= LONG_SEARCH else raw.count(INJECTED)


def injected_at(raw: bytes) -> list[int]:
    """Where each ``bmcp_`` in ``raw`` starts, in order (one vectorised search over long bytes)."""
    if len(raw) >= LONG_SEARCH:
        return [start for _, start, _ in _FINDER.find_matches_as_indexes(raw)]
    found = []
    at = raw.find(INJECTED)
    while at >= 0:
        found.append(at)
        at = raw.find(INJECTED, at + len(INJECTED))
    return found


class ToolFormat(StrEnum):
    """The shapes in which the three provider APIs take tool definitions."""

    ANTHROPIC = "anthropic"  # {"name", "description", "input_schema"}
    OPENAI_CHAT = "openai_chat"  # {"type": "function", "function": {"name", "description", "parameters"}}
    OPENAI_RESPONSES = "openai_responses"  # {"type": "function", "name", "description", "parameters"}


@dataclass(frozen=True)
class McpTool:
    server: str
    name: str
    """The tool's name on its server (what ``tools/call`` is sent)."""
    exposed_name: str
    """The name the model sees."""
    description: str
    input_schema: JsonObject


def exposed_name(server: str, tool: str) -> str:
    full = f"{PREFIX}{server}_{tool}"
    clean = _INVALID.sub("_", full)
    if clean == full and len(full) <= MAX_NAME:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:_HASH_DIGITS]
    return f"{clean[: MAX_NAME - _HASH_DIGITS - 1]}_{digest}"


def render(tool: McpTool, shape: ToolFormat) -> JsonObject:
    if shape is ToolFormat.ANTHROPIC:
        return {"name": tool.exposed_name, "description": tool.description, "input_schema": tool.input_schema}
    if shape is ToolFormat.OPENAI_CHAT:
        function = {"name": tool.exposed_name, "description": tool.description, "parameters": tool.input_schema}
        return {"type": "function", "function": function}
    return {
        "type": "function",
        "name": tool.exposed_name,
        "description": tool.description,
        "parameters": tool.input_schema,
    }


@dataclass(frozen=True)
class ServerTools:
    """One server's tools as last listed (admitted by its allow/deny rules), rendered in every format."""

    server: McpServerConfig
    tools: tuple[McpTool, ...]
    rendered: Mapping[ToolFormat, tuple[JsonObject, ...]] = field(init=False)

    def __post_init__(self) -> None:
        rendered = {shape: tuple(render(tool, shape) for tool in self.tools) for shape in ToolFormat}
        object.__setattr__(self, "rendered", MappingProxyType(rendered))

    @classmethod
    def listed(cls, server: McpServerConfig, listed: Iterable[tuple[str, str, JsonObject]]) -> ServerTools:
        """From ``(name, description, input_schema)`` as the server listed them."""
        tools = tuple(
            McpTool(server.name, name, exposed_name(server.name, name), description, schema)
            for name, description, schema in listed
            if server.admits(name)
        )
        return cls(server, tools)


@dataclass(frozen=True)
class ToolSnapshot:
    """Every server's tools at one moment. ``static`` lists (servers not using forwarded auth) are joined once;
    a request adds a forwarded server's list only when it carries that server's token."""

    servers: Mapping[str, ServerTools]
    by_exposed: Mapping[str, McpTool] = field(init=False)
    static: Mapping[ToolFormat, list[JsonObject]] = field(init=False)
    forwarded: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        tools = [tool for entry in self.servers.values() for tool in entry.tools]
        object.__setattr__(self, "by_exposed", MappingProxyType({tool.exposed_name: tool for tool in tools}))
        plain = [entry for entry in self.servers.values() if entry.server.auth is not AuthKind.FORWARD]
        static = {shape: [item for entry in plain for item in entry.rendered[shape]] for shape in ToolFormat}
        object.__setattr__(self, "static", MappingProxyType(static))
        forwarded = tuple(name for name, entry in self.servers.items() if entry.server.auth is AuthKind.FORWARD)
        object.__setattr__(self, "forwarded", forwarded)

    def tools_for(self, shape: ToolFormat, forwarded_servers: frozenset[str]) -> list[JsonObject]:
        """The definitions to add for a request that carries tokens for ``forwarded_servers``.

        The returned list is shared: callers concatenate it, never mutate it."""
        with_tokens = [name for name in self.forwarded if name in forwarded_servers]
        if not with_tokens:
            return self.static[shape]
        return self.static[shape] + [item for name in with_tokens for item in self.servers[name].rendered[shape]]

    def tool_count(self, server: str) -> int:
        entry = self.servers.get(server)
        return len(entry.tools) if entry is not None else 0


EMPTY: Final = ToolSnapshot(MappingProxyType({}))


class ToolRegistry:
    """Holds the current snapshot; :meth:`update` replaces one server's tools (or removes them) atomically."""

    def __init__(self, servers: Iterable[McpServerConfig]) -> None:
        self.order = tuple(server.name for server in servers)
        self.snapshot = EMPTY

    def update(self, server_tools: ServerTools) -> None:
        self._swap({**self.snapshot.servers, server_tools.server.name: server_tools})

    def remove(self, server: str) -> None:
        self._swap({name: entry for name, entry in self.snapshot.servers.items() if name != server})

    def _swap(self, servers: dict[str, ServerTools]) -> None:
        ordered = {name: servers[name] for name in self.order if name in servers}
        self.snapshot = ToolSnapshot(MappingProxyType(ordered))
