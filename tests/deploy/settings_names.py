"""The AIBRIDGE_* variables the services read, for checking the names the chart and compose set."""

from __future__ import annotations

from aibridge.api.settings import ApiSettings
from aibridge.http_limits import HeaderLimitSettings
from aibridge.settings import CommonSettings, StoreSettings

# Read by the proxy (services/proxy: settings, limits, spool, mcp).
PROXY_ONLY = {
    "OPENAI_KEY",
    "OPENAI_BASE_URL",
    "ANTHROPIC_KEY",
    "OPENAI_KEY_FILE",
    "ANTHROPIC_KEY_FILE",
    "ANTHROPIC_BASE_URL",
    "WORKERS",
    "MAX_RPS",
    "MAX_CONCURRENT",
    "USER_MAX_RPM",
    "SPOOL_DIR",
    "SPOOL_MAX_BYTES",
    "MAX_BODY_BYTES",
    "PROMPT_CAPTURE",
    "REDACTION_RULES_FILE",
    "BUDGETS",
    "BUDGET_REFRESH_INTERVAL",
    "BUDGET_ALERTS_TOPIC",
    "MCP_SERVERS_FILE",
    "MCP_REFRESH_INTERVAL",
    "MCP_CONNECT_TIMEOUT",
    "MCP_CALL_TIMEOUT",
    "MCP_RESULT_MAX_BYTES",
    "MCP_MAX_ROUNDS",
    "MCP_POOL_MAX_SESSIONS",
    "MCP_POOL_IDLE_TIMEOUT",
}


def known_variables() -> set[str]:
    fields = {*CommonSettings.model_fields, *StoreSettings.model_fields, *ApiSettings.model_fields}
    fields |= set(HeaderLimitSettings.model_fields)
    return {f"AIBRIDGE_{name.upper()}" for name in fields | {n.lower() for n in PROXY_ONLY}}


def unknown(names: set[str]) -> set[str]:
    """AIBRIDGE_ names no service reads (the chart's own AIBRIDGE_STORE_* helpers excepted)."""
    ours = {n for n in names if n.startswith("AIBRIDGE_") and not n.startswith("AIBRIDGE_STORE_")}
    return ours - known_variables()
