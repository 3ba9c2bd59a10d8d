"""Interleaved A/B of AI Bridge variants: added latency at a fixed rate, each variant in its own proxy process.

Every argument is one variant, ``NAME`` or ``NAME:VAR=VALUE[:VAR=VALUE...]`` (environment for that
proxy: a setting such as ``AIBRIDGE_UPSTREAM_CLIENT=aiohttp``, or ``PYTHONPATH=<worktree>`` to run
older code). Direct and every variant take turns in 1-second windows of one open-loop run (the
generator of ``proxy_overhead.py``), so a drift of the shared machine lands on all alike. Results are
printed and written as JSON (--json, default bench/results/proxy_ab.json) for bench/report.py.

With ``--wrk-connections N`` the variants are loaded instead in closed loop, ``wrk -t1 -cN``, taking turns
for ``--rounds`` rounds of ``--wrk-duration`` seconds (blocking, then streamed): each variant's requests
per second, p50 and CPU per request of its process (from ``/proc``), the median over the rounds. This is
how two builds of the proxy compare in throughput and CPU in one run (default JSON
bench/results/proxy_ab_wrk.json, printed only).

With ``--paired`` (two variants, and ``--wrk-connections N``) both are loaded at the same time, each by
its own ``wrk -t1 -cN`` (each started first every other round), for ``--rounds`` rounds: whatever the
shared machine does during a round, it does to both, so the ratio of their CPU per request (second over
first) varies far less from round to round than either's CPU does (about 1 % against up to 30 % on a
shared 2-core VM). It answers "is B cheaper than A, and by how much" for differences of a few percent;
the absolute figures are those of two proxies sharing the cores (higher than either alone). Printed:
every round, then the median ratio, its mean and standard deviation (default JSON
bench/results/proxy_ab_paired.json).

Rerun:  .venv/bin/python bench/proxy_ab.py builtin aiohttp:AIBRIDGE_UPSTREAM_CLIENT=aiohttp
        git worktree add ../aibridge-old <commit> && \
          .venv/bin/python bench/proxy_ab.py new old:PYTHONPATH=../aibridge-old
        .venv/bin/python bench/proxy_ab.py --wrk-connections 32 new old:PYTHONPATH=../aibridge-old
        .venv/bin/python bench/proxy_ab.py --paired --wrk-connections 16 --rounds 8 \
          old:PYTHONPATH=../aibridge-old new
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import sys
import tempfile
import threading
import urllib.request
from contextlib import ExitStack
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).parent))
import proxy_overhead as po
import results as bench_results

BENCH_USER = "bench"  # the username of the benchmark's bridge token
# A variant's parts: split at each colon that starts a VAR=, so a value may hold colons (a URL).
VARIANT_PARTS = re.compile(r":(?=[A-Za-z_][A-Za-z0-9_]*=)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variants", nargs="+", help="NAME[:VAR=VALUE...]")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per variant")
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--wrk-connections", type=int, default=0, help="closed loop, wrk -t1 -cN, instead")
    parser.add_argument("--wrk-duration", type=float, default=6.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="wrk rounds, the variants taking turns")
    parser.add_argument("--paired", action="store_true", help="two variants loaded at the same time (wrk)")
    parser.add_argument("--streaming", action="store_true", help="with --paired: streamed requests, not blocking")
    bench_results.add_json_argument(parser, "proxy_ab")
    args = parser.parse_args()
    if args.paired:
        if len(args.variants) != 2 or not args.wrk_connections:
            parser.error("--paired takes two variants and --wrk-connections")
        json_path = args.json if "--json" in sys.argv else bench_results.RESULTS_DIR / "proxy_ab_paired.json"
        names = ("variants", "wrk_connections", "wrk_duration", "rounds", "streaming")
        params = {name: getattr(args, name) for name in names}
        paired_rows, _ = measure(args.variants, args.rate, args.duration, wrk=args)
        bench_results.Run("proxy_ab_paired", params).write(json_path, {"rows": paired_rows})
        return
    if args.wrk_connections:
        json_path = args.json if "--json" in sys.argv else bench_results.RESULTS_DIR / "proxy_ab_wrk.json"
        params = {name: getattr(args, name) for name in ("variants", "wrk_connections", "wrk_duration", "rounds")}
        wrk_rows, _ = measure(args.variants, args.rate, args.duration, wrk=args)
        bench_results.Run("proxy_ab_wrk", params).write(json_path, {"rows": wrk_rows})
        return
    run_record = bench_results.Run(
        "proxy_ab", {"variants": args.variants, "duration": args.duration, "rate": args.rate}
    )
    rows, _ = measure(args.variants, args.rate, args.duration)
    run_record.write(args.json, {"rows": rows})


def measure(
    variants: list[str],
    rate: float,
    duration: float,
    scrape: tuple[str, ...] = (),
    wrk: argparse.Namespace | None = None,
) -> tuple[list[dict[str, object]], dict[str, list[str]]]:
    """Run direct and ``variants`` interleaved; the table's rows, and each variant's metric lines whose
    names start with one of ``scrape`` (read from its ``/metrics`` after the run). With ``wrk``, the
    closed-loop rounds of :func:`closed_loop` instead of the open loop."""
    from aibridge.auth import generate_keypair, issue_token, load_private_key
    from aibridge.testing.broker import free_port, start_broker

    rows: list[dict[str, object]] = []
    scraped: dict[str, list[str]] = {}
    broker = start_broker()
    asyncio.run(po.create_topic(broker.bootstrap, po.TOPIC))
    keys = Path(tempfile.mkdtemp())
    generate_keypair(keys)
    token = issue_token(load_private_key(keys / "signing_key.pem"), BENCH_USER)
    upstream_port = free_port()
    upstream = f"http://127.0.0.1:{upstream_port}"
    common = po.bridge_env(keys, broker.bootstrap, upstream)
    print(f"load average before: {os.getloadavg()}")
    print(f"rerun: {bench_results.rerun_command()}")
    try:
        with po.process(po.upstream_command(upstream_port), upstream_port), ExitStack() as stack:
            targets: list[po.Target] = [("direct", f"{upstream}/v1/chat/completions", {})]
            ports: dict[str, int] = {}
            pids: dict[str, int] = {}
            for variant in variants:
                name, *assignments = VARIANT_PARTS.split(variant)
                env = common | dict(assignment.split("=", 1) for assignment in assignments)
                port = ports[name] = free_port()
                pids[name] = stack.enter_context(po.proxy_process(port, env))
                targets.append((name, f"http://127.0.0.1:{port}{po.ROUTE}", po.auth(token)))
            if wrk is not None and wrk.paired:
                return paired(targets[1:], pids, wrk), {}
            if wrk is not None:
                return closed_loop(targets[1:], pids, wrk), {}
            print(f"\n## Added p50 / p99 at {rate:.0f} req/s, {duration:.0f}s per variant in 1-second turns")
            print("| request | direct p50 / p99 |" + "".join(f" {name} |" for name, _, _ in targets[1:]) + " errors |")
            print("|---|---|" + "---|" * len(targets))
            for label, body in (("blocking", po.BLOCKING), ("streaming", po.STREAMING)):
                result = asyncio.run(po.open_loop(targets, orjson.dumps(body), rate, duration))
                direct = result["direct"]
                for measure_name in ("total",) if label == "blocking" else ("ttfb", "total"):
                    d50, d99 = direct[f"{measure_name}_p50_ms"], direct[f"{measure_name}_p99_ms"]
                    request = label if label == "blocking" else f"{label} ({po.MEASURE_NAMES[measure_name]})"
                    row = f"| {request} | {d50:.2f} / {d99:.2f} ms |"
                    added = {}
                    for name, _, _ in targets[1:]:
                        v50, v99 = result[name][f"{measure_name}_p50_ms"], result[name][f"{measure_name}_p99_ms"]
                        row += f" **{v50 - d50:.2f}** / {v99 - d99:.2f} ms |"
                        added[name] = {"added_p50_ms": v50 - d50, "added_p99_ms": v99 - d99}
                    rows.append({"request": request, "direct_p50_ms": d50, "direct_p99_ms": d99, "variants": added})
                    errors = "/".join(f"{result[name]['errors']:.0f}" for name, _, _ in targets)
                    print(f"{row} {errors} |", flush=True)
            if scrape:
                scraped = {name: metric_lines(port, scrape) for name, port in ports.items()}
                for name, lines in scraped.items():
                    print(f"\n{name} /metrics:\n" + ("\n".join(lines) or "(none)"))
    finally:
        broker.stop()
    print(f"\nload average after: {os.getloadavg()}")
    return rows, scraped


def closed_loop(targets: list[po.Target], pids: dict[str, int], args: argparse.Namespace) -> list[dict[str, object]]:
    """``wrk -t1 -c<connections>`` against each variant in turn, ``args.rounds`` times, blocking then
    streamed; per variant the median of its rounds: requests per second, p50, its process's CPU per request."""
    rows: list[dict[str, object]] = []
    connections, seconds = args.wrk_connections, args.wrk_duration
    print(f"\n## wrk -t1 -c{connections}, {seconds:.0f} s per run, median of {args.rounds} alternating rounds")
    print("| request | variant | req/s | p50 | CPU per request |\n|---|---|---|---|---|")
    for label, body in (("blocking", po.BLOCKING), ("streaming", po.STREAMING)):
        encoded = orjson.dumps(body)
        for _, url, headers in targets:
            po.wrk(url, headers, encoded, 4, 1)  # warm every connection pool
        runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name, _, _ in targets}
        for _ in range(args.rounds):
            for name, url, headers in targets:
                before = po.cpu_seconds(pids[name])
                result = po.wrk(url, headers, encoded, connections, seconds)
                used = po.cpu_seconds(pids[name]) - before
                per_request = used / max(result["rps"] * seconds, 1.0) * 1e6
                runs[name].append((result["rps"], result["p50_ms"], per_request))
        for name, measured in runs.items():
            rps, p50, cpu = (statistics.median(values) for values in zip(*measured, strict=True))
            rows.append({"request": label, "variant": name, "rps": rps, "p50_ms": p50, "cpu_us_per_request": cpu})
            print(f"| {label} | {name} | {rps:,.0f} | {p50:.2f} ms | {cpu:.0f} µs |", flush=True)
    print(f"\nload average after: {os.getloadavg()}")
    return rows


def paired(targets: list[po.Target], pids: dict[str, int], args: argparse.Namespace) -> list[dict[str, object]]:
    """Both variants under ``wrk -t1 -c<connections>`` at the same time, ``args.rounds`` times; per round
    each one's requests per second and CPU per request, and the second's CPU over the first's."""
    connections, seconds = args.wrk_connections, args.wrk_duration
    label, body = ("streaming", po.STREAMING) if args.streaming else ("blocking", po.BLOCKING)
    encoded = orjson.dumps(body)
    (first, _, _), (second, _, _) = targets
    print(f"\n## {label}: both at once, wrk -t1 -c{connections} each, {seconds:.0f} s per round")
    print(f"| round | {first} req/s | {first} CPU | {second} req/s | {second} CPU | ratio |")
    print("|---|---|---|---|---|---|")
    for _, url, headers in targets:
        po.wrk(url, headers, encoded, 4, 2)  # warm every connection pool
    rows: list[dict[str, object]] = []
    ratios: list[float] = []
    for number in range(1, args.rounds + 1):
        results: dict[str, dict[str, float]] = {}
        before = {name: po.cpu_seconds(pids[name]) for name, _, _ in targets}

        def load(into: dict[str, dict[str, float]], name: str, url: str, headers: dict[str, str]) -> None:
            into[name] = po.wrk(url, headers, encoded, connections, seconds)

        ordered = targets if number % 2 else targets[::-1]  # each starts first every other round
        threads = [threading.Thread(target=load, args=(results, *target)) for target in ordered]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        cpu = {
            name: (po.cpu_seconds(pids[name]) - before[name]) / max(results[name]["rps"] * seconds, 1.0) * 1e6
            for name, _, _ in targets
        }
        ratio = cpu[second] / cpu[first]
        ratios.append(ratio)
        rows.append({"round": number, "rps": {n: r["rps"] for n, r in results.items()}, "cpu_us": cpu, "ratio": ratio})
        print(
            f"| {number} | {results[first]['rps']:,.0f} | {cpu[first]:.0f} µs "
            f"| {results[second]['rps']:,.0f} | {cpu[second]:.0f} µs | {ratio:.3f} |",
            flush=True,
        )
    spread = statistics.stdev(ratios) if len(ratios) > 1 else 0.0
    print(
        f"\n{second} / {first}, CPU per request: median {statistics.median(ratios):.3f}, "
        f"mean {statistics.mean(ratios):.3f}, standard deviation {spread:.3f} over {len(ratios)} rounds"
    )
    print(f"load average after: {os.getloadavg()}")
    return rows


def metric_lines(port: int, prefixes: tuple[str, ...]) -> list[str]:
    """The samples of a proxy's ``/metrics`` whose names start with one of ``prefixes``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    return [line for line in text.splitlines() if line.startswith(prefixes)]


if __name__ == "__main__":
    main()
