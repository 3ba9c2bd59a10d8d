"""The first request of an injection as the client's own bytes with the injected tools spliced in.

Encoding a coding agent's body again (hundreds of KB, most of it ``messages``) costs more than the rest of
the injection together; the client's bytes already hold it. :func:`with_tools` writes the injected tools
into them only where the result provably parses to the body the bridge means to send (the client's body,
its ``tools`` extended):

- no ``tools`` member: one is added before the closing brace (the body has no such key, so there is
  nothing it could clash with);
- a ``tools`` array after ``messages`` (``input`` for the Responses API), as the agents and SDKs write
  it: every top-level member but that large one is encoded and found at its place in the client's bytes
  (the start for those before it, the end for those after), which holds only when the client wrote the
  body compactly with orjson's escapes (``JSON.stringify``'s and orjson's form). The array's end is then
  known to the byte, and the tools go in before its ``]``. A key repeated inside the skipped region is
  harmless: a JSON object's last value wins, and the ``tools`` written at the end is the last one.

An agent sends the same tools with every request, and mostly the same members after them. The bytes of a
``tools`` array found this way are kept (the last few), and a later body that ends with ``,"tools":`` and
the same bytes, then its members after ``tools`` as encoded, is spliced without encoding the tools again:
the object's last ``}`` closes it, so the members before it are top-level ones, and the value ending at the
array's ``]`` is those bytes (valid JSON that holds unescaped quotes, so it cannot lie in a string). The
whole ending from ``,"tools":`` on is kept too, and a body that ends with it is spliced without encoding
anything: its last members are that ``tools`` and members encoded from an earlier body, none of them
``tools``, so the array is the last ``tools`` written, the one whose value counts. (The members' order in
the parsed body may differ, when a key written earlier is written again there; the splice does not use
it.)

Anything else (whitespace, other escapes or number forms, ``tools`` first, ``tools`` not an array) is
answered None: the caller encodes the body, which is always right.
"""

from __future__ import annotations

from typing import Any

import orjson

from aibridge.proxy.mcp.registry import JsonObject

_LARGE = ("messages", "input")  # the member not encoded again (the conversation: most of the body)
_TOOLS_KEY = b',"tools":'
_SEEN: list[bytes] = []  # the client tools arrays found in place before, as written (the latest last)
_SEEN_KEPT = 16
# bodies' endings from ``,"tools":`` on, with the length of what follows its ``]`` (the latest first)
_ENDINGS: list[tuple[bytes, int]] = []
# id of a tools list -> the list, as JSON, and its elements as JSON (without the brackets)
_ENCODED: dict[int, tuple[list[JsonObject], bytes, bytes]] = {}
_ENCODED_KEPT = 16


def with_tools(
    raw: bytes, body: JsonObject, tools: list[JsonObject], first: bytes = b""
) -> list[bytes | memoryview] | None:
    """``raw`` (the bytes ``body`` was parsed from) with ``tools`` after the client's own, and the members
    ``first`` (encoded, each followed by a comma) put first, as parts in order (views of ``raw``: the body
    is not copied here, the upstream client writes the parts as they are); None: encode instead.

    On every request with injection: written for few calls (the ending seen before and the encoded tools
    looked up inline)."""
    if not raw.endswith(b"}"):
        raw = raw.rstrip(b" \t\r\n")
        if not raw.endswith(b"}"):
            return None
    if not body or (first and not raw.startswith(b"{")):
        return None
    whole = memoryview(raw)
    head, rest = ([b"{", first], 1) if first else ([], 0)  # the client's bytes from rest on follow head
    if "tools" not in body:
        return [*head, whole[rest:-1], b',"tools":', encoded(tools), b"}"]
    client_tools = body["tools"]
    if not isinstance(client_tools, list):
        return None
    size = len(raw)
    for ending, after in _ENDINGS:  # the latest first
        if size > len(ending) and raw.endswith(ending):
            end = size - after - 1
            break
    else:
        found = _tools_end(raw, body)
        if found is None:
            return None
        end = found
    cached = _ENCODED.get(id(tools))
    injected = cached[2] if cached is not None and cached[0] is tools else _encoded(tools)[2]
    separator = b"," if client_tools and injected else b""
    return [*head, whole[rest:end], separator, injected, whole[end:]]


def encoded(tools: list[JsonObject]) -> bytes:
    """``tools`` as JSON, encoded once per list: the injector hands every request the same (shared, never
    mutated) list until the tools change."""
    cached = _ENCODED.get(id(tools))
    return cached[1] if cached is not None and cached[0] is tools else _encoded(tools)[1]


def _encoded(tools: list[JsonObject]) -> tuple[list[JsonObject], bytes, bytes]:
    data = orjson.dumps(tools)
    if len(_ENCODED) >= _ENCODED_KEPT:
        _ENCODED.clear()
    _ENCODED[id(tools)] = entry = (tools, data, data[1:-1])  # the list kept alive with its bytes: its id stays its own
    return entry


def _tools_end(raw: bytes, body: JsonObject) -> int | None:
    """Where the ``]`` closing the top-level ``tools`` array is in ``raw``, when ``raw`` is ``body`` written
    compactly and ``tools`` comes after the large member (checked as the module says)."""
    keys = list(body)
    large = next((index for index, key in enumerate(keys) if key in _LARGE), None)
    if large is None or keys.index("tools") < large:
        return None
    if _SEEN and (seen := _seen_tools_end(raw, body, keys)) is not None:
        return seen
    try:
        before = [_member(key, body[key]) for key in keys[:large]]
        after = [_member(key, body[key]) for key in keys[large + 1 :]]
    except orjson.JSONEncodeError:
        return None
    head = b"{" + b"".join([member + b"," for member in before]) + orjson.dumps(keys[large]) + b":"
    tail = b"," + b",".join(after) + b"}"
    if len(head) + len(tail) >= len(raw) or not raw.startswith(head) or not raw.endswith(tail):
        return None
    offset = len(raw) - len(tail)
    for key, member in zip(keys[large + 1 :], after, strict=True):
        offset += 1  # the comma before the member
        if key == "tools":
            _remember(member[len(_TOOLS_KEY) - 1 :])
            return _ending_kept(raw, offset - 1, offset + len(member) - 1)
        offset += len(member)
    return None


def _seen_tools_end(raw: bytes, body: JsonObject, keys: list[str]) -> int | None:
    """Where the ``tools`` array closes, when ``raw`` ends with ``,"tools":``, a tools array seen before and
    the members after ``tools`` (as the module says)."""
    try:
        tail = b"".join([b"," + _member(key, body[key]) for key in keys[keys.index("tools") + 1 :]]) + b"}"
    except orjson.JSONEncodeError:
        return None
    if not raw.endswith(tail):
        return None
    end = len(raw) - len(tail)  # just after the array
    for seen in reversed(_SEEN):
        start = end - len(seen)
        if (
            start > len(_TOOLS_KEY)
            and raw.startswith(seen, start)
            and raw.startswith(_TOOLS_KEY, start - len(_TOOLS_KEY))
        ):
            return _ending_kept(raw, start - len(_TOOLS_KEY), end - 1)
    return None


def _remember(tools: bytes) -> None:
    if tools in _SEEN:
        return
    if len(_SEEN) >= _SEEN_KEPT:
        del _SEEN[0]
    _SEEN.append(tools)


def _ending_kept(raw: bytes, start: int, end: int) -> int:
    """``end`` (the ``]`` of the ``tools`` array whose ``,"tools":`` begins at ``start``), with the body's
    ending from ``start`` on kept for the bodies that follow."""
    if len(_ENDINGS) >= _SEEN_KEPT:
        del _ENDINGS[-1]
    _ENDINGS.insert(0, (raw[start:], len(raw) - end - 1))
    return end


def _member(key: str, value: Any) -> bytes:
    return orjson.dumps(key) + b":" + orjson.dumps(value)
