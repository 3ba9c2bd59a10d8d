"""A Responses stream's echoed tools in a round that goes unedited: the injected ones taken out of the opening
and terminal events, any other mention of an injected tool refused (the editor then takes the round over)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from aibridge.proxy.mcp import echo as echo_module
from aibridge.proxy.mcp.echo import EchoedTools, cut_known_runs
from aibridge.proxy.mcp.registry import injected_at


@pytest.fixture(autouse=True, params=["decoded", "cut"])
def echo_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each case both ways a laid-out echo event goes: cut, and decoded and written again (when the cut
    cannot account for the injected names; here always)."""
    monkeypatch.setattr(echo_module, "_VERIFIED", {})
    if request.param == "decoded":
        monkeypatch.setattr(echo_module, "injected_span", lambda *args: None)
    return str(request.param)


CLIENT = {"type": "function", "name": "read_file", "strict": True}
INJECTED = {"type": "function", "name": "bmcp_tools_add", "strict": True}


def event(kind: str, number: int, response: dict[str, Any], *, spaced: bool = False) -> bytes:
    payload = {"type": kind, "sequence_number": number, "response": response}
    data = orjson.dumps(payload).replace(b'":', b'": ') if spaced else orjson.dumps(payload)
    return b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"


def sent(raw: bytes | None) -> dict[str, Any]:
    assert raw is not None
    return orjson.loads(raw.split(b"data: ", 1)[1])


def edit(echo: EchoedTools, raw: bytes) -> bytes | None:
    return echo.edited(raw, injected_at(raw))


RESPONSE = {"id": "resp_1", "status": "in_progress", "tools": [CLIENT, INJECTED], "output": []}


def test_opening_events_lose_the_injected_tools_and_keep_the_providers_numbering() -> None:
    echo = EchoedTools()
    created = edit(echo, event("response.created", 0, RESPONSE))
    in_progress = edit(echo, event("response.in_progress", 1, RESPONSE))
    assert sent(created) == {
        "type": "response.created",
        "sequence_number": 0,
        "response": RESPONSE | {"tools": [CLIENT]},
    }
    assert sent(in_progress)["sequence_number"] == 1 and sent(in_progress)["response"]["tools"] == [CLIENT]
    assert in_progress is not None and in_progress.startswith(b"event: response.in_progress\ndata: ")


def test_another_layout_is_decoded_and_written_again() -> None:
    edited = edit(EchoedTools(), event("response.created", 0, RESPONSE, spaced=True))
    assert sent(edited)["response"]["tools"] == [CLIENT]
    assert edited is not None and b"bmcp_" not in edited


def test_a_terminal_event_naming_an_injected_tool_elsewhere_is_refused() -> None:
    """Its output calls one (or its text names one): more bmcp_ than the tools taken out."""
    call = {"type": "function_call", "name": "bmcp_tools_add", "arguments": "{}", "call_id": "c"}
    done = RESPONSE | {"status": "completed", "output": [call]}
    assert edit(EchoedTools(), event("response.completed", 9, done)) is None
    text = {"type": "message", "content": [{"type": "output_text", "text": "try bmcp_tools_add"}]}
    assert edit(EchoedTools(), event("response.completed", 9, done | {"output": [text]})) is None


def test_other_events_naming_an_injected_tool_are_refused() -> None:
    added = {"type": "response.output_item.added", "sequence_number": 2, "item": {"name": "bmcp_tools_add"}}
    raw = b"event: response.output_item.added\ndata: " + orjson.dumps(added) + b"\n\n"
    assert edit(EchoedTools(), raw) is None


def test_an_opening_event_with_another_response_is_edited_anew() -> None:
    echo = EchoedTools()
    edit(echo, event("response.created", 0, RESPONSE))
    other = RESPONSE | {"tools": [INJECTED], "status": "queued"}
    edited = edit(echo, event("response.queued", 1, other))
    assert sent(edited)["response"] == other | {"tools": []}


def delta(number: int, text: str) -> bytes:
    payload = {"type": "response.output_text.delta", "sequence_number": number, "delta": text}
    return b"event: response.output_text.delta\ndata: " + orjson.dumps(payload) + b"\n\n"


def test_a_chunk_of_many_events_is_edited_where_they_name_an_injected_tool(
    echo_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream's events arrive many to a chunk on a fast link: the echo events among them are edited as
    alone, the others go byte for byte and are not decoded (unless an echo event cannot be cut)."""
    decoded: list[bytes] = []
    events = echo_module._events

    def counted(raw: bytes) -> Any:
        decoded.append(raw)
        return events(raw)

    monkeypatch.setattr(echo_module, "_events", counted)
    done = RESPONSE | {"status": "completed"}
    stream = [
        event("response.created", 0, RESPONSE),
        event("response.in_progress", 1, RESPONSE),
        delta(2, "Hello"),
        delta(3, " there"),
        event("response.completed", 4, done),
    ]
    alone = EchoedTools()
    expected = b"".join(edit(alone, raw) or b"" for raw in stream)
    for chunks in ([b"".join(stream)], [b"".join(stream[:3]), b"".join(stream[3:])]):
        echo = EchoedTools()
        assert b"".join(edit(echo, chunk) or b"" for chunk in chunks) == expected
    assert b"bmcp_" not in expected and stream[2] + stream[3] in expected
    assert decoded == []  # laid out as the API writes it: every event found by its blank lines, none decoded


def test_a_chunk_of_many_events_with_a_call_of_an_injected_tool_is_refused() -> None:
    added = {"type": "response.output_item.added", "sequence_number": 2, "item": {"name": "bmcp_tools_add"}}
    call = b"event: response.output_item.added\ndata: " + orjson.dumps(added) + b"\n\n"
    chunk = event("response.created", 0, RESPONSE) + delta(1, "Hi") + call
    assert edit(EchoedTools(), chunk) is None


def test_runs_read_before_are_cut_from_a_whole_chunk_without_reading_its_events(
    echo_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The next stream with the same tools: each echoed run found from its first bmcp_ and compared, the
    chunk's events not looked at one by one (with or without client tools before the injected ones). A run
    is remembered once cut: when the cut cannot account for the names (here, "decoded"), every stream's
    events are read again."""
    looked_at: list[bytes] = []
    laid_out = echo_module._laid_out

    def counted(raw: bytes) -> Any:
        looked_at.append(raw)
        return laid_out(raw)

    for tools in ([CLIENT, INJECTED], [INJECTED]):
        response = RESPONSE | {"tools": tools}
        stream = [
            event("response.created", 0, response),
            event("response.in_progress", 1, response),
            delta(2, "Hello"),
            event("response.completed", 3, response | {"status": "completed"}),
        ]
        first = edit(EchoedTools(), b"".join(stream))  # read event by event
        monkeypatch.setattr(echo_module, "_laid_out", counted)
        again = edit(EchoedTools(), b"".join(stream))
        monkeypatch.setattr(echo_module, "_laid_out", laid_out)
        assert again is not None and again == first
        payloads = [sent(raw + b"\n\n") for raw in again.split(b"\n\n")[:-1]]
        assert [payload["response"]["tools"] for payload in payloads if "response" in payload] == [tools[:-1]] * 3
    assert (looked_at == []) is (echo_path == "cut")


def test_a_call_of_an_injected_tool_beside_runs_read_before_is_refused() -> None:
    echo = EchoedTools()
    assert edit(echo, event("response.created", 0, RESPONSE)) is not None  # the run is remembered
    added = {"type": "response.output_item.added", "sequence_number": 2, "item": {"name": "bmcp_tools_add"}}
    call = b"event: response.output_item.added\ndata: " + orjson.dumps(added) + b"\n\n"
    assert edit(EchoedTools(), event("response.created", 0, RESPONSE) + call) is None
    text = {"type": "message", "content": [{"type": "output_text", "text": "try bmcp_tools_add"}]}
    done = RESPONSE | {"status": "completed", "output": [text]}
    assert edit(EchoedTools(), event("response.completed", 9, done)) is None


@pytest.mark.parametrize("text", ["Hello", "Hello " * 4000], ids=["short chunk", "long chunk"])
def test_a_stream_chunk_is_cut_by_searching_from_run_to_run(echo_path: str, text: str) -> None:
    """:func:`cut_known_runs`, what a Responses round's chunks go through first: the same bytes as the cut
    by the list of every bmcp_ (which a long chunk is searched for); a chunk without one as it came; None
    when no run was read yet, or a bmcp_ lies outside the runs (a call of an injected tool, text naming one)."""
    stream = [
        event("response.created", 0, RESPONSE),
        event("response.in_progress", 1, RESPONSE),
        delta(2, text),
        event("response.completed", 3, RESPONSE | {"status": "completed"}),
    ]
    chunk = b"".join(stream)
    assert cut_known_runs(chunk) is None  # nothing read yet
    first = edit(EchoedTools(), chunk)
    if echo_path == "decoded":  # no run was remembered: the events are read each time
        assert cut_known_runs(chunk) is None
        return
    assert cut_known_runs(chunk) == first == edit(EchoedTools(), chunk)
    clean = delta(4, "world")
    assert cut_known_runs(clean) is clean
    added = {"type": "response.output_item.added", "sequence_number": 2, "item": {"name": "bmcp_tools_add"}}
    call = b"event: response.output_item.added\ndata: " + orjson.dumps(added) + b"\n\n"
    assert cut_known_runs(stream[0] + call) is None
    assert cut_known_runs(call + chunk) is None
    assert cut_known_runs(chunk + call) is None
