"""What MCP tool injection costs a request through the real proxy.

Four proxies: ``off`` and ``off-2`` (``aibridge proxy`` without a servers file, injection off) and ``on``
and ``on-2`` (a servers file naming the MCP test server, ``python -m aibridge.testing.mcp_server``, six
tools: the tools are added to every request), with the simulated provider behind them and a Tansu broker
for their events. Two identical processes differ for a whole run (their core, their neighbours): each
side is the mean of its two, and the second minus the first of each pair is the run's noise floor.

Every request carries ``x-simulator-mcp-rounds: 0``, so the simulated model never calls an injected tool:
``on`` minus ``off`` is what adding the tools costs (the tools spliced into the client's bytes, the answer
searched for an injected name; streamed: each chunk checked as it is relayed, a Responses answer's echoed
tools taken out, the round read for the record after the answer is out).

One request at a time, for each API (chat completions, Anthropic messages, Responses), blocking and
streamed, with a small body and with one the size of a long Claude Code session (about 200 KB: a long
system prompt, 40 client tools, 60 messages). Each cycle sends one request to every target in a new
random order: ``off``, ``off-2``, ``on`` and ``on-2``; ``off`` and ``off-2`` again given a body that
already holds the injected tools as ``on`` sends them (the provider reads and answers the same request
as behind ``on``); ``on`` and ``on-2`` again with ``X-Aibridge-Mcp: off`` (``out``, ``out-2``: the same
processes with injection off for that request); and the simulated provider itself given either body
(``direct``, ``direct_t``). Each proxy process serves two requests a cycle (a busier process answers
faster). Every request is tagged ``x-simulator-timing`` (the proxies pass it on) and the simulated
provider times its own part of it, from the request reaching it to the last byte of its answer sent:
each request's time less that is what it took besides the provider, the provider's own work (its
reading of six more tool definitions among it) taken out request by request. The figure the target
reads, per row: that time's p50 with injection on minus with injection off, ``on`` and ``off`` each the
mean of its pair. Shown too: the same against ``out`` (injection off in the very processes that have it
on, so no difference between processes is in it), and the figure with the provider's part measured on
the provider directly instead (``on`` minus ``direct`` given the tools, minus ``off`` minus ``direct``).
Three passes per case (``--passes``), each figure read from each pass's p50s; a row shows each
figure's median over the passes, and the target's figure of every pass.

Then, per case, 300 more requests to each proxy process with the client's body: each process's own time
per request, the mean of its ``aibridge_proxy_overhead_seconds`` (an interception's duration less its
waits on the provider and on the client) read from its ``/metrics`` before and after, in which neither
the provider's work nor the client's (nor their noise) is.

Then the cost of one round: the same small request with the model calling one injected tool once
(``bmcp_tools_add``) against ``off``, open loop. Its parts: the MCP call (the proxy's own
``aibridge_mcp_call_duration_seconds``, its mean over the run) and the extra upstream round (``direct``'s
p50 for the same request); the rest is the bridge's loop (reading the answer, the follow-up body, merging).

Then closed loop (``wrk``): the proxy process's CPU per request, ``on`` against ``off`` and ``off`` given
the tools.

First (on a machine still quiet), in this process, where microseconds are measurable: encoding the large
body with ``orjson.dumps`` (what splicing the tools into the client's bytes avoids), and one request's own
work with no injected call (:func:`in_process`): blocking, what injection adds; streamed, for each API, a
60-delta answer (one event a chunk) through the proxy's relay with injection against the same stream
without, and the reading for the record that follows each, p50 in microseconds. Its table comes last on
the page.

Rerun:  .venv/bin/python bench/mcp_overhead.py                  # about 18 minutes
        .venv/bin/python bench/mcp_overhead.py --paired-only    # the one-at-a-time part alone, printed
        .venv/bin/python bench/mcp_overhead.py --in-process-only   # the in-process part alone, printed
        .venv/bin/python bench/mcp_overhead.py --closed-loop-only  # the closed-loop part alone, printed
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import ExitStack, nullcontext
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).parent))
import proxy_ab
import proxy_overhead as po
import results as bench_results

NO_CALL = {"x-simulator-mcp-rounds": "0"}
OPT_OUT = "x-aibridge-mcp"  # "off": no injection for this request
TIMING = "x-simulator-timing"  # the simulated provider times its own part of the request
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
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per target of the one-round part")
    parser.add_argument(
        "--round-rate", type=float, default=10.0, help="requests per second with one injected call (one MCP server)"
    )
    parser.add_argument("--requests", type=int, default=400, help="requests per target, case and pass, one at a time")
    parser.add_argument("--passes", type=int, default=3, help="passes per case of the one-at-a-time part")
    parser.add_argument("--wrk-connections", type=int, default=32, help="closed loop, wrk -t1 -cN (0: skip)")
    parser.add_argument("--wrk-duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="closed-loop rounds, the targets taking turns")
    parser.add_argument("--closed-loop-only", action="store_true", help="only the closed-loop part, printed")
    parser.add_argument("--paired-only", action="store_true", help="only the one-at-a-time part, printed")
    parser.add_argument(
        "--in-process-only",
        action="store_true",
        help="only the in-process part (seconds, no proxies): printed, not written",
    )
    bench_results.add_json_argument(parser, "mcp_overhead")
    args = parser.parse_args()
    large = claude_code_sized_body()
    if args.in_process_only:
        encode_cost(large)
        in_process(large)
        return
    if args.closed_loop_only or args.paired_only:
        measure(args, large)
        return
    params = {
        "duration": args.duration,
        "round_rate": args.round_rate,
        "requests": args.requests,
        "passes": args.passes,
        "wrk_connections": args.wrk_connections,
        "wrk_duration": args.wrk_duration,
        "rounds": args.rounds,
    }
    run_record = bench_results.Run("mcp_overhead", params)
    quiet = {"encode": encode_cost(large), "in_process": in_process(large)}  # first, on a machine still quiet
    results = measure(args, large) | quiet
    run_record.write(args.json, results)


def measure(args: argparse.Namespace, large: dict[str, Any]) -> dict[str, Any]:
    from aibridge.auth import generate_keypair, issue_token, load_private_key
    from aibridge.testing.broker import free_port, start_broker

    broker = start_broker()
    asyncio.run(po.create_topic(broker.bootstrap, po.TOPIC))
    keys = Path(tempfile.mkdtemp())
    generate_keypair(keys)
    token = issue_token(load_private_key(keys / "signing_key.pem"), proxy_ab.BENCH_USER)
    upstream_port, mcp_port, off_port, on_port, off2_port, on2_port = (free_port() for _ in range(6))
    upstream = f"http://127.0.0.1:{upstream_port}"
    servers = keys / "servers.yaml"
    servers.write_text(f"servers:\n  - name: tools\n    url: http://127.0.0.1:{mcp_port}/mcp\n")
    common = po.bridge_env(keys, broker.bootstrap, upstream)
    common |= {"AIBRIDGE_ANTHROPIC_KEY": "sk-ant-bench", "AIBRIDGE_ANTHROPIC_BASE_URL": upstream}
    mcp_command = [sys.executable, "-m", "aibridge.testing.mcp_server", "--port", str(mcp_port)]
    print(f"load average before: {os.getloadavg()}")
    print(f"rerun: {bench_results.rerun_command()}")
    try:
        with ExitStack() as stack:
            stack.enter_context(po.process(po.upstream_command(upstream_port), upstream_port))
            stack.enter_context(po.process(mcp_command, mcp_port))
            pids = {"off": stack.enter_context(po.proxy_process(off_port, common))}
            on_env = common | {"AIBRIDGE_MCP_SERVERS_FILE": str(servers)}
            pids["on"] = stack.enter_context(po.proxy_process(on_port, on_env))
            stack.enter_context(po.proxy_process(off2_port, common))
            stack.enter_context(po.proxy_process(on2_port, on_env))
            ports = {"off": off_port, "on": on_port, "off-2": off2_port, "on-2": on2_port}
            proxies = {name: f"http://127.0.0.1:{port}{po.ROUTE}" for name, port in ports.items()}
            tools = asyncio.run(injected_tools(servers))
            if args.closed_loop_only:
                return {"closed_loop": closed_loop_rows(proxies, pids, token, tools["chat"], args)}
            paired = asyncio.run(paired_rows(upstream, ports, token, tools, args.requests, args.passes, large))
            if args.paired_only:
                return {"paired": paired}
            one_round = one_round_row(upstream, proxies, token, args)
            one_round |= call_duration(on_port)
            closed = closed_loop_rows(proxies, pids, token, tools["chat"], args) if args.wrk_connections else []
    finally:
        broker.stop()
    print(f"\nload average after: {os.getloadavg()}")
    return {"paired": paired, "one_round": one_round, "closed_loop": closed}


async def injected_tools(servers: Path) -> dict[str, list[dict[str, Any]]]:
    """The tools the ``on`` proxy adds to a request, as it sends them, per API."""
    from aibridge.proxy.mcp import McpInjector, McpSettings, ToolFormat, load_servers

    formats = {
        "chat": ToolFormat.OPENAI_CHAT,
        "messages": ToolFormat.ANTHROPIC,
        "responses": ToolFormat.OPENAI_RESPONSES,
    }
    injector = McpInjector(load_servers(servers), McpSettings(mcp_servers_file=servers))
    await injector.start()
    try:
        return {api: injector.tools_for(shape, {}) or [] for api, shape in formats.items()}
    finally:
        await injector.stop()


def closed_loop_rows(
    proxies: dict[str, str], pids: dict[str, int], token: str, tools: list[dict[str, Any]], args: argparse.Namespace
) -> list[dict[str, Any]]:
    """The bridge's own work, where a shared machine's noise is smallest: ``wrk -t1 -cN`` in alternating
    rounds against ``on``, ``off``, and ``off`` given a body that already holds the injected tools (so the
    provider reads and answers the same request as behind ``on``); per target the median over the rounds of
    requests per second and of its process's CPU per request. ``on`` minus ``off_tools`` is what injection
    itself costs the proxy, recording included."""
    headers = po.auth(token) | NO_CALL
    rows = []
    print(f"\n## Closed loop: wrk -t1 -c{args.wrk_connections}, {args.wrk_duration:.0f} s runs, {args.rounds} rounds")
    print("| request | target | req/s | p50 | proxy CPU per request |\n|---|---|---|---|---|")
    for label, body in (("blocking", po.BLOCKING), ("streamed", po.BLOCKING | {"stream": True})):
        plain, with_tools = orjson.dumps(body), orjson.dumps(body | {"tools": tools})
        targets = [("on", "on", plain), ("off", "off", plain), ("off_tools", "off", with_tools)]
        for _, proxy, encoded in targets:
            po.wrk(proxies[proxy], headers, encoded, 4, 1)  # warm every connection pool
        runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name, _, _ in targets}
        for _ in range(args.rounds):
            for name, proxy, encoded in targets:
                before = po.cpu_seconds(pids[proxy])
                result = po.wrk(proxies[proxy], headers, encoded, args.wrk_connections, args.wrk_duration)
                used = po.cpu_seconds(pids[proxy]) - before
                runs[name].append(
                    (result["rps"], result["p50_ms"], used / max(result["rps"] * args.wrk_duration, 1) * 1e6)
                )
        for name, measured in runs.items():
            rps, p50, cpu = (statistics.median(values) for values in zip(*measured, strict=True))
            rows.append({"request": label, "target": name, "rps": rps, "p50_ms": p50, "cpu_us_per_request": cpu})
            print(f"| {label} | {name} | {rps:,.0f} | {p50:.2f} ms | {cpu:.0f} µs |", flush=True)
    return rows


API_ROUTES = {  # API → (the proxy's route, the simulated provider's path)
    "chat": (po.ROUTE, "/v1/chat/completions"),
    "messages": ("/api/v2/aibridge/anthropic/v1/messages", "/v1/messages"),
    "responses": ("/api/v2/aibridge/openai/v1/responses", "/v1/responses"),
}
SMALL = {
    "chat": po.BLOCKING,
    "messages": {"model": "claude-sonnet-4-5", "max_tokens": 1024} | {"messages": po.BLOCKING["messages"]},
    "responses": {"model": "gpt-5", "input": po.BLOCKING["messages"][0]["content"]},
}


def paired_cases(large: dict[str, Any]) -> list[tuple[str, bool, str, dict[str, Any]]]:
    """(API, streamed, body size, body): every API blocking and streamed with a small body, and the
    Claude Code-sized body blocking (chat) and where a stream is longest to read (every API)."""
    big = {"chat": large, "messages": anthropic_body(large), "responses": responses_body(large)}
    cases = [(api, streamed, "small", SMALL[api]) for api in API_ROUTES for streamed in (False, True)]
    cases += [("chat", False, "large", big["chat"])]
    cases += [(api, True, "large", big[api]) for api in API_ROUTES]
    return cases


async def paired_rows(  # noqa: PLR0917
    upstream: str,
    ports: dict[str, int],
    token: str,
    tools: dict[str, list[dict[str, Any]]],
    requests: int,
    passes: int,
    large: dict[str, Any],
) -> list[dict[str, Any]]:
    """Injection on against off, no injected call made, one request at a time.

    Per case, every cycle sends one request to each target in a new random order: ``off`` and ``off-2``
    (two proxies without a servers file), ``on`` and ``on-2`` (two with it), the same ``off`` and ``off-2``
    given a body that already holds the injected tools as ``on`` sends them (``off_t``, ``off-2_t``: the
    provider reads and answers the same request as behind ``on``), ``on`` and ``on-2`` given the request
    with ``X-Aibridge-Mcp: off`` (``out``, ``out-2``: injection off in the same process), and the simulated
    provider itself with either body (``direct``, ``direct_t``). Every proxy process serves two requests a
    cycle (a busier process answers faster). Two processes a side because two identical proxy processes
    differ by up to a few hundredths of a millisecond for the whole run (which core, which neighbours):
    each side is the mean of its two, and ``off-2`` minus ``off`` and ``on-2`` minus ``on`` show that noise
    floor; ``out`` against ``on`` has none of it. Each request's time is also read less the simulated
    provider's own time for it (``x-simulator-timing``). A pause after each request lets its recording
    run outside the next one's time.

    ``passes`` passes of ``requests`` cycles (the first after 100 cycles of warm-up, the others after 20),
    each pass's figures from its own p50s; the row reads each figure's median over the passes, and the
    spread of the target's figure over them.
    """
    headers = po.auth(token) | NO_CALL
    opted_out = headers | {OPT_OUT: "off"}
    rows = []
    print(f"\n## Injection on vs off, no injected call: one request at a time, {passes} x {requests} per target")
    print(
        "| API | request | body | direct | off | on | on - off | A/A (added) | provider's part | **added on - off** |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    async with aiohttp.ClientSession() as session:
        for api, streamed, size, body in paired_cases(large):
            route, path = API_ROUTES[api]
            request = body | {"stream": True} if streamed else body
            plain = orjson.dumps(request)
            offered = orjson.dumps(request | {"tools": [*request.get("tools", ()), *tools[api]]})
            proxy = {name: f"http://127.0.0.1:{port}{route}" for name, port in ports.items()}
            targets = [
                ("direct", f"{upstream}{path}", plain, NO_CALL),
                ("direct_t", f"{upstream}{path}", offered, NO_CALL),
                ("off", proxy["off"], plain, headers),
                ("off-2", proxy["off-2"], plain, headers),
                ("on", proxy["on"], plain, headers),
                ("on-2", proxy["on-2"], plain, headers),
                ("out", proxy["on"], plain, opted_out),
                ("out-2", proxy["on-2"], plain, opted_out),
                ("off_t", proxy["off"], offered, headers),
                ("off-2_t", proxy["off-2"], offered, headers),
            ]
            each, errors = [], 0
            for number in range(passes):
                found, failed = await one_at_a_time(
                    session, targets, requests, warm_up=20 if number else 100, timings=f"{upstream}/timings"
                )
                each.append({name: statistics.median(values) * 1000 for name, values in found.items()})
                errors += failed
            row: dict[str, Any] = {"api": api, "request": "streamed" if streamed else "blocking", "body": size}
            row |= {"body_kib": len(plain) / 1024, "tools_kib": (len(offered) - len(plain)) / 1024, "errors": errors}
            row |= over_passes(each)
            plain_only = [(name, proxy[name], plain, headers) for name in ("off", "off-2", "on", "on-2")]
            row |= await bridge_time(session, ports, plain_only, BRIDGE_TIME_REQUESTS)
            rows.append(row)
            spread = row["added_on_minus_off_passes_ms"]
            print(
                f"| {api} | {row['request']} | {row['body_kib']:.1f} KiB | {row['direct_p50_ms']:.3f}"
                f" | {row['off_pair_p50_ms']:.3f} | {row['on_pair_p50_ms']:.3f} | {row['on_minus_off_ms']:+.3f}"
                f" | {row['aa_ms']:+.3f} {row['aa_on_ms']:+.3f} |"
                f" {row['provider_part_ms']:+.3f} | **{row['added_on_minus_off_ms']:+.3f}** |"
                f" passes {' '.join(f'{value:+.3f}' for value in spread)}"
                f" | same process {row['added_on_minus_out_ms']:+.3f} |"
                f" provider's part measured directly {row['direct_on_minus_off_ms']:+.3f} |"
                f" own {row['on_minus_off_t_ms']:+.3f} (A/A {row['aa_t_ms']:+.3f}) errors {errors}"
                f" | bridge's own time on - off {row['bridge_on_minus_off_us']:+.1f} us"
                f" (A/A {row['bridge_aa_us']:+.1f} {row['bridge_aa_on_us']:+.1f})",
                flush=True,
            )
    return rows


BRIDGE_TIME_REQUESTS = 300  # per proxy process and case


async def bridge_time(
    session: aiohttp.ClientSession,
    ports: dict[str, int],
    targets: list[tuple[str, str, bytes, dict[str, str]]],
    requests: int,
) -> dict[str, Any]:
    """Each proxy process's own time per request, in µs: the mean of its ``aibridge_proxy_overhead_seconds``
    (an interception's duration less its waits on the provider and on the client) over ``requests`` more
    requests to each (the client's body, one at a time, in random order), read from its ``/metrics`` before
    and after. The provider's work and the client's are not in it, so neither is their noise."""
    before = {name: overhead_totals(ports[name]) for name, _, _, _ in targets}
    await one_at_a_time(session, targets, requests, warm_up=0)  # the client's times are not read here
    await asyncio.sleep(0.1)  # the last requests' recording (deferred by a millisecond) has run
    mean = {}
    for name, _, _, _ in targets:
        (total, count), (total_before, count_before) = overhead_totals(ports[name]), before[name]
        mean[name] = (total - total_before) / max(count - count_before, 1) * 1e6
    return {
        "bridge_requests": requests,
        "bridge_us": mean,
        "bridge_on_minus_off_us": (mean["on"] + mean["on-2"] - mean["off"] - mean["off-2"]) / 2,
        "bridge_aa_us": mean["off-2"] - mean["off"],
        "bridge_aa_on_us": mean["on-2"] - mean["on"],
    }


def overhead_totals(port: int) -> tuple[float, float]:
    """A proxy's ``aibridge_proxy_overhead_seconds`` sum and count, over every label set."""
    names = ("aibridge_proxy_overhead_seconds_sum", "aibridge_proxy_overhead_seconds_count")
    totals = dict.fromkeys(names, 0.0)
    for line in proxy_ab.metric_lines(port, names):
        totals[line.split("{")[0]] += float(line.rsplit(" ", 1)[1])
    return totals[names[0]], totals[names[1]]


async def one_at_a_time(
    session: aiohttp.ClientSession,
    targets: list[tuple[str, str, bytes, dict[str, str]]],
    requests: int,
    warm_up: int = 100,
    timings: str | None = None,
) -> tuple[dict[str, list[float]], int]:
    """Each target's request times to the last byte (seconds) over ``requests`` cycles after ``warm_up``
    untimed ones, cycles in random order; the requests answered with another status than 200. With
    ``timings`` (the simulated provider's ``/timings`` URL), also each target's times less the provider's
    own time for the same request (``x-simulator-timing``), as ``<name>_x``."""
    found: dict[str, list[float]] = {name: [] for name, _, _, _ in targets}
    tagged: list[tuple[str, str, float]] = []
    errors = 0
    order = list(targets)
    shuffle = random.Random(16 + warm_up).shuffle  # the same orders every run
    for cycle in range(requests + warm_up):
        shuffle(order)
        for name, url, body, headers in order:
            tag = f"{cycle}-{name}"
            started = time.perf_counter()
            async with session.post(
                url, data=body, headers=headers | {TIMING: tag} if timings else headers
            ) as response:
                await response.read()
            elapsed = time.perf_counter() - started
            errors += response.status != 200
            if cycle >= warm_up:
                found[name].append(elapsed)
                tagged.append((name, tag, elapsed))
            await asyncio.sleep(0.002)
    if timings:
        async with session.get(timings) as response:
            provider = orjson.loads(await response.read())
        for name, _, _, _ in targets:
            found[f"{name}_x"] = []
        for name, tag, elapsed in tagged:
            if tag in provider:  # every answered request (a refused one may never reach the provider)
                found[f"{name}_x"].append(elapsed - provider[tag])
        if untimed := [name for name, _, _, _ in targets if not found[f"{name}_x"]]:
            raise SystemExit(f"the simulated provider timed no request of {', '.join(untimed)}")
    return found, errors


def over_passes(passes: list[dict[str, float]]) -> dict[str, Any]:
    """Each figure of :func:`paired_differences` as its median over the passes (each pass's p50s, in ms),
    the target's figure of every pass, and each target's p50 over the passes (median)."""
    figures = [paired_differences(p50) for p50 in passes]
    row: dict[str, Any] = {f"{name}_p50_ms": statistics.median(p50[name] for p50 in passes) for name in passes[0]}
    row |= {name: statistics.median(figure[name] for figure in figures) for name in figures[0]}
    for name in ("added_on_minus_off_ms", "added_on_minus_out_ms", "direct_on_minus_off_ms"):
        row[name.replace("_ms", "_passes_ms")] = [figure[name] for figure in figures]
    return row


def paired_differences(p50: dict[str, float]) -> dict[str, float]:
    """The differences the table reads, in ms, each side the mean of its two processes. ``added_on_minus_off``:
    what the bridge adds with injection on minus what it adds with injection off, each request's time less
    the provider's own time for it (as the simulated provider timed it: ``<name>_x``).
    ``added_on_minus_out``: the same, injection off in the same processes as on (the request opted out).
    ``direct_on_minus_off``: the provider's part taken out as measured on the provider directly instead
    (against the provider given the request ``on`` sends it, and the client's). ``aa``, ``aa_on``, ``aa_t``:
    the second process of a side minus the first."""

    def pair(name: str, suffix: str = "") -> float:
        return (p50[f"{name}{suffix}"] + p50[f"{name}-2{suffix}"]) / 2

    off, on, out, off_t = pair("off"), pair("on"), pair("out"), pair("off", "_t")
    off_x, on_x, out_x = pair("off", "_x"), pair("on", "_x"), pair("out", "_x")
    return {
        "off_pair_p50_ms": off,
        "on_pair_p50_ms": on,
        "out_pair_p50_ms": out,
        "off_added_ms": off_x,
        "on_added_ms": on_x,
        "out_added_ms": out_x,
        "added_on_minus_off_ms": on_x - off_x,
        "added_on_minus_out_ms": on_x - out_x,
        "aa_ms": p50["off-2_x"] - p50["off_x"],
        "aa_on_ms": p50["on-2_x"] - p50["on_x"],
        "on_minus_off_ms": on - off,
        "provider_part_ms": p50["direct_t"] - p50["direct"],
        "direct_on_minus_off_ms": (on - p50["direct_t"]) - (off - p50["direct"]),
        "on_minus_off_t_ms": on - off_t,
        "aa_t_ms": p50["off-2_t"] - p50["off_t"],
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
WORDS = 60  # the streamed answer's text deltas


def sse(data: dict[str, Any], name: str | None = None) -> bytes:
    head = b"event: " + name.encode() + b"\n" if name else b""
    return head + b"data: " + orjson.dumps(data) + b"\n\n"


def chat_stream(body: dict[str, Any]) -> list[bytes]:
    """A streamed chat answer as the provider sends it with usage asked for: a role chunk, ``WORDS`` content
    chunks, the finish chunk, the usage chunk, ``[DONE]``."""
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini"}

    def chunk(delta: dict[str, Any], finish: str | None = None, usage: Any = None) -> bytes:
        return sse(base | {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}], "usage": usage})

    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": f"word{i} "}) for i in range(WORDS)]
    events.append(chunk({}, "stop"))
    usage = {"prompt_tokens": 50000, "completion_tokens": WORDS, "total_tokens": 50000 + WORDS}
    events.append(sse(base | {"choices": [], "usage": usage}))
    return [*events, b"data: [DONE]\n\n"]


def anthropic_stream(body: dict[str, Any]) -> list[bytes]:
    """A streamed message: its start, one text block of ``WORDS`` deltas, the final delta and stop."""
    usage = {"input_tokens": 50000, "output_tokens": 1}
    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5", "content": []}
    events = [
        sse({"type": "message_start", "message": message | {"usage": usage}}, "message_start"),
        sse(
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            "content_block_start",
        ),
    ]
    delta = {"type": "content_block_delta", "index": 0}
    events += [
        sse(delta | {"delta": {"type": "text_delta", "text": f"word{i} "}}, "content_block_delta") for i in range(WORDS)
    ]
    events.append(sse({"type": "content_block_stop", "index": 0}, "content_block_stop"))
    final = {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": WORDS}}
    return [*events, sse(final, "message_delta"), sse({"type": "message_stop"}, "message_stop")]


def responses_stream(body: dict[str, Any]) -> list[bytes]:
    """A streamed response: ``response.created`` and ``.in_progress`` echoing the request's tools (the
    injected ones among them when injection is on), one message item of ``WORDS`` text deltas, then
    ``response.completed`` echoing them again, numbered from 0."""
    tools = [{"description": None, "parameters": None, "strict": True} | tool for tool in body.get("tools") or ()]
    response = {"id": "resp_1", "object": "response", "model": "gpt-5", "tools": tools, "instructions": None}
    text = "".join(f"word{i} " for i in range(WORDS))
    item = {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed"}
    item |= {"content": [{"type": "output_text", "text": text, "annotations": []}]}
    where = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
    events: list[tuple[str, dict[str, Any]]] = [
        ("response.created", {"response": response | {"status": "in_progress", "output": [], "usage": None}}),
        ("response.in_progress", {"response": response | {"status": "in_progress", "output": [], "usage": None}}),
        ("response.output_item.added", {"output_index": 0, "item": item | {"status": "in_progress", "content": []}}),
        ("response.content_part.added", where | {"part": {"type": "output_text", "text": "", "annotations": []}}),
    ]
    events += [("response.output_text.delta", where | {"delta": f"word{i} ", "logprobs": []}) for i in range(WORDS)]
    events += [
        ("response.output_text.done", where | {"text": text, "logprobs": []}),
        ("response.content_part.done", where | {"part": item["content"][0]}),
        ("response.output_item.done", {"output_index": 0, "item": item}),
    ]
    usage = {"input_tokens": 50000, "output_tokens": WORDS, "total_tokens": 50000 + WORDS}
    events.append(
        ("response.completed", {"response": response | {"status": "completed", "output": [item], "usage": usage}})
    )
    return [sse({"type": kind, "sequence_number": n} | payload, kind) for n, (kind, payload) in enumerate(events)]


def anthropic_body(chat: dict[str, Any]) -> dict[str, Any]:
    """The chat body as a Messages request: the same system prompt, tools and turns."""
    system, *turns = chat["messages"]
    tools = [
        {
            "name": t["function"]["name"],
            "description": t["function"]["description"],
            "input_schema": t["function"]["parameters"],
        }
        for t in chat.get("tools") or ()
    ]
    messages: list[dict[str, Any]] = []
    for turn in turns:
        if turn["role"] == "tool":
            result = {"type": "tool_result", "tool_use_id": turn["tool_call_id"], "content": turn["content"]}
            messages.append({"role": "user", "content": [result]})
        elif turn.get("tool_calls"):
            uses = [
                {
                    "type": "tool_use",
                    "id": c["id"],
                    "name": c["function"]["name"],
                    "input": orjson.loads(c["function"]["arguments"]),
                }
                for c in turn["tool_calls"]
            ]
            messages.append({"role": "assistant", "content": [{"type": "text", "text": turn["content"]}, *uses]})
        else:
            messages.append({"role": turn["role"], "content": turn["content"]})
    body = {"model": "claude-sonnet-4-5", "max_tokens": 4096, "system": system["content"], "messages": messages}
    return body | ({"tools": tools} if tools else {})


def responses_body(chat: dict[str, Any]) -> dict[str, Any]:
    """The chat body as a Responses request: instructions, input items, function tools."""
    system, *turns = chat["messages"]
    tools = [
        {"type": "function"} | {k: t["function"][k] for k in ("name", "description", "parameters")}
        for t in chat.get("tools") or ()
    ]
    items: list[dict[str, Any]] = []
    for turn in turns:
        if turn["role"] == "tool":
            items.append({"type": "function_call_output", "call_id": turn["tool_call_id"], "output": turn["content"]})
            continue
        items.append({"role": turn["role"], "content": turn["content"]})
        items += [
            {
                "type": "function_call",
                "call_id": c["id"],
                "name": c["function"]["name"],
                "arguments": c["function"]["arguments"],
            }
            for c in turn.get("tool_calls") or ()
        ]
    body = {"model": "gpt-5", "instructions": system["content"], "input": items}
    return body | ({"tools": tools} if tools else {})


async def no_round(body: bytes) -> Any:
    raise AssertionError("the model calls no injected tool: no second round")


class Upstream:
    """A streamed answer as the upstream client hands it over, one event a chunk."""

    status = 200
    headers: dict[str, str] = {}

    def __init__(self, events: list[bytes]) -> None:
        self._events = events

    def ready(self) -> bytes:
        return b""  # nothing came with the headers

    async def chunks(self) -> AsyncIterator[bytes]:
        for data in self._events:
            yield data

    async def close(self) -> None:
        return None


def apis() -> dict[str, tuple[Any, Any, Any, Any]]:
    """Per API: its tool format, its body made from a chat body, its stream, its tee without injection."""
    from aibridge.proxy.mcp import ToolFormat
    from aibridge.proxy.providers.anthropic import MessageStream
    from aibridge.proxy.providers.openai import ChatStream
    from aibridge.proxy.providers.responses import ResponsesStream

    return {
        "chat": (ToolFormat.OPENAI_CHAT, dict, chat_stream, partial(ChatStream, hide_usage=True)),
        "anthropic": (ToolFormat.ANTHROPIC, anthropic_body, anthropic_stream, MessageStream),
        "responses": (ToolFormat.OPENAI_RESPONSES, responses_body, responses_stream, ResponsesStream),
    }


async def blocking(injector: Any, body: dict[str, Any], raw: bytes) -> None:
    """The run begun (tools merged, the first body written from the client's bytes ``raw``), a chat answer
    searched for an injected name, as the proxy does (read by the loop only when one is found)."""
    from aibridge.proxy.mcp import ToolFormat
    from aibridge.proxy.mcp.loop import McpRun

    run = McpRun.begin(injector, ToolFormat.OPENAI_CHAT, body, "bench", {})
    assert run is not None
    run.first_body(raw)
    if run.unread(CHAT_ANSWER) is None:
        await run.settle(CHAT_ANSWER)
        run.merged(CHAT_ANSWER)


def relay_of(response: Any, tee: Any) -> Any:
    """The proxy's relay over ``response`` and ``tee``, its recording left to the caller."""
    from aibridge.proxy.relay import Relay

    def error_event(exc: Exception) -> bytes:
        raise exc

    return Relay(response, tee, lambda *args: None, error_event, lambda job: None)


async def streamed(
    shape: Any, injector: Any, body: dict[str, Any], raw: bytes, events: list[bytes], *, recorded: bool
) -> None:
    """The run begun and the stream relayed as the proxy relays it until the client has the answer; then
    the round read for the record, which the proxy does after the answer is out (``recorded``)."""
    from aibridge.proxy.mcp.loop import McpRun
    from aibridge.proxy.mcp.streamed import InjectedRounds, RoundsTee, prepare_streamed, stream_edit
    from aibridge.proxy.providers.records import ResponseSummary

    run = McpRun.begin(injector, shape, body, "bench", {})
    assert run is not None
    prepare_streamed(run, shape)
    run.first_body(raw)
    rounds = InjectedRounds(run, stream_edit(shape, body), Upstream(events), no_round, nullcontext)  # type: ignore[arg-type]
    tee = RoundsTee(rounds, lambda raw: ResponseSummary())
    relay = relay_of(rounds, tee)
    relay.ready()
    async for _ in relay.chunks():
        pass
    if recorded:
        tee.close()


class ForwardOnly:
    """A tee that forwards as ``tee`` does but leaves all parsing to ``close`` (``settle`` does nothing)."""

    def __init__(self, tee: Any) -> None:
        self.feed, self.end, self.close = tee.feed, tee.end, tee.close

    def settle(self) -> None:
        return None


async def relayed_off(tee_of: Any, events: list[bytes], *, parsed: bool, recorded: bool) -> None:
    """The stream relayed without injection: forwarded by the proxy's tee; with ``parsed``, also parsed
    after each send (``settle``) as the relay runs it; with ``recorded``, also the tee's last parsing for
    the record (``close``), which the relay does after the answer is out."""
    tee = tee_of()
    relay = relay_of(Upstream(events), tee if parsed else ForwardOnly(tee))
    relay.ready()
    async for _ in relay.chunks():
        pass
    if recorded:
        tee.close()


def in_process(large: dict[str, Any], rounds: int = 1000) -> dict[str, float]:
    """One request's own work in the proxy, no injected call made, p50 in µs: ``blocking``, what injection
    adds (chat). Per API, a ``WORDS``-delta answer: ``streamed``, relayed with injection until the client has
    it; ``streamed_off``, the same stream forwarded by the tee without injection, and ``streamed_off_relayed``
    also parsed after each send, as the relay runs it; ``streamed_recorded`` and ``streamed_off_recorded``:
    each with the reading for the record that follows the answer."""
    from aibridge.proxy.mcp import McpInjector, McpSettings, load_servers
    from aibridge.testing.mcp_server import McpTestServer

    async def measure_all() -> dict[str, float]:
        with McpTestServer() as server, tempfile.TemporaryDirectory() as folder:
            servers = Path(folder) / "servers.yaml"
            servers.write_text(f"servers:\n  - name: tools\n    url: {server.url}\n")
            injector = McpInjector(load_servers(servers), McpSettings(mcp_servers_file=servers))
            await injector.start()
            try:
                found = {}
                for size, chat_body in (("small", po.BLOCKING), ("large", large)):
                    found[f"blocking_{size}_us"] = await timed(
                        partial(blocking, injector, chat_body, orjson.dumps(chat_body)), rounds
                    )
                    for api, steps in streamed_steps(injector, chat_body).items():
                        for kind, step in steps.items():
                            found[f"{kind}_{api}_{size}_us"] = await timed(step, rounds)
                return found
            finally:
                await injector.stop()

    found = asyncio.run(measure_all())
    print("\n## In process: what injection adds per request, no injected call (p50)")
    for name, value in found.items():
        print(f"{name}: {value:.1f} us")
    return found


def streamed_steps(injector: Any, chat_body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per API, the four streamed steps over its stream (with the injected tools echoed when injection is on)."""
    found = {}
    for api, (shape, body_of, stream_of, tee_of) in apis().items():
        body = body_of(chat_body) | {"stream": True}
        offered = [*body.get("tools", ()), *(injector.tools_for(shape, {}) or ())]
        on_events, off_events = stream_of(body | {"tools": offered}), stream_of(body)
        raw = orjson.dumps(body)  # the client's bytes, as the proxy has them before its work
        found[api] = {
            "streamed": partial(streamed, shape, injector, body, raw, on_events, recorded=False),
            "streamed_off": partial(relayed_off, tee_of, off_events, parsed=False, recorded=False),
            "streamed_off_relayed": partial(relayed_off, tee_of, off_events, parsed=True, recorded=False),
            "streamed_recorded": partial(streamed, shape, injector, body, raw, on_events, recorded=True),
            "streamed_off_recorded": partial(relayed_off, tee_of, off_events, parsed=True, recorded=True),
        }
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


def encode_cost(body: dict[str, Any], rounds: int = 1000) -> dict[str, float]:
    """``orjson.dumps`` of the large body, p50 in µs: what splicing the tools into the client's bytes saves
    (the proxy still encodes the body when the splice cannot be shown to be the same JSON)."""
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
