"""Session keys, turns and reasoning through the real proxy with the official SDKs; events read back from
the real broker. The simulated provider answers in the providers' documented wire formats, with thinking
blocks, reasoning summaries and reasoning_content when asked as the real ones are."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anthropic
import openai
import pytest
from proxy_support import Proxy, ProxyFactory, of_type

from aibridge.events import Event

pytestmark = pytest.mark.kafka

CLAUDE_CODE = {"user-agent": "claude-cli/2.1.332 (external, sdk-cli)", "x-app": "cli"}
CODEX = {
    "user-agent": "codex_exec/0.171.0 (Debian 12.0.0; x86_64) xterm (codex_exec; 0.171.0)",
    "originator": "codex_exec",
}
SESSION = "01a24348-8018-7783-b143-e28a838e82a7"
THINKING: Any = {"type": "enabled", "budget_tokens": 1024}
SHELL_TOOL: Any = {
    "type": "function",
    "name": "exec_command",
    "description": "Run a command",
    "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]},
}


def openai_client(proxy: Proxy, token: str, headers: dict[str, str] | None = None) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=proxy.openai_base_url, api_key=token, max_retries=0, timeout=20, default_headers=headers
    )


def anthropic_client(proxy: Proxy, token: str, headers: dict[str, str] | None = None) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        base_url=proxy.anthropic_base_url, api_key=token, max_retries=0, timeout=20, default_headers=headers
    )


def started(events: list[Event]) -> Event:
    (event,) = of_type(events, "interception.started")
    return event


def reasoning(events: list[Event]) -> list[tuple[str, str]]:
    return [(event["kind"], event["text"]) for event in of_type(events, "reasoning")]


# ---- session keys -----------------------------------------------------------------------------------


async def test_claude_code_session_header(proxy: Proxy, token: str, events_of: Callable[..., Any]) -> None:
    client = anthropic_client(proxy, token, CLAUDE_CODE | {"x-claude-code-session-id": SESSION})
    await client.messages.create(model="claude-sonnet-4-5", max_tokens=64, messages=[{"role": "user", "content": "Hi"}])
    events = await events_of(1)
    assert (started(events)["client"], started(events)["session_id"]) == ("Claude Code", SESSION)
    assert of_type(events, "interception.ended")[0]["session_id"] == SESSION


async def test_codex_session_header(proxy: Proxy, token: str, events_of: Callable[..., Any]) -> None:
    client = openai_client(proxy, token, CODEX | {"session-id": SESSION, "thread-id": SESSION})
    await client.responses.create(model="gpt-5", input="Hi", prompt_cache_key="something-else")
    events = await events_of(1)
    assert (started(events)["client"], started(events)["session_id"]) == ("Codex", SESSION)


async def test_codex_prompt_cache_key_without_a_header(proxy: Proxy, token: str, events_of: Callable[..., Any]) -> None:
    client = openai_client(proxy, token, CODEX)
    await client.responses.create(model="gpt-5", input="Hi", prompt_cache_key=SESSION)
    assert started(await events_of(1))["session_id"] == SESSION


async def test_generic_session_header_from_any_client(proxy: Proxy, token: str, events_of: Callable[..., Any]) -> None:
    client = openai_client(proxy, token, {"x-aibridge-session-id": "ci-run-42"})
    await client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Hi"}])
    event = started(await events_of(1))
    assert (event["client"], event["session_id"]) == ("Unknown", "ci-run-42")


async def test_no_session_key_is_no_session(proxy: Proxy, token: str, events_of: Callable[..., Any]) -> None:
    """Another client's key places (a session-id header, prompt_cache_key) are not read for the SDK."""
    client = openai_client(proxy, token, {"session-id": SESSION})
    await client.responses.create(model="gpt-5", input="Hi", prompt_cache_key=SESSION)
    event = started(await events_of(1))
    assert (event["client"], event["session_id"]) == ("Unknown", "")


# ---- turns --------------------------------------------------------------------------------------------


async def test_chat_turns(proxy: Proxy, token: str, events_of: Callable[..., Any]) -> None:
    client = openai_client(proxy, token)
    await client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "List the files"}])
    call: Any = {"id": "call_1", "type": "function", "function": {"name": "ls", "arguments": "{}"}}
    await client.chat.completions.create(
        model="gpt-4o",
        messages=[
            {"role": "user", "content": "List the files"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "README.md"},
        ],
    )
    events = await events_of(2)
    assert sorted(event["turn"] for event in of_type(events, "interception.started")) == ["prompt", "tool_result"]


async def test_anthropic_tool_results_with_a_system_reminder_continue_the_thread(
    proxy: Proxy, token: str, events_of: Callable[..., Any]
) -> None:
    client = anthropic_client(proxy, token, CLAUDE_CODE)
    messages: Any = [
        {"role": "user", "content": [{"type": "text", "text": "<system-reminder>be brief</system-reminder>"},
                                     {"type": "text", "text": "Read the README"}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "# AI Bridge"},
                                     {"type": "text", "text": "<system-reminder>todo list empty</system-reminder>"}]},
    ]  # fmt: skip
    await client.messages.create(model="claude-sonnet-4-5", max_tokens=64, messages=messages[:1])
    await client.messages.create(model="claude-sonnet-4-5", max_tokens=64, messages=messages)
    events = await events_of(2)
    assert sorted(event["turn"] for event in of_type(events, "interception.started")) == ["prompt", "tool_result"]


async def test_responses_turns(proxy: Proxy, token: str, events_of: Callable[..., Any]) -> None:
    client = openai_client(proxy, token, CODEX)
    first = await client.responses.create(model="gpt-5", input=[{"role": "user", "content": "ls"}], tools=[SHELL_TOOL])
    (call,) = [item for item in first.output if item.type == "function_call"]
    follow_up: Any = [
        {"role": "user", "content": "ls"},
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "README.md"},
    ]
    await client.responses.create(model="gpt-5", input=follow_up, tools=[SHELL_TOOL])
    events = await events_of(2)
    assert sorted(event["turn"] for event in of_type(events, "interception.started")) == ["prompt", "tool_result"]


# ---- reasoning ----------------------------------------------------------------------------------------


async def test_anthropic_thinking_blocking_with_redacted(
    proxy: Proxy, token: str, events_of: Callable[..., Any]
) -> None:
    client = anthropic_client(proxy, token, {"x-simulator-redacted-thinking": "1"})
    message = await client.messages.create(
        model="claude-sonnet-4-5", max_tokens=2048, thinking=THINKING, messages=[{"role": "user", "content": "Why?"}]
    )
    assert [block.type for block in message.content] == ["thinking", "redacted_thinking", "text"]
    thought = message.content[0].thinking  # type: ignore[union-attr]
    events = await events_of(1)
    assert reasoning(events) == [("thinking", thought), ("redacted", "")]
    assert {event["provider_response_id"] for event in of_type(events, "reasoning")} == {message.id}


async def test_anthropic_thinking_streamed(proxy: Proxy, token: str, events_of: Callable[..., Any]) -> None:
    client = anthropic_client(proxy, token, CLAUDE_CODE)
    async with client.messages.stream(
        model="claude-sonnet-4-5", max_tokens=2048, thinking=THINKING, messages=[{"role": "user", "content": "Why?"}]
    ) as stream:
        message = await stream.get_final_message()
    assert [block.type for block in message.content] == ["thinking", "text"]
    events = await events_of(1)
    assert reasoning(events) == [("thinking", message.content[0].thinking)]  # type: ignore[union-attr]


async def test_responses_summary_and_encrypted_blocking(
    proxy: Proxy, token: str, events_of: Callable[..., Any]
) -> None:
    client = openai_client(proxy, token, CODEX)
    response = await client.responses.create(
        model="gpt-5", input="Why?", reasoning={"summary": "auto"}, include=["reasoning.encrypted_content"]
    )
    (item,) = [item for item in response.output if item.type == "reasoning"]
    assert item.encrypted_content
    await client.responses.create(model="gpt-5", input="Why?", include=["reasoning.encrypted_content"])
    events = await events_of(2)
    assert sorted(reasoning(events)) == [("encrypted", ""), ("summary", item.summary[0].text)]


async def test_responses_summary_streamed(proxy: Proxy, token: str, events_of: Callable[..., Any]) -> None:
    client = openai_client(proxy, token, CODEX)
    async with client.responses.stream(model="gpt-5", input="Why?", reasoning={"summary": "detailed"}) as stream:
        deltas = [event.delta async for event in stream if event.type == "response.reasoning_summary_text.delta"]
        response = await stream.get_final_response()
    (item,) = [item for item in response.output if item.type == "reasoning"]
    assert "".join(deltas) == item.summary[0].text
    assert reasoning(await events_of(1)) == [("summary", item.summary[0].text)]


async def test_chat_reasoning_content_blocking_and_streamed(
    proxy: Proxy, token: str, events_of: Callable[..., Any]
) -> None:
    client = openai_client(proxy, token)
    messages: Any = [{"role": "user", "content": "Why?"}]
    completion = await client.chat.completions.create(model="deepseek-reasoner", messages=messages)
    thought = (completion.choices[0].message.model_extra or {})["reasoning_content"]
    stream = await client.chat.completions.create(model="deepseek-reasoner", messages=messages, stream=True)
    streamed = "".join(
        [
            (chunk.choices[0].delta.model_extra or {}).get("reasoning_content") or ""
            async for chunk in stream
            if chunk.choices
        ]
    )
    assert streamed == thought
    events = await events_of(2)
    assert reasoning(events) == [("reasoning_content", thought)] * 2


async def test_metadata_capture_records_no_reasoning_text(
    start_proxy: ProxyFactory, token: str, events_of: Callable[..., Any]
) -> None:
    proxy = start_proxy(prompt_capture="metadata")
    client = anthropic_client(proxy, token, {"x-simulator-redacted-thinking": "1"})
    message = await client.messages.create(
        model="claude-sonnet-4-5", max_tokens=2048, thinking=THINKING, messages=[{"role": "user", "content": "Why?"}]
    )
    assert message.content[0].thinking  # type: ignore[union-attr]  # the client still gets it
    events = await events_of(1)
    assert reasoning(events) == [("thinking", ""), ("redacted", "")]
    assert {event["capture"] for event in of_type(events, "reasoning")} == {"metadata"}
