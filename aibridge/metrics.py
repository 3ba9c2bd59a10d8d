"""Every Prometheus metric of every service, declared once, prefixed ``aibridge_``, units in the names.

Sections per component; a process registers only what it uses because all metrics live in the
default registry and are exported by whichever component serves ``/metrics``.

With several proxy workers (:mod:`aibridge.workers`) the metrics are kept in prometheus-client's
multiprocess mode: counters and histograms add up over the workers; each gauge says how (``livesum``
for amounts such as requests in flight, ``livemax`` for states and ages); a gauge read from a function
is set through :func:`track`, because a function cannot be read from another process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Literal

from prometheus_client import Counter, Gauge, Histogram

# ---- proxy -------------------------------------------------------------------------------------

PROXY_PASSTHROUGH_REQUESTS = Counter(
    "aibridge_proxy_passthrough_requests",
    "Passthrough requests (models, count_tokens, stored responses), by provider, route and HTTP status.",
    ["provider", "route", "status"],
)
PROXY_AUTH_FAILURES = Counter(
    "aibridge_proxy_auth_failures",
    "Requests refused for a missing or bad token (bridge or identity provider), by reason.",
    ["reason"],
)
OIDC_KEY_FETCHES = Counter(
    "aibridge_oidc_key_fetches",
    "Fetches of the identity provider's discovery document and keys (JWKS), by outcome (ok, failed).",
    ["outcome"],
)
PROXY_EVENTS_PUBLISHED = Counter("aibridge_proxy_events_published", "Interception events the bus accepted.")
PROXY_EVENTS_DROPPED = Counter(
    "aibridge_proxy_events_dropped",
    "Interception events that could not be published, by reason (buffer_full, send_failed, shutdown, unencodable).",
    ["reason"],
)
PROXY_EVENT_SEND_FAILURES = Counter(
    "aibridge_proxy_event_send_failures", "Failed attempts to send an event to the bus (retried or dropped)."
)
PROXY_EVENTS_BUFFERED = Gauge(
    "aibridge_proxy_events_buffered", "Interception events waiting to be published.", multiprocess_mode="livesum"
)

# Interception metrics of issue 6. The usage counters carry an ``initiator`` label (the username) that
# ``AIBRIDGE_METRICS_INITIATOR_LABEL=false`` empties for cardinality: build label values only through
# :func:`interception_labels` and :func:`usage_labels`, which honour that switch. Prometheus drops
# empty labels at ingestion, so with the switch off the series simply have no initiator.

INTERCEPTION_LABELS = ("provider", "model", "status", "route", "method", "client", "initiator")
USAGE_LABELS = ("provider", "model", "client", "initiator")
TokenType = Literal["input", "output", "cache_read", "cache_write"]
TOKEN_TYPES: tuple[TokenType, ...] = ("input", "output", "cache_read", "cache_write")

PROXY_INTERCEPTIONS_ENDED = Counter(
    "aibridge_proxy_interceptions_ended",
    "Interceptions that ended, by provider, model, status, route, HTTP method, client and initiator.",
    INTERCEPTION_LABELS,
)
PROXY_INTERCEPTIONS_IN_FLIGHT = Gauge(
    "aibridge_proxy_interceptions_in_flight",
    "Interceptions between arrival and their last byte to the client, by provider, model and route.",
    ["provider", "model", "route"],
    multiprocess_mode="livesum",
)
PROXY_INTERCEPTION_DURATION_SECONDS = Histogram(
    "aibridge_proxy_interception_duration_seconds",
    "From an interception's arrival to its last byte to the client, by provider, model and streaming.",
    ["provider", "model", "streaming"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600),
)
PROXY_PROMPTS = Counter(
    "aibridge_proxy_prompts", "User prompts recorded, by provider, model, client and initiator.", USAGE_LABELS
)
PROXY_TOKENS = Counter(
    "aibridge_proxy_tokens",
    "Tokens the provider reported, by provider, model, client, initiator and type "
    "(input without cache, output, cache_read, cache_write).",
    [*USAGE_LABELS, "type"],
)
PROXY_TOOL_SELECTIONS = Counter(
    "aibridge_proxy_tool_selections",
    "Tool calls the model selected in its answers, by provider, model and client (tool names: see the store).",
    ["provider", "model", "client"],
)
# Cost as a float is fine for a rate on a dashboard; the store's sums (Decimal) are the exact figures.
PROXY_COST_USD = Counter(
    "aibridge_proxy_cost_usd",
    "What the token usages cost at the price table's prices (USD), by provider, model and initiator.",
    ["provider", "model", "initiator"],
)
PROXY_UNPRICED_INTERCEPTIONS = Counter(
    "aibridge_proxy_unpriced_interceptions",
    "Token usages of models the price table does not know (their cost is unknown), by provider and model.",
    ["provider", "model"],
)
PROXY_UPSTREAM_TTFB_SECONDS = Histogram(
    "aibridge_proxy_upstream_time_to_first_byte_seconds",
    "From sending a request upstream to the first byte of the provider's answer, by provider and model.",
    ["provider", "model"],
    buckets=(0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 20, 30, 60),
)
PROXY_OVERHEAD_SECONDS = Histogram(
    "aibridge_proxy_overhead_seconds",
    "Time an interception spent in the bridge itself (its duration minus waiting on the upstream), "
    "by provider and streaming.",
    ["provider", "streaming"],
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
)


def interception_labels(
    *,
    provider: str,
    model: str,
    status: str,
    route: str,
    method: str,
    client: str,
    initiator: str,
    include_initiator: bool,
) -> tuple[str, str, str, str, str, str, str]:
    """Label values of :data:`PROXY_INTERCEPTIONS_ENDED`, in :data:`INTERCEPTION_LABELS` order."""
    return (provider, model, status, route, method, client, initiator if include_initiator else "")


def usage_labels(
    *, provider: str, model: str, client: str, initiator: str, include_initiator: bool
) -> tuple[str, str, str, str]:
    """Label values of :data:`PROXY_PROMPTS` (and of :data:`PROXY_TOKENS` before ``type``)."""
    return (provider, model, client, initiator if include_initiator else "")


# ---- recorder ----------------------------------------------------------------------------------

RECORDER_ROWS_WRITTEN = Counter("aibridge_recorder_rows_written", "Rows inserted into the store, by table.", ["table"])
RECORDER_DEAD_LETTERS = Counter(
    "aibridge_recorder_dead_letters",
    "Messages sent to the dead-letter topic, by kind (invalid_json, schema, unstorable, store_rejected).",
    ["kind"],
)
RECORDER_BATCHES_WRITTEN = Counter("aibridge_recorder_batches_written", "Batches stored and committed.")
RECORDER_BATCH_EVENTS = Histogram(
    "aibridge_recorder_batch_events",
    "Events per written batch.",
    buckets=(1, 10, 100, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000),
)
RECORDER_WRITE_SECONDS = Histogram(
    "aibridge_recorder_write_seconds",
    "Time to insert one batch (all its tables).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RECORDER_PUBLISH_TO_STORED_SECONDS = Histogram(
    "aibridge_recorder_publish_to_stored_seconds",
    "From the message's bus timestamp to its row being stored.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 1.5, 2, 3, 5, 10, 30, 60, 300),
)
RECORDER_FAILURES = Counter(
    "aibridge_recorder_failures",
    "Failed operations, retried (write, dead_letter, commit, poll).",
    ["operation"],
)
RECORDER_PAUSED = Gauge(
    "aibridge_recorder_paused",
    "1 while fetching is paused because a write or dead letter waits.",
    multiprocess_mode="livemax",
)
RECORDER_EVENTS_CONSUMED = Counter(
    "aibridge_recorder_events_consumed", "Messages taken from the bus (valid or not) before decoding."
)
RECORDER_CONSUMER_LAG_MESSAGES = Gauge(
    "aibridge_recorder_consumer_lag_messages",
    "Messages in this recorder's assigned partitions (or in-process queue) not yet consumed.",
    multiprocess_mode="livesum",
)
RECORDER_STORE_ERRORS = Counter(
    "aibridge_recorder_store_errors",
    "Store statements that failed, by operation (insert, migrate, retention, ping); "
    'insert failures are retried and also counted in aibridge_recorder_failures_total{operation="write"}.',
    ["operation"],
)

# ---- api ---------------------------------------------------------------------------------------

API_REQUESTS = Counter(
    "aibridge_api_requests", "Query API requests answered, by endpoint and HTTP status.", ["endpoint", "status"]
)
API_REQUEST_SECONDS = Histogram(
    "aibridge_api_request_seconds",
    "Time to answer one query API request, by endpoint.",
    ["endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10),
)
API_STORE_QUERY_SECONDS = Histogram(
    "aibridge_api_store_query_seconds",
    "Time of one store query made by the API, by query (page, children, count, cursor, facets, usage).",
    ["query"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
API_STORE_ERRORS = Counter(
    "aibridge_api_store_errors", "Store queries that failed (answered 503), by query.", ["query"]
)
API_AUDIT_RECORDS = Counter(
    "aibridge_api_audit_records",
    "Access audit records (every one is also a log line), by outcome: published (the bus took it), logged "
    "(no bus in this mode), dropped (never reached the bus: buffer full or shutdown).",
    ["outcome"],
)
API_AUDIT_SEND_FAILURES = Counter(
    "aibridge_api_audit_send_failures", "Failed attempts to send access audit records to the bus (retried)."
)
API_AUDIT_BUFFERED = Gauge(
    "aibridge_api_audit_records_buffered", "Access audit records waiting for the bus.", multiprocess_mode="livesum"
)

__all__ = ["Counter", "Gauge", "Histogram"]

# ---- resilience (proxy limits, circuit breakers, event spool) ------------------------------------

PROXY_REJECTIONS = Counter(
    "aibridge_proxy_rejections",
    "Requests the proxy answered itself, by reason (user_rate_limit, rate_limit, concurrency_limit, circuit_open).",
    ["reason"],
)
CIRCUIT_BREAKER_STATE = Gauge(
    "aibridge_circuit_breaker_state",
    "Upstream circuit breaker per provider and model: 0 closed, 1 open, 2 half-open.",
    ["provider", "model"],
    multiprocess_mode="livemax",
)
SPOOL_BYTES = Gauge(
    "aibridge_spool_bytes",
    "Bytes of spool segment files on disk (events the bus has not taken).",
    multiprocess_mode="livesum",
)
SPOOL_RECORDS = Gauge(
    "aibridge_spool_records", "Events in the spool not yet acknowledged by the bus.", multiprocess_mode="livesum"
)
SPOOL_APPENDED_RECORDS = Counter("aibridge_spool_appended_records", "Events written to the spool.")
SPOOL_REPLAYED_RECORDS = Counter("aibridge_spool_replayed_records", "Spooled events the bus acknowledged.")
SPOOL_DROPPED_RECORDS = Counter(
    "aibridge_spool_dropped_records", "Events refused by the spool, by reason (full, io_error).", ["reason"]
)
SPOOL_DISCARDED_BYTES = Counter(
    "aibridge_spool_discarded_bytes", "Bytes of torn or corrupt spool records skipped when a spool was opened."
)

# ---- MCP tool injection (proxy) ------------------------------------------------------------------

MCP_TOOLS = Gauge(
    "aibridge_mcp_tools",
    "Tools of each MCP server injected into requests (after allow/deny).",
    ["server"],
    multiprocess_mode="livemax",
)
MCP_CALLS = Counter(
    "aibridge_mcp_calls",
    "Injected tool calls the proxy ran, by server, tool and outcome (ok, tool_error, rpc_error, timeout,"
    " unavailable, bad_arguments, unknown_tool, missing_token).",
    ["server", "tool", "outcome"],
)
MCP_CALL_DURATION_SECONDS = Histogram(
    "aibridge_mcp_call_duration_seconds",
    "Duration of injected tool calls, by server.",
    ["server"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
MCP_REFRESH_FAILURES = Counter(
    "aibridge_mcp_refresh_failures", "Failed listings of an MCP server's tools (retried with backoff).", ["server"]
)
MCP_ROUND_CAP = Counter(
    "aibridge_mcp_round_cap",
    "Requests whose injection loop reached AIBRIDGE_MCP_MAX_ROUNDS while the model still called injected tools"
    " (those calls not run), by API (anthropic, openai_chat, openai_responses).",
    ["api"],
)

# ---- budgets (proxy) -----------------------------------------------------------------------------

BUDGET_STATE_AGE_SECONDS = Gauge(
    "aibridge_proxy_budget_state_age_seconds",
    "Seconds since the budgets and spend were last read from the store (-1 before the first read: requests"
    " are refused).",
    multiprocess_mode="livemax",
)
BUDGET_REFRESH_FAILURES = Counter(
    "aibridge_proxy_budget_refresh_failures",
    "Failed reads of budgets and spend from the store (the proxy keeps enforcing what it knows).",
)
BUDGET_DECISIONS = Counter(
    "aibridge_proxy_budget_decisions",
    "Requests checked against a budget, by outcome (within, warned, exceeded, unknown).",
    ["outcome"],
)
BUDGET_ALERTS = Counter(
    "aibridge_proxy_budget_alerts", "Budget alerts raised, by threshold (warn, exceeded).", ["threshold"]
)


OTHER_MODEL = "other"


class ModelLabels:
    """Values of the ``model`` label: the first ``limit`` distinct models keep their names, later ones
    are counted as ``other`` (with one warning).

    The model comes from the client's request body. Without a bound, a client sending made-up model
    names would add label values, and the memory behind them, to every per-model metric without end.
    Events, the store and spans keep the real name.
    """

    def __init__(self, limit: int = 200) -> None:
        self.reset(limit)

    def reset(self, limit: int) -> None:
        """Start over with ``limit`` (the proxy does, once, from its settings)."""
        self.limit = limit
        self._seen: set[str] = set()
        self._warned = False

    def __call__(self, model: str) -> str:
        if model in self._seen:
            return model
        if len(self._seen) < self.limit:
            self._seen.add(model)
            return model
        if not self._warned:
            self._warned = True
            logging.getLogger("aibridge.metrics").warning(
                "more than %d distinct models: metrics count the others as model=%r"
                " (AIBRIDGE_METRICS_MAX_MODELS; events keep the real name)",
                self.limit,
                OTHER_MODEL,
            )
        return OTHER_MODEL


model_label = ModelLabels()

_CHILDREN: dict[tuple[int, tuple[str, ...]], Any] = {}


def child(metric: Any, *values: str) -> Any:
    """``metric.labels(*values)``, remembered: prometheus-client validates and locks on every call,
    which the proxy's hot path makes about ten times per interception. No metric here ever removes
    a child, so a remembered one stays the exported one."""
    key = (id(metric), values)
    found = _CHILDREN.get(key)
    if found is None:
        found = _CHILDREN[key] = metric.labels(*values)
    return found


_TRACKED: list[tuple[Gauge, Callable[[], float]]] = []
_TRACK_INTERVAL = 1.0


def track(gauge: Gauge, read: Callable[[], float]) -> None:
    """Make ``gauge`` show ``read()``: read at each scrape in one process; with workers (multiprocess
    mode, where a scrape is served by any one worker) copied into the gauge every second by
    :func:`copy_tracked_gauges`, which each worker runs."""
    gauge.set_function(read)
    _TRACKED[:] = [(g, r) for g, r in _TRACKED if g is not gauge] + [(gauge, read)]


async def copy_tracked_gauges(interval: float = _TRACK_INTERVAL) -> None:
    """Forever: set every tracked gauge from its function (multiprocess mode only)."""
    while True:
        for gauge, read in _TRACKED:
            try:
                gauge.set(read())
            except Exception:
                logging.getLogger("aibridge.metrics").exception("reading the %s gauge failed", gauge._name)
        await asyncio.sleep(interval)
