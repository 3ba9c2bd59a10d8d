"""MCP injection's cost on a request that makes no injected call: picking the cached tool list and
adding it to the request's own tools, p50 and p99 in microseconds.

A real MCP server (the test server, six tools) is listed once, as the proxy does at start; then each
request asks the injector for its tool list (``tools_for``) and concatenates it to a client tool list,
for each provider format, with and without the opt-out header, and with a forwarded-auth server whose
token the request carries. Timed call by call after a warm-up, in one process:

    .venv/bin/python bench/mcp_tools.py [--rounds 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from aibridge.proxy.mcp import McpInjector, McpSettings, ToolFormat, load_servers
from aibridge.testing.mcp_server import McpTestServer

CLIENT_TOOLS = [{"name": f"client_tool_{i}", "description": "", "input_schema": {"type": "object"}} for i in range(20)]


def timed(step: Callable[[], object], rounds: int) -> tuple[float, float]:
    for _ in range(1000):
        step()
    samples = []
    for _ in range(rounds):
        started = time.perf_counter_ns()
        step()
        samples.append(time.perf_counter_ns() - started)
    samples.sort()
    return statistics.median(samples) / 1000, samples[int(len(samples) * 0.99)] / 1000


async def measure(rounds: int) -> None:
    with McpTestServer() as static, McpTestServer() as forwarded, tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "servers.yaml"
        path.write_text(
            f"servers:\n  - name: docs\n    url: {static.url}\n"
            f"  - name: jira\n    url: {forwarded.url}\n    auth: forward\n"
        )
        injector = McpInjector(load_servers(path), McpSettings(mcp_servers_file=path))
        await injector.start()
        try:
            cases = {
                "anthropic": ({}, ToolFormat.ANTHROPIC),
                "openai_chat": ({}, ToolFormat.OPENAI_CHAT),
                "openai_responses": ({}, ToolFormat.OPENAI_RESPONSES),
                "forwarded token": ({"x-aibridge-mcp-token-jira": "t"}, ToolFormat.ANTHROPIC),
                "opted out": ({"x-aibridge-mcp": "off"}, ToolFormat.ANTHROPIC),
            }
            print(f"{'case':<18} {'tools':>5} {'p50 us':>8} {'p99 us':>8}")
            for name, (headers, shape) in cases.items():
                count = len(injector.tools_for(shape, headers) or [])

                def step(headers: dict[str, str] = headers, shape: ToolFormat = shape) -> object:
                    return CLIENT_TOOLS + (injector.tools_for(shape, headers) or [])

                p50, p99 = timed(step, rounds)
                print(f"{name:<18} {count:>5} {p50:>8.2f} {p99:>8.2f}")
        finally:
            await injector.stop()
    print("rerun: .venv/bin/python bench/mcp_tools.py")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20000)
    asyncio.run(measure(parser.parse_args().rounds))


if __name__ == "__main__":
    main()
