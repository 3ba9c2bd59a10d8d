"""Store rows → response objects in the shape of Coder's AI Bridge API (pure functions).

Timestamps are RFC 3339 in UTC with microseconds; metadata (stored as JSON text) becomes an object;
ids are strings. In-flight interceptions have ``ended_at``, ``status`` and ``http_status`` null.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

from aibridge.pricing import format_cost

Row = dict[str, Any]


def rfc3339(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def metadata(text: str) -> dict[str, Any]:
    """Stored metadata as an object; text that is not a JSON object is kept under ``_unparsed``."""
    if not text:
        return {}
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {"_unparsed": text}
    return value if isinstance(value, dict) else {"_unparsed": value}


def render_interception(row: Row) -> Row:
    in_flight = row["ended_at"] is None
    return {
        "id": str(row["id"]),
        "api_key_id": row["api_key_id"],
        "initiator": {
            "id": row["initiator_id"],
            "username": row["initiator_username"],
            "name": "",
            "avatar_url": "",
        },
        "provider": row["provider"],
        "model": row["model"],
        "client": row["client"],
        "metadata": metadata(row["metadata"]),
        "started_at": rfc3339(row["started_at"]),
        "ended_at": rfc3339(row["ended_at"]),
        "streaming": bool(row["streaming"]),
        "route": row["route"],
        "user_agent": row["user_agent"],
        "status": None if in_flight else row["status"],
        "http_status": None if in_flight else row["http_status"],
        "error": row["error"],
        "session_id": row["session_id"],
        "thread_id": None,
        "turn": row["turn"],
        "token_usages": [],
        "user_prompts": [],
        "tool_usages": [],
    }


def render_child(row: Row) -> Row:
    """A prompt, token usage or tool usage row; absent optional texts become "" as in Coder's API."""
    child = dict(row)
    child["id"] = str(row["id"])
    child["interception_id"] = str(row["interception_id"])
    child["metadata"] = metadata(row["metadata"])
    child["created_at"] = rfc3339(row["created_at"])
    for optional in ("server_url", "invocation_error"):
        if optional in child and child[optional] is None:
            child[optional] = ""
    if "injected" in child:
        child["injected"] = bool(child["injected"])
    if "cost" in child:
        child["cost"] = format_cost(child["cost"])
    return child


def add_cost(interception: Row) -> Row:
    """The interception's cost: the sum of its token usages' costs (exact decimals, as a string).

    ``cost_unpriced`` is true when a usage has no price (its model is not in the price table): the cost
    then counts only the priced usages, and is null when none is priced. No usage at all costs "0".
    """
    costs = [usage["cost"] for usage in interception["token_usages"]]
    priced = [Decimal(cost) for cost in costs if cost is not None]
    interception["cost"] = format_cost(sum(priced, Decimal(0))) if priced or not costs else None
    interception["cost_unpriced"] = len(priced) < len(costs)
    return interception
