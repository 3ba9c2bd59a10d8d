"""Regenerates the benchmark tables of docs/performance.md and the sizing guide of docs/deploy.md.

Reads the latest results in bench/results/ (written by each benchmark) and replaces what stands between
``<!-- bench:NAME -->`` and ``<!-- /bench -->`` in the pages, so the numbers there are always those of
the last run. A block whose results are missing is left as it is.

    .venv/bin/python bench/report.py            # rewrite the pages
    .venv/bin/python bench/report.py --check    # exit 1 if a page differs from what the results give
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).parent))
import sizing
from results import RESULTS_DIR

REPOSITORY = Path(__file__).resolve().parent.parent
PAGES = tuple(REPOSITORY / "docs" / page for page in ("performance.md", "deploy.md", "privacy.md"))
BLOCK = re.compile(r"(<!-- bench:(?P<name>[a-z_]+) -->\n)(?P<body>.*?)(<!-- /bench -->)", re.DOTALL)

Results = dict[str, Any]
X = "\u00d7"  # the multiplication sign


def load(name: str) -> Results | None:
    path = RESULTS_DIR / f"{name}.json"
    return orjson.loads(path.read_bytes()) if path.exists() else None


def api_runs() -> list[Results]:
    runs = [orjson.loads(path.read_bytes()) for path in RESULTS_DIR.glob("api_query_*.json")]
    return sorted(runs, key=lambda run: run["params"]["rows"])


def ms(value: float) -> str:
    return f"{value:.2f} ms"


def pair(p50: float, p99: float) -> str:
    return f"{p50:.2f} / {p99:.2f} ms"


def added(measure: dict[str, float]) -> str:
    return pair(measure["added_p50_ms"], measure["added_p99_ms"])


def count(value: float) -> str:
    return f"{value:,.0f}"


def small(value: float) -> str:
    """A count, with a decimal when it is below 10."""
    return f"{value:,.0f}" if value >= 10 else f"{value:.1f}"


def provenance(run: Results) -> str:
    machine = run["machine"]
    load_before, load_after = machine["load_before"][0], machine["load_after"][0]
    return (
        f"_Run: `{run['command']}` on {machine['cores']} cores ({machine['cpu_model']}), Python "
        f"{machine['python']}, load average {load_before:.1f} at the start and {load_after:.1f} at the end._\n"
    )


def proxy_overhead(run: Results) -> str:
    latency, lines = run["results"]["latency"], []
    floors = list(latency["rows"][0]["floors"])
    lines.append(
        f"Added latency at {latency['rate_per_s']:.0f} req/s, {latency['seconds_per_target']:.0f} s per target "
        f"(p50 / p99; upstream client: {latency['upstream_client']}):\n"
    )
    lines.append("| request | direct | **AI Bridge added** |" + "".join(f" {floor} added |" for floor in floors))
    lines.append("|---|---|---|" + "---|" * len(floors))
    for row in latency["rows"]:
        cells = "".join(f" {added(row['floors'][floor])} |" for floor in floors)
        direct = pair(row["direct_p50_ms"], row["direct_p99_ms"])
        lines.append(f"| {row['request']} | {direct} | **{pair(row['added_p50_ms'], row['added_p99_ms'])}** |{cells}")
    cpu = latency["cpu_us_per_request"]
    targets = list(cpu["blocking"])
    lines.append(
        f"\nCPU per request at {latency['rate_per_s']:.0f} req/s (each process's CPU over the run ÷ its requests):\n"
    )
    lines.append("| request |" + "".join(f" {target} |" for target in targets))
    lines.append("|---|" + "---|" * len(targets))
    lines += [f"| {kind} |" + "".join(f" {count(cpu[kind][t])} µs |" for t in targets) for kind in cpu]
    lines.append("\n" + throughput(run))
    return "\n".join(lines) + "\n" + provenance(run)


def throughput(run: Results) -> str:
    measured = run["results"]["throughput"]
    by_client = {client: measured[client] for client in run["params"]["clients"] if measured.get(client)}
    if not by_client:
        return "(wrk was not installed: no throughput measured)\n"
    connections = sorted({row["connections"] for rows in by_client.values() for row in rows})
    seconds = run["params"]["wrk_duration"]
    lines = [
        f"Throughput, `wrk -t1` (closed loop, {seconds:.0f} s per cell): AI Bridge's requests per second, and in "
        "brackets the proxy process's CPU per request and the cores it used:\n",
        "| upstream client | request |" + "".join(f" c={c} |" for c in connections),
        "|---|---|" + "---|" * len(connections),
    ]
    for client, rows in by_client.items():
        for kind in ("blocking", "streaming"):
            cells = {row["connections"]: row for row in rows if row["request"] == kind}
            text = "".join(
                f" {count(cells[c]['proxy_rps'])} ({count(cells[c]['proxy_cpu_us_per_request'])} µs, "
                f"{cells[c]['proxy_cores_used']:.2f}) |"
                for c in connections
            )
            label = f"**{client}**" if client == "builtin" else client
            lines.append(f"| {label} | {kind} |{text}")
    first = next(iter(by_client.values()))  # the first client's run (the default, builtin, unless told)
    for kind in ("blocking", "streaming"):
        cells = {row["connections"]: row for row in first if row["request"] == kind}
        lines.append(
            f"| the simulator directly | {kind} |" + "".join(f" {count(cells[c]['direct_rps'])} |" for c in connections)
        )
    rss = run["results"].get("proxy_peak_rss_mib", {})
    if rss:
        lines.append(
            "\nPeak resident memory of the proxy process: "
            + ", ".join(f"{c} {rss[c]:.0f} MiB" for c in run["params"]["clients"] if c in rss)
            + "."
        )
    return "\n".join(lines) + "\n"


def proxy_side_by_side(run: Results) -> str:
    result, lines = run["results"], []
    lines.append(
        f"`wrk -t1`, {result['seconds']:.0f} s per run, the median of {result['rounds']} alternating rounds; "
        "CPU per request of the serving proxy process (a supervisor and its workers together), of the "
        "simulated upstream, of the broker, of wrk, and of the whole machine"
        + (f"; a prompt of {result['prompt_bytes'] / 1024:.0f} KiB" if result.get("prompt_bytes", 0) > 1024 else "")
        + ":\n"
    )
    columns = "request | c | target | req/s | p50 | of bare proxy | proxy | upstream | broker | wrk | machine"
    lines.append(f"| {columns} | errors |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    bare = {(r["request"], r["connections"]): r["rps"] for r in result["rows"] if r["target"] == "bare proxy"}
    for row in result["rows"]:
        cpu = row["cpu_us_per_request"]
        cells = " | ".join(
            f"{count(cpu[name])} µs" if name in cpu else "—"
            for name in ("serving proxy", "upstream", "broker", "wrk", "machine")
        )
        share = row["rps"] / bare[(row["request"], row["connections"])]
        target = f"**{row['target']}**" if row["target"].startswith("AI Bridge") else row["target"]
        lines.append(
            f"| {row['request']} | {row['connections']} | {target} | {count(row['rps'])} | {ms(row['p50_ms'])} "
            f"| {share:.0%} | {cells} | {count(row['non_2xx'] + row.get('socket_errors', 0.0))} |"
        )
    return "\n".join(lines) + "\n\n" + provenance(run)


def proxy_ab(run: Results) -> str:
    variants = [variant.split(":")[0] for variant in run["params"]["variants"]]
    lines = [
        f"Added p50 / p99 at {run['params']['rate']:.0f} req/s, {run['params']['duration']:.0f} s per variant:\n",
        "| request | direct |" + "".join(f" {name} |" for name in variants),
        "|---|---|" + "---|" * len(variants),
    ]
    for row in run["results"]["rows"]:
        cells = "".join(
            f" {pair(row['variants'][n]['added_p50_ms'], row['variants'][n]['added_p99_ms'])} |" for n in variants
        )
        lines.append(f"| {row['request']} | {pair(row['direct_p50_ms'], row['direct_p99_ms'])} |{cells}")
    return "\n".join(lines) + "\n\n" + provenance(run)


def log_line(run: Results) -> str:
    """The interception log line's cost per path, p50 and p99 µs of the calling thread."""
    lines = ["| path | p50 | p99 |", "|---|---|---|"]
    lines += [
        f"| {path} | {row['p50_us']:.1f} µs | {row['p99_us']:.1f} µs |"
        for path, row in run["results"]["per_line"].items()
    ]
    return "\n".join(lines) + "\n\n" + provenance(run)


def budgets_ab(run: Results) -> str:
    """The A/B table of budgets off and on, the difference of their added p50, and the check's own cost."""
    result = run["results"]
    lines = [
        proxy_ab(run).split("\n\n_Run:")[0],
        "",
        "| request | on minus off, added p50 | off-2 minus off (A/A: the noise floor) |",
        "|---|---|---|",
    ]
    lines += [
        f"| {row['request']} | **{budgets_difference(row):+.3f} ms** | {budgets_difference(row, 'off-2'):+.3f} ms |"
        for row in result["rows"]
    ]
    timing = result["in_process"]
    lines.append(
        f"\nThe budget check decided {count(result['decisions']['on'].get('within', 0))} requests of `on` "
        f'(`aibridge_proxy_budget_decisions_total{{outcome="within"}}`). In process, one `BudgetGuard.check` '
        f"takes {timing['check_us_p50']:.2f} µs and counting one usage (`recorded`) {timing['recorded_us_p50']:.2f} µs "
        "(median)."
    )
    return "\n".join(lines) + "\n\n" + provenance(run)


def bridge_time_lines(rows: list[dict[str, Any]], apis: dict[str, str]) -> list[str]:
    """Per case, each proxy process's own time per request (its overhead histogram's mean), on against off."""
    lines = [
        "The bridge's own time per request, from each proxy's `aibridge_proxy_overhead_seconds` (an "
        "interception's duration less its waits on the provider and on the client; its sum over its count "
        f"for {rows[0]['bridge_requests']:.0f} more requests per process and case, the client's body, one at a time): "
        "neither the provider's work nor the client's is in it. Each side the mean of its two processes, in µs:",
        "",
        "| API | request | body | off | on | **on minus off** | A/A: off-2 minus off, on-2 minus on |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        mean = row["bridge_us"]
        off, on = (mean["off"] + mean["off-2"]) / 2, (mean["on"] + mean["on-2"]) / 2
        lines.append(
            f"| {apis[row['api']]} | {row['request']} | {row['body_kib']:.1f} KiB | {off:.0f} | {on:.0f} "
            f"| **{row['bridge_on_minus_off_us']:+.0f}** | {row['bridge_aa_us']:+.0f} / {row['bridge_aa_on_us']:+.0f} |"
        )
    return lines


def mcp_overhead(run: Results) -> str:
    """MCP injection on against off with no injected call (one request at a time, every API), the cost of
    one round, the closed loop, the in-process work."""
    result = run["results"]
    lines = [
        f"One request at a time ({run['params']['passes']:.0f} passes of {run['params']['requests']:.0f} requests "
        "per target and case; each request's time less the simulated provider's own time for it, each figure "
        "from each pass's p50s, the median over the passes shown):",
        "",
        "| API | request | body | direct | off: besides the provider | on: besides the provider "
        "| **added, on minus off** | each pass "
        "| on minus opted out (same processes) | A/A: off-2 minus off, on-2 minus on "
        "| on minus off, the provider's part measured directly instead |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    apis = {"chat": "chat completions", "messages": "Anthropic messages", "responses": "Responses"}
    for row in result["paired"]:
        passes = " ".join(f"{value:+.3f}" for value in row["added_on_minus_off_passes_ms"])
        lines.append(
            f"| {apis[row['api']]} | {row['request']} | {row['body_kib']:.1f} KiB | {ms(row['direct_p50_ms'])} "
            f"| {ms(row['off_added_ms'])} | {ms(row['on_added_ms'])} | **{row['added_on_minus_off_ms']:+.3f} ms** "
            f"| {passes} | {row['added_on_minus_out_ms']:+.3f} ms | {row['aa_ms']:+.3f} / {row['aa_on_ms']:+.3f} ms "
            f"| {row['direct_on_minus_off_ms']:+.3f} ms |"
        )
    if all("bridge_us" in row for row in result["paired"]):
        lines += ["", *bridge_time_lines(result["paired"], apis)]
    failed = [
        f"{row['api']} {row['request']} {row['body']}: {row['errors']}" for row in result["paired"] if row["errors"]
    ]
    if failed:
        lines += [
            "",
            "Requests answered with another status than 200 (they count in the latencies): " + "; ".join(failed),
        ]
    if result.get("closed_loop"):
        lines += ["", *closed_loop_lines(result["closed_loop"], run["params"])]
    one = result["one_round"]
    rest = one["added_p50_ms"] - one["mcp_call_mean_ms"]
    lines += [
        "",
        "One round (blocking, small body, the model calls one injected tool once, against the same request with "
        "injection off):",
        "",
        "| | p50 |",
        "|---|---|",
        f"| on minus off, total added | **{ms(one['added_p50_ms'])}** |",
        f"| the MCP call (mean of `aibridge_mcp_call_duration_seconds`, {one['mcp_calls']:.0f} calls) "
        f"| {ms(one['mcp_call_mean_ms'])} |",
        f"| the rest: the extra upstream round and the bridge's loop (reading the answer, the follow-up body, "
        f"merging) | {ms(rest)} |",
        f"| for scale: one request to the simulated provider directly (p50) | {ms(one['direct_p50_ms'])} |",
        "",
        "In process, one request's own work when no injected call is made (median, µs). Blocking: what "
        "injection adds. Streamed, a 60-delta answer: relayed with injection until the client has it; the same "
        "stream without injection, forwarded alone and as the relay runs it (its tee also parses each chunk "
        "after sending it); last, the parsing for the record, which with injection all comes after the answer "
        "and without it comes after each send and at the end:",
        "",
        "| request | body | on: relayed | off: forwarded | off: forwarded and parsed | **on minus off (forwarded)** "
        "| parsing for the record: on / off |",
        "|---|---|---|---|---|---|---|",
    ]
    timing = result["in_process"]
    for size in ("small", "large"):
        lines.append(
            f"| blocking (chat) | {size} | {timing[f'blocking_{size}_us']:.1f} | | | "
            f"**+{timing[f'blocking_{size}_us']:.1f}** | |"
        )
    for api, label in (
        ("chat", "streamed, chat"),
        ("anthropic", "streamed, Anthropic"),
        ("responses", "streamed, Responses"),
    ):
        for size in ("small", "large"):
            on, off = timing[f"streamed_{api}_{size}_us"], timing[f"streamed_off_{api}_{size}_us"]
            relayed = timing[f"streamed_off_relayed_{api}_{size}_us"]
            on_record = timing[f"streamed_recorded_{api}_{size}_us"] - on
            off_record = timing[f"streamed_off_recorded_{api}_{size}_us"] - off
            lines.append(
                f"| {label} | {size} | {on:.1f} | {off:.1f} | {relayed:.1f} | **{on - off:+.1f}** "
                f"| {on_record:.0f} / {off_record:.0f} |"
            )
    lines.append(
        f"\nFor scale: encoding the {result['encode']['body_kib']:.0f} KiB body with `orjson.dumps`, which the "
        f"proxy did before it spliced the tools into the client's bytes: {result['encode']['dumps_p50_us']:.0f} µs."
    )
    return "\n".join(lines) + "\n\n" + provenance(run)


def closed_loop_lines(rows: list[dict[str, Any]], params: dict[str, Any]) -> list[str]:
    """MCP injection in closed loop: requests per second and the proxy's CPU per request."""
    found = {(row["request"], row["target"]): row for row in rows}
    lines = [
        f"Closed loop (`wrk -t1 -c{params['wrk_connections']}`, small body, {params['rounds']} alternating rounds "
        f"of {params['wrk_duration']:.0f} s, the median): the proxy process's CPU per request, which the machine's "
        "noise moves least, and requests per second:",
        "",
        "| request | on | off | off with the tools in the client's body | on minus off "
        "| **on minus off with the tools** |",
        "|---|---|---|---|---|---|",
    ]
    for request in ("blocking", "streamed"):
        on, off, tools = (found[(request, target)] for target in ("on", "off", "off_tools"))
        cpu = [row["cpu_us_per_request"] for row in (on, off, tools)]
        lines.append(
            f"| {request}: CPU per request | {cpu[0]:.0f} µs | {cpu[1]:.0f} µs | {cpu[2]:.0f} µs "
            f"| {cpu[0] - cpu[1]:+.0f} µs | **{cpu[0] - cpu[2]:+.0f} µs** |"
        )
        rate = [row["rps"] for row in (on, off, tools)]
        lines.append(
            f"| {request}: requests per second | {rate[0]:,.0f} | {rate[1]:,.0f} | {rate[2]:,.0f} "
            f"| {rate[0] / rate[1] - 1:+.0%} | {rate[0] / rate[2] - 1:+.0%} |"
        )
    return lines


def recorder_throughput(run: Results) -> str:
    result, params = run["results"], run["params"]
    flow, delay = result["throughput"], result["delay"]
    lines = [
        "| measure | result |",
        "|---|---|",
        f"| topic → queryable rows, {count(params['events'])} events, after the first batch | "
        f"**{count(flow['events_per_s_after_first_batch'])} events/s** |",
        f"| the same from the recorder's start (group join included) | "
        f"{count(flow['events_per_s_from_start_incl_group_join'])} events/s |",
        f"| publish → queryable at a steady {count(params['rate'])} events/s for {params['seconds']:.0f} s: "
        f"p50 / p99 / max | {delay['p50_s']:.2f} / **{delay['p99_s']:.2f}** / {delay['max_s']:.2f} s |",
        f"| recorder failures during the run | {result['recorder_failures']:.0f} |",
    ]
    return "\n".join(lines) + "\n\n" + provenance(run)


def api_query(runs: list[Results]) -> str:
    sizes = [run["params"]["rows"] for run in runs]
    header = "| scenario (page of 100, p50 / p99) |" + "".join(f" {rows:,} interceptions |" for rows in sizes)
    lines = [header, "|---|" + "---|" * len(sizes)]
    names = [entry["name"] for entry in runs[-1]["results"]["in_process"] + runs[-1]["results"].get("http", [])]
    for name in names:
        cells = ""
        for run in runs:
            found = [e for e in run["results"]["in_process"] + run["results"].get("http", []) if e["name"] == name]
            cells += f" {found[0]['p50_ms']:.0f} / {found[0]['p99_ms']:.0f} ms |" if found else " \u2013 |"
        lines.append(f"| {name} |{cells}")
    disk = "".join(
        f" {sum(t['bytes_on_disk'] for t in run['results']['storage'].values()) / 2**30:.2f} GiB |" for run in runs
    )
    lines.append(f"| store size on disk (all tables) |{disk}")
    text = "\n".join(lines) + "\n\n"
    return text + "".join(provenance(run) + "\n" for run in runs).rstrip("\n") + "\n"


def storage_size(run: Results) -> str:
    events, disk = run["results"]["events"], run["results"]["clickhouse"]
    lines = [
        "| event type | per interception | mean JSON bytes |",
        "|---|---|---|",
        *(
            f"| `{kind}` | {value['per_interception']:.2f} | {count(value['mean_bytes'])} |"
            for kind, value in events["per_type"].items()
        ),
        f"| **all** | **{events['events_per_interception']:.2f}** | {count(events['json_bytes_per_event'])} "
        f"(lz4 in batches of 100: {count(events['lz4_bytes_per_event'])}, {events['lz4_ratio']:.1f}{X}) |",
        "",
        "| ClickHouse table | rows | bytes on disk | of which projections | per interception |",
        "|---|---|---|---|---|",
        *(
            f"| `{table}` | {count(value['rows'])} | {value['bytes_on_disk'] / 2**20:.1f} MiB | "
            f"{value['projection_bytes_on_disk'] / 2**20:.1f} MiB "
            f"| {small(value['bytes_on_disk_per_interception'])} B |"
            for table, value in disk["tables"].items()
        ),
        f"| **all** | | {disk['bytes_on_disk_total'] / 2**20:.1f} MiB | | "
        f"**{count(disk['bytes_on_disk_per_interception'])} B** |",
        "",
        f"Columns compress {disk['compression_ratio']:.1f}{X} ({count(disk['uncompressed_bytes_per_interception'])} B "
        f"→ {count(disk['compressed_bytes_per_interception'])} B per interception, projections not counted).",
    ]
    return "\n".join(lines) + "\n\n" + provenance(run)


def sessions_query(run: Results) -> str:
    """The sessions page and a session's detail over the sessions store, against their targets."""
    lines = ["| scenario | p50 | p99 | target (p99) |", "|---|---|---|---|"]
    for entry in run["results"]["in_process"]:
        limit = 50 if entry["name"].startswith("one session") else 100
        lines.append(
            f"| {entry['name']} | {ms(entry['p50_ms'])} | {ms(entry['p99_ms'])} | "
            f"\u2264 {limit} ms: {verdict(entry['p99_ms'], limit)} |"
        )
    tables = run["results"]["storage"]
    sizes = ", ".join(
        f"`{name}` {tables[name]['bytes_on_disk'] / 2**20:.0f} MiB" for name in ("interceptions_by_session", "sessions")
    )
    lines.append(f"\nThe session tables on disk: {sizes}.")
    return "\n".join(lines) + "\n\n" + provenance(run)


def redaction(run: Results) -> str:
    cells: dict[tuple[str, str], dict[bool, str]] = {}
    for row in run["results"]["rows"]:
        cells.setdefault((row["mode"], row["prompt"]), {})[row["secrets"]] = f"{row['p50_us']:,.1f} µs"
    lines = ["| mode | prompt | no secrets p50 | with secrets p50 |", "|---|---|---|---|"]
    lines += [f"| {mode} | {prompt} | {cell[False]} | {cell[True]} |" for (mode, prompt), cell in cells.items()]
    return "\n".join(lines) + "\n\n" + provenance(run)


def verdict(value: float, limit: float, at_least: bool = False) -> str:
    return "met" if (value >= limit if at_least else value <= limit) else "**missed**"


def targets() -> str | None:
    proxy, recorder, runs = load("proxy_overhead"), load("recorder_throughput"), api_runs()
    if proxy is None or recorder is None or not runs:
        return None
    rows = proxy["results"]["latency"]["rows"]
    worst_p50, worst_p99 = max(r["added_p50_ms"] for r in rows), max(r["added_p99_ms"] for r in rows)
    blocking = [r for r in proxy["results"]["throughput"].get("builtin", []) if r["request"] == "blocking"]
    best_rps = max((r["proxy_rps"] for r in blocking), default=0.0)
    flow = recorder["results"]["throughput"]["events_per_s_after_first_batch"]
    delay = recorder["results"]["delay"]["p99_s"]
    api = runs[-1]
    api_p99 = max(entry["p99_ms"] for entry in api["results"]["in_process"])
    lines = [
        "| target | latest | |",
        "|---|---|---|",
        f"| proxy added p50 \u2264 1 ms at 200 req/s | {ms(worst_p50)} (worst row) | {verdict(worst_p50, 1)} |",
        f"| proxy added p99 \u2264 5 ms at 200 req/s | {ms(worst_p99)} (worst row) | {verdict(worst_p99, 5)} |",
        f"| \u2265 1,000 req/s blocking, one replica | {count(best_rps)} req/s | {verdict(best_rps, 1000, True)} |",
        f"| recorder \u2265 20,000 events/s | {count(flow)} events/s | {verdict(flow, 20_000, True)} |",
        f"| publish \u2192 queryable p99 \u2264 2 s | {delay:.2f} s | {verdict(delay, 2)} |",
        f"| API p99 \u2264 100 ms per page ({api['params']['rows'] / 1e6:,.0f} M store, in-process) "
        f"| {api_p99:.0f} ms (worst scenario) | {verdict(api_p99, 100)} |",
    ]
    side = load("proxy_side_by_side")
    if side is not None:
        lines += side_by_side_targets(side["results"]["rows"])
    budgets = load("budgets_ab")
    if budgets is not None:
        worst = max(budgets_difference(row) for row in budgets["results"]["rows"])
        lines.append(
            f"| budgets on: added p50 \u2264 off + 0.05 ms | {worst:+.3f} ms (worst row) | {verdict(worst, 0.05)} |"
        )
    mcp = load("mcp_overhead")
    if mcp is not None:
        worst = max(row["added_on_minus_off_ms"] for row in mcp["results"]["paired"])
        lines.append(
            f"| MCP injection on, no injected call: added p50 \u2264 off + 0.05 ms | {worst:+.3f} ms (worst row) "
            f"| {verdict(worst, 0.05)} |"
        )
    return "\n".join(lines) + "\n"


def side_by_side_targets(rows: list[dict[str, Any]]) -> list[str]:
    """One worker of AI Bridge against the bare proxy at 32 connections: requests per second and the
    serving process's CPU per request, blocking and streamed."""
    lines = []
    for request in ("blocking", "streaming"):
        cells = {r["target"]: r for r in rows if r["request"] == request and r["connections"] == 32}
        bridge, bare = cells.get("AI Bridge"), cells.get("bare proxy")
        if bridge is None or bare is None:
            continue
        share = bridge["rps"] / bare["rps"]
        cpu = bridge["cpu_us_per_request"]["serving proxy"] / bare["cpu_us_per_request"]["serving proxy"]
        lines.append(
            f"| AI Bridge at 32 connections, {request}: \u2265 90% of the bare proxy's req/s "
            f"| {share:.0%} | {verdict(share, 0.9, True)} |"
        )
        lines.append(
            f"| AI Bridge at 32 connections, {request}: CPU per request \u2264 1.1 \u00d7 the bare proxy's "
            f"| {cpu:.2f} \u00d7 | {verdict(cpu, 1.1)} |"
        )
    return lines


def budgets_difference(row: dict[str, Any], variant: str = "on") -> float:
    """``variant`` (budgets on, or the second proxy with them off) minus off, in added p50 (ms), of one row."""
    variants = row["variants"]
    return float(variants[variant]["added_p50_ms"] - variants["off"]["added_p50_ms"])


def generators() -> dict[str, Callable[[], str | None]]:
    def single(name: str, render: Callable[[Results], str]) -> Callable[[], str | None]:
        return lambda: render(run) if (run := load(name)) else None

    return {
        "proxy_overhead": single("proxy_overhead", proxy_overhead),
        "proxy_side_by_side": single("proxy_side_by_side", proxy_side_by_side),
        "proxy_side_by_side_large": single("proxy_side_by_side_large", proxy_side_by_side),
        "proxy_ab": single("proxy_ab", proxy_ab),
        "log_line": single("log_line", log_line),
        "mcp_overhead": single("mcp_overhead", mcp_overhead),
        "budgets_ab": single("budgets_ab", budgets_ab),
        "recorder_throughput": single("recorder_throughput", recorder_throughput),
        "storage_size": single("storage_size", storage_size),
        "redaction": single("redaction", redaction),
        "api_query": lambda: api_query(runs) if (runs := api_runs()) else None,
        "sessions_query": single("sessions_query_10000000", sessions_query),
        "targets": targets,
        "sizing": lambda: sizing.render(
            load("proxy_overhead"), load("recorder_throughput"), load("storage_size"), api_runs()
        ),
    }


def regenerate(text: str) -> str:
    makers = generators()

    def replace(match: re.Match[str]) -> str:
        maker = makers.get(match["name"])
        body = maker() if maker else None
        return match[0] if body is None else f"{match[1]}{body}{match[4]}"

    return BLOCK.sub(replace, text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check that the pages are up to date")
    args = parser.parse_args()
    stale = []
    for page in PAGES:
        text = page.read_text()
        updated = regenerate(text)
        if updated != text:
            stale.append(page.name)
            if not args.check:
                page.write_text(updated)
    print(("out of date: " if args.check else "updated: ") + (", ".join(stale) or "nothing"))
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
