"""A sans-io Server-Sent Events decoder: bytes in (any chunking), whole events out.

Each event keeps the exact bytes it arrived as (``raw``), so a caller can forward events unchanged or
drop one. Lines end with LF, CRLF or CR; a CR at the end of a chunk waits for the next chunk in case
an LF follows. Lines are decoded only once complete, so a UTF-8 character split across chunks is
never cut (no byte of a multi-byte character can be CR or LF).

The common case (LF line ends only) takes a fast path: the pending bytes are split into whole blocks
at ``\n\n`` in one pass; only the trailing partial block goes through the line-by-line scanner. Both
paths give the same events and the same ``raw`` bytes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_LINE_END = re.compile(rb"\r\n|\r|\n")


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One block of lines ended by a blank line. ``data`` is None when the block had no data field
    (only comments, ids or retry hints)."""

    event: str
    data: str | None
    raw: bytes


class SSEDecoder:
    def __init__(self) -> None:
        self._buffer = bytearray()
        self._scan = 0
        self._event = ""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        pending = len(self._buffer)
        self._buffer += chunk
        if b"\r" in self._buffer:
            return self._drain(final=False)
        if pending and self._buffer.find(b"\n\n", pending - 1) < 0:
            return self._drain(final=False)  # still inside one block: scan on, never re-read it
        return self._split()

    def _split(self) -> list[SSEEvent]:
        """LF-only fast path. The buffer always starts at an event boundary, so it is re-read whole
        (fields of its partial block parsed earlier are dropped first, then parsed again)."""
        data = bytes(self._buffer)
        events: list[SSEEvent] = []
        position, size = 0, len(data)
        while position < size:
            if data[position] == 10:  # a blank line right at the boundary: an empty event
                events.append(SSEEvent("", None, b"\n"))
                position += 1
                continue
            end = data.find(b"\n\n", position)
            if end < 0:
                break
            events.append(_block(data[position:end], data[position : end + 2]))
            position = end + 2
        self._buffer = bytearray(data[position:])
        self._scan, self._event, self._data = 0, "", []
        events.extend(self._drain(final=False))  # the partial block's complete lines; never an event
        return events

    def close(self) -> list[SSEEvent]:
        """End of stream: a last block without its blank line still counts."""
        events = self._drain(final=True)
        if self._scan < len(self._buffer):
            self._field(bytes(self._buffer[self._scan :]))
            self._scan = len(self._buffer)
        if self._buffer:
            events.append(self._dispatch(len(self._buffer)))
        return events

    def _drain(self, *, final: bool) -> list[SSEEvent]:
        events: list[SSEEvent] = []
        buffer = self._buffer
        while True:
            match = _LINE_END.search(buffer, self._scan)
            if match is None:
                break
            start, end = match.span()
            if not final and buffer[start:end] == b"\r" and end == len(buffer):
                break
            line = bytes(buffer[self._scan : start])
            self._scan = end
            if line:
                self._field(line)
            else:
                events.append(self._dispatch(end))
        return events

    def _field(self, line: bytes) -> None:
        if line.startswith(b":"):
            return
        name, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            self._data.append(value.decode("utf-8", "replace"))
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")

    def _dispatch(self, end: int) -> SSEEvent:
        event = SSEEvent(self._event, "\n".join(self._data) if self._data else None, bytes(self._buffer[:end]))
        del self._buffer[:end]
        self._scan = 0
        self._event = ""
        self._data = []
        return event


def _block(block: bytes, raw: bytes) -> SSEEvent:
    """One whole block of LF-ended, non-blank lines (the same field rules as ``SSEDecoder._field``)."""
    event = ""
    data: list[str] = []
    for line in block.split(b"\n"):
        if line.startswith(b":"):
            continue
        name, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            data.append(value.decode("utf-8", "replace"))
        elif name == b"event":
            event = value.decode("utf-8", "replace")
    return SSEEvent(event, "\n".join(data) if data else None, raw)


class ForwardingTee:
    """The shape of a tee that forwards every chunk unchanged (``feed``) and decodes it once sent
    (``settle``), handing each event to :meth:`_observe`; ``close`` decodes the rest, then
    :meth:`_complete` fills in the summary. Anthropic's messages and OpenAI's Responses stream are
    teed this way (a chat completions stream may have bytes to hide, so it has its own)."""

    def __init__(self) -> None:
        self._decoder = SSEDecoder()
        self._unparsed: list[bytes] = []

    def feed(self, chunk: bytes) -> bytes:
        self._unparsed.append(chunk)
        return chunk

    def settle(self) -> None:
        unparsed, self._unparsed = self._unparsed, []
        for chunk in unparsed:
            for event in self._decoder.feed(chunk):
                self._observe(event)

    def end(self) -> bytes:
        return b""  # every byte is forwarded as it comes

    def close(self) -> bytes:
        self.settle()
        for event in self._decoder.close():
            self._observe(event)
        self._complete()
        return b""

    def _observe(self, event: SSEEvent) -> None:
        raise NotImplementedError

    def _complete(self) -> None:
        raise NotImplementedError
