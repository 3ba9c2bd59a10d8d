"""What MCP tool injection costs a request through the real proxy, interleaved in one run.

Three proxies' worth of targets share one open-loop generator (``proxy_overhead.py``), taking turns in
1-second windows so a drift of the shared machine lands on all alike:

- ``direct``: the simulated provider itself;
- ``off``: ``aibridge proxy`` without a servers file (injection off);
- ``on``: ``aibridge proxy`` with a servers file naming the MCP test server
  (``python -m aibridge.testing.mcp_server``, six tools): the tools are added to every request;
- ``off-2``: a second proxy without a servers file, so ``off-2`` minus ``off`` (an A/A difference) shows
  the noise floor of the run.

Every request carries ``x-simulator-mcp-rounds: 0``, so the simulated model never calls an injected tool:
``on`` minus ``off`` is what adding the tools costs (the tool list merged into the body, the body
re-encoded, the answer read by the loop; streamed: the stream searched for an injected name as it is
relayed, the round read for the record after the answer is out). This is measured for a small chat
body and for a Claude Code-sized one (about 200 KB: a long system prompt, 40 client tools, 60 messages),
blocking and streamed.

Then the cost of one round: the same small request with the model calling one injected tool once
(``bmcp_tools_add``) against ``off``. Its parts: the MCP call (the proxy's own
``aibridge_mcp_call_duration_seconds``, its mean over the run) and the extra upstream round (``direct``'s
p50 for the same request); the rest is the bridge's loop (reading the answer, the follow-up body, merging).

Last, in this process, where microseconds are measurable: re-encoding the large body with ``orjson.dumps``
(what the proxy does once tools are added), and what injection adds to one request's own work with no
injected call (the run begun, the answer read by the loop; streamed: a 60-word stream read as the proxy
reads it, and with the round's reading for the record, done after the answer is out), p50 in microseconds.

Rerun:  .venv/bin/python bench/mcp_overhead.py --duration 10   # about 5 minutes
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import ExitStack, nullcontext
from functools import partial
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).parent))
import proxy_ab
import proxy_overhead as po
import results as bench_results

NO_CALL = {"x-simulator-mcp-rounds": "0"}
ONE_CALL = {"x-simulator-mcp-rounds": "1", "x-simulator-mcp-tools": "bmcp_tools_add"}


def claude_code_sized_body(target_kib: int = 200) -> dict[str, Any]:
    """A chat request the size of a long coding session: a long system prompt, 40 tools with JSON schemas,
    and turns of text, tool calls and tool results until the body is about ``target_kib`` KiB."""
    schema = {
        "type": "object",
        "properties": {
            "path": {"type": "string", "description": "The absolute path of the file to read or change."},
            "offset": {"type": "integer", "description": "The line to start from, for large files."},
            "limit": {"type": "integer", "description": "How many lines to read."},
        },
        "required": ["path"],
    }
    tools = [
        {
            "type": "function",
            "function": {"name": f"tool_{i}", "description": "Reads or edits files. " * 12, "parameters": schema},
        }
        for i in range(40)
    ]
    messages: list[dict[str, Any]] = [{"role": "system", "content": "You are a coding assistant. " * 600}]
    source = "def handler(request):\n    return compute(request.body, retries=3)  # keep\n" * 20
    turn = 0
    while len(orjson.dumps({"messages": messages, "tools": tools})) < target_kib * 1024:
        call_id = f"call_{turn}"
        call = {"id": call_id, "type": "function", "function": {"name": "tool_1", "arguments": '{"path": "/a.py"}'}}
        messages += [
            {"role": "user", "content": f"Step {turn}: look at the handler and fix the retry logic."},
            {"role": "assistant", "content": "Reading the file.", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call_id, "content": source},
        ]
        turn += 1
    messages.append({"role": "user", "content": "Now run the tests."})
    return {"model": "gpt-4o-mini", "messages": messages, "tools": tools}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per target and case")
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second (small bodies)")
    parser.add_argument("--large-rate", type=float, default=20.0, help="requests per second (large bodies)")
    parser.add_argument(
        "--round-rate", type=float, default=10.0, help="requests per second with one injected call (one MCP server)"
    )
    bench_results.add_json_argument(parser, "mcp_overhead")
    args = parser.parse_args()
    params = {
        "duration": args.duration,
        "rate": args.rate,
        "large_rate": args.large_rate,
        "round_rate": args.round_rate,
    }
    run_record = bench_results.Run("mcp_overhead", params)
    large = claude_code_sized_body()
    results = measure(args, large) | {"encode": encode_cost(large), "in_process": in_process(large)}
    run_record.write(args.json, results)


def measure(args: argparse.Namespace, large: dict[str, Any]) -> dict[str, Any]:
    from aibridge.auth import generate_keypair, issue_token, load_private_key
    from aibridge.testing.broker import free_port, start_broker

    broker = start_broker()
    asyncio.run(po.create_topic(broker.bootstrap, po.TOPIC))
    keys = Path(tempfile.mkdtemp())
    generate_keypair(keys)
    token = issue_token(load_private_key(keys / "signing_key.pem"), proxy_ab.BENCH_USER)
    upstream_port, mcp_port, off_port, on_port, off2_port = (free_port() for _ in range(5))
    upstream = f"http://127.0.0.1:{upstream_port}"
    servers = keys / "servers.yaml"
    servers.write_text(f"servers:\n  - name: tools\n    url: http://127.0.0.1:{mcp_port}/mcp\n")
    common = {
        "AIBRIDGE_AUTH_PUBLIC_KEY_FILE": str(keys / "signing_key.pub.pem"),
        "AIBRIDGE_KAFKA_BOOTSTRAP": broker.bootstrap,
        "AIBRIDGE_KAFKA_TOPIC": po.TOPIC,
        "AIBRIDGE_OPENAI_KEY": "sk-bench",
        "AIBRIDGE_OPENAI_BASE_URL": f"{upstream}/v1",
    }
    mcp_command = [sys.executable, "-m", "aibridge.testing.mcp_server", "--port", str(mcp_port)]
    print(f"load average before: {os.getloadavg()}")
    print(f"rerun: {bench_results.rerun_command()}")
    try:
        with ExitStack() as stack:
            stack.enter_context(po.process(po.upstream_command(upstream_port), upstream_port))
            stack.enter_context(po.process(mcp_command, mcp_port))
            stack.enter_context(po.proxy_process(off_port, common))
            stack.enter_context(po.proxy_process(on_port, common | {"AIBRIDGE_MCP_SERVERS_FILE": str(servers)}))
            stack.enter_context(po.proxy_process(off2_port, common))
            ports = {"off": off_port, "on": on_port, "off-2": off2_port}
            proxies = {name: f"http://127.0.0.1:{port}{po.ROUTE}" for name, port in ports.items()}
            rows = no_call_rows(upstream, proxies, token, args, large)
            one_round = one_round_row(upstream, proxies, token, args)
            one_round |= call_duration(on_port)
    finally:
        broker.stop()
    print(f"\nload average after: {os.getloadavg()}")
    return {"no_call": rows, "one_round": one_round}


def no_call_rows(
    upstream: str, proxies: dict[str, str], token: str, args: argparse.Namespace, large: dict[str, Any]
) -> list[dict[str, Any]]:
    """``on`` against ``off`` (and both against ``direct``) with no injected call made."""
    headers = po.auth(token) | NO_CALL
    targets: list[po.Target] = [("direct", f"{upstream}/v1/chat/completions", NO_CALL)]
    targets += [(name, url, headers) for name, url in proxies.items()]
    print(f"\n## Injection on vs off, no injected call ({args.duration:.0f}s per target, 1-second turns)")
    print("| request | body | direct p50 | off added p50 / p99 | on added p50 / p99 | **on - off p50** | A/A |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    small = po.BLOCKING
    cases = [("small", small, args.rate), ("large", large, args.large_rate)]
    for size, body, rate in cases:
        for streamed in (False, True):
            request_body = orjson.dumps(body | {"stream": True} if streamed else body)
            result = asyncio.run(po.open_loop(targets, request_body, rate, args.duration))
            row = row_of(result, "streamed" if streamed else "blocking", size, len(request_body))
            rows.append(row | {"rate": rate})
            print(
                f"| {row['request']} | {row['body_kib']:.1f} KiB | {row['direct_p50_ms']:.2f} ms |"
                f" {row['off_added_p50_ms']:.2f} / {row['off_added_p99_ms']:.2f} ms |"
                f" {row['on_added_p50_ms']:.2f} / {row['on_added_p99_ms']:.2f} ms |"
                f" **{row['on_minus_off_p50_ms']:+.3f} ms** | {row['aa_p50_ms']:+.3f} ms |",
                flush=True,
            )
    return rows


def row_of(result: dict[str, dict[str, float]], request: str, size: str, length: int) -> dict[str, Any]:
    direct, off, on = result["direct"], result["off"], result["on"]
    return {
        "request": request,
        "body": size,
        "body_kib": length / 1024,
        "direct_p50_ms": direct["total_p50_ms"],
        "off_added_p50_ms": off["total_p50_ms"] - direct["total_p50_ms"],
        "off_added_p99_ms": off["total_p99_ms"] - direct["total_p99_ms"],
        "on_added_p50_ms": on["total_p50_ms"] - direct["total_p50_ms"],
        "on_added_p99_ms": on["total_p99_ms"] - direct["total_p99_ms"],
        "on_minus_off_p50_ms": on["total_p50_ms"] - off["total_p50_ms"],
        "aa_p50_ms": result["off-2"]["total_p50_ms"] - off["total_p50_ms"],
        "errors": {name: values["errors"] for name, values in result.items()},
    }


def one_round_row(upstream: str, proxies: dict[str, str], token: str, args: argparse.Namespace) -> dict[str, Any]:
    """A blocking request whose model calls one injected tool once, against the same request with injection off."""
    rate = args.round_rate
    targets: list[po.Target] = [
        ("direct", f"{upstream}/v1/chat/completions", NO_CALL),
        ("off", proxies["off"], po.auth(token) | ONE_CALL),
        ("on", proxies["on"], po.auth(token) | ONE_CALL),
    ]
    result = asyncio.run(po.open_loop(targets, orjson.dumps(po.BLOCKING), rate, args.duration))
    row = {
        "rate": rate,
        "direct_p50_ms": result["direct"]["total_p50_ms"],
        "off_p50_ms": result["off"]["total_p50_ms"],
        "on_p50_ms": result["on"]["total_p50_ms"],
        "added_p50_ms": result["on"]["total_p50_ms"] - result["off"]["total_p50_ms"],
        "added_p99_ms": result["on"]["total_p99_ms"] - result["off"]["total_p99_ms"],
        "errors": {name: values["errors"] for name, values in result.items()},
    }
    print("\n## One round: the model calls one injected tool once (blocking, small body)")
    print(f"on - off p50: **{row['added_p50_ms']:.2f} ms** (p99 {row['added_p99_ms']:.2f} ms), errors {row['errors']}")
    return row


def call_duration(port: int) -> dict[str, float]:
    """The mean injected call duration the ``on`` proxy measured (its histogram's sum over its count)."""
    names = ("aibridge_mcp_call_duration_seconds_sum", "aibridge_mcp_call_duration_seconds_count")
    lines = proxy_ab.metric_lines(port, names)
    values = {line.split("{")[0]: float(line.rsplit(" ", 1)[1]) for line in lines}
    total, count = (values[name] for name in names)
    mean = total / count * 1000
    print(f"MCP call (the proxy's histogram): mean {mean:.2f} ms over {count:.0f} calls")
    return {"mcp_call_mean_ms": mean, "mcp_calls": count}


CHAT_ANSWER = orjson.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Done. " * 40}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 50000, "completion_tokens": 120, "total_tokens": 50120},
    }
)


def chat_stream(words: int = 60) -> list[bytes]:
    """A streamed chat answer as the provider sends it with usage asked for: a role chunk, ``words`` content
    chunks, the finish chunk, the usage chunk, ``[DONE]``."""
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini"}

    def chunk(delta: dict[str, Any], finish: str | None = None, usage: Any = None) -> bytes:
        choices = [{"index": 0, "delta": delta, "finish_reason": finish}]
        return b"data: " + orjson.dumps(base | {"choices": choices, "usage": usage}) + b"\n\n"

    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": f"word{i} "}) for i in range(words)]
    events.append(chunk({}, "stop"))
    usage = {"prompt_tokens": 50000, "completion_tokens": words, "total_tokens": 50000 + words}
    events.append(b"data: " + orjson.dumps(base | {"choices": [], "usage": usage}) + b"\n\n")
    return [*events, b"data: [DONE]\n\n"]


async def no_round(body: bytes) -> Any:
    raise AssertionError("the model calls no injected tool: no second round")


def in_process(large: dict[str, Any], rounds: int = 300) -> dict[str, float]:
    """What injection adds to one request in the proxy's own code, no injected call made, p50 in µs: the
    run begun (tools merged, body re-encoded), the answer read by the loop (blocking), or a 60-word stream
    read as the proxy reads it until the client has it (streamed; streamed_off: the same stream relayed
    without injection, for comparison), then also the round read for the record, which the proxy does
    after the answer is out (streamed_recorded)."""
    from aibridge.proxy.mcp import McpInjector, McpSettings, ToolFormat, load_servers
    from aibridge.proxy.mcp.loop import McpRun
    from aibridge.proxy.mcp.streamed import InjectedRounds, prepare_streamed, stream_edit
    from aibridge.proxy.providers.openai import ChatStream
    from aibridge.testing.mcp_server import McpTestServer

    chat = ToolFormat.OPENAI_CHAT
    stream = chat_stream()

    async def blocking(injector: McpInjector, body: dict[str, Any]) -> None:
        run = McpRun.begin(injector, chat, body, "bench", {})
        assert run is not None
        run.request_body()
        await run.settle(CHAT_ANSWER)
        run.merged(CHAT_ANSWER)

    class Upstream:
        """The 60-word stream as the upstream client hands it over, one event a chunk."""

        status = 200
        headers: dict[str, str] = {}

        async def chunks(self) -> AsyncIterator[bytes]:
            for data in stream:
                yield data

        async def close(self) -> None:
            return None

    async def streamed(injector: McpInjector, body: dict[str, Any]) -> InjectedRounds:
        """Until the client has the answer: the run begun, the stream read as the proxy reads it."""
        body = body | {"stream": True}
        run = McpRun.begin(injector, chat, body, "bench", {})
        assert run is not None
        prepare_streamed(run, chat)
        run.request_body()
        rounds = InjectedRounds(run, stream_edit(chat, body), Upstream(), no_round, nullcontext)  # type: ignore[arg-type]
        async for _ in rounds.chunks():
            pass
        return rounds

    async def streamed_off(injector: McpInjector, body: dict[str, Any]) -> None:
        """For comparison, the same stream relayed without injection (the chat tee's forwarding, the
        usage the proxy asked for hidden), until the client has it."""
        tee = ChatStream(hide_usage=True)
        async for data in Upstream().chunks():
            tee.feed(data)
        tee.end()

    async def streamed_recorded(injector: McpInjector, body: dict[str, Any]) -> None:
        """The same, and the round read for the record (after the answer is out, off the client's path)."""
        rounds = await streamed(injector, body)
        rounds.unsettled()

    async def measure_all() -> dict[str, float]:
        with McpTestServer() as server, tempfile.TemporaryDirectory() as folder:
            servers = Path(folder) / "servers.yaml"
            servers.write_text(f"servers:\n  - name: tools\n    url: {server.url}\n")
            injector = McpInjector(load_servers(servers), McpSettings(mcp_servers_file=servers))
            await injector.start()
            try:
                found = {}
                for size, body in (("small", po.BLOCKING), ("large", large)):
                    for kind, step in (
                        ("blocking", blocking),
                        ("streamed", streamed),
                        ("streamed_off", streamed_off),
                        ("streamed_recorded", streamed_recorded),
                    ):
                        found[f"{kind}_{size}_us"] = await timed(partial(step, injector, body), rounds)
                return found
            finally:
                await injector.stop()

    found = asyncio.run(measure_all())
    print("\n## In process: what injection adds per request, no injected call (p50)")
    for name, value in found.items():
        print(f"{name}: {value:.1f} us")
    return found


async def timed(step: Any, rounds: int) -> float:
    for _ in range(20):
        await step()
    samples = []
    for _ in range(rounds):
        started = time.perf_counter_ns()
        await step()
        samples.append(time.perf_counter_ns() - started)
    return statistics.median(samples) / 1000


def encode_cost(body: dict[str, Any], rounds: int = 300) -> dict[str, float]:
    """``orjson.dumps`` of the large body (with six more tools, as the proxy re-encodes it), p50 in µs."""
    samples = []
    for _ in range(rounds):
        started = time.perf_counter_ns()
        orjson.dumps(body)
        samples.append(time.perf_counter_ns() - started)
    p50 = statistics.median(samples) / 1000
    kib = len(orjson.dumps(body)) / 1024
    print(f"\norjson.dumps of a {kib:.0f} KiB body: p50 {p50:.0f} us")
    return {"body_kib": kib, "dumps_p50_us": p50}


if __name__ == "__main__":
    main()
