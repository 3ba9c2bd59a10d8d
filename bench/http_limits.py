"""The request head limits' cost: one typical request head (22 headers, a 2-byte body) fed to uvicorn's
httptools protocol and to the limited one the bridge serves with (``aibridge.http_limits``), in one
process, alternating rounds; prints microseconds per request and the difference.

Rerun:  .venv/bin/python bench/http_limits.py            (about 10 seconds)
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from aibridge.http_limits import HeaderLimitSettings, limited_protocol

HEADERS = b"".join(b"X-Stainless-H%d: value-%d-abcdefghijklmnop\r\n" % (i, i) for i in range(19))
REQUEST = (
    b"POST /api/v2/aibridge/anthropic/v1/messages HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
    + HEADERS
    + b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
)


class NullTransport(asyncio.Transport):
    """A connection that accepts every write: only the protocol's own work is timed."""

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8080), "peername": ("127.0.0.1", 5555)}.get(name, default)

    def write(self, data: Any) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass


async def app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def per_request(protocol: type[HttpToolsProtocol], requests: int) -> float:
    """Microseconds per request, parse and dispatch included (the app answers at once)."""
    config = uvicorn.Config(app, lifespan="off", log_level="error")
    config.load()
    connection = protocol(config=config, server_state=ServerState(), app_state={})
    connection.connection_made(NullTransport())
    start = time.perf_counter()
    for _ in range(requests):
        connection.data_received(REQUEST)
        await asyncio.sleep(0)
    return (time.perf_counter() - start) / requests * 1e6


async def main(rounds: int, requests: int) -> None:
    limited = limited_protocol(HeaderLimitSettings())
    added = []
    for index in range(rounds):
        plain = await per_request(HttpToolsProtocol, requests)
        bounded = await per_request(limited, requests)
        added.append(bounded - plain)
        print(f"round {index}: httptools {plain:.2f} µs, limited {bounded:.2f} µs, added {bounded - plain:+.2f} µs")
    print(f"median added per request: {sorted(added)[len(added) // 2]:+.2f} µs")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=20000)
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.requests))
