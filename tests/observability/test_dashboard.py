"""The Grafana dashboard: committed JSON = builder output, every PromQL names declared metrics and labels,
every SQL runs against the migrated store (Grafana's macros and variables expanded as Grafana and the
ClickHouse plugin do) and returns the expected numbers for known rows, and every variable is used.
"""

from __future__ import annotations

import importlib
import json
import re
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client
from prometheus_client import Counter, Gauge, Histogram

from aibridge import metrics, store

GRAFANA = Path(__file__).resolve().parents[2] / "deploy" / "grafana"
NOW = datetime.now(UTC).replace(microsecond=0)
RANGE = (NOW - timedelta(days=1), NOW + timedelta(minutes=1))
ALL: dict[str, list[str] | None] = {"user": None, "provider": None, "model": None, "client": None}
SONNET, MINI, LOCAL = "claude-sonnet-4-5-20250929", "gpt-4o-mini-2024-07-18", "my-local-model"


@pytest.fixture(scope="module")
def builder() -> Iterator[ModuleType]:
    sys.path.insert(0, str(GRAFANA))
    try:
        yield importlib.import_module("build_dashboard")
    finally:
        sys.path.remove(str(GRAFANA))


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((GRAFANA / "aibridge-dashboard.json").read_text())
    return loaded


def targets(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [target for panel in dashboard["panels"] for target in panel.get("targets", [])]


def test_committed_json_is_what_the_builder_renders(builder: ModuleType) -> None:
    assert (GRAFANA / "aibridge-dashboard.json").read_text() == builder.render(), (
        "run python deploy/grafana/build_dashboard.py"
    )


# ---- Prometheus ------------------------------------------------------------------------------------------


def declared_samples() -> dict[str, tuple[str, ...]]:
    """Every sample name the metrics module exposes, with its labels."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    samples: dict[str, tuple[str, ...]] = {}
    for metric in vars(metrics).values():
        if isinstance(metric, Counter | Gauge | Histogram):
            for family in metric.describe():
                labels = (*metric._labelnames, *(("le",) if family.type == "histogram" else ()))
                samples |= {family.name + suffix: labels for suffix in suffixes[family.type]}
    return samples


def promql(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    found = [t for t in targets(dashboard) if "expr" in t]
    assert len(found) >= 20
    return found


def test_every_promql_names_declared_metrics_and_their_labels(dashboard: dict[str, Any]) -> None:
    samples = declared_samples()
    for target in promql(dashboard):
        expr = target["expr"]
        names = re.findall(r"\baibridge_\w+", expr)
        assert names and all(name in samples for name in names), expr
        for name, matchers in re.findall(r"\b(aibridge_\w+)\{([^}]*)\}", expr):
            assert set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers)) <= set(samples[name]), expr
        grouped = {label.strip() for group in re.findall(r"\bby \(([^)]*)\)", expr) for label in group.split(",")}
        assert grouped <= {label for name in names for label in samples[name]}, expr
        assert set(re.findall(r"\{\{(\w+)\}\}", target["legendFormat"])) <= grouped, target


def test_declared_samples_follow_the_naming_rules() -> None:
    samples = declared_samples()
    assert "aibridge_proxy_interceptions_ended_total" in samples
    assert samples["aibridge_proxy_interception_duration_seconds_bucket"][-1] == "le"
    assert all(name.startswith("aibridge_") for name in samples)


# ---- ClickHouse ------------------------------------------------------------------------------------------


def sql_queries(dashboard: dict[str, Any]) -> list[str]:
    panels = [t["rawSql"] for t in targets(dashboard) if "rawSql" in t]
    variables = [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    assert len(panels) >= 10 and len(variables) == 4
    return panels + variables


def expand(sql: str, selection: dict[str, list[str] | None]) -> str:
    """What Grafana and the ClickHouse plugin send for this selection (``None`` = All) and ``RANGE``."""
    marker = "$__conditionalAll("
    while (start := sql.find(marker)) >= 0:
        depth, index, comma = 1, start + len(marker), -1
        while depth:
            depth += {"(": 1, ")": -1}.get(sql[index], 0)
            comma = index if sql[index] == "," and depth == 1 else comma
            index += 1
        condition, variable = sql[start + len(marker) : comma], sql[comma + 1 : index - 1].strip().lstrip("$")
        sql = sql[:start] + ("1=1" if selection[variable] is None else condition) + sql[index:]
    frm, to = (int(moment.timestamp()) for moment in RANGE)
    sql = re.sub(r"\$__timeFilter\((\w+)\)", rf"\1 >= toDateTime({frm}) AND \1 <= toDateTime({to})", sql)
    sql = re.sub(r"\$__timeInterval\((\w+)\)", r"toStartOfInterval(toDateTime(\1), INTERVAL 3600 second)", sql)
    quoted = {name: ",".join(singlequote(value) for value in values or ()) for name, values in selection.items()}
    sql = re.sub(r"\$\{(\w+):singlequote\}", lambda match: quoted[match.group(1)], sql)
    assert "$" not in sql, sql
    return sql


def singlequote(value: str) -> str:
    """Grafana's ``:singlequote`` format of one value."""
    return "'" + value.replace("'", "\\'") + "'"


def test_every_sql_reads_existing_tables(dashboard: dict[str, Any]) -> None:
    tables = {store.INTERCEPTIONS, store.INTERCEPTIONS_BY_SESSION, *store.CHILD_TABLES}
    for sql in sql_queries(dashboard):
        named = set(re.findall(r"\b(?:FROM|JOIN)\s+([a-z_]\w*)", sql))
        assert named and named <= tables, sql


def row(table: str, interception: uuid.UUID, user: str, model: str, **values: Any) -> dict[str, Any]:
    provider = "anthropic" if model.startswith("claude") else "openai"
    context = {"initiator_id": f"id-{user}", "initiator_username": user, "provider": provider, "model": model}
    key = "id" if table == store.INTERCEPTIONS else "interception_id"
    return {key: interception, **context, "client": values.pop("client", "Claude Code"), **values}


def insert(client: Client, table: str, *rows: dict[str, Any]) -> None:
    for one in rows:  # one insert each: duplicates must stay duplicates until a merge or FINAL
        client.insert(table, [list(one.values())], column_names=list(one))


def started_and_ended(
    interception: uuid.UUID, user: str, model: str, status: str, at: datetime
) -> list[dict[str, Any]]:
    base = {"route": "/v1/messages", "streaming": True, "user_agent": "x", "metadata": "{}", "started_at": at}
    started = row(store.INTERCEPTIONS, interception, user, model, version=0, status="", http_status=0, **base)
    ended = started | {"version": 1, "status": status, "http_status": 200, "ended_at": at + timedelta(seconds=3)}
    return [started, ended]


def usage(interception: uuid.UUID, user: str, model: str, tokens: tuple[int, int, int, int]) -> dict[str, Any]:
    names = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_write_input_tokens")
    counts = dict(zip(names, tokens, strict=True))
    return row(store.TOKEN_USAGES, interception, user, model, id=uuid.uuid4(), metadata="{}", created_at=NOW, **counts)


@pytest.fixture
def seeded(store_client: Client) -> Client:
    """alice: a Sonnet and a gpt-4o-mini interception (priced); bob: an unpriced model; carol: out of range."""
    a1, a2, b1, c1 = (uuid.uuid4() for _ in range(4))
    hour = NOW - timedelta(hours=2)
    insert(store_client, store.INTERCEPTIONS, *started_and_ended(a1, "alice", SONNET, "completed", hour))
    insert(store_client, store.INTERCEPTIONS, *started_and_ended(a2, "alice", MINI, "upstream_error", hour)[1:])
    insert(store_client, store.INTERCEPTIONS, *started_and_ended(b1, "bob", LOCAL, "completed", hour))
    insert(
        store_client, store.INTERCEPTIONS, *started_and_ended(c1, "carol", SONNET, "completed", NOW - timedelta(days=3))
    )
    sonnet = usage(a1, "alice", SONNET, (10_000, 20_000, 100_000, 40_000)) | {"cost": Decimal("0.51")}
    mini = usage(a2, "alice", MINI, (1_000_000, 0, 0, 0)) | {"cost": Decimal("0.15")}
    insert(store_client, store.TOKEN_USAGES, sonnet, sonnet, mini)
    insert(store_client, store.TOKEN_USAGES, usage(b1, "bob", LOCAL, (500, 500, 0, 0)))
    tool = {"provider_response_id": "r", "call_id": "c", "input": "{}", "injected": False, "metadata": "{}"}
    calls = [
        row(
            store.TOOL_USAGES,
            a1,
            "alice",
            SONNET,
            id=uuid.uuid4(),
            tool=name,
            invocation_error=error,
            created_at=NOW,
            **tool,
        )
        for name, error in (("get_weather", None), ("run_tests", "exit status 1"))
    ]
    insert(store_client, store.TOOL_USAGES, *calls)
    prompt = row(
        store.USER_PROMPTS,
        a1,
        "alice",
        SONNET,
        id=uuid.uuid4(),
        provider_response_id="r",
        prompt="hi",
        metadata="{}",
        created_at=NOW,
    )
    insert(store_client, store.USER_PROMPTS, prompt)
    return store_client


def run(client: Client, builder: ModuleType, name: str, **selection: list[str]) -> list[tuple[Any, ...]]:
    queries = builder.q
    sql = expand(getattr(queries, name), ALL | selection)
    return [tuple(r) for r in client.query(sql).result_rows]


def test_every_sql_runs_on_the_store_for_all_and_for_a_selection(
    seeded: Client, dashboard: dict[str, Any], builder: ModuleType
) -> None:
    chosen = {"user": ["alice", "o'brien"], "provider": ["anthropic"], "model": [SONNET], "client": ["Claude Code"]}
    for sql in sql_queries(dashboard):
        for selection in (ALL, chosen):
            seeded.query(expand(sql, selection))


def test_usage_queries_count_each_row_once_and_sum_the_recorded_cost(seeded: Client, builder: ModuleType) -> None:
    assert run(seeded, builder, "TOKEN_TOTALS") == [(1_010_500, 20_500, 100_000, 40_000)]
    assert run(seeded, builder, "HEADLINE") == [(3, 2, 1)]
    assert run(seeded, builder, "COST_TOTAL") == [(Decimal("0.66"),)]  # the duplicate Sonnet row counted once
    assert run(seeded, builder, "TOOL_TOTALS") == [(2, 1)]
    assert run(seeded, builder, "LEADERBOARD") == [
        ("alice", 2, 1_010_000, 20_000, 100_000, 40_000, 2, Decimal("0.66")),
        ("bob", 1, 500, 500, 0, 0, 0, None),  # unpriced: unknown, not 0
    ]
    assert run(seeded, builder, "LEADERBOARD", model=[MINI]) == [("alice", 1, 1_000_000, 0, 0, 0, 0, Decimal("0.15"))]
    assert run(seeded, builder, "LEADERBOARD", user=["bob"]) == [("bob", 1, 500, 500, 0, 0, 0, None)]
    models = {r[1]: (r[2], r[3], r[4]) for r in run(seeded, builder, "TOP_MODELS")}
    assert models == {
        SONNET: (1, 170_000, Decimal("0.51")),
        MINI: (1, 1_000_000, Decimal("0.15")),
        LOCAL: (1, 1_000, None),
    }


def test_audit_queries_show_prompts_and_flag_tool_errors(seeded: Client, builder: ModuleType) -> None:
    assert [r[1:5] for r in run(seeded, builder, "USER_PROMPTS")] == [("alice", "Claude Code", SONNET, "hi")]
    tools = {r[3]: (r[4], r[5]) for r in run(seeded, builder, "TOOL_CALLS")}
    assert tools == {"get_weather": ("ok", ""), "run_tests": ("error", "exit status 1")}
    assert run(seeded, builder, "TOP_CLIENTS") == [("Claude Code", 3)]
    assert sum(r[2] for r in run(seeded, builder, "INTERCEPTIONS_OVER_TIME")) == 3


# ---- variables -------------------------------------------------------------------------------------------


def test_every_variable_is_defined_and_used(dashboard: dict[str, Any]) -> None:
    defined = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert set(defined) == {"prometheus", "clickhouse", "user", "provider", "model", "client"}
    text = json.dumps(dashboard["panels"])
    used = set(re.findall(r"\$\{?(?!__)(\w+)", text))
    assert used == set(defined)
    for target in targets(dashboard):
        source = "${prometheus}" if "expr" in target else "${clickhouse}"
        assert target["datasource"]["uid"] == source
    promql_text = " ".join(t["expr"] for t in promql(dashboard))
    assert all(f"${{{name}:regex}}" in promql_text for name in ("provider", "model", "client"))
    sql_text = " ".join(t["rawSql"] for t in targets(dashboard) if "rawSql" in t)
    assert all(f"${{{name}:singlequote}}" in sql_text for name in ("user", "provider", "model", "client"))


def test_spend_queries_sum_the_recorded_cost_and_list_unpriced_traffic(
    store_client: Client, builder: ModuleType
) -> None:
    a1, a2, b1 = (uuid.uuid4() for _ in range(3))
    priced = [
        usage(a1, "alice", SONNET, (1, 1, 0, 0)) | {"cost": Decimal("0.000000000001")},
        usage(a1, "alice", SONNET, (1, 1, 0, 0)) | {"cost": Decimal("2.5")},
        usage(a2, "bob", MINI, (1, 1, 0, 0)) | {"cost": Decimal("1.25")},
    ]
    insert(store_client, store.TOKEN_USAGES, *priced, usage(b1, "bob", LOCAL, (500, 500, 0, 0)))
    day = NOW.replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
    assert run(store_client, builder, "SPEND_PER_DAY") == [(day, Decimal("3.750000000001"))]
    assert run(store_client, builder, "TOP_SPENDERS") == [
        ("alice", Decimal("2.500000000001"), 1, 0),
        ("bob", Decimal("1.25"), 2, 1),
    ]
    assert [r[1:3] for r in run(store_client, builder, "TOP_MODELS_BY_SPEND")][:2] == [
        (SONNET, Decimal("2.500000000001")),
        (MINI, Decimal("1.25")),
    ]
    assert run(store_client, builder, "UNPRICED_TRAFFIC") == [("openai", LOCAL, 1, 1)]


def test_sessions_and_threads_per_day_count_each_once(store_client: Client, builder: ModuleType) -> None:
    """Two sessions today (one with two prompts, every row stored twice), one yesterday; no key: no session."""
    today, yesterday = NOW - timedelta(seconds=1), NOW - timedelta(hours=25)  # yesterday: out of the range
    turns = [("s1", "prompt", today), ("s1", "tool_result", today), ("s1", "prompt", today), ("s2", "prompt", today)]
    turns += [("s3", "prompt", yesterday), ("", "prompt", today)]
    for session, turn, at in turns:
        rows = started_and_ended(uuid.uuid4(), "alice", SONNET, "completed", at)
        insert(store_client, store.INTERCEPTIONS, *({**r, "session_id": session, "turn": turn} for r in rows))
    day = today.replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
    assert run(store_client, builder, "SESSIONS_PER_DAY") == [(day, 2, 3)]
    assert run(store_client, builder, "SESSIONS_PER_DAY", user=["bob"]) == []
