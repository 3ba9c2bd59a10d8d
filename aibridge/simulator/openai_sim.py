"""A simulated OpenAI chat completions API, faithful to the documented wire format.

A model whose name holds ``reasoner`` answers as DeepSeek's OpenAI-compatible reasoning model does: the
message has a ``reasoning_content`` beside its ``content``; streamed, the reasoning comes first in deltas of
its own (``content`` null) and the answer's deltas carry ``"reasoning_content": null``.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from starlette.responses import Response, StreamingResponse

from aibridge.proxy.errors import openai_error
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

FINGERPRINT = "fp_simulated01"
MODELS = ("gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-5", "o3-mini")
ROLES = ("system", "assistant", "user", "function", "tool", "developer")


def error(status: int, message: str) -> Response:
    return Response(orjson.dumps(openai_error(status, message)), status, media_type="application/json")


def validate(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "The request body must be a JSON object."
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "you must provide a model parameter"
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        return "Invalid 'messages': empty array. Expected an array with minimum length 1."
    for message in body["messages"]:
        role = message.get("role") if isinstance(message, dict) else None
        if isinstance(role, str) and role not in ROLES:  # OpenAI quotes the value it refuses
            supported = f"{', '.join(map(repr, ROLES[:-1]))}, and {ROLES[-1]!r}"
            return f"Invalid value: '{role}'. Supported values are: {supported}."
    return None


def _injected_rounds(body: dict[str, Any]) -> int:
    """Assistant turns of the conversation that called an injected tool."""
    return sum(
        1
        for message in body["messages"]
        if isinstance(message, dict)
        and message.get("role") == "assistant"
        and any(
            isinstance(call, dict) and str((call.get("function") or {}).get("name", "")).startswith(INJECTED_PREFIX)
            for call in message.get("tool_calls") or ()
        )
    )


def _tool_calls(body: dict[str, Any], controls: Controls) -> list[dict[str, Any]]:
    """The offered functions to call (:func:`plan_calls`)."""
    tools = [t for t in body.get("tools") or () if isinstance(t, dict) and t.get("type") == "function"]
    if not tools or body.get("tool_choice") == "none":
        return []
    last = body["messages"][-1]
    functions = [tool.get("function") or {} for tool in tools]
    offered = [(str(function.get("name") or "tool"), function.get("parameters")) for function in functions]
    follow_up = isinstance(last, dict) and last.get("role") == "tool"
    planned = plan_calls(offered, follow_up, _injected_rounds(body), controls)
    return [
        {"id": random_id("call_"), "name": call.name, "arguments": orjson.dumps(call.arguments).decode()}
        for call in planned
    ]


def _prompt(body: dict[str, Any]) -> str | None:
    last = body["messages"][-1]
    content = last.get("content") if isinstance(last, dict) else None
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else None


def usage(body: dict[str, Any], completion: str, controls: Controls) -> dict[str, Any]:
    prompt_tokens = count_tokens(body["messages"]) + count_tokens(body.get("tools") or [])
    prompt_tokens += controls.cache_read_tokens
    completion_tokens = count_tokens(completion) + controls.reasoning_tokens
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": controls.cache_read_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": controls.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def complete(body: dict[str, Any], controls: Controls) -> Response:
    calls = _tool_calls(body, controls)
    message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None, "annotations": []}
    if _reasons(body):
        message["reasoning_content"] = reasoning_text(_prompt(body))
    if not calls:
        message["content"] = answer_text(_prompt(body))
        produced = message["content"]
    else:
        message["tool_calls"] = [
            {"id": call["id"], "type": "function", "function": {"name": call["name"], "arguments": call["arguments"]}}
            for call in calls
        ]
        produced = "".join(call["arguments"] for call in calls)
    answer = {
        "id": random_id("chatcmpl-"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body["model"],
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": "tool_calls" if calls else "stop",
            }
        ],
        "usage": usage(body, produced, controls),
        "service_tier": "default",
        "system_fingerprint": FINGERPRINT,
    }
    return Response(orjson.dumps(answer), media_type="application/json")


def _reasons(body: dict[str, Any]) -> bool:
    return "reasoner" in body["model"]


def _deltas(body: dict[str, Any], controls: Controls) -> tuple[list[dict[str, Any]], str, str]:
    """The choice deltas of a streamed answer, what was produced, and the finish reason."""
    deltas, produced, finish = _answer_deltas(body, controls)
    if not _reasons(body):
        return deltas, produced, finish
    thought = [{"content": None, "reasoning_content": piece} for piece in pieces(reasoning_text(_prompt(body)))]
    opening = {"role": "assistant", "content": None, "reasoning_content": ""}
    return [opening, *thought, *({**delta, "reasoning_content": None} for delta in deltas)], produced, finish


def _answer_deltas(body: dict[str, Any], controls: Controls) -> tuple[list[dict[str, Any]], str, str]:
    calls = _tool_calls(body, controls)
    if not calls:
        text = answer_text(_prompt(body))
        deltas: list[dict[str, Any]] = [{"role": "assistant", "content": "", "refusal": None}]
        deltas += [{"content": piece} for piece in pieces(text)]
        return deltas, text, "stop"
    deltas = []
    for index, call in enumerate(calls):
        function = {"name": call["name"], "arguments": ""}
        opening = {"tool_calls": [{"index": index, "id": call["id"], "type": "function", "function": function}]}
        deltas.append({"role": "assistant", "content": None, **opening, "refusal": None} if index == 0 else opening)
        deltas += [
            {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}
            for piece in json_pieces(call["arguments"])
        ]
    return deltas, "".join(call["arguments"] for call in calls), "tool_calls"


def stream(body: dict[str, Any], controls: Controls) -> Response:
    options = body.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    base = {
        "id": random_id("chatcmpl-"),
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": body["model"],
        "service_tier": "default",
        "system_fingerprint": FINGERPRINT,
    }
    deltas, produced, finish = _deltas(body, controls)
    chunks = [_choice(base, delta, None, include_usage) for delta in deltas]
    chunks.append(_choice(base, {}, finish, include_usage))
    if include_usage:
        chunks.append(base | {"choices": [], "usage": usage(body, produced, controls)})
    lines = [b"data: " + orjson.dumps(chunk) + b"\n\n" for chunk in chunks] + [b"data: [DONE]\n\n"]
    return StreamingResponse(paced(lines, controls), media_type="text/event-stream", headers=SSE_HEADERS)


def _choice(base: dict[str, Any], delta: dict[str, Any], finish: str | None, include_usage: bool) -> dict[str, Any]:
    chunk = base | {"choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
    if include_usage:
        chunk["usage"] = None
    return chunk


def models() -> Response:
    data = [{"id": name, "object": "model", "created": 1715367049, "owned_by": "system"} for name in MODELS]
    return Response(orjson.dumps({"object": "list", "data": data}), media_type="application/json")
