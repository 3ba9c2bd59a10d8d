"""A simulated Anthropic messages API, faithful to the documented wire format.

With ``thinking: {"type": "enabled", "budget_tokens": n}`` (n at least 1024, below ``max_tokens``) the
answer starts with a ``thinking`` block (streamed as ``thinking_delta`` events and a ``signature_delta``);
``x-simulator-redacted-thinking: 1`` adds a ``redacted_thinking`` block after it.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response, StreamingResponse

from aibridge.proxy.errors import anthropic_error
from aibridge.simulator.common import (
    INJECTED_PREFIX,
    SSE_HEADERS,
    Controls,
    answer_text,
    count_tokens,
    json_pieces,
    paced,
    pieces,
    plan_calls,
    random_id,
    reasoning_text,
)

MODELS = (
    ("claude-sonnet-4-5", "Claude Sonnet 4.5", "2025-09-29T00:00:00Z"),
    ("claude-opus-4-1", "Claude Opus 4.1", "2025-08-05T00:00:00Z"),
    ("claude-haiku-4-5", "Claude Haiku 4.5", "2025-10-15T00:00:00Z"),
)
PREAMBLE = "I'll use a tool for that."


def error(status: int, message: str) -> Response:
    body = anthropic_error(status, message) | {"request_id": random_id("req_011")}
    return Response(orjson.dumps(body), status, media_type="application/json")


def validate(body: Any, *, counting: bool = False) -> str | None:
    if not isinstance(body, dict):
        return "The request body must be a JSON object."
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "model: Field required"
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        return "messages: Field required"
    if not counting and not isinstance(body.get("max_tokens"), int):
        return "max_tokens: Field required"
    if not counting and _thinks(body) and not 1024 <= _budget(body) < body["max_tokens"]:
        return "thinking.enabled.budget_tokens: must be at least 1024 and less than max_tokens"
    return None


def _last_is_tool_result(body: dict[str, Any]) -> bool:
    content = body["messages"][-1].get("content") if isinstance(body["messages"][-1], dict) else None
    return isinstance(content, list) and any(isinstance(p, dict) and p.get("type") == "tool_result" for p in content)


def _injected_rounds(body: dict[str, Any]) -> int:
    """Assistant turns of the conversation that called an injected tool."""
    return sum(
        1
        for message in body["messages"]
        if isinstance(message, dict)
        and message.get("role") == "assistant"
        and isinstance(message.get("content"), list)
        and any(
            isinstance(block, dict)
            and block.get("type") == "tool_use"
            and str(block.get("name", "")).startswith(INJECTED_PREFIX)
            for block in message["content"]
        )
    )


def _tool_calls(body: dict[str, Any], controls: Controls) -> list[dict[str, Any]]:
    tools = [t for t in body.get("tools") or () if isinstance(t, dict) and t.get("name")]
    choice = body.get("tool_choice")
    if not tools or (isinstance(choice, dict) and choice.get("type") == "none"):
        return []
    offered = [(str(tool["name"]), tool.get("input_schema")) for tool in tools]
    planned = plan_calls(offered, _last_is_tool_result(body), _injected_rounds(body), controls)
    return [{"id": random_id("toolu_01"), "name": call.name, "input": call.arguments} for call in planned]


def _prompt(body: dict[str, Any]) -> str | None:
    content = body["messages"][-1].get("content") if isinstance(body["messages"][-1], dict) else None
    if isinstance(content, list):
        texts = [str(p.get("text")) for p in content if isinstance(p, dict) and p.get("type") == "text"]
        return texts[-1] if texts else None
    return content if isinstance(content, str) else None


def input_usage(body: dict[str, Any], controls: Controls) -> dict[str, Any]:
    counted = (
        count_tokens(body["messages"]) + count_tokens(body.get("system") or "") + count_tokens(body.get("tools") or [])
    )
    return {
        "input_tokens": counted,
        "cache_creation_input_tokens": controls.cache_write_tokens,
        "cache_read_input_tokens": controls.cache_read_tokens,
        "cache_creation": {"ephemeral_5m_input_tokens": controls.cache_write_tokens, "ephemeral_1h_input_tokens": 0},
    }


def _thinks(body: dict[str, Any]) -> bool:
    thinking = body.get("thinking")
    return isinstance(thinking, dict) and thinking.get("type") == "enabled"


def _budget(body: dict[str, Any]) -> int:
    budget = body["thinking"].get("budget_tokens")
    return budget if isinstance(budget, int) and not isinstance(budget, bool) else 0


def _thinking_blocks(body: dict[str, Any], controls: Controls) -> list[dict[str, Any]]:
    if not _thinks(body):
        return []
    blocks = [{"type": "thinking", "thinking": reasoning_text(_prompt(body)), "signature": random_id("Eq", 64)}]
    if controls.redacted_thinking:
        blocks.append({"type": "redacted_thinking", "data": random_id("EmwK", 96)})
    return blocks


def _produced(block: dict[str, Any]) -> Any:
    return block.get("text") or block.get("thinking") or block.get("data") or block.get("input") or ""


def _content(body: dict[str, Any], controls: Controls) -> tuple[list[dict[str, Any]], str]:
    thinking = _thinking_blocks(body, controls)
    calls = _tool_calls(body, controls)
    if not calls:
        return [*thinking, {"type": "text", "text": answer_text(_prompt(body))}], "end_turn"
    tool_uses = ({"type": "tool_use", **call} for call in calls)
    return [*thinking, {"type": "text", "text": PREAMBLE}, *tool_uses], "tool_use"


def complete(body: dict[str, Any], controls: Controls) -> Response:
    content, stop_reason = _content(body, controls)
    output = sum(count_tokens(_produced(block)) for block in content)
    answer = {
        "id": random_id("msg_01"),
        "type": "message",
        "role": "assistant",
        "model": body["model"],
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": input_usage(body, controls) | {"output_tokens": output, "service_tier": "standard"},
    }
    return Response(orjson.dumps(answer), media_type="application/json")


def _event(name: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def _block_events(index: int, block: dict[str, Any]) -> list[bytes]:
    if block["type"] == "text":
        start: dict[str, Any] = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": piece} for piece in pieces(block["text"])]
    elif block["type"] == "thinking":
        start = {"type": "thinking", "thinking": "", "signature": ""}
        deltas = [{"type": "thinking_delta", "thinking": piece} for piece in pieces(block["thinking"])]
        deltas.append({"type": "signature_delta", "signature": block["signature"]})
    elif block["type"] == "redacted_thinking":
        start, deltas = block, []  # sent whole in its start event
    else:
        start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
        arguments = orjson.dumps(block["input"]).decode()
        deltas = [{"type": "input_json_delta", "partial_json": piece} for piece in json_pieces(arguments)]
    events = [_event("content_block_start", {"type": "content_block_start", "index": index, "content_block": start})]
    events += [
        _event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d}) for d in deltas
    ]
    events.append(_event("content_block_stop", {"type": "content_block_stop", "index": index}))
    return events


def stream(body: dict[str, Any], controls: Controls) -> Response:
    content, stop_reason = _content(body, controls)
    usage = input_usage(body, controls)
    output = sum(count_tokens(_produced(block)) for block in content)
    message = {
        "id": random_id("msg_01"),
        "type": "message",
        "role": "assistant",
        "model": body["model"],
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": usage | {"output_tokens": 1, "service_tier": "standard"},
    }
    events = [_event("message_start", {"type": "message_start", "message": message}), _event("ping", {"type": "ping"})]
    for index, block in enumerate(content):
        events += _block_events(index, block)
    final_usage = {key: value for key, value in usage.items() if key != "cache_creation"} | {"output_tokens": output}
    delta = {
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": None},
        "usage": final_usage,
    }
    events += [_event("message_delta", delta), _event("message_stop", {"type": "message_stop"})]
    return StreamingResponse(paced(events, controls), media_type="text/event-stream", headers=SSE_HEADERS)


def count(body: dict[str, Any]) -> Response:
    tokens = input_usage(body, Controls())["input_tokens"]
    return Response(orjson.dumps({"input_tokens": tokens}), media_type="application/json")


def models() -> Response:
    data = [{"type": "model", "id": i, "display_name": name, "created_at": at} for i, name, at in MODELS]
    page = {"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]}
    return Response(orjson.dumps(page), media_type="application/json")
