"""The queries of the AI Bridge dashboard: ClickHouse SQL over ``aibridge/store.py``'s tables and PromQL
over ``aibridge/metrics.py``'s metrics. ``build_dashboard.py`` lays them out.

Stored rows are read with ``FINAL``: an interception has a started and an ended row (ReplacingMergeTree
by ``version``), and at-least-once delivery may store a child row twice under the same id.
SQL uses the ClickHouse plugin's macros (``$__timeFilter``, ``$__timeInterval``, ``$__conditionalAll``)
and the dashboard variables ``user``, ``provider``, ``model`` and ``client``. Cost is the ``cost`` column of
``token_usages``: priced by the recorder when it stored the usage (exact decimals), NULL for a model without
a price, so a sum of unpriced traffic alone is NULL (unknown), never 0.
"""

from __future__ import annotations

# Dashboard variable -> its column in every stored table (they all carry the interception's context).
FILTERS = (("user", "initiator_username"), ("provider", "provider"), ("model", "model"), ("client", "client"))
RATE = "$__rate_interval"


def where(time_column: str) -> str:
    """The dashboard's time range and variables as a ClickHouse condition (``All`` drops a filter)."""
    filters = [f"$__conditionalAll({column} IN (${{{var}:singlequote}}), ${var})" for var, column in FILTERS]
    return "\n  AND ".join([f"$__timeFilter({time_column})", *filters])


def usage_sums(keys: str) -> str:
    """Token and recorded cost sums per ``keys``."""
    return f"""SELECT {keys}, sum(input_tokens) AS input, sum(output_tokens) AS output,
    sum(cache_read_input_tokens) AS cache_read, sum(cache_write_input_tokens) AS cache_write, sum(cost) AS cost
  FROM token_usages FINAL
  WHERE {where("created_at")}
  GROUP BY {keys}"""


def variable_sql(name: str, column: str) -> str:
    """Values of a filter variable in the time range; models follow the chosen providers."""
    condition = "$__timeFilter(started_at)"
    if name == "model":
        condition += " AND $__conditionalAll(provider IN (${provider:singlequote}), $provider)"
    return f"SELECT DISTINCT {column} FROM interceptions WHERE {condition} ORDER BY {column}"


TOKEN_TOTALS = f"""SELECT sum(input_tokens) AS `Input`, sum(output_tokens) AS `Output`,
  sum(cache_read_input_tokens) AS `Cache read`, sum(cache_write_input_tokens) AS `Cache write`
FROM token_usages FINAL
WHERE {where("created_at")}"""

HEADLINE = f"""SELECT count() AS `Interceptions`, uniqExact(initiator_username) AS `Active users`,
  countIf(status NOT IN ('completed', '')) AS `Not completed`
FROM interceptions FINAL
WHERE {where("started_at")}"""

COST_TOTAL = f"""SELECT sum(cost) AS `Cost (USD)`
FROM token_usages FINAL
WHERE {where("created_at")}"""

LEADERBOARD = f"""SELECT i.user AS `User`, i.interceptions AS `Interceptions`, t.input AS `Input`,
  t.output AS `Output`, t.cache_read AS `Cache read`, t.cache_write AS `Cache write`, c.tool_calls AS `Tool calls`,
  t.cost AS `Cost (USD)`
FROM (
  SELECT initiator_username AS user, count() AS interceptions FROM interceptions FINAL
  WHERE {where("started_at")}
  GROUP BY user
) AS i
LEFT JOIN ({usage_sums("initiator_username")}) AS t ON t.initiator_username = i.user
LEFT JOIN (
  SELECT initiator_username AS user, count() AS tool_calls FROM tool_usages FINAL
  WHERE {where("created_at")}
  GROUP BY user
) AS c ON c.user = i.user
ORDER BY `Cost (USD)` DESC, `Interceptions` DESC, `User`
LIMIT 100"""

TOP_CLIENTS = f"""SELECT client AS `Client`, count() AS `Interceptions`
FROM interceptions FINAL
WHERE {where("started_at")}
GROUP BY client ORDER BY `Interceptions` DESC, `Client` LIMIT 15"""

TOP_MODELS = f"""SELECT i.provider AS `Provider`, i.model AS `Model`, i.interceptions AS `Interceptions`,
  u.input + u.output + u.cache_read + u.cache_write AS `Tokens`, u.cost AS `Cost (USD)`
FROM (
  SELECT provider, model, count() AS interceptions FROM interceptions FINAL
  WHERE {where("started_at")}
  GROUP BY provider, model
) AS i
LEFT JOIN ({usage_sums("provider, model")}) AS u ON u.provider = i.provider AND u.model = i.model
ORDER BY `Interceptions` DESC, `Model` LIMIT 20"""

# Spend as recorded: each token usage's cost, priced by the recorder from aibridge/prices.yaml (and
# AIBRIDGE_PRICES_FILE) when it was stored; NULL when its model has no price. Sums are exact decimals.
SPEND_PER_DAY = f"""SELECT toStartOfDay(created_at) AS time, sum(cost) AS `Spend (USD)`
FROM token_usages FINAL
WHERE {where("created_at")}
GROUP BY time ORDER BY time"""

TOP_SPENDERS = f"""SELECT initiator_username AS `User`, sum(cost) AS `Spend (USD)`,
  uniqExact(interception_id) AS `Interceptions`, uniqExactIf(interception_id, cost IS NULL) AS `Unpriced`
FROM token_usages FINAL
WHERE {where("created_at")}
GROUP BY `User` ORDER BY `Spend (USD)` DESC, `User` LIMIT 20"""

TOP_MODELS_BY_SPEND = f"""SELECT provider AS `Provider`, model AS `Model`, sum(cost) AS `Spend (USD)`,
  sum(input_tokens + output_tokens + cache_read_input_tokens + cache_write_input_tokens) AS `Tokens`
FROM token_usages FINAL
WHERE {where("created_at")}
GROUP BY `Provider`, `Model` ORDER BY `Spend (USD)` DESC, `Model` LIMIT 20"""

UNPRICED_TRAFFIC = f"""SELECT provider AS `Provider`, model AS `Model`, count() AS `Token usages`,
  uniqExact(interception_id) AS `Interceptions`
FROM token_usages FINAL
WHERE {where("created_at")} AND cost IS NULL
GROUP BY `Provider`, `Model` ORDER BY `Token usages` DESC, `Model` LIMIT 20"""

# Sessions active per UTC day (a session key with an interception that day) and threads started per day
# (human prompts; a leading thread without a prompt is not counted): docs/sessions.md. Read from the
# interceptions that have a session; each counted once by id, so no FINAL.
SESSIONS_PER_DAY = f"""SELECT toStartOfDay(started_at) AS time, uniqExact(session_id) AS `Sessions`,
  uniqExactIf(id, turn = 'prompt') AS `Threads`
FROM interceptions_by_session
WHERE {where("started_at")}
GROUP BY time ORDER BY time"""

INTERCEPTIONS_OVER_TIME = f"""SELECT $__timeInterval(started_at) AS time, initiator_username AS user,
  count() AS interceptions
FROM interceptions FINAL
WHERE {where("started_at")}
GROUP BY time, user ORDER BY time"""

USER_PROMPTS = f"""SELECT created_at AS `Time`, initiator_username AS `User`, client AS `Client`, model AS `Model`,
  prompt AS `Prompt`, interception_id AS `Interception`
FROM user_prompts FINAL
WHERE {where("created_at")}
ORDER BY created_at DESC LIMIT 500"""

TOOL_TOTALS = f"""SELECT count() AS `Tool calls`, countIf(invocation_error IS NOT NULL) AS `Invocation errors`
FROM tool_usages FINAL
WHERE {where("created_at")}"""

TOOL_CALLS = f"""SELECT created_at AS `Time`, initiator_username AS `User`, model AS `Model`, tool AS `Tool`,
  if(invocation_error IS NULL, 'ok', 'error') AS `Result`, ifNull(invocation_error, '') AS `Error`,
  injected AS `Injected`, ifNull(server_url, '') AS `Server`, input AS `Input`, interception_id AS `Interception`
FROM tool_usages FINAL
WHERE {where("created_at")}
ORDER BY created_at DESC LIMIT 500"""


# ---- PromQL ------------------------------------------------------------------------------------------


def selector(*labels: str, extra: str = "") -> str:
    """A label matcher on the dashboard's variables (``All`` is ``.*``, which also matches a missing label)."""
    matchers = [extra] if extra else []
    return "{" + ", ".join([*matchers, *(f'{label}=~"${{{label}:regex}}"' for label in labels)]) + "}"


def quantile(q: float, metric: str, labels: tuple[str, ...] = (), by: str = "") -> str:
    group = f"le, {by}" if by else "le"
    return f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{selector(*labels)}[{RATE}])))"


ENDED = "aibridge_proxy_interceptions_ended_total"
INTERCEPTION_FILTERS = ("provider", "model", "client")
INTERCEPTIONS_BY_STATUS = f"sum by (status) (rate({ENDED}{selector(*INTERCEPTION_FILTERS)}[{RATE}]))"
_NOT_COMPLETED = selector(*INTERCEPTION_FILTERS, extra='status!="completed"')
ERROR_SHARE = (
    f"sum by (status) (rate({ENDED}{_NOT_COMPLETED}[{RATE}]))"
    f" / scalar(sum(rate({ENDED}{selector(*INTERCEPTION_FILTERS)}[{RATE}])))"
)
REJECTIONS = f"sum by (reason) (rate(aibridge_proxy_rejections_total[{RATE}]))"
IN_FLIGHT = f"sum by (provider) (aibridge_proxy_interceptions_in_flight{selector('provider', 'model')})"
TOKENS_BY_TYPE = f"sum by (type) (rate(aibridge_proxy_tokens_total{selector(*INTERCEPTION_FILTERS)}[{RATE}]))"
EVENTS = {
    "published/s": f"sum(rate(aibridge_proxy_events_published_total[{RATE}]))",
    "dropped/s: {{reason}}": f"sum by (reason) (rate(aibridge_proxy_events_dropped_total[{RATE}]))",
    "buffered": "sum(aibridge_proxy_events_buffered)",
    "spooled": "sum(aibridge_spool_records)",
}
MCP_CALLS = {
    "{{server}} {{outcome}}/s": f"sum by (server, outcome) (rate(aibridge_mcp_calls_total[{RATE}]))",
    "refresh failures: {{server}}": f"sum by (server) (increase(aibridge_mcp_refresh_failures_total[{RATE}]))",
}
MCP_TOOLS = "sum by (server) (aibridge_mcp_tools)"
RECORDER_LAG = {
    "lag (messages)": "sum(aibridge_recorder_consumer_lag_messages)",
    "p95 publish to stored": quantile(0.95, "aibridge_recorder_publish_to_stored_seconds"),
}
RECORDER_THROUGHPUT = {
    "events consumed/s": f"sum(rate(aibridge_recorder_events_consumed_total[{RATE}]))",
    "rows/s: {{table}}": f"sum by (table) (rate(aibridge_recorder_rows_written_total[{RATE}]))",
}
RECORDER_FAILURES = {
    "dead letters: {{kind}}": f"sum by (kind) (increase(aibridge_recorder_dead_letters_total[{RATE}]))",
    "store errors: {{operation}}": f"sum by (operation) (increase(aibridge_recorder_store_errors_total[{RATE}]))",
    "paused": "max(aibridge_recorder_paused)",
}
API_REQUESTS = f"sum by (endpoint, status) (rate(aibridge_api_requests_total[{RATE}]))"
API_LATENCY = quantile(0.95, "aibridge_api_request_seconds", by="endpoint")
