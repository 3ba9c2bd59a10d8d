"""A TLS-terminating TCP proxy on 127.0.0.1, for tests: TLS outside, plain TCP to a local port inside.

Tansu's listener speaks plain TCP only, so the Kafka TLS tests put this in front of it and start the
broker advertising this proxy's port (Kafka clients connect to the advertised address after
bootstrap). The proxy runs its own event loop in a thread, so sync and async tests can use it alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from dataclasses import dataclass, field

from aibridge.testing.broker import free_port

_CHUNK = 64 * 1024


@dataclass
class TlsProxy:
    """Accepts TLS on ``port`` with ``context`` and relays each connection to ``target_port``."""

    target_port: int
    context: ssl.SSLContext
    port: int = field(default_factory=free_port)
    _loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    _server: asyncio.Server | None = field(default=None, repr=False)

    def start(self) -> TlsProxy:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), name=f"tls-proxy-{self.port}", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError(f"the TLS proxy on port {self.port} did not start")
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._thread = None

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._relay, "127.0.0.1", self.port, ssl=self.context, ssl_handshake_timeout=5)
        )
        self._loop.set_exception_handler(self._on_loop_error)
        ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._server.close()
            for task in asyncio.all_tasks(self._loop):
                task.cancel()
            self._loop.run_until_complete(asyncio.sleep(0))
            self._loop.close()

    def _on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
        """A failed handshake (wrong CA, missing client certificate) is what some tests cause: stay quiet."""
        if isinstance(context.get("exception"), (ssl.SSLError, ConnectionError)):
            return
        loop.default_exception_handler(context)

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(_pipe(client_reader, upstream_writer), _pipe(upstream_reader, client_writer))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        with contextlib.suppress(ConnectionError, ssl.SSLError, RuntimeError):
            writer.close()
