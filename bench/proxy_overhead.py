"""Proxy overhead: added latency (p50, p99) and throughput, proxy vs the simulated upstream directly.

Three processes, as in production: the simulated provider on uvicorn with uvloop and httptools, AI
Bridge as users run it (``aibridge proxy``: one worker, its default settings and INFO log, a JSON line
per interception, written to a file), events recorded to a real Kafka-protocol broker (Tansu, started
here unless --kafka-bootstrap is given). Load: a Python open-loop generator at a fixed rate for latency (latency
is measured from each request's scheduled send time, so a stall cannot hide), and wrk (closed loop,
-t1) for throughput when it is installed.

Latency: direct, through AI Bridge, and through two "floors" take turns in 1-second windows of one
open-loop run, so a drift of the shared 2-core machine during the run lands on all alike. A floor is
a minimal proxy on the same server (read the body, parse it, forward it with a key, relay the answer;
no auth, no recording): "Starlette+aiohttp floor" is the textbook shape of such a proxy (Starlette
route, StreamingResponse, aiohttp client); "plain+builtin floor" is a bare ASGI callable on the
proxy's own upstream client, i.e. AI Bridge's stack minus everything AI Bridge adds. "Added" is the
difference of the p50s (and of the p99s) against direct.

Throughput: AI Bridge with each upstream client in --clients (builtin is the default client).

Results: printed as tables, and written as JSON (--json, default bench/results/proxy_overhead.json) for
bench/report.py, which regenerates docs/performance.md's tables.

Rerun:  .venv/bin/python bench/proxy_overhead.py            (about 8 minutes)
        .venv/bin/python bench/proxy_overhead.py --duration 20 --clients builtin,aiohttp
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).parent))
import results as bench_results

ROUTE = "/api/v2/aibridge/openai/v1/chat/completions"
BLOCKING = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello in five words."}]}
STREAMING = BLOCKING | {"stream": True}
TOPIC = "aibridge.bench.v1"
MEASURE_NAMES = {"ttfb": "first byte", "total": "last byte"}


def serve_floor(port: int) -> None:
    """The floor: a minimal Starlette + aiohttp proxy (no auth, no recording), in its own process."""
    from contextlib import asynccontextmanager

    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response, StreamingResponse
    from starlette.routing import Route

    url = f"{os.environ['AIBRIDGE_OPENAI_BASE_URL']}/chat/completions"
    sessions: list[aiohttp.ClientSession] = []

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        sessions.append(aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)))
        yield
        await sessions[0].close()

    async def forward(request: Request) -> Response:
        body = await request.body()
        parsed = orjson.loads(body)
        headers = {"authorization": "Bearer sk-bench", "content-type": "application/json"}
        answer = await sessions[0].post(url, data=body, headers=headers)
        if parsed.get("stream"):

            async def relay() -> AsyncIterator[bytes]:
                async for chunk in answer.content.iter_any():
                    yield chunk

            return StreamingResponse(relay(), media_type="text/event-stream")
        data = await answer.read()
        orjson.loads(data)
        return Response(data, media_type="application/json")

    app = Starlette(routes=[Route(ROUTE, forward, methods=["POST"])], lifespan=lifespan)
    uvicorn.run(
        app, host="127.0.0.1", port=port, loop="uvloop", http="httptools", log_level="warning", access_log=False
    )


def serve_plain_floor(port: int) -> None:
    """The same minimal proxy as a bare ASGI callable (no router, no middleware, no task group) on the
    proxy's own upstream client (builtin): the stack AI Bridge runs on, minus everything it adds."""
    import uvicorn
    from starlette.types import Receive, Scope, Send

    from aibridge.proxy.settings import ProxySettings
    from aibridge.proxy.upstream.http1 import Http1Upstream

    url = f"{os.environ['AIBRIDGE_OPENAI_BASE_URL']}/chat/completions"
    clients: list[Http1Upstream] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] == "lifespan.startup":
                clients.append(Http1Upstream(ProxySettings()))
                await clients[0].start()
                await send({"type": "lifespan.startup.complete"})
            await clients[0].stop()
            await send({"type": "lifespan.shutdown.complete"})
            return
        parts = []
        while True:
            message = await receive()
            parts.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(parts)
        parsed = orjson.loads(body)
        headers = {"authorization": "Bearer sk-bench", "content-type": "application/json"}
        answer = await clients[0].request("POST", url, headers, body)
        if parsed.get("stream"):
            await send(
                {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]}
            )
            async for chunk in answer.chunks():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        data = await answer.read()
        orjson.loads(data)
        json_type = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": json_type})
        await send({"type": "http.response.body", "body": data})

    uvicorn.run(
        app, host="127.0.0.1", port=port, loop="uvloop", http="httptools", log_level="warning", access_log=False
    )


@contextmanager
def process(command: list[str], port: int, env: dict[str, str] | None = None, stderr: Any = None) -> Iterator[int]:
    """Run ``command`` until the block ends; yields its pid once ``port`` accepts connections."""
    from aibridge.testing.broker import wait_for_port

    child = subprocess.Popen(command, env=os.environ | (env or {}), stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        wait_for_port(port)
        yield child.pid
    finally:
        child.terminate()
        child.wait(20)


@contextmanager
def proxy_process(port: int, env: dict[str, str]) -> Iterator[int]:
    """AI Bridge as users run it, ``aibridge proxy`` (settings from ``env``; one worker unless
    ``AIBRIDGE_WORKERS`` is in it), until the block ends.

    Its log goes to a file, as a container's goes to a pipe: at the default level (INFO) that is a JSON
    line per interception. Yields the pid once the port accepts connections.
    """
    command = [str(Path(sys.executable).parent / "aibridge"), "proxy", "--listen", f"127.0.0.1:{port}"]
    env = {"AIBRIDGE_WORKERS": "1"} | env  # one process unless asked: the tables compare per process
    with tempfile.TemporaryFile() as log, process(command, port, env, stderr=log) as pid:
        yield pid


def upstream_command(port: int) -> list[str]:
    app = "aibridge.simulator:create_simulator_app"
    options = [
        "--port",
        str(port),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    return [sys.executable, "-m", "uvicorn", app, "--factory", *options]


Target = tuple[str, str, dict[str, str]]  # name, URL, headers


async def open_loop(targets: list[Target], body: bytes, rate: float, seconds: float) -> dict[str, dict[str, float]]:
    """Requests at a fixed rate, the targets taking turns in 1-second windows (``seconds`` per target);
    latency from each request's scheduled time, to the first byte of the body and to the last."""
    connector = aiohttp.TCPConnector(limit=0)
    first: dict[str, list[float]] = {name: [] for name, _, _ in targets}
    last: dict[str, list[float]] = {name: [] for name, _, _ in targets}
    errors = dict.fromkeys(first, 0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(name: str, url: str, headers: dict[str, str], scheduled: float, keep: bool = True) -> None:
            async with session.post(url, data=body, headers=headers) as response:
                await response.content.readany()
                first_byte = time.perf_counter() - scheduled
                await response.read()
                if keep:
                    first[name].append(first_byte)
                    last[name].append(time.perf_counter() - scheduled)
                errors[name] += response.status != 200

        for target in targets:  # warm the connection pools and the code paths
            for _ in range(50):
                await one(*target, time.perf_counter(), keep=False)
        errors = dict.fromkeys(first, 0)
        start, tasks, index = time.perf_counter(), [], 0
        for window in range(round(seconds) * len(targets)):
            target = targets[window % len(targets)]
            for _ in range(round(rate)):
                scheduled = start + index / rate
                index += 1
                await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
                tasks.append(asyncio.create_task(one(*target, scheduled)))
        await asyncio.gather(*tasks)
    return {
        name: summarize(first[name], "ttfb") | summarize(last[name], "total") | {"errors": errors[name]}
        for name in first
    }


def summarize(samples: list[float], name: str) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        f"{name}_p50_ms": statistics.median(ordered) * 1000,
        f"{name}_p99_ms": ordered[int(len(ordered) * 0.99) - 1] * 1000,
    }


def wrk(url: str, headers: dict[str, str], body: bytes, connections: int, seconds: float) -> dict[str, float]:
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    lines = ['wrk.method = "POST"', f"wrk.body = [[{body.decode()}]]"]
    lines += [f'wrk.headers["{name}"] = "{value}"' for name, value in headers.items()]
    script.write_text("\n".join(lines) + "\n")
    command = ["wrk", "-t1", f"-c{connections}", f"-d{round(seconds)}s", "--latency", "-s", str(script), url]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    script.unlink()
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    failures = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    broken = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return {"rps": rate, "p50_ms": _wrk_latency(output, "50%"), "p99_ms": _wrk_latency(output, "99%")} | {
        "non_2xx": float(failures.group(1)) if failures else 0.0,
        "socket_errors": float(sum(int(n) for n in broken.groups())) if broken else 0.0,
    }


def _wrk_latency(output: str, percentile: str) -> float:
    value, unit = re.search(rf"{percentile}\s+([\d.]+)(us|ms|s)", output).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def published_events(proxy: str) -> str:
    import urllib.request

    text = urllib.request.urlopen(f"{proxy}/metrics", timeout=5).read().decode()
    wanted = ("aibridge_proxy_events_published_total", "aibridge_proxy_events_dropped_total")
    return ", ".join(line for line in text.splitlines() if line.startswith(wanted))


def peak_rss_mib(pid: int) -> float:
    """The most resident memory a process has used (Linux /proc, VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def latency_table(  # noqa: PLR0917
    upstream: str, proxy: str, floors: dict[str, str], token: str, args: argparse.Namespace, pids: dict[str, int]
) -> dict[str, Any]:
    seconds = f"{args.duration:.0f}s each, in turns of 1s"
    print(f"\n## Added latency at {args.rate:.0f} req/s (open loop, {seconds}, from scheduled time)")
    columns = "".join(f" {name} added p50 / p99 |" for name in floors)
    print(f"| request | direct p50 / p99 | AI Bridge p50 / p99 | **added p50 / p99** |{columns} errors |")
    print("|---|---|---|---|" + "---|" * len(floors) + "---|")
    cpu: dict[str, dict[str, float]] = {}
    rows: list[dict[str, Any]] = []
    for name, body in (("blocking", BLOCKING), ("streaming", STREAMING)):
        targets: list[Target] = [
            ("direct", f"{upstream}/v1/chat/completions", {}),
            ("proxy", f"{proxy}{ROUTE}", auth(token)),
        ]
        targets += [(name, f"{url}{ROUTE}", {"Content-Type": "application/json"}) for name, url in floors.items()]
        before = {target: cpu_seconds(pid) for target, pid in pids.items()}
        result = asyncio.run(open_loop(targets, orjson.dumps(body), args.rate, args.duration))
        requests = 50 + round(args.rate) * round(args.duration)  # each target's warm-up and its windows
        cpu[name] = {target: (cpu_seconds(pid) - before[target]) / requests for target, pid in pids.items()}
        direct, via = result["direct"], result["proxy"]
        for measure in ("total",) if name == "blocking" else ("ttfb", "total"):
            d50, d99 = direct[f"{measure}_p50_ms"], direct[f"{measure}_p99_ms"]
            p50, p99 = via[f"{measure}_p50_ms"], via[f"{measure}_p99_ms"]
            label = name if name == "blocking" else f"{name} ({MEASURE_NAMES[measure]})"
            reference = ""
            added_by_floor = {}
            for floor in floors:
                f50, f99 = result[floor][f"{measure}_p50_ms"], result[floor][f"{measure}_p99_ms"]
                reference += f" {f50 - d50:.2f} / {f99 - d99:.2f} ms |"
                added_by_floor[floor] = {"added_p50_ms": f50 - d50, "added_p99_ms": f99 - d99}
            rows.append(
                {
                    "request": label,
                    "direct_p50_ms": d50,
                    "direct_p99_ms": d99,
                    "proxy_p50_ms": p50,
                    "proxy_p99_ms": p99,
                    "added_p50_ms": p50 - d50,
                    "added_p99_ms": p99 - d99,
                    "floors": added_by_floor,
                    "errors": {target: result[target]["errors"] for target in result},
                }
            )
            errors = "/".join(f"{result[target]['errors']:.0f}" for target in result)
            print(
                f"| {label} | {d50:.2f} / {d99:.2f} ms | {p50:.2f} / {p99:.2f} ms "
                f"| **{p50 - d50:.2f} / {p99 - d99:.2f} ms** |{reference} {errors} |"
            )
    print("\nCPU per request (the process's CPU during the run, background work included, ÷ its requests):")
    for name, per_target in cpu.items():
        print(f"- {name}: " + ", ".join(f"{target} {seconds * 1e6:,.0f} µs" for target, seconds in per_target.items()))
    return {
        "rate_per_s": args.rate,
        "seconds_per_target": args.duration,
        "rows": rows,
        "cpu_us_per_request": {
            name: {target: seconds * 1e6 for target, seconds in per_target.items()} for name, per_target in cpu.items()
        },
    }


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


def throughput_table(  # noqa: PLR0917
    upstream: str, proxy: str, token: str, client: str, args: argparse.Namespace, proxy_pid: int
) -> list[dict[str, Any]]:
    """wrk against the simulator directly and through AI Bridge; the proxy's CPU is read around its run, so
    a saturated replica's CPU per request and cores used are known (its requests/s per core)."""
    if shutil.which("wrk") is None:
        print("\n(wrk is not installed: apt-get install -y wrk; throughput skipped)")
        return []
    rows: list[dict[str, Any]] = []
    print(f"\n## Throughput, wrk -t1, {args.wrk_duration:.0f}s each, upstream client: {client}")
    print(
        "| request | connections | direct req/s | proxy req/s | direct p50 | proxy p50 | proxy p99 | non-2xx "
        "| proxy CPU per request | proxy cores used |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, body in (("blocking", BLOCKING), ("streaming", STREAMING)):
        for connections in args.connections:
            raw = orjson.dumps(body)
            plain = {"Content-Type": "application/json"}
            direct = wrk(f"{upstream}/v1/chat/completions", plain, raw, connections, args.wrk_duration)
            cpu_before, clock_before = cpu_seconds(proxy_pid), time.perf_counter()
            via = wrk(f"{proxy}{ROUTE}", auth(token), raw, connections, args.wrk_duration)
            cpu, clock = cpu_seconds(proxy_pid) - cpu_before, time.perf_counter() - clock_before
            cpu_us = cpu / max(1.0, via["rps"] * args.wrk_duration) * 1e6
            print(
                f"| {name} | {connections} | {direct['rps']:,.0f} | **{via['rps']:,.0f}** | {direct['p50_ms']:.2f} ms "
                f"| {via['p50_ms']:.2f} ms | {via['p99_ms']:.2f} ms | {via['non_2xx']:.0f} "
                f"| {cpu_us:,.0f} µs | {cpu / clock:.2f} |"
            )
            rows.append(
                {
                    "request": name,
                    "connections": connections,
                    "direct_rps": direct["rps"],
                    "proxy_rps": via["rps"],
                    "direct_p50_ms": direct["p50_ms"],
                    "proxy_p50_ms": via["p50_ms"],
                    "proxy_p99_ms": via["p99_ms"],
                    "non_2xx": via["non_2xx"],
                    "proxy_cpu_us_per_request": cpu_us,
                    "proxy_cores_used": cpu / clock,
                }
            )
    return rows


def bridge_env(keys: Path, bootstrap: str, upstream: str) -> dict[str, str]:
    """The settings of an ``aibridge proxy`` under benchmark: the bench's signing key (in ``keys``), the
    broker and topic, the simulated provider at ``upstream`` with a placeholder key."""
    return {
        "AIBRIDGE_AUTH_PUBLIC_KEY_FILE": str(keys / "signing_key.pub.pem"),
        "AIBRIDGE_KAFKA_BOOTSTRAP": bootstrap,
        "AIBRIDGE_KAFKA_TOPIC": TOPIC,
        "AIBRIDGE_OPENAI_KEY": "sk-bench",
        "AIBRIDGE_OPENAI_BASE_URL": f"{upstream}/v1",
    }


async def create_topic(bootstrap: str, topic: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    except TopicAlreadyExistsError:
        pass
    finally:
        await admin.close()


def run(args: argparse.Namespace) -> None:
    from aibridge.auth import generate_keypair, issue_token, load_private_key
    from aibridge.testing.broker import free_port, start_broker

    params = {
        name: getattr(args, name)
        for name in (
            "duration",
            "wrk_duration",
            "rate",
            "connections",
            "clients",
            "side_connections",
            "rounds",
            "workers",
            "prompt_words",
        )
    }
    run_record = bench_results.Run("proxy_overhead", params)
    side_record = bench_results.Run("proxy_side_by_side", params)
    broker = None if args.kafka_bootstrap else start_broker()
    bootstrap = args.kafka_bootstrap or (broker.bootstrap if broker else "")
    broker_pid = broker.process.pid if broker is not None else 0
    asyncio.run(create_topic(bootstrap, TOPIC))
    keys = Path(tempfile.mkdtemp())
    generate_keypair(keys)
    token = issue_token(load_private_key(keys / "signing_key.pem"), "bench")
    upstream_port = free_port()
    upstream = f"http://127.0.0.1:{upstream_port}"
    print(f"load average before: {os.getloadavg()}, cores: {os.cpu_count()}, broker: {bootstrap}")
    print(f"rerun: {bench_results.rerun_command()}")
    results: dict[str, Any] = {"latency": {}, "throughput": {}, "events": {}, "proxy_peak_rss_mib": {}}
    try:
        with process(upstream_command(upstream_port), upstream_port) as upstream_pid:
            for client in args.clients:
                port = free_port()
                env = bridge_env(keys, bootstrap, upstream) | {"AIBRIDGE_UPSTREAM_CLIENT": client}
                with proxy_process(port, env) as proxy_pid:
                    proxy = f"http://127.0.0.1:{port}"
                    if client == args.clients[0] and args.side_by_side:
                        from proxy_side_by_side import measure_side_by_side

                        pids = {"upstream": upstream_pid, "broker": broker_pid}
                        side = measure_side_by_side(upstream, (proxy, proxy_pid), token, args, env, pids)
                        side_record.write(args.side_by_side_json, side)
                    if args.side_by_side_only:
                        continue
                    if client == args.clients[0]:
                        results["latency"] = measure_latency(upstream, proxy, token, args, env, proxy_pid)
                        results["latency"]["upstream_client"] = client
                    results["throughput"][client] = throughput_table(upstream, proxy, token, client, args, proxy_pid)
                    time.sleep(1.0)
                    results["events"][client] = published_events(proxy)
                    results["proxy_peak_rss_mib"][client] = peak_rss_mib(proxy_pid)
                    print(f"\nevents ({client} run): {results['events'][client]}")
    finally:
        if broker is not None:
            broker.stop()
    print(f"\nload average after: {os.getloadavg()}")
    if not args.side_by_side_only:
        run_record.write(args.json, results)


def measure_latency(  # noqa: PLR0917
    upstream: str, proxy: str, token: str, args: argparse.Namespace, env: dict[str, str], proxy_pid: int
) -> dict[str, Any]:
    """The latency table, with the two floors in the same run unless --no-floor."""
    from aibridge.testing.broker import free_port

    if not args.floor:
        return latency_table(upstream, proxy, {}, token, args, {"AI Bridge": proxy_pid})
    ports = free_port(), free_port()
    with (
        process([sys.executable, __file__, "--serve-floor", str(ports[0])], ports[0], env) as starlette_pid,
        process([sys.executable, __file__, "--serve-plain-floor", str(ports[1])], ports[1], env) as plain_pid,
    ):
        floors = {"Starlette+aiohttp floor": ports[0], "plain+builtin floor": ports[1]}
        urls = {name: f"http://127.0.0.1:{port}" for name, port in floors.items()}
        pids = {"AI Bridge": proxy_pid, "Starlette+aiohttp floor": starlette_pid, "plain+builtin floor": plain_pid}
        return latency_table(upstream, proxy, urls, token, args, pids)


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    """``NAME:VAR=VALUE[:VAR=VALUE...]``: another one-worker AI Bridge with these settings."""
    name, *settings = text.split(":")
    return name, dict(setting.split("=", 1) for setting in settings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=12.0, help="seconds per measurement (and per target)")
    parser.add_argument("--wrk-duration", type=float, default=8.0, help="seconds per throughput measurement")
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second for the latency test")
    parser.add_argument("--connections", type=lambda v: [int(c) for c in v.split(",")], default=[1, 16, 64])
    parser.add_argument("--clients", type=lambda v: v.split(","), default=["builtin", "aiohttp", "httpx"])
    parser.add_argument("--side-connections", type=lambda v: [int(c) for c in v.split(",")], default=[1, 32])
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of the side-by-side table")
    parser.add_argument(
        "--workers", type=int, default=2, help="AI Bridge's workers in the side-by-side table's last row"
    )
    parser.add_argument(
        "--variant",
        action="append",
        type=parse_variant,
        default=None,
        metavar="NAME:VAR=VALUE",
        help="another one-worker AI Bridge in the side-by-side table (default: the aiokafka producer)",
    )
    parser.add_argument(
        "--prompt-words", type=int, default=0, help="pad the side-by-side table's prompt with this many words"
    )
    parser.add_argument("--no-side-by-side", dest="side_by_side", action="store_false")
    parser.add_argument("--side-by-side-only", action="store_true", help="only the side-by-side table")
    parser.add_argument(
        "--side-by-side-json",
        type=Path,
        default=bench_results.RESULTS_DIR / "proxy_side_by_side.json",
        help="where the side-by-side table's results go",
    )
    parser.add_argument("--kafka-bootstrap", default=None, help="use this broker instead of starting Tansu")
    parser.add_argument(
        "--no-floor", dest="floor", action="store_false", help="skip the minimal-proxy floors in the latency table"
    )
    bench_results.add_json_argument(parser, "proxy_overhead")
    parser.add_argument("--serve-floor", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--serve-plain-floor", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant is None:
        args.variant = [("aiokafka", {"AIBRIDGE_KAFKA_PRODUCER": "aiokafka"})]
    if args.serve_floor is not None:
        serve_floor(args.serve_floor)
    elif args.serve_plain_floor is not None:
        serve_plain_floor(args.serve_plain_floor)
    else:
        run(args)


if __name__ == "__main__":
    main()
