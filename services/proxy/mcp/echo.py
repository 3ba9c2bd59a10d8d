"""A Responses stream's echo of the request's tools, without the injected ones, in a round that goes unedited.

``response.created``, ``.in_progress`` (``.queued``) and the terminal event (``response.completed`` or its
siblings) each carry the whole response object, whose ``tools`` repeat the request's, the injected ones
among them. :class:`EchoedTools` decodes such an event, takes the injected tools out and writes it again;
written as the API writes it (``{"type":…,"sequence_number":…,"response":{…}}`` on one ``data:`` line),
the provider's bytes are kept up to the response, and an opening event whose response is byte for byte
the one before it (``in_progress`` after ``created``) reuses that edit without decoding. Every ``bmcp_``
in such an event must be one of the removed tools' names; any other event naming an injected tool (a
call's ``response.output_item.added``, text naming one) is refused, and the stream editor takes over.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from aibridge.proxy.mcp.registry import PREFIX, JsonObject
from aibridge.proxy.providers.records import mapping
from aibridge.proxy.providers.sse import SSEDecoder, SSEEvent

OPENING = frozenset({"response.created", "response.in_progress", "response.queued"})
TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})
_INJECTED = PREFIX.encode()
_HEAD = re.compile(rb'event: (response\.[a-z_]+)\ndata: \{"type":"\1","sequence_number":\d+,"response":')


def injected_name(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


def without_injected_tools(response: JsonObject) -> JsonObject:
    tools = response.get("tools")
    if not isinstance(tools, list):
        return response
    kept = [tool for tool in tools if not (isinstance(tool, dict) and injected_name(tool.get("name")))]
    return response | {"tools": kept}


class EchoedTools:
    """The echo events of one stream's unedited round (remembering the last edit, for the next opening event)."""

    def __init__(self) -> None:
        self._last: tuple[bytes, bytes] | None = None  # a response as the provider wrote it, and as edited

    def edited(self, raw: bytes, injected: int) -> bytes | None:
        """Whole LF-ended events ``raw`` holding ``injected`` times ``bmcp_``, the echo events among them
        edited; None: another event names an injected tool."""
        events = _events(raw)
        if len(events) == 1:
            return self._event(events[0], injected)
        sent = []
        for event in events:
            found = event.raw.count(_INJECTED)
            edited = self._event(event, found) if found else event.raw
            if edited is None:
                return None
            sent.append(edited)
        return b"".join(sent)

    def _event(self, event: SSEEvent, injected: int) -> bytes | None:
        laid_out = _HEAD.match(event.raw)
        if laid_out is not None and (event.raw.count(b"\n") != 3 or not event.raw.endswith(b"}\n\n")):
            laid_out = None
        response = event.raw[laid_out.end() : -3] if laid_out is not None else b""
        if laid_out is not None and laid_out[1].decode() in OPENING and self._last and self._last[0] == response:
            return event.raw[: laid_out.end()] + self._last[1] + b"}\n\n"
        payload = _payload(event)
        if payload is None or str(payload.get("type") or event.event) not in OPENING | TERMINAL:
            return None
        echoed = mapping(payload.get("response"))
        kept = without_injected_tools(echoed)
        if injected != len(echoed.get("tools") or ()) - len(kept.get("tools") or ()):
            return None
        if laid_out is None:
            head = f"event: {event.event}\n".encode() if event.event else b""
            return head + b"data: " + orjson.dumps(payload | {"response": kept}) + b"\n\n"
        self._last = (response, orjson.dumps(kept))
        return event.raw[: laid_out.end()] + self._last[1] + b"}\n\n"


def _payload(event: SSEEvent) -> JsonObject | None:
    try:
        payload = orjson.loads(event.data or "")
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
