"""The HTTP server's writes to a client, made in one turn of the event loop, leave in one system call.

uvicorn writes an answer's status line and headers as soon as the app starts the response, and its body
with the next message: two ``send`` calls for every blocking answer, and for a stream one per chunk the
app relays. On a loopback or a fast network each call is the costly part (the kernel carries the
segment to the peer in the sender's time), and the client wakes once per segment. The proxy's
answers are written within one turn of the loop (Starlette sends the start and the body without
waiting in between), so :class:`CoalescingTransport` keeps the writes of the current turn and hands
them over together, by ``call_soon``, at the start of the next turn: one ``writelines`` per turn
(uvloop writes a list with one ``writev``).

Nothing waits longer than the current turn of the loop, and nothing is reordered. Closing the
connection first writes what is kept (uvicorn closes right after the last write of an answer that
ends the connection); aborting drops it, as aborting drops the transport's own buffer. The size of
the write buffer, which flow control reads, counts what is kept.
"""

from __future__ import annotations

import asyncio
from typing import Any


class CoalescingTransport:
    """Wraps a connection's transport for the server's protocol; everything but writing is delegated."""

    __slots__ = ("_loop", "_pending", "_size", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] | None = None
        self._size = 0

    @property
    def wrapped(self) -> asyncio.Transport:
        return self._transport

    def write(self, data: bytes) -> None:
        if not data:
            return
        pending = self._pending
        if pending is None:
            self._pending = [data]
            self._size = len(data)
            self._loop.call_soon(self.flush)
        else:
            pending.append(data)
            self._size += len(data)

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def flush(self) -> None:
        """Hand what this turn wrote to the transport now."""
        pending, self._pending, self._size = self._pending, None, 0
        if not pending:
            return
        if len(pending) == 1:
            self._transport.write(pending[0])
        else:
            self._transport.writelines(pending)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending, self._size = None, 0
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + self._size

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
