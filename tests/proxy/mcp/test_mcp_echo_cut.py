"""The injected tools cut out of a Responses echo event's bytes (:func:`echo.injected_span`): the result
is the JSON the decoding path writes, byte for byte the provider's elsewhere; whatever the cut cannot
account for is answered None (the event is then decoded)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from aibridge.proxy.mcp import echo
from aibridge.proxy.mcp.echo import injected_span, without_injected_tools
from aibridge.proxy.mcp.shapes import ResponsesShape

READ = {"type": "function", "name": "read_file", "description": "Read {path}, [lines]", "parameters": None}
NESTED = {
    "type": "function",
    "description": "Edit, café ☕",
    "parameters": {"type": "object", "properties": {"x": {"anyOf": [{"type": "string"}, {"type": "null"}]}}},
    "strict": True,
    "name": "edit_file",
}


def cut_injected_tools(raw: bytes, injected: int) -> bytes | None:
    """``raw`` without the span :func:`injected_span` finds; None: it finds none (the event is decoded)."""
    span = injected_span(raw, injected, 0, len(raw))
    return None if span is None else raw[: span[0]] + raw[span[1] :]


@pytest.fixture(autouse=True)
def no_runs_seen(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every case starts with no run of injected tools read before."""
    monkeypatch.setattr(echo, "_VERIFIED", {})


def injected(name: str, *, parameters_first: bool = False) -> dict[str, Any]:
    schema = {"type": "object", "properties": {"a": {"type": "number"}, "b": {"anyOf": [{"type": "number"}, {}]}}}
    if parameters_first:  # the name after a schema full of braces
        return {"description": "Adds, {a} [b]", "parameters": schema, "strict": True, "type": "function", "name": name}
    return {"type": "function", "name": name, "description": "Adds, {a} [b]", "parameters": schema, "strict": True}


def response(tools: list[dict[str, Any]], **more: Any) -> dict[str, Any]:
    return {"id": "resp_1", "object": "response", "instructions": "Be brief, café", "tools": tools, **more}


def cut(value: dict[str, Any]) -> bytes | None:
    raw = orjson.dumps(value)
    return cut_injected_tools(raw, raw.count(b"bmcp_"))


@pytest.mark.parametrize("parameters_first", [False, True])
@pytest.mark.parametrize(
    "client",
    [[], [READ], [READ, NESTED]],
    ids=["no client tools", "one client tool", "client tools with nested schemas and non-ASCII"],
)
@pytest.mark.parametrize("count", [1, 3])
def test_injected_tools_after_the_clients_are_cut_to_the_decoded_result(
    client: list[dict[str, Any]], count: int, parameters_first: bool
) -> None:
    tools = [*client, *(injected(f"bmcp_tools_t{i}", parameters_first=parameters_first) for i in range(count))]
    echoed = response(tools, status="completed", output=[{"type": "message", "content": []}], usage={"x": 1})
    edited = cut(echoed)
    assert edited is not None
    assert b"bmcp_" not in edited
    assert edited == orjson.dumps(without_injected_tools(echoed))


def test_non_ascii_after_the_tools_is_kept() -> None:
    echoed = response([READ, injected("bmcp_tools_a")], output=[{"type": "message", "text": "naïve ☕"}])
    assert cut(echoed) == orjson.dumps(without_injected_tools(echoed))


@pytest.mark.parametrize(
    "echoed",
    [
        # a call of an injected tool in the output: not a tool object (type function_call)
        response([READ, injected("bmcp_tools_a")], output=[{"type": "function_call", "name": "bmcp_tools_a"}]),
        # tool_choice naming one: an object that is a member's value, not an element
        response([READ, injected("bmcp_tools_a")], tool_choice={"type": "function", "name": "bmcp_tools_a"}),
        # text naming an injected tool
        response([READ, injected("bmcp_tools_a")], instructions="call bmcp_tools_a"),
        # injected tools not one run, or not the last (the bridge adds them after the client's)
        response([injected("bmcp_tools_a"), READ, injected("bmcp_tools_b")]),
        response([READ, injected("bmcp_tools_a"), NESTED]),
        # a name inside the injected tool's schema
        response([injected("bmcp_tools_a") | {"parameters": {"name": "bmcp_tools_b"}}]),
    ],
    ids=["injected call in output", "tool_choice", "text", "not one run", "not last", "name in schema"],
)
def test_what_the_cut_cannot_account_for_is_left_to_decoding(echoed: dict[str, Any]) -> None:
    assert cut(echoed) is None


def test_a_claimed_count_above_what_is_there_is_refused() -> None:
    raw = orjson.dumps(response([READ, injected("bmcp_tools_a")]))
    assert cut_injected_tools(raw, 2) is None
    assert cut_injected_tools(raw[:-9], 1) is None  # cut short: the object does not end


def test_a_run_read_once_is_compared_the_next_time(monkeypatch: pytest.MonkeyPatch) -> None:
    tools = [injected("bmcp_tools_a"), injected("bmcp_tools_b", parameters_first=True)]
    created = response([READ, *tools], status="in_progress")
    completed = response([READ, NESTED, *tools], status="completed", output=[{"type": "message"}], usage={})
    assert cut(created) == orjson.dumps(response([READ], status="in_progress"))
    read = []
    monkeypatch.setattr(echo, "_run_end", lambda *args: read.append(args))
    assert cut(completed) == orjson.dumps(without_injected_tools(completed))
    assert cut(response(tools)) == orjson.dumps(response([]))
    assert read == []  # compared, not read
    # the same run where it is not the array's last elements: read (here by the stand-in: refused)
    assert cut(response([*tools, READ])) is None
    assert len(read) == 1
    # with one bmcp_ more than the run holds: refused before any reading
    assert cut(response([READ, *tools], instructions="call bmcp_tools_c")) is None
    assert len(read) == 1


@pytest.mark.parametrize("client", [[], [READ, NESTED]], ids=["no client tools", "client tools"])
def test_a_blocking_responses_answer_is_cut_to_the_decoded_result(client: list[dict[str, Any]]) -> None:
    """A blocking Responses answer that calls no injected tool loses the injected tools it echoes, cut from
    its bytes when written compactly; the decoding path (:meth:`ResponsesShape.unechoed`) gives the same."""
    shape = ResponsesShape()
    answer = response([*client, injected("bmcp_tools_a"), injected("bmcp_tools_b")], output=[], usage={"x": 1})
    raw = orjson.dumps(answer)
    shown = shape.shown(raw + b"\n", raw.count(b"bmcp_"))
    assert shown is not None and b"bmcp_" not in shown
    assert orjson.loads(shown)["tools"] == client
    assert shown.endswith(b"}\n")  # the provider's bytes after the object go as they came
    assert shown[:-1] == shape.unechoed(raw, answer) == orjson.dumps(without_injected_tools(answer))


def test_a_blocking_responses_answer_the_cut_cannot_account_for_is_decoded() -> None:
    """Laid out with whitespace, or calling an injected tool: not cut (None), decoded by the loop instead."""
    shape = ResponsesShape()
    answer = response([READ, injected("bmcp_tools_a")], output=[])
    pretty = orjson.dumps(answer, option=orjson.OPT_INDENT_2)
    assert shape.shown(pretty, pretty.count(b"bmcp_")) is None
    assert orjson.loads(shape.unechoed(pretty, answer))["tools"] == [READ]
    called = response([READ, injected("bmcp_tools_a")], output=[{"type": "function_call", "name": "bmcp_tools_a"}])
    raw = orjson.dumps(called)
    assert shape.shown(raw, raw.count(b"bmcp_")) is None
    assert shape.unechoed(raw, without_injected_tools(called)) == raw  # nothing echoed to take out: as it is
