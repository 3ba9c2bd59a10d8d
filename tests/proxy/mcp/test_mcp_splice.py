"""The first request's bytes: the client's own with the injected tools spliced in, which must parse to exactly
what encoding the body with the tools gives, over many body shapes; anything that cannot be shown to be the
same falls back to encoding."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aibridge.proxy.mcp import splice
from aibridge.proxy.mcp.loop import McpRun
from aibridge.proxy.mcp.registry import ToolFormat
from aibridge.proxy.mcp.shapes import SHAPES
from aibridge.proxy.mcp.splice import with_tools
from aibridge.proxy.mcp.streamed import prepare_streamed

INJECTED = [
    {"type": "function", "function": {"name": "bmcp_tools_add", "parameters": {"type": "object"}}},
    {"type": "function", "function": {"name": "bmcp_tools_échec", "description": 'say "no"\n'}},
]
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)  # unicode, quotes, controls
SCALARS = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | TEXT
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3))
ROLES = st.sampled_from(["user", "assistant"])
MESSAGES = st.lists(st.fixed_dictionaries({"role": ROLES, "content": TEXT}), max_size=4)
CLIENT_TOOLS = st.lists(st.dictionaries(TEXT, VALUES, max_size=3), max_size=3)


def expected(raw: bytes) -> dict[str, Any]:
    """What the proxy sends without the splice: the parsed body with the tools added, encoded, read back."""
    return orjson.loads(orjson.dumps(SHAPES[ToolFormat.OPENAI_CHAT].inject(orjson.loads(raw), INJECTED)))


def spliced(raw: bytes) -> bytes | None:
    parts = with_tools(raw, orjson.loads(raw), INJECTED)
    return None if parts is None else b"".join(parts)


@st.composite
def members(draw: st.DrawFn) -> list[tuple[str, Any]]:
    """A chat body's top-level members in any order: model, messages, maybe tools, others, maybe repeated keys."""
    chosen: list[tuple[str, Any]] = [("model", draw(TEXT)), ("messages", draw(MESSAGES))]
    chosen += draw(st.lists(st.tuples(TEXT, VALUES), max_size=3))
    if draw(st.booleans()):
        chosen.append(("tools", draw(CLIENT_TOOLS)))
    ordered = draw(st.permutations(chosen))
    if draw(st.booleans()) and ordered:  # a key written twice (the last value wins)
        key = draw(st.sampled_from([key for key, _ in ordered]))
        ordered.insert(draw(st.integers(0, len(ordered))), (key, draw(VALUES)))
    return ordered


def compact(pairs: list[tuple[str, Any]], dumps: Any = orjson.dumps) -> bytes:
    return b"{" + b",".join(dumps(key) + b":" + dumps(value) for key, value in pairs) + b"}"


@settings(max_examples=400, deadline=None)
@given(members())
def test_spliced_bytes_parse_to_what_encoding_gives(pairs: list[tuple[str, Any]]) -> None:
    raw = compact(pairs)
    result = spliced(raw)
    body = orjson.loads(raw)
    if result is not None:
        assert orjson.loads(result) == expected(raw)
    assert spliced(raw) == result  # again, its tools array now seen before
    keys = list(body)
    tools_after_messages = "tools" in body and keys.index("tools") > keys.index("messages")
    repeated = len({key for key, _ in pairs}) < len(pairs)
    if not repeated and ("tools" not in body or (tools_after_messages and isinstance(body["tools"], list))):
        assert result is not None  # the common shapes are spliced, not encoded again


@settings(max_examples=200, deadline=None)
@given(members(), st.sampled_from(["stringify", "spaced", "ascii", "indented"]))
def test_other_writers_splice_correctly_or_fall_back(pairs: list[tuple[str, Any]], writer: str) -> None:
    """JSON.stringify's form (compact, unicode as is), Python's default (spaces, ASCII escapes), indented:
    where the bytes differ from orjson's, the tools array cannot be located and the body is encoded."""
    options: dict[str, Any] = {
        "stringify": {"separators": (",", ":"), "ensure_ascii": False},
        "spaced": {"ensure_ascii": False},
        "ascii": {"separators": (",", ":")},
        "indented": {"indent": 2, "ensure_ascii": False},
    }[writer]
    try:
        raw = compact(pairs, lambda value: json.dumps(value, allow_nan=False, **options).encode())
    except ValueError:  # an infinite float: not JSON
        return
    body = orjson.loads(raw)
    result = with_tools(raw, body, INJECTED)
    if result is not None:
        assert orjson.loads(b"".join(result)) == expected(raw)


@pytest.mark.parametrize(
    ("raw", "splices"),
    [
        (b'{"model":"m","messages":[],"tools":[{"type":"function"}]}', True),  # tools last
        (b'{"model":"m","messages":[],"tools":[],"stream":true}', True),  # empty, in the middle
        (b'{"model":"m","messages":[{"content":"\\"tools\\":[]"}]}', True),  # none: added; text naming tools
        (b'{"tools":[{"type":"function"}],"model":"m","messages":[]}', False),  # tools first
        (b'{"model": "m", "messages": [], "tools": []}', False),  # spaced
        (b'{"model":"m","messages":[],"tools":null}', False),  # not an array
        (b'{"model":"m","messages":[],"tools":[{"a":1}],"tools":[{"b":2}]}', True),  # repeated: the last one wins
        (b'{"model":"m","messages":[],"tools":[{"a":"\\u00e9"}]}', False),  # an escape orjson does not write
        (b'{"model":"m","messages":[],"tools":[{"a":1.0e2}]}', False),  # a number orjson writes otherwise
        (b'{"model":"m","tools":[{"a":1}],"messages":[],"tools":[{"b":2}]}', False),  # placed first, repeated
        (b'{"model":"m","messages":[]}\n', True),  # a trailing line end
    ],
)
def test_shapes(raw: bytes, splices: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(splice, "_SEEN", [])  # each body on its own: nothing seen before
    monkeypatch.setattr(splice, "_ENDINGS", [])
    result = spliced(raw)
    assert (result is not None) is splices
    if result is not None:
        assert orjson.loads(result) == expected(raw)


def test_the_client_bytes_are_kept_around_the_tools() -> None:
    raw = b'{"model":"m","messages":[{"role":"user","content":"caf\xc3\xa9 \\u00e9"}],"tools":[{"type":"x"}],"n":1}'
    result = spliced(raw)
    assert result is not None
    assert result.startswith(raw[: raw.index(b',"tools"')])  # messages untouched, even an escape orjson drops
    assert result.endswith(b'{"type":"x"},' + orjson.dumps(INJECTED)[1:-1] + b'],"n":1}')


def test_a_tools_array_seen_before_is_found_without_encoding_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(splice, "_SEEN", [])
    monkeypatch.setattr(splice, "_ENDINGS", [])
    tools = b'[{"type":"function","function":{"name":"read_file"}}]'
    first = b'{"model":"m","messages":[{"role":"user","content":"a"}],"tools":' + tools + b',"stream":true}'
    next_one = b'{"model":"m","messages":[{"role":"user","content":"b"},{"role":"user","content":"c"}],"tools":'
    next_one += tools + b',"stream":true}'
    assert spliced(first) is not None
    encoded: list[str] = []
    member = splice._member
    monkeypatch.setattr(splice, "_member", lambda key, value: encoded.append(key) or member(key, value))
    result = spliced(next_one)
    assert result is not None and orjson.loads(result) == expected(next_one)
    assert encoded == []  # the same ending as before: nothing encoded
    other_ending = next_one.replace(b'"stream":true}', b'"stream":false}')
    result = spliced(other_ending)
    assert result is not None and orjson.loads(result) == expected(other_ending)
    assert encoded == ["stream"]  # the same tools, another ending: only the members after the tools
    # the same bytes as another member's value, or other tools: found the long way (encoding them)
    other_key = b'{"model":"m","messages":[],"tools":[],"x":' + tools + b"}"
    assert orjson.loads(spliced(other_key) or b"") == expected(other_key)
    assert "tools" in encoded


def test_a_body_ending_as_one_seen_before_is_spliced_without_encoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ending (from ``,"tools":`` on) of an earlier body, with members written earlier as well, or with
    a ``tools`` before ``messages``: the array that ends it is the last ``tools`` written, the one that counts."""
    monkeypatch.setattr(splice, "_SEEN", [])
    monkeypatch.setattr(splice, "_ENDINGS", [])
    assert spliced(b'{"model":"m","messages":[],"tools":[{"b":2}],"max_tokens":9,"stream":true}') is not None
    monkeypatch.setattr(splice, "_member", lambda key, value: pytest.fail(f"{key} encoded"))
    for later in [
        b'{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[{"b":2}],"max_tokens":9,"stream":true}',
        b'{"model":"m","stream":false,"messages":[],"tools":[{"b":2}],"max_tokens":9,"stream":true}',
        b'{"tools":[{"a":1}],"model":"m","messages":[],"tools":[{"b":2}],"max_tokens":9,"stream":true}',
        b'{"model":"m","messages":[],"max_tokens":1,"x":"\\\\","tools":[{"b":2}],"max_tokens":9,"stream":true}',
    ]:
        result = spliced(later)
        assert result is not None and orjson.loads(result) == expected(later)
        assert orjson.loads(result)["tools"][0] == {"b": 2}


class Injector:
    max_rounds = 8


@pytest.mark.parametrize("leading", [b"", b" \n"], ids=["compact", "leading whitespace"])
@pytest.mark.parametrize(
    "options",
    [None, {"include_usage": True}, {"include_usage": False}],
)
def test_first_body_of_a_streamed_chat_completion_asks_for_usage(
    options: dict[str, Any] | None, leading: bytes
) -> None:
    body: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    if options is not None:
        body["stream_options"] = options
    raw = leading + orjson.dumps(body)
    run = McpRun(Injector(), SHAPES[ToolFormat.OPENAI_CHAT], body, INJECTED, user="u", headers={})  # type: ignore[arg-type]
    prepare_streamed(run, ToolFormat.OPENAI_CHAT)
    body_sent = run.first_body(raw)
    first = body_sent if isinstance(body_sent, bytes) else b"".join(body_sent)
    assert orjson.loads(first) == orjson.loads(run.request_body())
    assert orjson.loads(first)["stream_options"]["include_usage"] is True
    assert first.endswith(raw[raw.index(b'"messages"') :][:-1] + b',"tools":' + orjson.dumps(INJECTED) + b"}") or (
        options == {"include_usage": False}  # rewritten: encoded, as without injection
        or (leading and options is None)  # usage put first only into a body that starts with its brace
    )
