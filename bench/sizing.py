"""The sizing guide of docs/deploy.md, computed from the benchmarks' results and the assumptions below.

Every measured input comes from bench/results/ (proxy CPU per request and memory, recorder events per
second, events and bytes per interception); every other number is an assumption named here, shown on
the page, and meant to be replaced by an operator's own (the rate of
``aibridge_proxy_interceptions_ended_total`` is the real request rate once the bridge runs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

DEVELOPERS = (100, 1_000, 10_000)
REQUESTS_PER_DEVELOPER_HOUR = 120  # agentic sessions: one model request per tool round, idle time included
PEAK_FACTOR = 3  # the busiest minutes against the working-hour average
ACTIVE_HOURS_PER_DAY = 8
WORKING_DAYS_PER_MONTH = 21
REQUEST_SECONDS = 20  # how long a request stays open (a streamed answer of an agent's turn)
TARGET_UTILISATION = 0.5  # plan each process at half of its measured capacity
RETENTION_DAYS = 60  # AIBRIDGE_RETENTION's default
KAFKA_RETENTION_DAYS = 7  # retention.ms of the topic in the deploy guide
KAFKA_REPLICATION = 3
STREAM_BUFFER_KIB = 256  # the builtin upstream client's bound on a response's unread bytes
MIB = 2**20
X = "\u00d7"  # the multiplication sign of the formulas on the page
GIB = 2**30


@dataclass(frozen=True)
class Measured:
    proxy_cpu_us: float  # per request at saturation, streamed and blocking weighted as the real mix
    streamed_cpu_us: float
    blocking_cpu_us: float
    proxy_rss_mib: float
    recorder_events_per_s: float
    recorder_rss_mib: float
    events_per_interception: float
    kafka_bytes_per_event: float  # lz4-compressed payload plus the key
    disk_bytes_per_interception: float
    streamed_share: float


STREAMED_SHARE = 0.95  # Claude Code and Codex stream every answer; SDK scripts often do not


def saturated_cpu(proxy: dict[str, Any], kind: str) -> float:
    """The builtin client's CPU per request at 16 connections (the proxy saturated)."""
    rows = proxy["results"]["throughput"]["builtin"]
    return float(next(r for r in rows if r["request"] == kind and r["connections"] == 16)["proxy_cpu_us_per_request"])


def measured(proxy: dict[str, Any], recorder: dict[str, Any], storage: dict[str, Any]) -> Measured:
    streamed, blocking = saturated_cpu(proxy, "streaming"), saturated_cpu(proxy, "blocking")
    events = storage["results"]["events"]
    return Measured(
        proxy_cpu_us=STREAMED_SHARE * streamed + (1 - STREAMED_SHARE) * blocking,
        streamed_cpu_us=streamed,
        blocking_cpu_us=blocking,
        proxy_rss_mib=float(proxy["results"]["proxy_peak_rss_mib"]["builtin"]),
        recorder_events_per_s=float(recorder["results"]["throughput"]["events_per_s_after_first_batch"]),
        recorder_rss_mib=float(recorder["results"].get("process_peak_rss_mib", 0.0)),
        events_per_interception=float(events["events_per_interception"]),
        kafka_bytes_per_event=float(events["lz4_bytes_per_event"] + events["key_bytes"]),
        disk_bytes_per_interception=float(storage["results"]["clickhouse"]["bytes_on_disk_per_interception"]),
        streamed_share=STREAMED_SHARE,
    )


def number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def row(label: str, values: list[str]) -> str:
    return f"| {label} |" + "".join(f" {value} |" for value in values)


def render(
    proxy: dict[str, Any] | None,
    recorder: dict[str, Any] | None,
    storage: dict[str, Any] | None,
    api_runs: list[dict[str, Any]],
) -> str | None:
    if proxy is None or recorder is None or storage is None or not proxy["results"]["throughput"].get("builtin"):
        return None
    m = measured(proxy, recorder, storage)
    return "\n".join([*inputs(m), "", *load_table(m), "", *components_table(m), "", *storage_table(m, api_runs)]) + "\n"


def inputs(m: Measured) -> list[str]:
    per_core = 1e6 / m.proxy_cpu_us
    return [
        "Measured (bench/results/, the tables in [performance.md](performance.md)):",
        "",
        f"- proxy CPU per request, saturated, builtin client: {number(m.streamed_cpu_us)} µs streamed, "
        f"{number(m.blocking_cpu_us)} µs blocking; for a {m.streamed_share:.0%} streamed mix "
        f"{number(m.proxy_cpu_us)} µs, so **one core serves 1,000,000 / {number(m.proxy_cpu_us)} = "
        f"{number(per_core)} req/s**; planned at {TARGET_UTILISATION:.0%}: "
        f"**{number(per_core * TARGET_UTILISATION)} req/s per proxy replica** (one process, one core);",
        f"- proxy memory: {number(m.proxy_rss_mib)} MiB peak resident under that load;",
        f"- one recorder: **{number(m.recorder_events_per_s)} events/s** topic → ClickHouse, planned at "
        f"{TARGET_UTILISATION:.0%}: {number(m.recorder_events_per_s * TARGET_UTILISATION)} events/s per replica;",
        f"- recorder memory: {number(m.recorder_rss_mib)} MiB peak resident for the benchmark's whole process "
        "(producer, recorder and the embedded ClickHouse engine), so an upper bound for a recorder alone;",
        f"- **{m.events_per_interception:.2f} events per interception** (started, prompt, token usage, tool usages, "
        f"ended, in the agentic mix of `bench/storage_size.py`), {number(m.kafka_bytes_per_event)} bytes each on the "
        "topic (lz4 batches plus the key);",
        f"- **{number(m.disk_bytes_per_interception)} bytes on disk per interception** in ClickHouse, every table, "
        "view and projection included, after merges.",
        "",
        f"Assumed (replace with your own): {REQUESTS_PER_DEVELOPER_HOUR} model requests per active developer per "
        f"hour (an agent makes one per tool round; idle time included), {ACTIVE_HOURS_PER_DAY} active hours a day, "
        f"{WORKING_DAYS_PER_MONTH} working days a month, a peak of {PEAK_FACTOR}{X} the working-hour average, "
        f"requests open for {REQUEST_SECONDS} s, every process planned at {TARGET_UTILISATION:.0%} of its measured "
        "capacity, one spare proxy replica.",
    ]


def peak_rps(developers: int) -> float:
    return developers * REQUESTS_PER_DEVELOPER_HOUR / 3600 * PEAK_FACTOR


def monthly_interceptions(developers: int) -> float:
    return developers * REQUESTS_PER_DEVELOPER_HOUR * ACTIVE_HOURS_PER_DAY * WORKING_DAYS_PER_MONTH


def load_table(m: Measured) -> list[str]:
    average = [n * REQUESTS_PER_DEVELOPER_HOUR / 3600 for n in DEVELOPERS]
    return [
        row("active developers", [f"**{n:,}**" for n in DEVELOPERS]),
        "|---|---|---|---|",
        row(
            f"requests/s, working-hour average = N {X} {REQUESTS_PER_DEVELOPER_HOUR} / 3,600",
            [number(a) for a in average],
        ),
        row(f"requests/s at peak = average {X} {PEAK_FACTOR}", [number(peak_rps(n)) for n in DEVELOPERS]),
        row(
            f"events/s at peak = peak {X} {m.events_per_interception:.2f}",
            [number(peak_rps(n) * m.events_per_interception) for n in DEVELOPERS],
        ),
        row(
            f"requests open at peak = peak {X} {REQUEST_SECONDS} s",
            [number(peak_rps(n) * REQUEST_SECONDS) for n in DEVELOPERS],
        ),
        row(
            f"interceptions per month = N {X} {REQUESTS_PER_DEVELOPER_HOUR} {X} {ACTIVE_HOURS_PER_DAY} h {X} "
            f"{WORKING_DAYS_PER_MONTH} days",
            [f"{monthly_interceptions(n) / 1e6:,.1f} M" for n in DEVELOPERS],
        ),
    ]


def proxy_replicas(m: Measured, developers: int) -> int:
    return math.ceil(peak_rps(developers) / (1e6 / m.proxy_cpu_us * TARGET_UTILISATION)) + 1


def components_table(m: Measured) -> list[str]:
    capacity = 1e6 / m.proxy_cpu_us * TARGET_UTILISATION
    recorder_capacity = m.recorder_events_per_s * TARGET_UTILISATION
    memory = []
    for n in DEVELOPERS:
        open_per_replica = peak_rps(n) * REQUEST_SECONDS / proxy_replicas(m, n)
        bound = m.proxy_rss_mib + open_per_replica * STREAM_BUFFER_KIB / 1024
        memory.append(f"{number(m.proxy_rss_mib)} + {number(open_per_replica)} {X} 0.25 = {number(bound)} MiB")
    recorders = [max(1, math.ceil(peak_rps(n) * m.events_per_interception / recorder_capacity)) for n in DEVELOPERS]
    kafka_in = [peak_rps(n) * m.events_per_interception * m.kafka_bytes_per_event / 1024 for n in DEVELOPERS]
    return [
        row("component", [f"{n:,} developers" for n in DEVELOPERS]),
        "|---|---|---|---|",
        row(
            f"proxy replicas = ⌈peak / {number(capacity)}⌉ + 1 spare, 1 CPU each",
            [str(proxy_replicas(m, n)) for n in DEVELOPERS],
        ),
        row(
            f"proxy memory limit ≤ measured {number(m.proxy_rss_mib)} MiB + open requests per replica {X} "
            f"{STREAM_BUFFER_KIB} KiB (worst case)",
            memory,
        ),
        row(
            f"recorder replicas = ⌈peak events/s / {number(recorder_capacity)}⌉, 1 CPU each",
            [str(r) for r in recorders],
        ),
        row(
            f"recorder memory \u2264 the measured {number(m.recorder_rss_mib)} MiB",
            [f"{number(m.recorder_rss_mib)} MiB"] * len(DEVELOPERS),
        ),
        row(f"Kafka in at peak = events/s {X} bytes per event", [f"{number(k)} KiB/s" for k in kafka_in]),
        row(
            f"Kafka disk = interceptions per month {X} {KAFKA_RETENTION_DAYS}/30 {X} "
            f"{m.events_per_interception:.2f} {X} {number(m.kafka_bytes_per_event)} B {X} {KAFKA_REPLICATION} replicas",
            [f"{kafka_disk_bytes(m, n) / GIB:,.2f} GiB" for n in DEVELOPERS],
        ),
    ]


def api_latency(run: dict[str, Any]) -> str:
    p50s = [entry["p50_ms"] for entry in run["results"]["in_process"]]
    p99s = [entry["p99_ms"] for entry in run["results"]["in_process"]]
    return (
        f"{run['params']['rows'] / 1e6:,.0f} M interceptions: p50 {min(p50s):.0f}\u2013{max(p50s):.0f} ms, "
        f"p99 {min(p99s):.0f}\u2013{max(p99s):.0f} ms across the scenarios"
    )


def kafka_disk_bytes(m: Measured, developers: int) -> float:
    events = monthly_interceptions(developers) * KAFKA_RETENTION_DAYS / 30 * m.events_per_interception
    return events * m.kafka_bytes_per_event * KAFKA_REPLICATION


def storage_table(m: Measured, api_runs: list[dict[str, Any]]) -> list[str]:
    months = RETENTION_DAYS / 30
    lines = [
        row("ClickHouse", [f"{n:,} developers" for n in DEVELOPERS]),
        "|---|---|---|---|",
        row(
            f"disk per month = interceptions {X} {number(m.disk_bytes_per_interception)} B",
            [f"{monthly_interceptions(n) * m.disk_bytes_per_interception / GIB:,.1f} GiB" for n in DEVELOPERS],
        ),
        row(
            f"disk at the {RETENTION_DAYS}-day default = per month {X} {months:.0f}",
            [f"{monthly_interceptions(n) * m.disk_bytes_per_interception * months / GIB:,.1f} GiB" for n in DEVELOPERS],
        ),
        row(
            f"interceptions kept ({RETENTION_DAYS} days)",
            [f"{monthly_interceptions(n) * months / 1e6:,.0f} M" for n in DEVELOPERS],
        ),
    ]
    if api_runs:
        largest = max(run["params"]["rows"] for run in api_runs)
        kept = [monthly_interceptions(n) * months for n in DEVELOPERS]
        lines.append(
            row(
                f"API latency measured at this size (largest store measured: {largest / 1e6:,.0f} M)",
                [
                    f"yes, {k / 1e6:,.0f} M \u2264 {largest / 1e6:,.0f} M" if k <= largest else "no, larger"
                    for k in kept
                ],
            )
        )
        lines += [
            "",
            "API, a page of 100 (in-process, embedded engine on the benchmark machine's shared cores): "
            + "; ".join(api_latency(run) for run in api_runs)
            + ".",
        ]
    return lines
