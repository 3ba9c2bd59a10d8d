"""The side-by-side table of ``proxy_overhead.py``: the simulated upstream directly, a bare proxy and AI
Bridge (one worker, then N workers) under the same ``wrk -t1`` load, with the CPU each process spent.

Targets:
- **upstream direct**: the simulated provider, no proxy.
- **bare proxy**: a Starlette route and an aiohttp client (read the body, parse it, forward it with a
  key, relay the answer); no auth, no recording, no metrics, no log line.
- **AI Bridge**: ``aibridge proxy`` with one worker, authenticating every request and recording every
  event to the Kafka-protocol broker (Tansu) with its default producer.
- **AI Bridge, NAME**: one worker with other settings, for each ``--variant NAME:VAR=VALUE`` (the
  default run adds the aiokafka producer).
- **AI Bridge, N workers**: the same with ``--workers N``.

Each cell is the median (by requests per second) of ``--rounds`` runs; within a round the targets take
turns, so a drift of the shared machine lands on all alike. CPU per request is the CPU a process (a
supervisor with its workers counted together) used during the run over the requests wrk completed:
the serving proxy's apart from the simulated upstream's, the broker's and wrk's, and the whole
machine's busy time (which includes whatever else ran then).
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import orjson
import proxy_overhead as po

TARGETS = ("upstream direct", "bare proxy", "AI Bridge")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its live descendants (a supervisor and its workers)."""
    total, pending = 0.0, [pid]
    while pending:
        current = pending.pop()
        try:
            total += po.cpu_seconds(current)
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(child) for child in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def wrk_cpu_seconds() -> float:
    """CPU used by this process's finished children (wrk runs as one and is waited for)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def machine_busy_seconds() -> float:
    """CPU time every core of the machine spent busy (not idle, not waiting for I/O), from /proc/stat."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def wait_for_workers(url: str, count: int, timeout: float = 60.0) -> None:
    """Until every worker has answered /healthz (over fresh connections: the kernel picks the worker)."""
    seen: set[int] = set()
    deadline = time.monotonic() + timeout
    while len(seen) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only workers {sorted(seen)} of {count} answered in {timeout:g}s")
        try:
            seen.add(httpx.get(f"{url}/healthz", timeout=2).json().get("worker", 0))
        except httpx.TransportError:
            time.sleep(0.1)


def one_run(  # noqa: PLR0917
    url: str,
    headers: dict[str, str],
    body: bytes,
    connections: int,
    serving: int | None,
    others: dict[str, int],
    seconds: float,
) -> dict[str, Any]:
    pids = others | ({"serving proxy": serving} if serving else {})
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    wrk_before, machine_before = wrk_cpu_seconds(), machine_busy_seconds()
    result = po.wrk(url, headers, body, connections, seconds)
    spent = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    spent |= {"wrk": wrk_cpu_seconds() - wrk_before, "machine": machine_busy_seconds() - machine_before}
    requests = max(1.0, result["rps"] * seconds)
    return result | {"cpu_us_per_request": {name: used / requests * 1e6 for name, used in spent.items()}}


def side_by_side(
    targets: dict[str, tuple[str, dict[str, str], int | None]], others: dict[str, int], args: argparse.Namespace
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    padded = {"messages": [{"role": "user", "content": "word " * args.prompt_words}]} if args.prompt_words else {}
    for kind, body in (("blocking", po.BLOCKING), ("streaming", po.STREAMING)):
        raw = orjson.dumps(body | padded)  # padded: a prompt of an agent's size, which the events carry
        for connections in args.side_connections:
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
            for _ in range(args.rounds):
                for name, (url, headers, serving) in targets.items():
                    runs[name].append(one_run(url, headers, raw, connections, serving, others, args.wrk_duration))
            for name, results in runs.items():
                middle = sorted(results, key=lambda r: r["rps"])[len(results) // 2]
                rows.append({"request": kind, "connections": connections, "target": name} | middle)
    return rows


def print_table(rows: list[dict[str, Any]], rounds: int, seconds: float) -> None:
    print(f"\n## Side by side: wrk -t1, {seconds:.0f} s per run, the median of {rounds} alternating rounds")
    print("CPU per request: the serving proxy's, then the upstream's, the broker's, wrk's and the whole machine's")
    columns = "request | c | target | req/s | p50 | p99 | of bare proxy | proxy | upstream | broker | wrk | machine"
    print(f"| {columns} | errors |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    bare = {(r["request"], r["connections"]): r["rps"] for r in rows if r["target"] == "bare proxy"}
    for row in rows:
        cpu = row["cpu_us_per_request"]
        share = row["rps"] / bare[(row["request"], row["connections"])]
        cells = " | ".join(
            f"{cpu[name]:,.0f} µs" if name in cpu else "—"
            for name in ("serving proxy", "upstream", "broker", "wrk", "machine")
        )
        print(
            f"| {row['request']} | {row['connections']} | {row['target']} | {row['rps']:,.0f} "
            f"| {row['p50_ms']:.2f} ms | {row['p99_ms']:.2f} ms | {share:.0%} | {cells} "
            f"| {row['non_2xx'] + row['socket_errors']:.0f} |"
        )


def measure_side_by_side(  # noqa: PLR0917
    upstream: str,
    proxy: tuple[str, int],
    token: str,
    args: argparse.Namespace,
    env: dict[str, str],
    others: dict[str, int],
) -> dict[str, Any]:
    """Start the bare proxy and AI Bridge with ``--workers``, then measure all targets side by side."""
    from aibridge.testing.broker import free_port

    floor_port, workers_port = free_port(), free_port()
    floor = [po.sys.executable, po.__file__, "--serve-floor", str(floor_port)]
    plain = {"Content-Type": "application/json"}
    with ExitStack() as stack:
        floor_pid = stack.enter_context(po.process(floor, floor_port, env))
        workers_env = env | {"AIBRIDGE_WORKERS": str(args.workers)}
        workers_pid = stack.enter_context(po.proxy_process(workers_port, workers_env))
        wait_for_workers(f"http://127.0.0.1:{workers_port}", args.workers)
        targets: dict[str, tuple[str, dict[str, str], int | None]] = {
            "upstream direct": (f"{upstream}/v1/chat/completions", plain, None),
            "bare proxy": (f"http://127.0.0.1:{floor_port}{po.ROUTE}", plain, floor_pid),
            "AI Bridge": (f"{proxy[0]}{po.ROUTE}", po.auth(token), proxy[1]),
        }
        for name, settings in args.variant:  # e.g. the other Kafka client, one worker
            port = free_port()
            pid = stack.enter_context(po.proxy_process(port, env | settings))
            targets[f"AI Bridge, {name}"] = (f"http://127.0.0.1:{port}{po.ROUTE}", po.auth(token), pid)
        targets[f"AI Bridge, {args.workers} workers"] = (
            f"http://127.0.0.1:{workers_port}{po.ROUTE}",
            po.auth(token),
            workers_pid,
        )
        for url, headers, _ in targets.values():  # warm every path and connection pool
            po.wrk(url, headers, orjson.dumps(po.BLOCKING), 4, 1)
        rows = side_by_side(targets, {name: pid for name, pid in others.items() if pid}, args)
    print_table(rows, args.rounds, args.wrk_duration)
    variants = {name: settings for name, settings in args.variant}
    return {"rounds": args.rounds, "seconds": args.wrk_duration, "workers": args.workers, "variants": variants,
            "prompt_bytes": len(orjson.dumps(po.BLOCKING)) + 5 * args.prompt_words, "rows": rows}  # fmt: skip
