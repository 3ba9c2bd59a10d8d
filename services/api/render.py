"""Store rows → response objects in the shape of Coder's AI Bridge API (pure functions).

Timestamps are RFC 3339 in UTC with microseconds; metadata (stored as JSON text) becomes an object;
ids are strings. In-flight interceptions have ``ended_at``, ``status`` and ``http_status`` null.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

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
    return child
