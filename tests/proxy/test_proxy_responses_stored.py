"""A long Codex session through the bridge: compaction (``responses.compact``, recorded with its usage) and the
stored-response routes (``retrieve``, ``input_items.list``, ``delete``, passed through), with the official
openai SDK against the simulated provider; events read back from the real broker."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import openai
import orjson
import pytest
from openai.types.responses import ResponseCompactionItem
from proxy_support import OPENAI_KEY, Proxy, Simulator, of_type
from test_proxy_errors import assert_openai_error
from test_proxy_responses import CODEX_AGENT, CODEX_INPUT, EXEC_TOOL, PROMPT, by_interception, check_usage
from test_proxy_sdk import check_interception, openai_client, single

from aibridge import metrics

pytestmark = pytest.mark.kafka

OPENAI_V1 = "/api/v2/aibridge/openai/v1"
COMPACT_PATH = f"{OPENAI_V1}/responses/compact"
TOOL_TURN: Any = [
    {"type": "function_call", "call_id": "call_1", "name": "exec_command", "arguments": '{"cmd":"ls"}'},
    {"type": "function_call_output", "call_id": "call_1", "output": "README.md\nsrc"},
]


def passthrough_count(route: str, status: int) -> float:
    return metrics.PROXY_PASSTHROUGH_REQUESTS.labels("openai", route, str(status))._value.get()


async def test_compaction_is_forwarded_unchanged_and_recorded_with_its_usage(
    proxy: Proxy, simulator: Simulator, token: str, events_of: Callable[..., Any]
) -> None:
    client = openai_client(proxy, token, **{"user-agent": CODEX_AGENT})
    compacted = await client.responses.compact(
        model="gpt-5",
        input=CODEX_INPUT,
        instructions="Summarize the conversation for a handoff.",
        prompt_cache_key="session-1",
        extra_body={"tools": [EXEC_TOOL], "parallel_tool_calls": False},
        extra_headers={"x-simulator-cache-read-tokens": "4096", "x-simulator-reasoning-tokens": "32"},
    )
    assert compacted.object == "response.compaction"
    assert isinstance(compacted.output[-1], ResponseCompactionItem) and compacted.output[-1].encrypted_content
    assert [item.type for item in compacted.output] == ["message", "message", "compaction"]  # the user messages
    forwarded = simulator.state.requests[-1]
    assert (forwarded.method, forwarded.path) == ("POST", "/v1/responses/compact")
    assert forwarded.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert token not in str(forwarded.headers)
    assert orjson.loads(forwarded.body) == {
        "model": "gpt-5",
        "input": CODEX_INPUT,
        "instructions": "Summarize the conversation for a handoff.",
        "prompt_cache_key": "session-1",
        "tools": [EXEC_TOOL],
        "parallel_tool_calls": False,
    }

    events = await events_of(1)
    check_interception(
        events, token, provider="openai", model="gpt-5", client="Codex", streaming=False, route="/v1/responses/compact"
    )
    prompt = single(events, "prompt")
    assert (prompt["prompt"], prompt["provider_response_id"]) == (PROMPT, compacted.id)
    usage = single(events, "token_usage")
    assert usage["provider_response_id"] == compacted.id
    check_usage(usage, compacted.usage, cache_read=4096)
    assert usage["metadata"] == {"output_tokens_details": {"reasoning_tokens": 32}}
    assert of_type(events, "tool_usage") == []


async def test_compaction_after_a_tool_turn_has_no_prompt_and_chains_on_a_stored_response(
    proxy: Proxy, simulator: Simulator, token: str, events_of: Callable[..., Any]
) -> None:
    client = openai_client(proxy, token)
    first = await client.responses.create(model="gpt-5", input="Remember the word 'orchid'")
    compacted = await client.responses.compact(model="gpt-5", previous_response_id=first.id, input=TOOL_TURN)
    texts = [item.content[0].text for item in compacted.output if item.type == "message"]  # type: ignore[union-attr]
    assert texts == ["Remember the word 'orchid'"], "the stored response's input was compacted too"

    created, compaction = by_interception(await events_of(2))
    assert single(created, "interception.started")["route"] == "/v1/responses"
    assert single(compaction, "interception.started")["route"] == "/v1/responses/compact"
    assert of_type(compaction, "prompt") == [], "the conversation ends with a tool's output: no prompt"
    assert single(compaction, "token_usage")["output_tokens"] == compacted.usage.output_tokens > 0


async def test_compaction_refuses_stream_true_in_openai_shape_and_records_it(
    proxy: Proxy, simulator: Simulator, token: str, events_of: Callable[..., Any]
) -> None:
    seen = len(simulator.state.requests)
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10, headers={"authorization": f"Bearer {token}"}) as http:
        answer = await http.post(COMPACT_PATH, json={"model": "gpt-5", "input": "hi", "stream": True})
    assert_openai_error(answer, 400, "invalid_request_error")
    assert "'stream' is not supported" in answer.json()["error"]["message"]
    assert len(simulator.state.requests) == seen, "nothing is forwarded"
    ended = single(await events_of(1), "interception.ended")
    assert (ended["route"], ended["status"], ended["http_status"]) == ("/v1/responses/compact", "invalid_request", 400)


async def test_stored_response_is_retrieved_listed_and_deleted_through_the_bridge(
    proxy: Proxy, simulator: Simulator, token: str, events_of: Callable[..., Any]
) -> None:
    client = openai_client(proxy, token)
    created = await client.responses.create(model="gpt-5", input=CODEX_INPUT, instructions="Be brief.")
    by_id, items_route = "/v1/responses/{response_id}", "/v1/responses/{response_id}/input_items"
    before = passthrough_count(by_id, 200), passthrough_count(items_route, 200)

    retrieved = await client.responses.retrieve(created.id)
    assert (retrieved.id, retrieved.output_text) == (created.id, created.output_text)
    forwarded = simulator.state.requests[-1]
    assert (forwarded.method, forwarded.path) == ("GET", f"/v1/responses/{created.id}")
    assert forwarded.headers["authorization"] == f"Bearer {OPENAI_KEY}" and token not in str(forwarded.headers)

    page = await client.responses.input_items.list(created.id, limit=2, order="asc")
    assert simulator.state.requests[-1].query == "limit=2&order=asc"
    assert page.has_more and len(page.data) == 2
    listed = [item async for item in page]  # the SDK follows the cursor (after=last_id) through the bridge
    assert [item.content[0].text for item in listed] == [  # type: ignore[union-attr]
        item["content"][0]["text"] for item in CODEX_INPUT
    ]
    assert simulator.state.requests[-1].query == f"limit=2&order=asc&after={page.last_id}"

    assert await client.responses.delete(created.id) is None
    assert simulator.state.requests[-1].method == "DELETE"
    with pytest.raises(openai.NotFoundError) as gone:
        await client.responses.retrieve(created.id)
    assert gone.value.status_code == 404 and created.id in gone.value.message
    with pytest.raises(openai.NotFoundError):
        await client.responses.input_items.list(created.id)

    assert passthrough_count(by_id, 200) - before[0] == 2  # the retrieve and the delete
    assert passthrough_count(items_route, 200) - before[1] == 2  # two pages
    assert passthrough_count(by_id, 404) >= 1
    events = await events_of(1)
    assert len({event["interception_id"] for event in events}) == 1, "passthrough is not recorded"
    assert single(events, "interception.started")["route"] == "/v1/responses"


async def test_provider_errors_are_relayed_on_compaction_and_on_stored_responses(
    proxy: Proxy, token: str, events_of: Callable[..., Any]
) -> None:
    client = openai_client(proxy, token)
    with pytest.raises(openai.RateLimitError):
        await client.responses.compact(model="gpt-5", input="hi", extra_headers={"x-simulator-status": "429"})
    with pytest.raises(openai.InternalServerError) as failed:
        await client.responses.retrieve("resp_0123", extra_headers={"x-simulator-status": "503"})
    assert failed.value.status_code == 503
    ended = single(await events_of(1), "interception.ended")
    assert (ended["route"], ended["status"], ended["http_status"]) == ("/v1/responses/compact", "upstream_error", 429)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/responses/compact"),
        ("GET", "/responses/resp_0123"),
        ("DELETE", "/responses/resp_0123"),
        ("GET", "/responses/resp_0123/input_items"),
    ],
)
async def test_bad_token_gets_401_in_openai_shape_and_nothing_is_forwarded(
    proxy: Proxy, simulator: Simulator, method: str, path: str
) -> None:
    seen = len(simulator.state.requests)
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as http:
        body = {"model": "gpt-5", "input": "hi"} if method == "POST" else None
        answer = await http.request(method, OPENAI_V1 + path, json=body, headers={"authorization": "Bearer nope"})
    assert_openai_error(answer, 401, "invalid_request_error")
    assert len(simulator.state.requests) == seen


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/responses/%2e%2e", 400),  # decoded to "..": refused before any URL is built
        ("DELETE", "/responses/%2e%2e", 400),
        ("GET", "/responses/%2e%2e/input_items", 400),
        ("GET", "/responses/resp_1.json", 400),
        ("DELETE", "/responses/resp%201", 400),
        ("GET", "/responses/..%2Fmodels", 404),  # decoded to a deeper path: no route of the bridge
        ("GET", "/responses/resp_1%2F..%2F..%2Fmodels/input_items", 404),
    ],
)
async def test_response_ids_outside_the_id_charset_are_refused_and_not_forwarded(  # noqa: PLR0917
    proxy: Proxy, simulator: Simulator, token: str, method: str, path: str, status: int
) -> None:
    seen = len(simulator.state.requests)
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10, headers={"authorization": f"Bearer {token}"}) as http:
        answer = await http.request(method, OPENAI_V1 + path)
    assert_openai_error(answer, status, "invalid_request_error")
    assert len(simulator.state.requests) == seen, "a bad id reached the upstream"
