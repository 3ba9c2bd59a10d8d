"""List-query latency of the API over a store of 10 million interceptions (embedded chDB engine).

Builds the store once with ClickHouse SQL (INSERT ... SELECT FROM numbers(N); minutes, not hours):
N interceptions over 60 days from 1,000 users (skewed: a few heavy users), 8 models, 9 clients, each
with a prompt, a token usage and 0-3 tool usages. The newest ``--recent`` interceptions arrive the way
the recorder writes them: started rows (version 0) and ended rows (version 1) in separate inserts of
``--batch`` rows, 1% of them redelivered (duplicates), the newest 100 still in flight. No OPTIMIZE:
queries see unmerged parts and duplicates, as in production.

Then times the API's own code path (``service.list_interceptions``: cursor lookup, page with its
children, exact count) per scenario: no filter, one user, one model, a 7-day range; each as the first
page and as a deep cursor page (cursor cache cold, so the cursor lookup is included; a fresh reader
per call, sharing one pool of store clients and query threads as the API does). ``--http``
times the same requests end to end through HTTP (JSON included). Results are printed and written as
JSON (--json, default bench/results/api_query_<rows>.json, so each table size keeps its own) for
bench/report.py, with the store's size on disk per table.

    .venv/bin/python bench/api_query.py                      # build if missing, then measure
    .venv/bin/python bench/api_query.py --rebuild --rows 10000000 --runs 60 --http
    .venv/bin/python bench/api_query.py --rows 1000000 --http   # a smaller store, in its own directory
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

from clickhouse_connect.driver.client import Client

from aibridge import store
from aibridge.api import service
from aibridge.api.query import parse_q
from aibridge.api.repository import ClientSource, InterceptionReader
from aibridge.api.settings import ApiSettings
from aibridge.auth import Identity, Role

sys.path.insert(0, str(Path(__file__).parent))
import results as bench_results

DATABASE = "bench"
START = datetime(2026, 9, 28, tzinfo=UTC)
SPAN_US = 60 * 86400 * 1_000_000
MODELS = "['claude-sonnet-4-5','claude-opus-4-1','claude-haiku-4-5','gpt-5','gpt-5-mini','gpt-4.1','gpt-4o','o3']"
CLIENTS = (
    "['Claude Code','Codex','Zed','GitHub Copilot (VS Code)','GitHub Copilot (CLI)','Kilo Code','Roo Code',"
    "'Cursor','Unknown']"
)
ADMIN = Identity("admin-id", "admin", Role.ADMIN, "bench", time.time() + 86400)


def source(rows: int, first: int, last: int) -> str:
    """Numbered interceptions [first, last) with their deterministic id, user, model and start time."""
    step = SPAN_US // rows
    return f"""(SELECT number,
        reinterpretAsUUID(concat(reinterpretAsFixedString(sipHash64(number)),
                                 reinterpretAsFixedString(sipHash64(number, 1)))) AS iid,
        toUInt32(floor(1000 * pow((sipHash64(number, 2) % 1000000) / 1000000, 2))) AS u,
        toString(reinterpretAsUUID(concat(reinterpretAsFixedString(sipHash64(u)),
                                          reinterpretAsFixedString(sipHash64(u, 3))))) AS uid,
        concat('user', toString(u)) AS username,
        sipHash64(number, 4) % 8 AS m,
        if(m < 3, 'anthropic', 'openai') AS provider,
        {MODELS}[m + 1] AS model,
        {CLIENTS}[sipHash64(number, 5) % 9 + 1] AS client,
        toDateTime64('{START:%Y-%m-%d %H:%M:%S}', 6, 'UTC') + toIntervalMicrosecond(number * {step}) AS started_at
      FROM numbers({first}, {last - first}))"""


def interceptions_sql(rows: int, first: int, last: int, version: int) -> str:
    ended = "started_at + toIntervalMillisecond(500 + sipHash64(number, 6) % 20000)" if version else "NULL"
    return f"""INSERT INTO {store.INTERCEPTIONS} (id, version, initiator_id, initiator_username, provider, model,
        client, api_key_id, route, streaming, user_agent, status, http_status, error, metadata, started_at,
        ended_at)
      SELECT iid, {version}, uid, username, provider, model, client, concat('key-', toString(u)),
        if(m < 3, '/v1/messages', '/v1/chat/completions'), true, 'claude-cli/2.1.332 (external, sdk-cli)',
        {"'completed'" if version else "''"}, {200 if version else 0}, NULL, '{{"session":"s"}}', started_at,
        {ended}
      FROM {source(rows, first, last)}"""


def child_id(salt: str) -> str:
    """A deterministic UUID, so a redelivered child row duplicates the original exactly."""
    return (
        f"reinterpretAsUUID(concat(reinterpretAsFixedString(sipHash64({salt})), "
        f"reinterpretAsFixedString(sipHash64({salt}, 1))))"
    )


def children_sql(rows: int, first: int, last: int) -> list[str]:
    context = "uid, username, provider, model, client, concat('msg_', hex(sipHash64(number)))"
    common = "id, interception_id, initiator_id, initiator_username, provider, model, client, provider_response_id"
    at = "started_at + toIntervalMillisecond(300)"
    src = source(rows, first, last)
    return [
        f"""INSERT INTO {store.USER_PROMPTS} ({common}, prompt, metadata, created_at)
            SELECT {child_id("number, 10")}, iid, {context},
              concat('Refactor the retry loop in module ', toString(number % 977), '.py and add tests'), '{{}}', {at}
            FROM {src}""",
        f"""INSERT INTO {store.TOKEN_USAGES} ({common}, input_tokens, output_tokens, cache_read_input_tokens,
              cache_write_input_tokens, metadata, created_at)
            SELECT {child_id("number, 11")}, iid, {context},
              1000 + number % 5000, 100 + number % 900, number % 20000, number % 3000,
              '{{"service_tier":"standard"}}', {at}
            FROM {src}""",
        f"""INSERT INTO {store.TOOL_USAGES} ({common}, call_id, server_url, tool, input, injected, invocation_error,
              metadata, created_at)
            SELECT {child_id("number, 12 + k")}, iid, {context},
              concat('toolu_', hex(sipHash64(number, k))), if(k = 2, 'https://mcp.example/sse', NULL),
              ['Read','Bash','Edit'][k + 1], concat('{{"file_path": "/src/f', toString(number % 1000), '.py"}}'),
              k = 2, NULL, '{{}}', {at}
            FROM {src} ARRAY JOIN range(toUInt8(sipHash64(number, 9) % 4)) AS k""",
    ]


def build(client: Client, rows: int, recent: int, batch: int) -> None:
    store.migrate(client)
    history = rows - recent
    started = time.perf_counter()
    client.command(interceptions_sql(rows, 0, history, 1))
    for statement in children_sql(rows, 0, history):
        client.command(statement)
    print(f"history: {history:,} interceptions with children in {time.perf_counter() - started:.0f}s", flush=True)
    for first in range(history, rows, batch):
        last = min(first + batch, rows)
        client.command(interceptions_sql(rows, first, last, 0))
        for statement in children_sql(rows, first, last):
            client.command(statement)
        if min(last, rows - 100) > first:
            client.command(interceptions_sql(rows, first, min(last, rows - 100), 1))
    redelivered = history + recent // 2
    client.command(interceptions_sql(rows, redelivered, redelivered + recent // 100, 1))
    for statement in children_sql(rows, redelivered, redelivered + recent // 100):
        client.command(statement)
    print(f"built in {time.perf_counter() - started:.0f}s: {describe(client)}", flush=True)
    settle(client)


def settle(client: Client, timeout: float = 600) -> None:
    """Wait for the background merges the build started (they compete with the queries for CPU)."""
    deadline, quiet = time.monotonic() + timeout, 0
    while quiet < 3 and time.monotonic() < deadline:
        merging = client.query("SELECT count() FROM system.merges WHERE database = currentDatabase()")
        quiet = quiet + 1 if merging.result_rows[0][0] == 0 else 0
        time.sleep(1)
    print(f"merges settled: {describe(client)}", flush=True)


def describe(client: Client) -> str:
    parts = client.query(
        "SELECT table, count(), sum(rows) FROM system.parts WHERE database = currentDatabase() AND active "
        "GROUP BY table ORDER BY table"
    ).result_rows
    return "; ".join(f"{table}: {rows:,} rows in {count} parts" for table, count, rows in parts)


Scenario = tuple[str, str, Identity]


def scenarios(client: Client) -> list[Scenario]:
    """(name, q, caller): a member listing their own (no initiator to resolve) and an admin naming them."""
    users = client.query(
        "SELECT initiator_username, any(initiator_id), count() AS n FROM interceptions "
        "GROUP BY initiator_username ORDER BY n"
    ).result_rows
    user, user_id, user_rows = users[len(users) // 2]
    member = Identity(str(user_id), str(user), Role.MEMBER, "bench", time.time() + 86400)
    middle = START + timedelta(days=30)
    print(f"one user: {user} ({user_rows:,} rows, the median user); one model: o3 (1/8 of all)")
    window = f"started_after:{middle:%Y-%m-%dT%H:%M:%SZ} started_before:{middle + timedelta(days=7):%Y-%m-%dT%H:%M:%SZ}"
    return [
        ("no filter", "", ADMIN),
        ("one user (member token)", "", member),
        ("one user (admin, initiator:name)", f"initiator:{user}", ADMIN),
        ("one model", "model:o3", ADMIN),
        ("7-day range", window, ADMIN),
    ]


def deep_cursor(reader: InterceptionReader, q: str, caller: Identity, depth: int) -> UUID:
    """The id at ``depth`` in the scenario's order (found once, outside the timing)."""
    criteria = service.resolve(parse_q(q), caller, reader)
    rows = reader.page(criteria, 1, min(depth, reader.count(criteria) // 2), None)
    return UUID(rows[0]["id"])


def timed(call: Callable[[], Any], runs: int) -> list[float]:
    call()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return sorted(samples)


def report(name: str, samples: list[float]) -> dict[str, Any]:
    p50, p99 = statistics.median(samples), samples[min(len(samples) - 1, round(0.99 * (len(samples) - 1)))]
    print(f"  {name:34s} p50 {p50:6.1f} ms   p99 {p99:6.1f} ms   max {samples[-1]:6.1f} ms", flush=True)
    return {"name": name, "p50_ms": p50, "p99_ms": p99, "max_ms": samples[-1], "runs": len(samples)}


def storage(client: Client) -> dict[str, dict[str, int]]:
    """Rows and bytes of each table's active parts (projections included), as ClickHouse reports them."""
    parts = client.query(
        "SELECT table, sum(rows), sum(bytes_on_disk), sum(data_compressed_bytes), sum(data_uncompressed_bytes) "
        "FROM system.parts WHERE database = currentDatabase() AND active GROUP BY table ORDER BY table"
    ).result_rows
    return {
        str(table): {"rows": int(rows), "bytes_on_disk": int(disk), "compressed": int(packed), "uncompressed": int(raw)}
        for table, rows, disk, packed, raw in parts
    }


def measure(client: Client, settings: ApiSettings, runs: int, depth: int) -> list[dict[str, Any]]:
    """Each call gets a fresh reader: its caches (cursor positions, usernames) are cold."""
    clients = ClientSource(settings, client)  # the API's clients and query threads, shared as in the API
    base = InterceptionReader(clients)
    measured = []
    for name, q, caller in scenarios(client):
        after = deep_cursor(base, q, caller, depth)

        def page(q: str = q, caller: Identity = caller, after: UUID | None = None) -> Any:
            reader = InterceptionReader(clients)
            return service.list_interceptions(reader, caller, parse_q(q), limit=100, offset=None, after_id=after)

        measured.append(report(f"{name}, first page", timed(page, runs)))
        measured.append(report(f"{name}, deep cursor", timed(functools.partial(page, after=after), runs)))
    return measured


def measure_http(client: Client, settings: ApiSettings, runs: int) -> list[dict[str, Any]]:
    import httpx

    from aibridge.api.app import create_api_app
    from aibridge.auth import TokenVerifier, generate_keypair, issue_token, load_private_key
    from aibridge.testing.server import serve_in_thread

    keys = Path(settings.clickhouse_url.removeprefix("chdb://")).parent / "keys"
    generate_keypair(keys)
    key = load_private_key(keys / "signing_key.pem")
    token = issue_token(key, "admin", role=Role.ADMIN)
    verifier = TokenVerifier.from_files(keys / "signing_key.pub.pem")
    measured = []
    with serve_in_thread(create_api_app(settings, client, verifier)) as url, httpx.Client(base_url=url) as http:
        for name, q, caller in scenarios(client):
            bearer = token if caller is ADMIN else issue_token(key, caller.username, user_id=caller.user_id)

            def get(q: str = q, bearer: str = bearer) -> Any:
                answer = http.get(
                    "/api/v2/aibridge/interceptions", params={"q": q}, headers={"Authorization": f"Bearer {bearer}"}
                )
                answer.raise_for_status()
                return answer

            measured.append(report(f"HTTP {name}, first page", timed(get, runs)))
    return measured


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data-dir", default=None, help="where the chDB store lives (default: the temporary directory, per --rows)"
    )
    parser.add_argument("--rows", type=int, default=10_000_000, help="interceptions (default 10M)")
    parser.add_argument("--recent", type=int, default=200_000, help="newest rows written in recorder-like batches")
    parser.add_argument("--batch", type=int, default=10_000, help="recorder batch size for the recent rows")
    parser.add_argument("--runs", type=int, default=50, help="timed runs per scenario")
    parser.add_argument(
        "--depth", type=int, default=50_000, help="position of the deep cursor (at most half the matches)"
    )
    parser.add_argument("--rebuild", action="store_true", help="drop and rebuild the store")
    parser.add_argument("--http", action="store_true", help="also time the requests through HTTP")
    parser.add_argument(
        "--json", type=Path, default=None, help="results file (default bench/results/api_query_<rows>.json)"
    )
    args = parser.parse_args()
    args.data_dir = args.data_dir or str(Path(tempfile.gettempdir()) / f"aibridge-bench-api-{args.rows}")
    json_path = args.json or bench_results.RESULTS_DIR / f"api_query_{args.rows}.json"
    params = {"rows": args.rows, "recent": args.recent, "batch": args.batch, "runs": args.runs, "depth": args.depth}
    run_record = bench_results.Run("api_query", params | {"http": args.http})
    url = f"chdb://{Path(args.data_dir).resolve() / 'store'}"
    admin = store.connect(url, "default")
    if args.rebuild:
        admin.command(f"DROP DATABASE IF EXISTS {DATABASE}")
    exists = admin.query(f"SELECT count() FROM system.tables WHERE database = '{DATABASE}'").result_rows[0][0]
    client = store.connect(url, DATABASE, create_database=True)
    if not exists:
        build(client, args.rows, args.recent, args.batch)
    else:
        print(f"using the existing store ({describe(client)}); --rebuild to rebuild it")
    settings = ApiSettings(clickhouse_url=url, clickhouse_database=DATABASE)
    print(f"page of 100 with children and exact count, {args.runs} runs each (shared 2-core machine):")
    results: dict[str, Any] = {
        "storage": storage(client),
        "in_process": measure(client, settings, args.runs, args.depth),
    }
    if args.http:
        results["http"] = measure_http(client, settings, args.runs)
    print(f"rerun: {bench_results.rerun_command()}")
    run_record.write(json_path, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
