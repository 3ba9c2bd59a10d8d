"""The simulated Responses API on its own: every object and event validated against the official SDK's types."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pydantic
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from test_proxy_parsers import decode_all

from aibridge.simulator import create_simulator_app

EVENTS: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(ResponseStreamEvent)
EXEC_TOOL = {
    "type": "function",
    "name": "exec_command",
    "description": "Runs a command",
    "strict": False,
    "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]},
}
PROMPT = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "List the files"}]}]
TEXT_EVENTS = [
    "response.output_item.added",
    "response.content_part.added",
    *["response.output_text.delta"] * 5,
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
]


def simulator() -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_simulator_app(openai_key="k"))
    return httpx.AsyncClient(transport=transport, base_url="http://sim", headers={"authorization": "Bearer k"})


async def post(body: dict[str, Any], **headers: str) -> httpx.Response:
    async with simulator() as http:
        return await http.post("/v1/responses", json=body, headers=headers)


async def streamed(body: dict[str, Any], **headers: str) -> list[Any]:
    """The events of a streamed answer, each validated as the SDK's event type its ``event:`` line names."""
    answer = await post(body | {"stream": True}, **headers)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/event-stream")
    events = []
    for number, sse in enumerate(decode_all([answer.content])):
        event = EVENTS.validate_python(orjson.loads(sse.data or "null"))
        assert (event.type, event.sequence_number) == (sse.event, number)
        events.append(event)
    return events


async def test_blocking_text_answer_is_a_valid_response_object_with_usage() -> None:
    answer = await post(
        {"model": "gpt-5", "input": PROMPT, "instructions": "Be brief."},
        **{"x-simulator-cache-read-tokens": "512", "x-simulator-cache-write-tokens": "64"},
    )
    response = Response.model_validate(answer.json())
    assert (response.status, response.model, response.instructions) == ("completed", "gpt-5", "Be brief.")
    assert response.output_text.startswith("Simulated answer ✓ to “List the files”")
    assert response.usage is not None
    assert response.usage.input_tokens_details.cached_tokens == 512
    assert response.usage.input_tokens_details.cache_write_tokens == 64
    assert response.usage.input_tokens > 512 + 64
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens


async def test_streamed_text_follows_the_documented_event_sequence() -> None:
    events = await streamed({"model": "gpt-5", "input": "Hello"}, **{"x-simulator-reasoning-tokens": "40"})
    kinds = [event.type for event in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[2:4] == ["response.output_item.added", "response.output_item.done"], "a reasoning item first"
    assert kinds[4:-1] == TEXT_EVENTS[:2] + ["response.output_text.delta"] * (len(kinds) - 10) + TEXT_EVENTS[-3:]
    assert kinds[-1] == "response.completed"
    assert events[0].response.usage is None and events[0].response.status == "in_progress"
    final = events[-1].response
    assert final.id == events[0].response.id and final.status == "completed"
    text = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert text == final.output_text == next(e.text for e in events if e.type == "response.output_text.done")
    assert [item.type for item in final.output] == ["reasoning", "message"]
    assert final.usage is not None and final.usage.output_tokens_details.reasoning_tokens == 40
    deltas = [event for event in events if event.type == "response.output_text.delta"]
    assert all(event.output_index == 1 and event.item_id == final.output[1].id for event in deltas)
    assert all(getattr(event, "obfuscation", None) for event in deltas)


async def test_streamed_function_call_and_the_follow_up_turn() -> None:
    events = await streamed({"model": "gpt-5", "input": PROMPT, "tools": [EXEC_TOOL], "parallel_tool_calls": False})
    final = events[-1].response
    call = final.output[0]
    assert call.type == "function_call" and call.name == "exec_command"
    assert orjson.loads(call.arguments) == {"cmd": "sample cmd — ünïcode ✓"}
    deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert deltas == done.arguments == call.arguments and done.item_id == call.id
    added = next(e for e in events if e.type == "response.output_item.added")
    assert (added.item.status, added.item.arguments, added.item.call_id) == ("in_progress", "", call.call_id)
    assert final.tools[0].strict is False and final.parallel_tool_calls is False

    follow_up = [
        *PROMPT,
        {"type": "function_call", "name": call.name, "arguments": call.arguments, "call_id": call.call_id},
        {"type": "function_call_output", "call_id": call.call_id, "output": "README.md"},
    ]
    events = await streamed({"model": "gpt-5", "input": follow_up, "tools": [EXEC_TOOL]})
    assert [item.type for item in events[-1].response.output] == ["message"]


async def test_obfuscation_can_be_turned_off() -> None:
    body = {"model": "gpt-5", "input": "hi", "stream_options": {"include_obfuscation": False}}
    events = await streamed(body)
    assert not any(getattr(event, "obfuscation", None) for event in events)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"input": "hi"}, "'model'"),
        ({"model": "gpt-5"}, "'input'"),
        ({"model": "gpt-5", "input": ["not an item"]}, "'input'"),
        ({"model": "gpt-5", "input": "hi", "tools": [{"name": "no type"}]}, "'tools'"),
    ],
)
async def test_invalid_requests_get_openai_shaped_400(body: dict[str, Any], message: str) -> None:
    answer = await post(body)
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and message in error["message"]


async def test_keys_and_status_controls_apply() -> None:
    async with simulator() as http:
        wrong = await http.post("/v1/responses", json={}, headers={"authorization": "Bearer nope"})
        limited = await http.post("/v1/responses", json={}, headers={"x-simulator-status": "429"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
    assert limited.status_code == 429 and limited.json()["error"]["type"] == "rate_limit_error"
