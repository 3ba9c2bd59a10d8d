"""End to end through the Kafka protocol: ``aibridge up --bus kafka`` (proxy, recorder, API) with the simulated
provider calling an injected tool of a real MCP server; the API shows the injected call with its server's name
and URL and its duration, and ``aibridge interceptions list --output table`` counts it in its MCP column."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import pytest
from test_spend_e2e import interceptions, wait_ready

from aibridge.auth import Role, issue_token, load_private_key
from aibridge.testing.broker import free_port
from aibridge.testing.mcp_server import McpTestServer

pytestmark = pytest.mark.slow


@pytest.fixture
def bridge(tmp_path: Path, kafka_bootstrap: str) -> Iterator[tuple[str, Path, McpTestServer]]:
    data_dir, port = tmp_path / "data", free_port()
    with McpTestServer() as mcp_server:
        servers = tmp_path / "servers.yaml"
        servers.write_text(f"servers:\n  - name: tools\n    url: {mcp_server.url}\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIBRIDGE_")}
        env |= {"AIBRIDGE_KAFKA_BOOTSTRAP": kafka_bootstrap, "AIBRIDGE_KAFKA_TOPIC": f"mcp.{port}"}
        env |= {"AIBRIDGE_MCP_SERVERS_FILE": str(servers)}
        command = [sys.executable, "-m", "aibridge.cli", "up", "--listen", f"127.0.0.1:{port}"]
        command += ["--data-dir", str(data_dir), "--bus", "kafka", "--simulate-upstream"]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        output: list[str] = []
        threading.Thread(target=lambda: output.extend(process.stdout or []), daemon=True).start()
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(url, process, output)
            yield url, data_dir, mcp_server
        finally:
            process.terminate()
            process.wait(60)


def test_an_injected_call_is_recorded_with_its_server_and_duration(
    bridge: tuple[str, Path, McpTestServer],
) -> None:
    url, data_dir, mcp_server = bridge
    key = load_private_key(data_dir / "keys" / "signing_key.pem")
    alice, auditor = issue_token(key, "alice"), issue_token(key, "audrey", role=Role.AUDITOR)
    client = anthropic.Anthropic(
        base_url=f"{url}/api/v2/aibridge/anthropic",
        api_key=alice,
        max_retries=0,
        default_headers={"x-simulator-mcp-tools": "bmcp_tools_add,bmcp_tools_fail"},
    )
    messages: Any = [{"role": "user", "content": "add 1 and 2, then fail"}]
    message = client.messages.create(model="claude-sonnet-4-5", max_tokens=256, messages=messages)
    assert message.stop_reason == "end_turn"

    [result] = interceptions(url, auditor, expect=1)
    assert len(result["token_usages"]) == 2  # the round with the calls, then the answer
    tools = {tool["tool"]: tool for tool in result["tool_usages"]}
    assert set(tools) == {"bmcp_tools_add", "bmcp_tools_fail"}
    for tool in tools.values():
        assert tool["injected"] is True
        assert (tool["server_name"], tool["server_url"]) == ("tools", mcp_server.url)
        assert isinstance(tool["duration_ms"], float) and tool["duration_ms"] > 0
        assert tool["metadata"]["duration_ms"] == tool["duration_ms"]  # kept in metadata as before
    assert tools["bmcp_tools_add"]["invocation_error"] == ""
    assert tools["bmcp_tools_fail"]["invocation_error"] != ""

    env = os.environ | {"AIBRIDGE_URL": url, "AIBRIDGE_TOKEN": auditor}
    command = [sys.executable, "-m", "aibridge.cli", "interceptions", "list", "--output", "table"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=True)
    header, row = done.stdout.splitlines()
    assert "TOOLS  MCP " in header
    start = header.index("TOOLS")  # fixed-width columns: the row's cells sit under their titles
    assert row[start:].split()[:2] == ["2", "2"]  # two tool calls, both injected
    assert result["id"] in row
