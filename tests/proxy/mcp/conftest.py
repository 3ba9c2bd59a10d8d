"""A real MCP server (the SDK over Streamable HTTP) per module, and injectors built from a servers file."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from aibridge.proxy.mcp import McpInjector, McpSettings, load_servers
from aibridge.testing.mcp_server import McpTestServer

InjectorFactory = Callable[..., Any]


@pytest.fixture
def mcp_server() -> Iterator[McpTestServer]:
    with McpTestServer() as server:
        yield server


@pytest.fixture
async def make_injector(tmp_path: Path) -> AsyncIterator[InjectorFactory]:
    """``await make_injector(yaml_text, **settings)``: a started injector, stopped after the test."""
    async with AsyncExitStack() as stack:

        async def make(servers_yaml: str, *, start: bool = True, **overrides: Any) -> McpInjector:
            path = tmp_path / f"servers-{len(stack._exit_callbacks)}.yaml"
            path.write_text(servers_yaml)
            settings = McpSettings(mcp_servers_file=path, **overrides)
            injector = McpInjector(load_servers(path), settings, backoff_base=0.05)
            if start:
                await injector.start()
            stack.push_async_callback(injector.stop)
            return injector

        yield make
