"""Sessions latency of the API over a store of 10 million interceptions in 100,000 sessions (embedded chDB).

Builds the store once with ClickHouse SQL (INSERT ... SELECT FROM numbers(N)) through the recorder's
tables, so the views keep ``interceptions_by_session`` and ``sessions`` as in production. Sessions run
side by side: each block of ``CONCURRENT`` x 100 consecutive interceptions (about two hours of the 60 days)
holds ``CONCURRENT`` sessions of 100 interceptions each, one user, model and client per session, a human
prompt every 10th interception (10 threads per session) and tool results in between. Every interception
has a token usage, every prompt its prompt text, every other interception a tool usage. The newest
``--recent`` interceptions are written as the recorder writes them: started rows, then ended rows in
separate inserts, 1% of them redelivered. No OPTIMIZE: queries see unmerged parts and duplicates.

Times the API's own code path (``sessions.list_sessions`` and ``sessions.get_session``, a fresh reader
per call sharing one pool of store clients as the API does): the sessions page (50) for an admin, for
one user (member token), with a model filter, at a deep cursor; and one session's detail for sessions
spread over the whole history. Results are printed and written as JSON for bench/report.py.

    .venv/bin/python bench/sessions_query.py                    # build if missing, then measure
    .venv/bin/python bench/sessions_query.py --rows 1000000     # a smaller store, in its own directory
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from clickhouse_connect.driver.client import Client

from aibridge import store
from aibridge.api import service, sessions
from aibridge.api.query import parse_q
from aibridge.api.repository import ClientSource, InterceptionReader
from aibridge.api.settings import ApiSettings
from aibridge.auth import Identity, Role

sys.path.insert(0, str(Path(__file__).parent))
import results as bench_results
from api_query import CLIENTS, MODELS, describe, report, settle, storage, timed

DATABASE = "bench_sessions"
START = datetime(2026, 9, 28, tzinfo=UTC)
SPAN_US = 60 * 86400 * 1_000_000
PER_SESSION = 100
CONCURRENT = 140  # sessions open at once: 1,667 a day lasting about two hours each
ADMIN = Identity("admin-id", "admin", Role.ADMIN, "bench", time.time() + 86400)


def source(rows: int, first: int, last: int) -> str:
    """Numbered interceptions [first, last) with their session, turn, user, model, client and start."""
    step = SPAN_US // rows
    block = PER_SESSION * CONCURRENT
    return f"""(SELECT number,
        reinterpretAsUUID(concat(reinterpretAsFixedString(sipHash64(number)),
                                 reinterpretAsFixedString(sipHash64(number, 1)))) AS iid,
        intDiv(number, {block}) * {CONCURRENT} + number % {CONCURRENT} AS s,
        intDiv(number % {block}, {CONCURRENT}) AS position,
        toString(reinterpretAsUUID(concat(reinterpretAsFixedString(sipHash64(s, 7)),
                                          reinterpretAsFixedString(sipHash64(s, 8))))) AS session_key,
        if(position % 10 = 0, 'prompt', 'tool_result') AS turn,
        toUInt32(floor(1000 * pow((sipHash64(s, 2) % 1000000) / 1000000, 2))) AS u,
        toString(reinterpretAsUUID(concat(reinterpretAsFixedString(sipHash64(u)),
                                          reinterpretAsFixedString(sipHash64(u, 3))))) AS uid,
        concat('user', toString(u)) AS username,
        sipHash64(s, 4) % 8 AS m,
        if(m < 3, 'anthropic', 'openai') AS provider,
        {MODELS}[m + 1] AS model,
        {CLIENTS}[sipHash64(s, 5) % 2 + 1] AS client,
        toDateTime64('{START:%Y-%m-%d %H:%M:%S}', 6, 'UTC') + toIntervalMicrosecond(number * {step}) AS started_at
      FROM numbers({first}, {last - first}))"""


def interceptions_sql(rows: int, first: int, last: int, version: int) -> str:
    ended = "started_at + toIntervalMillisecond(500 + sipHash64(number, 6) % 20000)" if version else "NULL"
    return f"""INSERT INTO {store.INTERCEPTIONS} (id, version, initiator_id, initiator_username, provider, model,
        client, api_key_id, route, streaming, user_agent, status, http_status, error, metadata, started_at,
        ended_at, session_id, turn)
      SELECT iid, {version}, uid, username, provider, model, client, concat('key-', toString(u)),
        if(m < 3, '/v1/messages', '/v1/chat/completions'), true, 'claude-cli/2.1.332 (external, sdk-cli)',
        {"'completed'" if version else "''"}, {200 if version else 0}, NULL, '{{}}', started_at, {ended},
        session_key, turn
      FROM {source(rows, first, last)}"""


def child_id(salt: str) -> str:
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
            FROM {src} WHERE turn = 'prompt'""",
        f"""INSERT INTO {store.TOKEN_USAGES} ({common}, input_tokens, output_tokens, cache_read_input_tokens,
              cache_write_input_tokens, metadata, created_at)
            SELECT {child_id("number, 11")}, iid, {context},
              1000 + number % 5000, 100 + number % 900, number % 20000, number % 3000, '{{}}', {at}
            FROM {src}""",
        f"""INSERT INTO {store.TOOL_USAGES} ({common}, call_id, server_url, tool, input, injected, invocation_error,
              metadata, created_at)
            SELECT {child_id("number, 12")}, iid, {context}, concat('toolu_', hex(sipHash64(number, 9))), NULL,
              'Bash', concat('{{"command": "pytest tests/test_', toString(number % 1000), '.py"}}'), false, NULL,
              '{{}}', {at}
            FROM {src} WHERE position % 2 = 0""",
    ]


def build(client: Client, rows: int, recent: int, batch: int, chunk: int) -> None:
    store.migrate(client)
    history = rows - recent
    started = time.perf_counter()
    for first in range(0, history, chunk):
        last = min(first + chunk, history)
        client.command(interceptions_sql(rows, first, last, 1))
        for statement in children_sql(rows, first, last):
            client.command(statement)
        print(f"  {last:,} interceptions in {time.perf_counter() - started:.0f}s", flush=True)
    for first in range(history, rows, batch):
        last = min(first + batch, rows)
        client.command(interceptions_sql(rows, first, last, 0))
        for statement in children_sql(rows, first, last):
            client.command(statement)
        if min(last, rows - 100) > first:
            client.command(interceptions_sql(rows, first, min(last, rows - 100), 1))
    redelivered = history + recent // 2
    client.command(interceptions_sql(rows, redelivered, redelivered + recent // 100, 1))
    print(f"built in {time.perf_counter() - started:.0f}s: {describe(client)}", flush=True)
    settle(client)


def sample_sessions(client: Client, count: int) -> list[str]:
    """Sessions spread evenly over the history (one in every len/count, by id order)."""
    found = client.query(
        f"SELECT session_id FROM {store.SESSIONS} GROUP BY session_id ORDER BY cityHash64(session_id) "
        "LIMIT {count:UInt32}",
        parameters={"count": count},
    ).result_rows
    return [str(row[0]) for row in found]


def median_user(client: Client) -> Identity:
    users = client.query(
        f"SELECT initiator_id, any(initiator_username), uniqExact(session_id) AS n FROM {store.SESSIONS} "
        "GROUP BY initiator_id ORDER BY n"
    ).result_rows
    user_id, username, count = users[len(users) // 2]
    print(f"one user: {username} ({count:,} sessions, the median user)")
    return Identity(str(user_id), str(username), Role.MEMBER, "bench", time.time() + 86400)


def measure(client: Client, settings: ApiSettings, runs: int, details: int) -> list[dict[str, Any]]:
    clients = ClientSource(settings, client)

    def reader() -> sessions.SessionReader:
        return sessions.SessionReader(InterceptionReader(clients))

    def page(q: str, caller: Identity, offset: int | None = None, after_id: str | None = None) -> Any:
        fresh = InterceptionReader(clients)
        criteria = service.resolve(parse_q(q), caller, fresh)
        scope = service.visible_initiators(caller)
        return sessions.list_sessions(
            sessions.SessionReader(fresh), criteria, scope, limit=50, offset=offset, after_id=after_id
        )

    member = median_user(client)
    depth = min(5000, page("", ADMIN)["count"] // 2)
    deep = page("", ADMIN, offset=depth - 1)["results"][0]["id"]
    measured = [
        report("sessions page, admin", timed(lambda: page("", ADMIN), runs)),
        report("sessions page, one user (member)", timed(lambda: page("", member), runs)),
        report("sessions page, one model", timed(lambda: page("model:o3", ADMIN), runs)),
        report(f"sessions page, deep cursor ({depth:,})", timed(lambda: page("", ADMIN, after_id=deep), runs)),
    ]
    picked = sample_sessions(client, details)
    samples = []
    for session_id in picked:
        samples += timed(lambda session_id=session_id: sessions.get_session(reader(), session_id, None), 1)
    detail = sessions.get_session(reader(), picked[0], None)
    print(f"a session: {detail['interceptions']} interceptions in {len(detail['threads'])} threads")
    measured.append(report(f"one session's detail ({len(picked)} sessions)", sorted(samples)))
    return measured


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None, help="where the chDB store lives (default: per --rows, in /tmp)")
    parser.add_argument("--rows", type=int, default=10_000_000, help="interceptions (default 10M: 100k sessions)")
    parser.add_argument("--recent", type=int, default=200_000, help="newest rows written in recorder-like batches")
    parser.add_argument("--batch", type=int, default=10_000, help="recorder batch size for the recent rows")
    parser.add_argument("--chunk", type=int, default=1_000_000, help="rows per insert while building the history")
    parser.add_argument("--runs", type=int, default=100, help="timed runs per page scenario")
    parser.add_argument("--details", type=int, default=200, help="sessions whose detail is timed (once each)")
    parser.add_argument("--rebuild", action="store_true", help="drop and rebuild the store")
    parser.add_argument(
        "--json", type=Path, default=None, help="results file (default bench/results/sessions_query_<rows>.json)"
    )
    args = parser.parse_args()
    data_dir = Path(args.data_dir or Path(tempfile.gettempdir()) / f"aibridge-bench-sessions-{args.rows}")
    json_path = args.json or bench_results.RESULTS_DIR / f"sessions_query_{args.rows}.json"
    params = {"rows": args.rows, "sessions": args.rows // PER_SESSION, "runs": args.runs, "details": args.details}
    run_record = bench_results.Run("sessions_query", params)
    url = f"chdb://{data_dir.resolve() / 'store'}"
    admin = store.connect(url, "default")
    if args.rebuild:
        admin.command(f"DROP DATABASE IF EXISTS {DATABASE}")
    exists = admin.query(f"SELECT count() FROM system.tables WHERE database = '{DATABASE}'").result_rows[0][0]
    client = store.connect(url, DATABASE, create_database=True)
    if not exists:
        build(client, args.rows, args.recent, args.batch, args.chunk)
    else:
        store.migrate(client)  # migrations since it was built
        print(f"using the existing store ({describe(client)}); --rebuild to rebuild it")
    settings = ApiSettings(clickhouse_url=url, clickhouse_database=DATABASE)
    print(f"sessions page of 50 with counts and tokens, {args.runs} runs each; details once each (2-core machine):")
    results = {"storage": storage(client), "in_process": measure(client, settings, args.runs, args.details)}
    print(f"rerun: {bench_results.rerun_command()}")
    run_record.write(json_path, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
