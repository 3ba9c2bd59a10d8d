"""A Responses stream's echo of the request's tools, without the injected ones, in a round that goes unedited.

``response.created``, ``.in_progress`` (``.queued``) and the terminal event (``response.completed`` or its
siblings) each carry the whole response object, whose ``tools`` repeat the request's, the injected ones
among them. :class:`EchoedTools` takes the injected tools out.

Written as the API writes it (``{"type":…,"sequence_number":…,"response":{…}}`` on one ``data:`` line,
compact), the event is cut, not decoded: a coding agent's tools make it tens of KB, and decoding it costs
more than the rest of the relay (:func:`injected_span`). Each ``"name":"bmcp_`` is found from the end (the
injected tools come after the client's); from an element's start (after ``[`` or ``,``) before the first
of them, the elements up to the array's ``]`` are read once with the JSON parser and must be exactly the
``function`` tools of those names, every ``bmcp_`` of the event among them. That run is cut out with its
comma, the provider's other bytes going as they came, and remembered: the same tools come back the same
bytes in the next event and the next request's stream, found then by comparison: in a chunk where every
``bmcp_`` lies in such a run, the runs are cut out of the whole chunk at once, its events not read one by
one. An opening event whose response is byte for byte the one before it (``in_progress`` after
``created``) reuses that edit.

Anything else (another layout, whitespace, an injected name the cut cannot account for) is decoded, the
injected tools taken out and written again. Every ``bmcp_`` in an echo event must be one of the removed
tools' names; any other event naming an injected tool (a call's ``response.output_item.added``, text
naming one) is refused, and the stream editor takes over.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from aibridge.proxy.mcp.registry import INJECTED, PREFIX, JsonObject, count_injected, injected_at
from aibridge.proxy.providers.records import mapping
from aibridge.proxy.providers.sse import SSEDecoder, SSEEvent

OPENING = frozenset({"response.created", "response.in_progress", "response.queued"})
TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})
_HEAD = re.compile(rb'event: (response\.[a-z_]+)\ndata: \{"type":"\1","sequence_number":\d+,"response":')
_NAMED = b'"name":"' + INJECTED  # an injected tool's name, as a compact echo writes it
_NAME_AT = len('"name":')
_ELEMENT_BEFORE = b",["
_COMMA, _CLOSE = ord(","), ord("]")
# Runs of injected tools as providers echoed them, each read once: the run's bytes -> where its first
# injected name is in it, how many it holds, and where its first ``bmcp_`` starts. The same tools come back
# the same way in the next event of the stream (the terminal one) and in the next request's stream: found
# again, they are compared (:func:`_known_runs_cut` finds them in a whole chunk from that first ``bmcp_``).
_VERIFIED: dict[bytes, tuple[int, int, int]] = {}
_VERIFIED_KEPT = 32
# A chunk up to this is searched with bytes.find from one run's end to the next bmcp_ (the runs' insides
# skipped, no list of positions made), a longer one with the vectorised search over all of it: bytes.find
# reads the bytes outside the runs several times slower, which tells once a coding agent's client tools
# make each echo event tens of KiB.
_SEARCHED_CUT_MAX = 16 * 1024
_STARTS_TRIED = 64  # braces looked at before the first injected name (those of its schema, when the name follows)
_ECHOES = frozenset(kind.encode() for kind in OPENING | TERMINAL)
_CR = 13  # a carriage return (``13 in raw`` is a memchr)
_OPENINGS = frozenset(kind.encode() for kind in OPENING)


def injected_name(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


def without_injected_tools(response: JsonObject) -> JsonObject:
    """``response`` without the injected tools among its ``tools`` (``response`` itself when it has none)."""
    tools = response.get("tools")
    if not isinstance(tools, list):
        return response
    kept = [tool for tool in tools if not (isinstance(tool, dict) and injected_name(tool.get("name")))]
    return response if len(kept) == len(tools) else response | {"tools": kept}


class EchoedTools:
    """The echo events of one stream's unedited round (remembering the last edit, for the next opening event)."""

    # the last echo event edited: as the provider wrote it, where its response starts, as edited (set on the
    # instance; no __init__: one is made for every streamed Responses request)
    _last: tuple[bytes, int, bytes] | None = None

    def edited(self, raw: bytes, found: list[int]) -> bytes | None:
        """Whole LF-ended events ``raw`` with ``bmcp_`` at ``found`` (:func:`.registry.injected_at`), the
        echo events among them edited; None: another event names an injected tool."""
        if _VERIFIED and (cut := _known_runs_cut(raw, found)) is not None:
            return cut
        if (laid_out := _laid_out(raw)) is not None:
            return self._echo_event(raw, laid_out, len(found))
        if raw.endswith(b"\n\n") and _CR not in raw:
            return self._each_naming(raw, found)
        return self._decoded_events(raw)

    def _each_naming(self, raw: bytes, found: list[int]) -> bytes | None:
        """Several whole events, LF line ends only (as a provider's stream arrives on a fast link: a few
        chunks of many events each), ``bmcp_`` at ``found``: only the events that name an injected tool
        are edited, found by their blank lines around each name; the provider's other bytes go as they
        came."""
        view = memoryview(raw)
        parts: list[bytes | memoryview] = []
        done = 0  # the bytes before this are taken care of
        index = 0
        while index < len(found):
            at = found[index]
            start = raw.rfind(b"\n\n", done, at)
            start = done if start < 0 else start + 2
            end = raw.find(b"\n\n", at) + 2
            first = index
            while index < len(found) and found[index] < end:
                index += 1
            event = raw[start:end]
            laid_out = _laid_out(event)
            if laid_out is not None:
                edited = self._echo_event(event, laid_out, index - first)
            else:
                edited = self._decoded_events(event)
            if edited is None:
                return None
            parts += [view[done:start], edited]
            done = end
        parts.append(view[done:])
        return b"".join(parts)

    def _decoded_events(self, raw: bytes) -> bytes | None:
        sent = []
        for event in _events(raw):
            found = count_injected(event.raw)
            if not found:
                edited: bytes | None = event.raw
            elif (laid_out := _laid_out(event.raw)) is not None:
                edited = self._echo_event(event.raw, laid_out, found)
            else:
                edited = _written_again(event, found)
            if edited is None:
                return None
            sent.append(edited)
        return b"".join(sent)

    def _echo_event(self, raw: bytes, laid_out: re.Match[bytes], injected: int) -> bytes | None:
        """One event written as the API writes it: its response cut, else decoded and written again (the
        event copied once: the parts kept are joined from views)."""
        if laid_out[1] not in _ECHOES:
            return None
        head = laid_out.end()
        view = memoryview(raw)
        if self._last is not None and laid_out[1] in _OPENINGS:
            before, before_head, edited = self._last
            if len(before) - before_head == len(raw) - head and raw.endswith(memoryview(before)[before_head:]):
                return b"".join([view[:head], memoryview(edited)[before_head:]])
        span = injected_span(raw, injected, head, len(raw) - 3)
        if span is not None:
            edited = b"".join([view[: span[0]], view[span[1] :]])
        else:
            echoed = _decoded(view[head:-3])
            kept = _kept(echoed, injected) if echoed is not None else None
            if kept is None:
                return None
            edited = b"".join([view[:head], orjson.dumps(kept), b"}\n\n"])
        self._last = (raw, head, edited)
        return edited


def _written_again(event: SSEEvent, injected: int) -> bytes | None:
    """An echo event laid out otherwise, decoded, the injected tools taken out, and encoded again."""
    payload = _decoded(event.data or "")
    if payload is None or str(payload.get("type") or event.event) not in OPENING | TERMINAL:
        return None
    kept = _kept(mapping(payload.get("response")), injected)
    if kept is None:
        return None
    head = f"event: {event.event}\n".encode() if event.event else b""
    return head + b"data: " + orjson.dumps(payload | {"response": kept}) + b"\n\n"


def _kept(echoed: JsonObject, injected: int) -> JsonObject | None:
    """The response without the injected tools, when they are all its ``bmcp_``: ``injected`` of them."""
    kept = without_injected_tools(echoed)
    return kept if injected == len(echoed.get("tools") or ()) - len(kept.get("tools") or ()) else None


def _laid_out(raw: bytes) -> re.Match[bytes] | None:
    """The head of one event written as the API writes it (``event:`` line, one ``data:`` line holding an
    object whose ``response`` member is last); None: laid out otherwise."""
    if not raw.endswith(b"}\n\n") or raw.find(b"\n", raw.find(b"\n") + 1) != len(raw) - 2:
        return None  # three line ends, the last two at the end (found by memchr: a count is slower)
    return _HEAD.match(raw)


def injected_span(raw: bytes, injected: int, lo: int, hi: int) -> tuple[int, int] | None:
    """The bytes to take out of ``raw[lo:hi]`` (compact JSON holding ``injected`` times ``bmcp_``) for it to
    lose the tool objects of the injected names, when they are the last elements of an array and account
    for every ``bmcp_`` (as the module says), with the comma before them; None: decode instead."""
    found = []  # where each "name":"bmcp_ is, from the last
    at = hi
    for _ in range(injected):
        at = raw.rfind(_NAMED, lo, at)
        if at < 0:
            return None
        found.append(at)
    first, last = found[-1], found[0]
    for run, (offset, names, _) in _VERIFIED.items():  # a run as a provider echoed it before: a comparison
        start, end = first - offset, first - offset + len(run)
        if names != injected or start <= lo or last >= end or end >= hi or raw[end] != _CLOSE:
            continue
        if raw[start - 1] in _ELEMENT_BEFORE and raw.startswith(run, start):
            return (start - 1, end) if raw[start - 1] == _COMMA else (start, end)
    brace = first
    for _ in range(_STARTS_TRIED):  # the first injected tool's "{": an element's start, before its name
        brace = raw.rfind(b"{", lo, brace)
        if brace <= lo:
            return None
        if raw[brace - 1] not in _ELEMENT_BEFORE or (closed := _run_end(raw, brace, hi, last, found)) is None:
            continue  # not an element, or one inside the first injected tool (its schema's)
        if closed < 0:
            return None
        if len(_VERIFIED) >= _VERIFIED_KEPT:
            _VERIFIED.clear()
        run = raw[brace:closed]
        _VERIFIED[run] = (first - brace, injected, run.find(INJECTED))
        return (brace - 1, closed) if raw[brace - 1] == _COMMA else (brace, closed)
    return None


def cut_known_runs(raw: bytes) -> bytes | None:
    """Whole LF-ended events ``raw`` less the runs of injected tools read before, when every ``bmcp_`` in them
    is inside one, each found by a search from the end of the run before (as :func:`_known_runs_cut`): the
    events as they came when none is in them; None: none read yet, or a ``bmcp_`` outside them (the
    stream's events are then read as usual). A Responses stream's chunks are looked at this way first: its
    echo events come with the same runs, request after request, and no list of every ``bmcp_`` is made."""
    if not _VERIFIED:
        return None
    if len(raw) > _SEARCHED_CUT_MAX:
        found = injected_at(raw)
        return _known_runs_cut(raw, found) if found else raw
    at = raw.find(INJECTED)
    if at < 0:
        return raw
    view = memoryview(raw)
    parts: list[memoryview] = []
    done = 0  # the bytes before this are taken care of
    while at >= 0:
        span = _known_run_at(raw, at, done)
        if span is None:
            return None
        start, end = span
        parts.append(view[done : start - 1 if raw[start - 1] == _COMMA else start])
        done = end
        at = raw.find(INJECTED, end)
    parts.append(view[done:])
    return b"".join(parts)


def _known_runs_cut(raw: bytes, found: list[int]) -> bytes | None:
    """``raw`` (``bmcp_`` at ``found``) less the runs of injected tools already read (:func:`injected_span`),
    when every ``bmcp_`` in it is inside one; None: read the events one by one.

    The common case, from a stream's second request on: a chunk of several events, two or three of them
    echoes. Each run is found from its first ``bmcp_`` and compared; the provider's other bytes go as they
    came. A match is JSON structure, the last elements of an array: the run starts ``{"`` and a string
    cannot hold an unescaped quote, so the comma or bracket before it and the bracket after it are the
    array's own, and the elements are the injected tools' definitions, which only an echo carries. A call
    of an injected tool names it outside any run: that chunk is read event by event (and refused)."""
    view = memoryview(raw)
    parts: list[memoryview] = []
    done = 0  # the bytes before this are taken care of
    index = 0
    while index < len(found):
        span = _known_run_at(raw, found[index], done)
        if span is None:
            return None
        start, end = span
        parts.append(view[done : start - 1 if raw[start - 1] == _COMMA else start])
        done = end
        while index < len(found) and found[index] < end:
            index += 1
    parts.append(view[done:])
    return b"".join(parts)


def _known_run_at(raw: bytes, at: int, done: int) -> tuple[int, int] | None:
    """Where the run read before whose first ``bmcp_`` is at ``at`` starts and ends, as the last elements of
    an array after ``done``; None: no run read before is there."""
    for run, (_, _, first_at) in _VERIFIED.items():
        start = at - first_at
        end = start + len(run)
        if (
            done < start
            and end < len(raw)
            and raw[end] == _CLOSE
            and raw[start - 1] in _ELEMENT_BEFORE
            and raw.startswith(run, start)
        ):
            return start, end
    return None


def _run_end(raw: bytes, start: int, hi: int, last: int, found: list[int]) -> int | None:
    """Where the array whose elements from ``start`` on are the ``function`` tools of the injected names at
    ``found`` (from the last), in order, closes (its ``]``). None: the elements from ``start`` end before
    the last name (a schema's array inside the first tool), or do not read as JSON; -1: they are another
    array's elements, or other elements (no earlier start can do better)."""
    tail = raw[start:hi]
    ascii = tail.isascii()  # else the decoder's positions are characters: it reads text
    try:
        document: bytes | str = b"[" + tail if ascii else "[" + tail.decode()
        orjson.loads(document)
    except UnicodeDecodeError:
        return -1
    except orjson.JSONDecodeError as error:
        if not error.msg.startswith("unexpected content after document"):
            return None
        run = document[: error.pos]  # "[", the elements from start on, the array's "]" (written compactly)
    else:
        return -1
    closed = start + (len(run) if isinstance(run, bytes) else len(run.encode())) - 1  # the byte after "]"
    if closed <= last:
        return None
    if raw[closed - 1] != _CLOSE:
        return -1
    tools = orjson.loads(run)
    if len(tools) != len(found):
        return -1
    for tool, name_at in zip(tools, reversed(found), strict=True):
        if not isinstance(tool, dict) or tool.get("type") != "function" or not injected_name(tool.get("name")):
            return -1
        if not raw.startswith(orjson.dumps(tool["name"]), name_at + _NAME_AT):
            return -1
    return closed - 1


def _decoded(data: bytes | memoryview | str) -> JsonObject | None:
    try:
        payload = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return payload if isinstance(payload, dict) else None


def _events(raw: bytes) -> list[SSEEvent]:
    """Whole LF-ended events. One event written as the API writes it (an ``event:`` line, one ``data:``
    line: three line ends in all, counted at memchr speed) is taken as it is; anything else goes through
    the SSE decoder."""
    if raw.endswith(b"\n\n") and raw.startswith(b"event: ") and raw.count(b"\n") == 3:
        head, found, data = raw[:-2].partition(b"\ndata: ")
        if found:
            return [SSEEvent(head[7:].decode("utf-8", "replace"), data.decode("utf-8", "replace"), raw)]
    decoder = SSEDecoder()
    return decoder.feed(raw) + decoder.close()
