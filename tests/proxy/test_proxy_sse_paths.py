"""The decoder's LF fast path against a line-by-line reference of the SSE rules, on random streams."""

from __future__ import annotations

import random

import pytest

from aibridge.proxy.providers.sse import SSEDecoder, SSEEvent

LINES = [
    b": comment",
    b"event: delta",
    b"event:x",
    b'data: {"a": 1}',
    b"data:two",
    b"data",
    b"data: \xe2\x98\x80\xef\xb8\x8f",
    b"id: 7",
    b"retry: 5",
    b"",
    b"",
]


def reference(raw: bytes, newline: bytes) -> list[tuple[str, str | None, bytes]]:
    """Blocks end at a blank line; the unterminated tail is an event too."""
    events: list[tuple[str, str | None, bytes]] = []
    event, start, position = "", 0, 0
    data: list[str] = []
    for line in raw.split(newline)[:-1] if raw.endswith(newline) else raw.split(newline):
        position += len(line) + len(newline)
        if not line:
            events.append((event, "\n".join(data) if data else None, raw[start:position]))
            event, data, start = "", [], position
        elif not line.startswith(b":"):
            name, _, value = line.partition(b":")
            value = value[1:] if value.startswith(b" ") else value
            if name == b"data":
                data.append(value.decode())
            elif name == b"event":
                event = value.decode()
    if start < len(raw):
        events.append((event, "\n".join(data) if data else None, raw[start:]))
    return events


def decode(chunks: list[bytes]) -> list[SSEEvent]:
    decoder = SSEDecoder()
    return [event for chunk in chunks for event in decoder.feed(chunk)] + decoder.close()


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
@pytest.mark.parametrize("seed", range(40))
def test_random_streams_decode_as_the_reference_in_any_chunking(seed: int, newline: bytes) -> None:
    rng = random.Random(seed)
    raw = newline.join(rng.choice(LINES) for _ in range(rng.randint(1, 40)))
    raw += newline * rng.randint(0, 2)
    expected = reference(raw, newline)
    for _ in range(8):
        cuts = sorted(rng.sample(range(1, len(raw)), min(len(raw) - 1, rng.randint(0, 10))))
        chunks = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
        assert [(e.event, e.data, e.raw) for e in decode(chunks)] == expected, chunks


def test_an_event_split_over_many_chunks_is_scanned_once() -> None:
    raw = b"event: big\ndata: " + b"x" * 200_000 + b"\n\ndata: next\n\n"
    events = decode([raw[i : i + 1000] for i in range(0, len(raw), 1000)])
    assert [(e.event, len(e.data or "")) for e in events] == [("big", 200_000), ("", 4)]
    assert b"".join(e.raw for e in events) == raw
