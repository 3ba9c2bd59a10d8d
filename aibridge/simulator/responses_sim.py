"""A simulated OpenAI Responses API (``POST /v1/responses``), faithful to the documented wire format.

Blocking: the response object. Streaming: ``response.created``, ``response.in_progress``, then for each
output item ``response.output_item.added``, its content (a message: ``response.content_part.added``,
``response.output_text.delta``..., ``response.output_text.done``, ``response.content_part.done``; a
function call: ``response.function_call_arguments.delta``..., ``response.function_call_arguments.done``)
and ``response.output_item.done``; last ``response.completed`` with the usage. Each event has ``event:``
and ``data:`` lines, a ``type`` and a ``sequence_number``; there is no ``[DONE]``. Delta events carry an
``obfuscation`` pad unless ``stream_options.include_obfuscation`` is false, as the API's do.

The answer is a call of the first offered function tool unless the input ends with a
``function_call_output`` (the agent loop's follow-up turn) or ``tool_choice`` is ``none``; text otherwise.
``x-simulator-reasoning-tokens`` makes the output start with a reasoning item, as a reasoning model's does;
so do ``reasoning: {"summary": "auto" | "concise" | "detailed"}`` (the item carries a ``summary_text`` part,
streamed as ``response.reasoning_summary_part.added``, ``response.reasoning_summary_text.delta``...,
``.done`` and ``response.reasoning_summary_part.done``) and ``include: ["reasoning.encrypted_content"]``
(the item carries ``encrypted_content``).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from typing import Any

import orjson
from starlette.responses import Response, StreamingResponse

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
from aibridge.simulator.stored_sim import StoredResponses

Event = tuple[str, dict[str, Any]]


def validate(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "The request body must be a JSON object."
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "Missing required parameter: 'model'."
    items = body.get("input")
    if not isinstance(items, str | list) or not items:
        return "Missing required parameter: 'input'."
    if isinstance(items, list) and not all(isinstance(item, dict) for item in items):
        return "Invalid 'input': expected an array of input items."
    tools = body.get("tools")
    if tools is not None and not (
        isinstance(tools, list) and all(isinstance(t, dict) and t.get("type") for t in tools)
    ):
        return "Invalid 'tools': expected an array of tools, each with a 'type'."
    return None


def answer(body: dict[str, Any], controls: Controls, store: StoredResponses | None = None) -> Response:
    """The answer (kept in ``store`` by id unless the request says ``store: false``)."""
    if body.get("stream") is True:
        return stream(body, controls, store)
    response = _response(body, "completed", _output(body, controls), controls)
    if store is not None:
        store.keep(body, response)
    return Response(orjson.dumps(response), media_type="application/json")


def stream(body: dict[str, Any], controls: Controls, store: StoredResponses | None = None) -> Response:
    output = _output(body, controls)
    opening = _response(body, "in_progress", [], None)
    events: list[Event] = [("response.created", {"response": opening}), ("response.in_progress", {"response": opening})]
    for index, item in enumerate(output):
        events += _item_events(item, index)
    final = _response(body, "completed", output, controls, opening["id"], opening["created_at"])
    events.append(("response.completed", {"response": final}))
    if store is not None:
        store.keep(body, final)
    pad = _obfuscation(body)
    lines = [_sse(kind, number, payload, pad) for number, (kind, payload) in enumerate(events)]
    return StreamingResponse(paced(lines, controls), media_type="text/event-stream", headers=SSE_HEADERS)


def _sse(kind: str, number: int, payload: dict[str, Any], pad: bool) -> bytes:
    data = {"type": kind, "sequence_number": number} | payload
    if pad and kind.endswith(".delta"):
        data["obfuscation"] = secrets.token_urlsafe(8)[: 1 + number % 10]
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def _obfuscation(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return not (isinstance(options, dict) and options.get("include_obfuscation") is False)


def _function_tools(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [tool for tool in body.get("tools") or () if tool.get("type") == "function"]


def _injected_rounds(items: Any) -> int:
    """Turns of the input that called an injected function: consecutive calls are one turn; a call after
    a ``function_call_output`` starts the next one (the bridge replays turn, results, turn, results)."""
    rounds, previous = 0, False
    for item in items if isinstance(items, list) else ():
        called = item.get("type") == "function_call" and str(item.get("name", "")).startswith(INJECTED_PREFIX)
        rounds += called and not previous
        previous = called
    return rounds


def _tool_calls(body: dict[str, Any], controls: Controls) -> list[dict[str, Any]]:
    """Calls of offered functions (:func:`plan_calls`)."""
    tools = _function_tools(body)
    items = body["input"]
    follow_up = isinstance(items, list) and items[-1].get("type") == "function_call_output"
    if not tools or body.get("tool_choice") == "none":
        return []
    offered = [(str(tool.get("name") or "tool"), tool.get("parameters")) for tool in tools]
    return [
        {
            "id": random_id("fc_", 48),
            "type": "function_call",
            "status": "completed",
            "arguments": orjson.dumps(call.arguments).decode(),
            "call_id": random_id("call_"),
            "name": call.name,
        }
        for call in plan_calls(offered, follow_up, _injected_rounds(items), controls)
    ]


def _prompt(body: dict[str, Any]) -> str | None:
    items = body["input"]
    if isinstance(items, str):
        return items
    content = items[-1].get("content")
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return content if isinstance(content, str) else None


def _output(body: dict[str, Any], controls: Controls) -> list[dict[str, Any]]:
    output = _reasoning(body, controls)
    calls = _tool_calls(body, controls)
    if calls:
        return [*output, *calls]
    text = {"type": "output_text", "annotations": [], "logprobs": [], "text": answer_text(_prompt(body))}
    message = {"id": random_id("msg_", 48), "type": "message", "status": "completed", "role": "assistant"}
    return [*output, message | {"content": [text]}]


def _reasoning(body: dict[str, Any], controls: Controls) -> list[dict[str, Any]]:
    """The reasoning item a reasoning model's output starts with, when asked for or spent."""
    asked: dict[str, Any] = body["reasoning"] if isinstance(body.get("reasoning"), dict) else {}
    summarized = asked.get("summary") in ("auto", "concise", "detailed")
    encrypted = "reasoning.encrypted_content" in (body.get("include") or ())
    if not (controls.reasoning_tokens or summarized or encrypted):
        return []
    summary = [{"type": "summary_text", "text": reasoning_text(_prompt(body))}] if summarized else []
    item: dict[str, Any] = {"id": random_id("rs_", 48), "type": "reasoning", "summary": summary}
    return [item | {"encrypted_content": random_id("gAAAAA", 96)} if encrypted else item]


def _produced(output: list[dict[str, Any]]) -> str:
    last = output[-1]
    return str(last["arguments"]) if last["type"] == "function_call" else str(last["content"][0]["text"])


def usage(body: dict[str, Any], output: list[dict[str, Any]], controls: Controls) -> dict[str, Any]:
    input_tokens = count_tokens(body["input"]) + count_tokens(body.get("instructions") or "")
    input_tokens += count_tokens(body.get("tools") or []) + controls.cache_read_tokens + controls.cache_write_tokens
    output_tokens = count_tokens(_produced(output)) + controls.reasoning_tokens
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


def _response(  # noqa: PLR0917
    body: dict[str, Any],
    status: str,
    output: list[dict[str, Any]],
    controls: Controls | None,
    response_id: str | None = None,
    created_at: int | None = None,
) -> dict[str, Any]:
    """The response object (``controls`` None: still in progress, no usage yet)."""
    created = created_at or int(time.time())
    reasoning: dict[str, Any] = body["reasoning"] if isinstance(body.get("reasoning"), dict) else {}
    return {
        "id": response_id or random_id("resp_", 48),
        "object": "response",
        "created_at": created,
        "status": status,
        "background": False,
        "completed_at": None if controls is None else int(time.time()),
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": body.get("max_tool_calls"),
        "model": body["model"],
        "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "prompt_cache_key": body.get("prompt_cache_key"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "safety_identifier": None,
        "service_tier": "default",
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": body.get("text") or {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": [_echo_tool(tool) for tool in body.get("tools") or ()],
        "top_logprobs": 0,
        "top_p": body.get("top_p", 1.0),
        "truncation": "disabled",
        "usage": None if controls is None else usage(body, output, controls),
        "user": None,
        "metadata": body.get("metadata") or {},
    }


def _echo_tool(tool: dict[str, Any]) -> dict[str, Any]:
    """Tools come back with their defaults filled in (a function tool's ``strict`` and ``description``)."""
    if tool.get("type") != "function":
        return tool
    return {"description": None, "parameters": None, "strict": True} | tool


def _item_events(item: dict[str, Any], index: int) -> list[Event]:
    if item["type"] == "message":
        events = list(_message_events(item, index))
    elif item["type"] == "function_call":
        events = list(_call_events(item, index))
    elif item["type"] == "reasoning":
        events = list(_reasoning_events(item, index))
    else:
        events = [("response.output_item.added", {"output_index": index, "item": item})]
    return [*events, ("response.output_item.done", {"output_index": index, "item": item})]


def _reasoning_events(item: dict[str, Any], index: int) -> Iterator[Event]:
    yield "response.output_item.added", {"output_index": index, "item": {**item, "summary": []}}
    for number, part in enumerate(item["summary"]):
        where = {"item_id": item["id"], "output_index": index, "summary_index": number}
        yield "response.reasoning_summary_part.added", where | {"part": part | {"text": ""}}
        for piece in pieces(part["text"]):
            yield "response.reasoning_summary_text.delta", where | {"delta": piece}
        yield "response.reasoning_summary_text.done", where | {"text": part["text"]}
        yield "response.reasoning_summary_part.done", where | {"part": part}


def _message_events(item: dict[str, Any], index: int) -> Iterator[Event]:
    opened = item | {"status": "in_progress", "content": []}
    yield "response.output_item.added", {"output_index": index, "item": opened}
    part = item["content"][0]
    where = {"item_id": item["id"], "output_index": index, "content_index": 0}
    yield "response.content_part.added", where | {"part": part | {"text": ""}}
    for piece in pieces(part["text"]):
        yield "response.output_text.delta", where | {"delta": piece, "logprobs": []}
    yield "response.output_text.done", where | {"text": part["text"], "logprobs": []}
    yield "response.content_part.done", where | {"part": part}


def _call_events(item: dict[str, Any], index: int) -> Iterator[Event]:
    yield (
        "response.output_item.added",
        {"output_index": index, "item": item | {"status": "in_progress", "arguments": ""}},
    )
    where = {"item_id": item["id"], "output_index": index}
    for piece in json_pieces(item["arguments"]):
        yield "response.function_call_arguments.delta", where | {"delta": piece}
    yield "response.function_call_arguments.done", where | {"arguments": item["arguments"]}
