"""Proxy overhead: added latency (p50, p99) and throughput, proxy vs the simulated upstream directly.

Three processes, as in production: the simulated provider and the proxy each on uvicorn with uvloop and
httptools (one worker), events recorded to a real Kafka-protocol broker (Tansu, started here unless
--kafka-bootstrap is given). Load: a Python open-loop generator at a fixed rate for latency (latency
is measured from each request's scheduled send time, so a stall cannot hide), and wrk (closed loop,
-t1) for throughput when it is installed.

Rerun:  .venv/bin/python bench/proxy_overhead.py            (about 2 minutes)
        .venv/bin/python bench/proxy_overhead.py --duration 20 --clients aiohttp,httpx
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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import orjson

ROUTE = "/api/v2/aibridge/openai/v1/chat/completions"
BLOCKING = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello in five words."}]}
STREAMING = BLOCKING | {"stream": True}
TOPIC = "aibridge.bench.v1"


def serve_proxy(port: int) -> None:
    """Runs in the proxy's own process; settings from the environment."""
    import uvicorn
    from prometheus_client import generate_latest
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from aibridge.auth import TokenVerifier
    from aibridge.kafka import KafkaProducer
    from aibridge.proxy.component import create_proxy_app
    from aibridge.proxy.settings import ProxySettings

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(), media_type="text/plain")

    settings = ProxySettings()
    assert settings.auth_public_key_file is not None
    app = create_proxy_app(settings, KafkaProducer(settings), TokenVerifier.from_files(settings.auth_public_key_file))
    app.router.routes.append(Route("/metrics", metrics))
    uvicorn.run(
        app, host="127.0.0.1", port=port, loop="uvloop", http="httptools", log_level="warning", access_log=False
    )


@contextmanager
def process(command: list[str], port: int, env: dict[str, str] | None = None) -> Iterator[None]:
    from aibridge.testing.broker import wait_for_port

    child = subprocess.Popen(command, env=os.environ | (env or {}), stdout=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        yield
    finally:
        child.terminate()
        child.wait(20)


def upstream_command(port: int) -> list[str]:
    app = "aibridge.proxy.simulator:create_simulator_app"
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


async def open_loop(url: str, headers: dict[str, str], body: bytes, rate: float, seconds: float) -> dict[str, float]:
    """Requests at a fixed rate; latency from each request's scheduled time (first byte and last byte)."""
    connector = aiohttp.TCPConnector(limit=0)
    first: list[float] = []
    last: list[float] = []
    errors = 0
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(scheduled: float) -> None:
            nonlocal errors
            async with session.post(url, data=body, headers=headers) as response:
                await response.content.readany()
                first.append(time.perf_counter() - scheduled)
                await response.read()
                last.append(time.perf_counter() - scheduled)
                errors += response.status != 200

        for _ in range(20):  # warm the connection pools
            await one(time.perf_counter())
        first.clear(), last.clear()
        start, tasks = time.perf_counter(), []
        for index in range(int(rate * seconds)):
            scheduled = start + index / rate
            await asyncio.sleep(max(0.0, scheduled - time.perf_counter()))
            tasks.append(asyncio.create_task(one(scheduled)))
        await asyncio.gather(*tasks)
    return summarize(first, "ttfb") | summarize(last, "total") | {"errors": errors, "requests": len(last)}


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
    return {"rps": rate, "p50_ms": _wrk_latency(output, "50%"), "p99_ms": _wrk_latency(output, "99%")} | {
        "non_2xx": float(failures.group(1)) if failures else 0.0
    }


def _wrk_latency(output: str, percentile: str) -> float:
    value, unit = re.search(rf"{percentile}\s+([\d.]+)(us|ms|s)", output).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def published_events(proxy: str) -> str:
    import urllib.request

    text = urllib.request.urlopen(f"{proxy}/metrics", timeout=5).read().decode()
    wanted = ("aibridge_proxy_events_published_total", "aibridge_proxy_events_dropped_total")
    return ", ".join(line for line in text.splitlines() if line.startswith(wanted))


def latency_table(upstream: str, proxy: str, token: str, args: argparse.Namespace) -> None:
    print(f"\n## Added latency at {args.rate:.0f} req/s (open loop, {args.duration:.0f}s each, from scheduled time)")
    print("| request | direct p50 | proxy p50 | added p50 | direct p99 | proxy p99 | added p99 | errors |")
    print("|---|---|---|---|---|---|---|---|")
    for name, body in (("blocking", BLOCKING), ("streaming", STREAMING)):
        key = "total" if name == "blocking" else "ttfb"
        raw = orjson.dumps(body)
        direct = asyncio.run(open_loop(f"{upstream}/v1/chat/completions", {}, raw, args.rate, args.duration))
        via = asyncio.run(open_loop(f"{proxy}{ROUTE}", auth(token), raw, args.rate, args.duration))
        for measure in (key,) if name == "blocking" else ("ttfb", "total"):
            d50, p50 = direct[f"{measure}_p50_ms"], via[f"{measure}_p50_ms"]
            d99, p99 = direct[f"{measure}_p99_ms"], via[f"{measure}_p99_ms"]
            label = name if name == "blocking" else f"{name} ({'first byte' if measure == 'ttfb' else 'last byte'})"
            print(
                f"| {label} | {d50:.2f} ms | {p50:.2f} ms | **{p50 - d50:.2f} ms** | {d99:.2f} ms | {p99:.2f} ms "
                f"| **{p99 - d99:.2f} ms** | {direct['errors']:.0f}/{via['errors']:.0f} |"
            )


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}


def throughput_table(upstream: str, proxy: str, token: str, client: str, args: argparse.Namespace) -> None:
    if shutil.which("wrk") is None:
        print("\n(wrk is not installed: apt-get install -y wrk; throughput skipped)")
        return
    print(f"\n## Throughput, wrk -t1, {args.duration:.0f}s each, upstream client: {client}")
    print("| request | connections | direct req/s | proxy req/s | direct p50 | proxy p50 | proxy p99 | non-2xx |")
    print("|---|---|---|---|---|---|---|---|")
    for name, body in (("blocking", BLOCKING), ("streaming", STREAMING)):
        for connections in args.connections:
            raw = orjson.dumps(body)
            direct = wrk(
                f"{upstream}/v1/chat/completions", {"Content-Type": "application/json"}, raw, connections, args.duration
            )
            via = wrk(f"{proxy}{ROUTE}", auth(token), raw, connections, args.duration)
            print(
                f"| {name} | {connections} | {direct['rps']:,.0f} | **{via['rps']:,.0f}** | {direct['p50_ms']:.2f} ms "
                f"| {via['p50_ms']:.2f} ms | {via['p99_ms']:.2f} ms | {via['non_2xx']:.0f} |"
            )


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

    broker = None if args.kafka_bootstrap else start_broker()
    bootstrap = args.kafka_bootstrap or (broker.bootstrap if broker else "")
    asyncio.run(create_topic(bootstrap, TOPIC))
    keys = Path(tempfile.mkdtemp())
    generate_keypair(keys)
    token = issue_token(load_private_key(keys / "signing_key.pem"), "bench")
    upstream_port = free_port()
    upstream = f"http://127.0.0.1:{upstream_port}"
    print(f"load average before: {os.getloadavg()}, cores: {os.cpu_count()}, broker: {bootstrap}")
    print(f"rerun: {' '.join([sys.executable, *sys.argv])}")
    try:
        with process(upstream_command(upstream_port), upstream_port):
            for client in args.clients:
                port = free_port()
                env = {
                    "AIBRIDGE_AUTH_PUBLIC_KEY_FILE": str(keys / "signing_key.pub.pem"),
                    "AIBRIDGE_KAFKA_BOOTSTRAP": bootstrap,
                    "AIBRIDGE_KAFKA_TOPIC": TOPIC,
                    "AIBRIDGE_OPENAI_KEY": "sk-bench",
                    "AIBRIDGE_OPENAI_BASE_URL": f"{upstream}/v1",
                    "AIBRIDGE_UPSTREAM_CLIENT": client,
                }
                with process([sys.executable, __file__, "--serve-proxy", str(port)], port, env):
                    proxy = f"http://127.0.0.1:{port}"
                    if client == args.clients[0]:
                        latency_table(upstream, proxy, token, args)
                    throughput_table(upstream, proxy, token, client, args)
                    time.sleep(1.0)
                    print(f"\nevents ({client} run): {published_events(proxy)}")
    finally:
        if broker is not None:
            broker.stop()
    print(f"\nload average after: {os.getloadavg()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per measurement")
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second for the latency test")
    parser.add_argument("--connections", type=lambda v: [int(c) for c in v.split(",")], default=[1, 16, 64])
    parser.add_argument("--clients", type=lambda v: v.split(","), default=["aiohttp", "httpx"])
    parser.add_argument("--kafka-bootstrap", default=None, help="use this broker instead of starting Tansu")
    parser.add_argument("--serve-proxy", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_proxy is not None:
        serve_proxy(args.serve_proxy)
    else:
        run(args)


if __name__ == "__main__":
    main()
