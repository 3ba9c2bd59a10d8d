"""Builds the AI Bridge Grafana dashboard, ``aibridge-dashboard.json`` next to this file.

    python deploy/grafana/build_dashboard.py          # write the JSON
    python deploy/grafana/build_dashboard.py --check  # exit 1 when the committed JSON is stale

Data sources are dashboard variables (``prometheus``, ``clickhouse``; grafana-clickhouse-datasource),
so the dashboard works with whatever uids a Grafana has; docker-compose provisions both uids as named.
The queries live in ``dashboard_queries.py``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import dashboard_queries as q

OUTPUT = Path(__file__).with_name("aibridge-dashboard.json")
Json = dict[str, Any]

PROMETHEUS: Json = {"type": "prometheus", "uid": "${prometheus}"}
CLICKHOUSE: Json = {"type": "grafana-clickhouse-datasource", "uid": "${clickhouse}"}

STAT = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}, "colorMode": "value"}
TABLE = {"showHeader": True, "cellHeight": "sm", "footer": {"show": False}}
BARS = {"reduceOptions": {"calcs": [], "fields": "", "values": True}, "orientation": "horizontal"}
LEGEND = {"legend": {"displayMode": "table", "placement": "right", "calcs": ["sum"]}}
SECONDS = {"unit": "s"}


def prom(expr: str, legend: str) -> Json:
    return {"datasource": PROMETHEUS, "expr": expr, "legendFormat": legend, "range": True}


def proms(series: dict[str, str]) -> list[Json]:
    return [prom(expr, legend) for legend, expr in series.items()]


def quantiles(metric: str, labels: tuple[str, ...] = (), by: str = "") -> list[Json]:
    legend = f" {{{{{by}}}}}" if by else ""
    return [prom(q.quantile(p, metric, labels, by), f"p{round(p * 100)}{legend}") for p in (0.5, 0.95, 0.99)]


def clickhouse(sql: str, *, time_series: bool = False) -> Json:
    kind = ("timeSeries", 0) if time_series else ("table", 1)
    return {"datasource": CLICKHOUSE, "editorType": "sql", "queryType": kind[0], "format": kind[1], "rawSql": sql}


def override(field: str, *properties: tuple[str, Any], by: str = "byName") -> Json:
    return {"matcher": {"id": by, "options": field}, "properties": [{"id": k, "value": v} for k, v in properties]}


RED_ABOVE_ZERO = (
    "thresholds",
    {"mode": "absolute", "steps": [{"color": "green", "value": None}, {"color": "red", "value": 1}]},
)
RESULT_COLOURS = {
    "type": "value",
    "options": {"ok": {"color": "green", "index": 0}, "error": {"color": "red", "index": 1}},
}
ERROR_HIGHLIGHT = [
    override("Result", ("custom.cellOptions", {"type": "color-background"}), ("mappings", [RESULT_COLOURS])),
    override(
        "Error", ("custom.cellOptions", {"type": "color-text"}), ("color", {"mode": "fixed", "fixedColor": "red"})
    ),
]


class Layout:
    """Places panels left to right on Grafana's 24-column grid and numbers them."""

    def __init__(self) -> None:
        self.panels: list[Json] = []
        self.x = self.y = self.row_height = 0

    def row(self, title: str) -> None:
        self._newline()
        self._place({"type": "row", "title": title, "collapsed": False, "panels": []}, (24, 1))
        self._newline()

    def add(
        self, kind: str, title: str, description: str, size: tuple[int, int], targets: list[Json], **extra: Any
    ) -> None:
        if self.x + size[0] > 24:
            self._newline()
        panel: Json = {
            "type": kind,
            "title": title,
            "description": description,
            "datasource": targets[0]["datasource"],
            "targets": [target | {"refId": "ABCDEFGHIJ"[i]} for i, target in enumerate(targets)],
            "fieldConfig": {"defaults": extra.pop("defaults", {}), "overrides": extra.pop("overrides", [])},
            "options": extra.pop("options", {}),
        }
        self._place(panel | extra, size)

    def _place(self, panel: Json, size: tuple[int, int]) -> None:
        panel["id"] = len(self.panels) + 1
        panel["gridPos"] = {"h": size[1], "w": size[0], "x": self.x, "y": self.y}
        self.panels.append(panel)
        self.x += size[0]
        self.row_height = max(self.row_height, size[1])

    def _newline(self) -> None:
        self.y += self.row_height
        self.x = self.row_height = 0


def usage_panels(layout: Layout) -> None:
    layout.row("Usage (ClickHouse)")
    layout.add(
        "stat",
        "Total token usage",
        "Tokens by type in the time range; input excludes cached tokens.",
        (12, 4),
        [clickhouse(q.TOKEN_TOTALS)],
        options=STAT,
        defaults={"unit": "short"},
    )
    layout.add(
        "stat",
        "Interceptions",
        "Started in the time range; 'Not completed' ended in an error, a rejection or a disconnect.",
        (7, 4),
        [clickhouse(q.HEADLINE)],
        options=STAT,
    )
    layout.add(
        "stat",
        "Cost",
        "The recorded cost of token usages (priced when recorded, docs/spend.md); unpriced models not counted.",
        (5, 4),
        [clickhouse(q.COST_TOTAL)],
        options=STAT,
        defaults={"unit": "currencyUSD", "decimals": 2},
    )
    layout.add(
        "table",
        "Leaderboard per user",
        "Interceptions, tokens, tool calls and recorded cost per user (empty: nothing priced).",
        (14, 9),
        [clickhouse(q.LEADERBOARD)],
        options=TABLE,
    )
    layout.add(
        "bargauge",
        "Top clients",
        "Interceptions per AI client (classified from the User-Agent).",
        (10, 9),
        [clickhouse(q.TOP_CLIENTS)],
        options=BARS,
    )
    layout.add(
        "table",
        "Top models",
        "Interceptions, tokens and recorded cost per model; an empty cost means the model has no price.",
        (12, 8),
        [clickhouse(q.TOP_MODELS)],
        options=TABLE,
    )
    layout.add(
        "timeseries",
        "Interceptions over time by user",
        "Interceptions started per interval and user.",
        (12, 8),
        [clickhouse(q.INTERCEPTIONS_OVER_TIME, time_series=True)],
        options=LEGEND,
        defaults={
            "displayName": "${__field.labels.user}",
            "custom": {"drawStyle": "bars", "stacking": {"mode": "normal"}},
        },
    )


def spend_panels(layout: Layout) -> None:
    layout.row("Spend (recorded cost, ClickHouse)")
    usd = {"unit": "currencyUSD", "decimals": 2}
    layout.add(
        "timeseries",
        "Spend per day",
        "The recorded cost of token usages per UTC day (priced when recorded; unpriced models not counted).",
        (12, 8),
        [clickhouse(q.SPEND_PER_DAY, time_series=True)],
        defaults=usd | {"custom": {"drawStyle": "bars"}},
    )
    layout.add(
        "table",
        "Top users by spend",
        "Recorded cost per user; 'Unpriced' counts interceptions with a usage of a model without a price.",
        (12, 8),
        [clickhouse(q.TOP_SPENDERS)],
        options=TABLE,
    )
    layout.add(
        "table",
        "Top models by spend",
        "Recorded cost and tokens per model.",
        (12, 8),
        [clickhouse(q.TOP_MODELS_BY_SPEND)],
        options=TABLE,
    )
    layout.add(
        "table",
        "Unpriced traffic",
        "Models whose usages have no price (add them with AIBRIDGE_PRICES_FILE); their cost is unknown, not 0.",
        (12, 8),
        [clickhouse(q.UNPRICED_TRAFFIC)],
        options=TABLE,
    )


def session_panels(layout: Layout) -> None:
    layout.row("Sessions and threads (ClickHouse)")
    layout.add(
        "timeseries",
        "Sessions and threads per day",
        "Sessions with an interception that UTC day, and threads started that day (human prompts): a thread is "
        "one prompt and the agentic loop it set off (docs/sessions.md).",
        (24, 8),
        [clickhouse(q.SESSIONS_PER_DAY, time_series=True)],
        defaults={"unit": "short", "custom": {"drawStyle": "bars"}},
    )


def audit_panels(layout: Layout) -> None:
    layout.row("Prompts and tool calls (ClickHouse)")
    layout.add(
        "table",
        "User prompts",
        "The last user prompt of each interception, newest first.",
        (24, 9),
        [clickhouse(q.USER_PROMPTS)],
        options=TABLE,
    )
    layout.add(
        "stat",
        "Tool call totals",
        "Tool calls the models made; invocation errors turn red.",
        (4, 9),
        [clickhouse(q.TOOL_TOTALS)],
        options=STAT | {"colorMode": "background"},
        overrides=[override("Invocation errors", RED_ABOVE_ZERO)],
    )
    layout.add(
        "table",
        "Tool calls",
        "Every tool call, newest first; invocation errors highlighted.",
        (20, 9),
        [clickhouse(q.TOOL_CALLS)],
        options=TABLE,
        overrides=ERROR_HIGHLIGHT,
    )


def proxy_panels(layout: Layout) -> None:
    layout.row("Proxy (Prometheus)")
    per_second = {"unit": "reqps"}
    layout.add(
        "timeseries",
        "Interceptions per second by status",
        "Ended interceptions.",
        (8, 8),
        [prom(q.INTERCEPTIONS_BY_STATUS, "{{status}}")],
        defaults=per_second,
    )
    layout.add(
        "timeseries",
        "Error rate",
        "Share of ended interceptions that did not complete, by status (left); "
        "requests the proxy refused itself (limits, open circuit) per second.",
        (8, 8),
        [prom(q.ERROR_SHARE, "{{status}}"), prom(q.REJECTIONS, "refused: {{reason}}")],
        defaults={"unit": "percentunit"},
        overrides=[override("B", ("unit", "reqps"), by="byFrameRefID")],
    )
    layout.add(
        "timeseries",
        "In flight",
        "Interceptions between arrival and their last byte.",
        (8, 8),
        [prom(q.IN_FLIGHT, "{{provider}}")],
    )
    layout.add(
        "timeseries",
        "Interception latency",
        "From arrival to the last byte to the client.",
        (8, 8),
        quantiles("aibridge_proxy_interception_duration_seconds", ("provider", "model"), "streaming"),
        defaults=SECONDS,
    )
    layout.add(
        "timeseries",
        "Upstream time to first byte",
        "Waiting on the provider for its first byte.",
        (8, 8),
        quantiles("aibridge_proxy_upstream_time_to_first_byte_seconds", ("provider", "model")),
        defaults=SECONDS,
    )
    layout.add(
        "timeseries",
        "Bridge overhead",
        "Time spent in the bridge itself, excluding waiting on the upstream.",
        (8, 8),
        quantiles("aibridge_proxy_overhead_seconds", ("provider",)),
        defaults=SECONDS,
    )
    layout.add(
        "timeseries",
        "Tokens per second by type",
        "As the providers reported them.",
        (12, 8),
        [prom(q.TOKENS_BY_TYPE, "{{type}}")],
    )
    layout.add(
        "timeseries",
        "Interception events",
        "Published to the bus, dropped (counted, never silent), waiting in memory and in the on-disk spool.",
        (12, 8),
        proms(q.EVENTS),
    )


def mcp_panels(layout: Layout) -> None:
    layout.row("MCP tools (Prometheus)")
    layout.add(
        "timeseries",
        "Injected tool calls",
        "Calls the bridge ran for the model, by server and outcome (ok, tool_error, rpc_error, timeout, "
        "unavailable, ...), and failed listings of a server's tools (docs/mcp.md).",
        (10, 8),
        proms(q.MCP_CALLS),
        defaults={"unit": "short"},
    )
    layout.add(
        "timeseries",
        "Injected call duration",
        "How long the MCP servers took to answer the bridge's calls.",
        (8, 8),
        quantiles("aibridge_mcp_call_duration_seconds", by="server"),
        defaults=SECONDS,
    )
    layout.add(
        "bargauge",
        "Tools offered per server",
        "Tools of each MCP server added to requests (after allow/deny); 0 while a server cannot be listed.",
        (6, 8),
        [prom(q.MCP_TOOLS, "{{server}}") | {"instant": True, "range": False}],
        options=BARS,
    )


def backend_panels(layout: Layout) -> None:
    layout.row("Recorder and API (Prometheus)")
    layout.add(
        "timeseries",
        "Recorder lag",
        "Messages not yet consumed; time from publish to stored row (B).",
        (8, 8),
        proms(q.RECORDER_LAG),
        overrides=[override("B", ("unit", "s"), by="byFrameRefID")],
    )
    layout.add(
        "timeseries",
        "Recorder throughput",
        "Events consumed and rows inserted per second.",
        (8, 8),
        proms(q.RECORDER_THROUGHPUT),
    )
    layout.add(
        "timeseries",
        "Recorder dead letters and store errors",
        "Poison messages sent to the dead-letter topic, failed store statements, and 1 while fetching is paused.",
        (8, 8),
        proms(q.RECORDER_FAILURES),
    )
    layout.add(
        "timeseries",
        "Recorder insert latency",
        "Time to insert one batch.",
        (8, 8),
        quantiles("aibridge_recorder_write_seconds"),
        defaults=SECONDS,
    )
    layout.add(
        "timeseries",
        "API requests per second",
        "By endpoint and HTTP status.",
        (8, 8),
        [prom(q.API_REQUESTS, "{{endpoint}} {{status}}")],
        defaults={"unit": "reqps"},
    )
    layout.add(
        "timeseries",
        "API latency",
        "p95 per endpoint.",
        (8, 8),
        [prom(q.API_LATENCY, "{{endpoint}}")],
        defaults=SECONDS,
    )


def variables() -> list[Json]:
    sources = [
        ("prometheus", "prometheus", "Prometheus"),
        ("clickhouse", "grafana-clickhouse-datasource", "ClickHouse"),
    ]
    result: list[Json] = [
        {"type": "datasource", "name": name, "label": label, "query": kind, "current": {"text": label, "value": name}}
        for name, kind, label in sources
    ]
    for name, column in q.FILTERS:
        sql = q.variable_sql(name, column)
        result.append(
            {
                "type": "query",
                "name": name,
                "label": name.capitalize(),
                "datasource": CLICKHOUSE,
                "query": sql,
                "definition": sql,
                "refresh": 2,
                "sort": 1,
                "multi": True,
                "includeAll": True,
                "allValue": ".*",
                "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            }
        )
    return result


def build() -> Json:
    layout = Layout()
    for section in (usage_panels, spend_panels, session_panels, audit_panels, proxy_panels, mcp_panels, backend_panels):
        section(layout)
    return {
        "uid": "aibridge",
        "title": "AI Bridge",
        "description": "Usage, cost, prompts, tool calls and health (deploy/grafana/build_dashboard.py).",
        "tags": ["aibridge"],
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-24h", "to": "now"},
        "refresh": "1m",
        "templating": {"list": variables()},
        "annotations": {"list": []},
        "panels": layout.panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if argv[1:] == ["--check"]:
        if not OUTPUT.exists() or OUTPUT.read_text() != text:
            print(f"{OUTPUT} is stale: run python deploy/grafana/build_dashboard.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
