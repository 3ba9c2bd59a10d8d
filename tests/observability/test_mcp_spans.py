"""The spans of injected MCP calls through the real proxy: the simulated provider calls an injected tool of a
real MCP server, and the call's ``Intercept.ProcessRequest.ToolCall`` span is a child of the interception's
``Intercept`` span, in its trace, with the server, the tool and the outcome, blocking and streamed."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import anthropic
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from telemetry_support import PROVIDER_KEY, named, one, parent_of, running_proxy, wait_until

from aibridge import telemetry
from aibridge.auth import TokenVerifier
from aibridge.bus import InProcessBus
from aibridge.settings import DEFAULT_TOPIC
from aibridge.simulator import SimulatorState, create_simulator_app
from aibridge.testing.mcp_server import McpTestServer
from aibridge.testing.server import serve_in_thread

TOOL_CALL = "Intercept.ProcessRequest.ToolCall"


@pytest.fixture(scope="module")
def simulator() -> Iterator[str]:
    app = create_simulator_app(openai_key=PROVIDER_KEY, anthropic_key=PROVIDER_KEY, state=SimulatorState())
    with serve_in_thread(app) as url:
        yield url


@pytest.fixture(scope="module")
def servers_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A servers file naming the MCP test server (running for the module) ``tools``."""
    path = tmp_path_factory.mktemp("mcp") / "servers.yaml"
    with McpTestServer() as server:
        path.write_text(f"servers:\n  - name: tools\n    url: {server.url}\n")
        yield path


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    telemetry.configure(True, exporter=exporter)
    yield exporter
    telemetry.configure(False)


def _ask(url: str, token: str, tools: str, *, stream: bool) -> None:
    client = anthropic.Anthropic(
        base_url=f"{url}/api/v2/aibridge/anthropic", api_key=token, default_headers={"x-simulator-mcp-tools": tools}
    )
    request = {"model": "claude-sonnet-4-5", "max_tokens": 99, "messages": [{"role": "user", "content": "add"}]}
    if stream:
        with client.messages.stream(**request) as answer:  # type: ignore[arg-type]
            message = answer.get_final_message()
    else:
        message = client.messages.create(**request)  # type: ignore[arg-type]
    assert message.stop_reason == "end_turn" and all(block.type == "text" for block in message.content)


SpansOf = Callable[..., list[ReadableSpan]]


@pytest.fixture
def spans_of(
    spans: InMemorySpanExporter,
    simulator: str,
    servers_file: Path,
    verifier: TokenVerifier,
    make_token: Callable[..., str],
) -> SpansOf:
    """``spans_of(tools, stream=...)``: the finished spans of one request through a proxy injecting the tools of
    the MCP test server, the simulated provider calling ``tools``."""
    token = make_token("alice", user_id="user-alice")

    def one_request(tools: str, *, stream: bool) -> list[ReadableSpan]:
        bus = InProcessBus()
        with running_proxy(simulator, bus.producer(), verifier, mcp_servers_file=servers_file) as (url, _):
            spans.clear()  # the tool listing at start is not this request's
            _ask(url, token, tools, stream=stream)
            wait_until(lambda: bus.pending(DEFAULT_TOPIC) >= 1 and one_intercept(spans), what="the Intercept span")
        return list(spans.get_finished_spans())

    return one_request


def one_intercept(spans: InMemorySpanExporter) -> bool:
    return len(named(spans.get_finished_spans(), "Intercept")) == 1


@pytest.mark.parametrize("stream", [False, True], ids=["blocking", "streamed"])
def test_an_injected_call_is_a_tool_call_span_under_the_interception(spans_of: SpansOf, stream: bool) -> None:
    finished = spans_of("bmcp_tools_add", stream=stream)
    intercept = one(finished, "Intercept")
    call = one(finished, TOOL_CALL)
    assert parent_of(call) == intercept.context.span_id
    assert call.context.trace_id == intercept.context.trace_id
    assert call.attributes is not None
    assert dict(call.attributes) == {
        "aibridge.tool.name": "bmcp_tools_add",
        "aibridge.mcp.server": "tools",
        "aibridge.mcp.tool": "add",
        "aibridge.mcp.outcome": "ok",
    }
    assert call.status.status_code is StatusCode.UNSET
    acquire = one(finished, "CachedBridgePool.Acquire")
    assert parent_of(acquire) == call.context.span_id
    assert intercept.start_time is not None and intercept.end_time is not None
    assert call.start_time is not None and call.end_time is not None
    assert intercept.start_time <= call.start_time and call.end_time <= intercept.end_time


@pytest.mark.parametrize("stream", [False, True], ids=["blocking", "streamed"])
def test_a_failed_injected_call_is_an_error_span_with_its_outcome(spans_of: SpansOf, stream: bool) -> None:
    finished = spans_of("bmcp_tools_nowhere", stream=stream)
    intercept = one(finished, "Intercept")
    call = one(finished, TOOL_CALL)
    assert parent_of(call) == intercept.context.span_id
    assert call.attributes is not None and call.attributes["aibridge.mcp.outcome"] == "unknown_tool"
    assert call.attributes["aibridge.tool.name"] == "bmcp_tools_nowhere"
    assert call.status.status_code is StatusCode.ERROR
