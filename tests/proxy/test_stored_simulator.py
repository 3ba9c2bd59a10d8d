"""The simulated stored-response routes and compaction on their own: every answer validated against the
official openai SDK's types, and OpenAI's error shape for what the API refuses."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from openai.types.responses import (
    Response,
    ResponseCompactionItem,
    ResponseInputMessageItem,
    ResponseItemList,
    ResponseUsage,
)
from test_proxy_errors import assert_openai_error

from aibridge.simulator import create_simulator_app

CONVERSATION: Any = [
    {"type": "message", "role": "user", "content": "first question"},
    {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "an answer"}]},
    {"type": "function_call", "call_id": "call_1", "name": "exec_command", "arguments": "{}"},
    {"type": "function_call_output", "call_id": "call_1", "output": "ok"},
    {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "second question"}]},
]


def compacted_response(answer: httpx.Response) -> tuple[list[ResponseInputMessageItem], ResponseCompactionItem]:
    """A ``response.compaction`` object: its user messages (input message items: the SDK's output item types
    name only assistant messages) and its compaction item, each validated strictly, and its usage."""
    body = answer.json()
    assert (answer.status_code, set(body)) == (200, {"id", "object", "created_at", "output", "usage"})
    assert body["object"] == "response.compaction" and body["id"].startswith("resp_")
    ResponseUsage.model_validate(body["usage"])
    *users, compaction = body["output"]
    return [ResponseInputMessageItem.model_validate(item) for item in users], ResponseCompactionItem.model_validate(
        compaction
    )


def simulator() -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_simulator_app(openai_key="k"))
    return httpx.AsyncClient(transport=transport, base_url="http://sim/v1", headers={"authorization": "Bearer k"})


async def created(http: httpx.AsyncClient, **body: Any) -> Response:
    answer = await http.post("/responses", json={"model": "gpt-5", "input": CONVERSATION} | body)
    return Response.model_validate_json(answer.content)


async def test_a_stored_response_is_retrieved_listed_in_pages_and_deleted() -> None:
    async with simulator() as http:
        response = await created(http)
        retrieved = Response.model_validate_json((await http.get(f"/responses/{response.id}")).content)
        assert retrieved == response

        newest = ResponseItemList.model_validate_json((await http.get(f"/responses/{response.id}/input_items")).content)
        assert [item.type for item in newest.data] == [item["type"] for item in reversed(CONVERSATION)]  # desc
        assert (newest.first_id, newest.last_id, newest.has_more) == (newest.data[0].id, newest.data[-1].id, False)
        query = {"order": "asc", "limit": "2"}
        first = ResponseItemList.model_validate_json(
            (await http.get(f"/responses/{response.id}/input_items", params=query)).content
        )
        rest = ResponseItemList.model_validate_json(
            (await http.get(f"/responses/{response.id}/input_items", params=query | {"after": first.last_id})).content
        )
        assert first.has_more and rest.has_more and rest.data[0].type == "function_call"
        assert {item.id for item in first.data + rest.data} < {item.id for item in newest.data}

        deleted = await http.delete(f"/responses/{response.id}")
        assert deleted.json() == {"id": response.id, "object": "response", "deleted": True}
        for path in (f"/responses/{response.id}", f"/responses/{response.id}/input_items"):
            missing = await http.get(path)
            assert_openai_error(missing, 404, "invalid_request_error")
            assert response.id in missing.json()["error"]["message"]
        assert_openai_error(await http.delete(f"/responses/{response.id}"), 404, "invalid_request_error")


@pytest.mark.parametrize(
    ("query", "message"),
    [({"limit": "0"}, "limit"), ({"limit": "101"}, "limit"), ({"order": "up"}, "order"), ({"after": "x"}, "after")],
)
async def test_input_items_refuses_bad_paging(query: dict[str, str], message: str) -> None:
    async with simulator() as http:
        response = await created(http)
        answer = await http.get(f"/responses/{response.id}/input_items", params=query)
    assert_openai_error(answer, 400, "invalid_request_error")
    assert message in answer.json()["error"]["message"]


async def test_store_false_is_not_kept_and_a_stream_of_a_stored_response_is_refused() -> None:
    async with simulator() as http:
        unstored = await created(http, store=False)
        assert_openai_error(await http.get(f"/responses/{unstored.id}"), 404, "invalid_request_error")
        stored = await created(http)
        streamed = await http.get(f"/responses/{stored.id}", params={"stream": "true"})
    assert_openai_error(streamed, 400, "invalid_request_error")


async def test_compaction_keeps_the_user_messages_then_one_compaction_item_with_usage() -> None:
    async with simulator() as http:
        answer = await http.post(
            "/responses/compact",
            json={"model": "gpt-5", "input": CONVERSATION, "instructions": "Compact."},
            headers={"x-simulator-cache-read-tokens": "100"},
        )
    users, compaction = compacted_response(answer)
    assert [(item.role, item.content[0].text) for item in users] == [  # type: ignore[union-attr]
        ("user", "first question"),
        ("user", "second question"),
    ]
    assert compaction.encrypted_content and compaction.id.startswith("cmp_")
    usage = ResponseUsage.model_validate(answer.json()["usage"])
    assert usage.input_tokens_details.cached_tokens == 100 and usage.input_tokens > 100
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens


async def test_compaction_continues_a_stored_response() -> None:
    async with simulator() as http:
        response = await created(http, input="remember this")
        answer = await http.post(
            "/responses/compact", json={"model": "gpt-5", "previous_response_id": response.id, "input": "and this"}
        )
    users, _ = compacted_response(answer)
    assert [item.content[0].text for item in users] == ["remember this", "and this"]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"input": "hi"}, "model"),
        ({"model": "gpt-5"}, "input"),
        ({"model": "gpt-5", "input": "hi", "stream": True}, "stream"),
        ({"model": "gpt-5", "input": [1]}, "input"),
        ({"model": "gpt-5", "previous_response_id": "resp_unknown"}, "resp_unknown"),
    ],
)
async def test_compaction_refuses_what_the_api_refuses(body: dict[str, Any], message: str) -> None:
    async with simulator() as http:
        answer = await http.post("/responses/compact", json=body)
    assert_openai_error(answer, 400, "invalid_request_error")
    assert message in answer.json()["error"]["message"]
