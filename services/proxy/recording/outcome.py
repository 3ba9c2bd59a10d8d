"""The one human log line per finished interception (logger ``aibridge.interceptions``, INFO).

It names who, which client, which provider and model, how it ended, the token counts, the number of
tool calls and the duration. It never contains a prompt, a token or a key.

When the line would go, unchanged and only, to the process's JSON handler, it is written directly
(:class:`aibridge.logs.DirectLines`: the same fields, without a ``LogRecord``); otherwise (a terminal,
pytest's ``caplog``, spans that attach log records, a logging set-up of one's own) through ``log.info``.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from aibridge.events import InterceptionContext, Status, utcnow
from aibridge.logs import direct_lines
from aibridge.proxy.providers.records import ResponseSummary, Usage

log = logging.getLogger("aibridge.interceptions")

_NO_USAGE = Usage()


def log_interception(
    context: InterceptionContext,
    status: Status,
    http_status: int,
    summary: ResponseSummary | None,
    ended_at: datetime | None = None,
    *,
    mcp_calls: int = 0,
) -> None:
    """One line per interception; ``mcp_calls``: the calls of injected MCP tools among its rounds (run by
    the bridge or withheld), shown as ``mcp=N`` after the client's ``tools=N`` when there were any."""
    if not log.isEnabledFor(logging.INFO):
        return
    usage = summary.usage if summary is not None and summary.usage is not None else _NO_USAGE
    tools = len(summary.tool_calls) if summary is not None else 0
    seconds = ((ended_at or utcnow()) - context.started_at).total_seconds()
    outcome = status._value_
    fresh, output = usage.input_tokens, usage.output_tokens
    read, written = usage.cache_read_input_tokens, usage.cache_write_input_tokens
    message = (
        f"{context.initiator_username} ({context.client}) {context.provider}/{context.model or '-'} {outcome} "
        f"{http_status} in={fresh} out={output} cache_read={read} cache_write={written} tools={tools}"
        f"{f' mcp={mcp_calls}' if mcp_calls else ''} {seconds:.3f}s"
    )
    fields: dict[str, Any] = {
        "interception_id": context.interception_id,
        "user_id": context.initiator_id,
        "username": context.initiator_username,
        "client": context.client,
        "provider": context.provider,
        "model": context.model,
        "status": outcome,
        "http_status": http_status,
        "input_tokens": fresh,
        "output_tokens": output,
        "cache_read_input_tokens": read,
        "cache_write_input_tokens": written,
        "tool_calls": tools,
        "mcp_calls": mcp_calls,
        "duration_ms": round(seconds * 1000, 1),
    }
    handler = direct_lines.handler_for(log)
    if handler is None:
        log.info(message, extra=fields)
        return
    direct_lines.write(handler, "info", log.name, message, fields)
