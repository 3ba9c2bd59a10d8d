"""Responses the simulated provider keeps by id, and its compaction endpoint, faithful to the Responses API.

A response created with ``store`` not false is kept (newest 200): ``GET /v1/responses/{id}`` answers the
response object, ``GET /v1/responses/{id}/input_items`` its input items as a cursor page (``object: list``,
``data``, ``first_id``, ``last_id``, ``has_more``; ``limit`` 1-100, default 20; ``order`` ``desc`` by
default; ``after`` an item id), ``DELETE /v1/responses/{id}`` ``{"id", "object": "response", "deleted":
true}``. An unknown id is a 404 in OpenAI's error shape. The simulator runs no background responses, so a
retrieve with ``stream=true`` (a background response's events) is a 400.

``POST /v1/responses/compact`` answers blocking only (the API has no stream for it): a
``response.compaction`` object whose ``output`` is every user message of the conversation followed by
one ``compaction`` item with opaque ``encrypted_content``, and the pass's ``usage``.
"""

from __future__ import annotations

import base64
import secrets
import time
from collections import OrderedDict
from typing import Any

import orjson
from starlette.responses import Response

from aibridge.simulator.common import Controls, count_tokens, random_id
from aibridge.simulator.openai_sim import error

_KEPT = 200
_MAX_PAGE = 100
_DEFAULT_PAGE = 20
_ID_PREFIXES = {"message": "msg_", "function_call": "fc_", "function_call_output": "fco_", "reasoning": "rs_"}


class StoredResponses:
    """Stored responses by id, each with its input items (ids given as the API gives them)."""

    def __init__(self) -> None:
        self._responses: OrderedDict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = OrderedDict()

    def keep(self, body: dict[str, Any], response: dict[str, Any]) -> None:
        """Keep ``response`` unless the request said ``store: false``."""
        if body.get("store") is False:
            return
        self._responses[response["id"]] = (response, input_items(body["input"]))
        while len(self._responses) > _KEPT:
            self._responses.popitem(last=False)

    def conversation(self, response_id: str) -> list[dict[str, Any]] | None:
        """A stored response's input items followed by its output, or None for an unknown id."""
        stored = self._responses.get(response_id)
        return None if stored is None else [*stored[1], *stored[0]["output"]]

    def retrieve(self, response_id: str, query: dict[str, str]) -> Response:
        stored = self._responses.get(response_id)
        if stored is None:
            return _unknown(response_id)
        if query.get("stream") == "true":
            return error(400, "Streaming a retrieved response is only supported for background responses.")
        return _json(stored[0])

    def delete(self, response_id: str) -> Response:
        if self._responses.pop(response_id, None) is None:
            return _unknown(response_id)
        return _json({"id": response_id, "object": "response", "deleted": True})

    def list_input_items(self, response_id: str, query: dict[str, str]) -> Response:
        stored = self._responses.get(response_id)
        if stored is None:
            return _unknown(response_id)
        limit = query.get("limit", str(_DEFAULT_PAGE))
        if not limit.isdigit() or not 1 <= int(limit) <= _MAX_PAGE:
            return error(400, f"Invalid 'limit': expected an integer between 1 and {_MAX_PAGE}.")
        order = query.get("order", "desc")
        if order not in {"asc", "desc"}:
            return error(400, "Invalid 'order': expected one of 'asc' or 'desc'.")
        items = stored[1] if order == "asc" else stored[1][::-1]
        after = query.get("after")
        if after is not None:
            ids = [item["id"] for item in items]
            if after not in ids:
                return error(400, f"Invalid 'after': no input item with id '{after}'.")
            items = items[ids.index(after) + 1 :]
        return _json(_page(items, int(limit)))


def input_items(items: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The request's input as the API lists it: a string is one user message; every item gets an id."""
    listed = [{"type": "message", "role": "user", "content": items}] if isinstance(items, str) else items
    return [_with_id(item) for item in listed]


def _with_id(item: dict[str, Any]) -> dict[str, Any]:
    """An input item as the API lists it: an id and a status; a message's content as typed parts."""
    listed = {"id": random_id(_ID_PREFIXES.get(item.get("type", "message"), "item_"), 48), "status": "completed"}
    if not _is_message(item):
        return listed | item
    kind = "output_text" if item.get("role") == "assistant" else "input_text"
    content = item.get("content")
    parts = [{"type": kind, "text": content}] if isinstance(content, str) else content
    if kind == "output_text" and isinstance(parts, list):
        parts = [{"annotations": []} | part if isinstance(part, dict) else part for part in parts]
    return listed | {"type": "message"} | item | {"content": parts}


def _page(items: list[dict[str, Any]], limit: int) -> dict[str, Any]:
    data = items[:limit]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else "",
        "last_id": data[-1]["id"] if data else "",
        "has_more": len(items) > limit,
    }


def validate_compaction(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "The request body must be a JSON object."
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "Missing required parameter: 'model'."
    if "stream" in body:
        return "Unknown parameter: 'stream'."
    items = body.get("input")
    if items is not None and not (isinstance(items, str) or _all_objects(items)):
        return "Invalid 'input': expected a string or an array of input items."
    if not items and not body.get("previous_response_id"):
        return "Missing required parameter: 'input'."
    return None


def _all_objects(items: Any) -> bool:
    return isinstance(items, list) and all(isinstance(item, dict) for item in items)


def compact(body: dict[str, Any], controls: Controls, store: StoredResponses) -> Response:
    """The compacted conversation: its user messages, then one compaction item."""
    earlier: list[dict[str, Any]] = []
    if previous := body.get("previous_response_id"):
        found = store.conversation(str(previous))
        if found is None:
            return error(400, f"Previous response with id '{previous}' not found.")
        earlier = found
    conversation = earlier + (input_items(body["input"]) if body.get("input") else [])
    users = [_with_id(item) for item in conversation if item.get("role") == "user" and _is_message(item)]
    sealed = base64.urlsafe_b64encode(b"gAAAAA" + secrets.token_bytes(48)).decode()
    compaction = {"id": random_id("cmp_", 48), "type": "compaction", "encrypted_content": sealed}
    compacted = {
        "id": random_id("resp_", 48),
        "object": "response.compaction",
        "created_at": int(time.time()),
        "output": [*users, compaction],
        "usage": _usage(body, conversation, controls),
    }
    return _json(compacted)


def _is_message(item: dict[str, Any]) -> bool:
    return bool(item.get("type", "message") == "message")


def _usage(body: dict[str, Any], conversation: list[dict[str, Any]], controls: Controls) -> dict[str, Any]:
    input_tokens = count_tokens(conversation) + count_tokens(body.get("instructions") or "")
    input_tokens += count_tokens(body.get("tools") or []) + controls.cache_read_tokens + controls.cache_write_tokens
    output_tokens = max(1, input_tokens // 8) + controls.reasoning_tokens
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {
            "cached_tokens": controls.cache_read_tokens,
            "cache_write_tokens": controls.cache_write_tokens,
        },
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": controls.reasoning_tokens},
        "total_tokens": input_tokens + output_tokens,
    }


def _unknown(response_id: str) -> Response:
    return error(404, f"Response with id '{response_id}' not found.")


def _json(body: dict[str, Any]) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")
