"""What both simulated providers share: test controls, the request log, token counting, tool arguments."""

from __future__ import annotations

import asyncio
import secrets
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.datastructures import Headers
from starlette.requests import Request

SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


@dataclass(frozen=True, slots=True)
class Controls:
    """Per-request test controls, sent as ``x-simulator-*`` headers (the proxy forwards them)."""

    status: int | None = None
    chunk_delay: float = 0.0
    stall: float = 0.0
    fail_after_chunks: int | None = None
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    redacted_thinking: bool = False  # an Anthropic answer with thinking also has a redacted_thinking block
    mcp_rounds: int = 1
    mcp_tools: tuple[str, ...] = ()
    mcp_arguments: str | None = None
    mcp_mixed: bool = False

    @classmethod
    def from_headers(cls, headers: Headers) -> Controls:
        def number(name: str) -> int | None:
            value = headers.get(f"x-simulator-{name}")
            return int(value) if value is not None and value.strip().isdigit() else None

        return cls(
            status=number("status"),
            chunk_delay=(number("chunk-delay-ms") or 0) / 1000,
            stall=(number("stall-ms") or 0) / 1000,
            fail_after_chunks=number("fail-after-chunks"),
            cache_read_tokens=number("cache-read-tokens") or 0,
            cache_write_tokens=number("cache-write-tokens") or 0,
            reasoning_tokens=number("reasoning-tokens") or 0,
            redacted_thinking=headers.get("x-simulator-redacted-thinking") == "1",
            mcp_rounds=_or_default(number("mcp-rounds"), 1),
            mcp_tools=tuple(name.strip() for name in headers.get("x-simulator-mcp-tools", "").split(",") if name),
            mcp_arguments=headers.get("x-simulator-mcp-arguments"),
            mcp_mixed=headers.get("x-simulator-mcp-mixed") == "1",
        )


def _or_default(value: int | None, default: int) -> int:
    return default if value is None else value


@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


@dataclass
class SimulatorState:
    """What the simulator saw, newest last (tests read it to check what the proxy forwarded)."""

    requests: deque[ReceivedRequest] = field(default_factory=lambda: deque(maxlen=200))
    openai_key: str | None = None
    anthropic_key: str | None = None
    # x-simulator-timing tag -> seconds from the request reaching the app to its answer's last byte sent
    timings: dict[str, float] = field(default_factory=dict)

    async def remember(self, request: Request) -> bytes:
        body = await request.body()
        headers = dict(request.headers.items())
        self.requests.append(ReceivedRequest(request.method, request.url.path, request.url.query, headers, body))
        return body


class SimulatedFailure(Exception):
    """Raised inside a stream to make the simulator drop the connection mid-answer."""


def random_id(prefix: str, length: int = 24) -> str:
    return prefix + secrets.token_hex(length // 2)


def count_tokens(value: Any) -> int:
    """A rough, deterministic token count (4 characters per token) of every string in ``value``."""
    return max(1, _characters(value) // 4)


def _characters(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return sum(_characters(item) for item in value.values())
    if isinstance(value, list):
        return sum(_characters(item) for item in value)
    return 0


def sample_arguments(schema: Any) -> dict[str, Any]:
    """Arguments that satisfy a tool's JSON schema: every required property with a plausible value."""
    if not isinstance(schema, dict):
        return {}
    properties = schema.get("properties") or {}
    required = schema.get("required") or list(properties)[:1]
    return {name: _sample(properties.get(name) or {}, name) for name in required if isinstance(name, str)}


def _sample(schema: dict[str, Any], name: str) -> Any:
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type")
    samples: dict[str, Any] = {"integer": 1, "number": 1.5, "boolean": True, "array": [], "object": {}}
    if kind in samples:
        return samples[kind]
    return f"sample {name} — ünïcode ✓"


def answer_text(prompt: str | None) -> str:
    about = (prompt or "your request").strip().splitlines()[-1][:80] if (prompt or "").strip() else "your request"
    return f"Simulated answer ✓ to “{about}”: the bridge relayed this stream chunk by chunk."


def reasoning_text(prompt: str | None) -> str:
    """What a simulated model thinks before it answers (a thinking block, a reasoning summary, reasoning_content)."""
    about = (prompt or "").strip().splitlines()[-1][:80] if (prompt or "").strip() else "the request"
    return f"Simulated reasoning: the user asks about “{about}”; answer briefly, then check the answer."


def pieces(text: str, size: int = 3) -> Iterator[str]:
    """``text`` in pieces of ``size`` words (whitespace kept), as a model would stream it."""
    words = text.split(" ")
    for start in range(0, len(words), size):
        chunk = " ".join(words[start : start + size])
        yield chunk if start + size >= len(words) else chunk + " "


def json_pieces(text: str, size: int = 7) -> Iterator[str]:
    for start in range(0, len(text), size):
        yield text[start : start + size]


async def paced(chunks: list[bytes], controls: Controls) -> AsyncIterator[bytes]:
    """Send the first chunk at once and the rest ``chunk_delay`` apart; fail on request."""
    for index, chunk in enumerate(chunks):
        if controls.fail_after_chunks is not None and index >= controls.fail_after_chunks:
            raise SimulatedFailure("simulated upstream failure in the middle of a stream")
        if index and controls.chunk_delay:
            await asyncio.sleep(controls.chunk_delay)
        yield chunk


INJECTED_PREFIX = "bmcp_"
"""The bridge's injected tools: the simulator calls them first, as a model would use a tool it was given."""


@dataclass(frozen=True, slots=True)
class PlannedCall:
    name: str
    arguments: Any


def plan_calls(
    tools: list[tuple[str, Any]], follow_up: bool, injected_rounds: int, controls: Controls
) -> list[PlannedCall]:
    """The calls of the next model turn, from the offered tools as ``(name, input schema)``.

    Injected (``bmcp_``) tools offered and fewer than ``x-simulator-mcp-rounds`` (default 1) turns of
    the conversation called them: call the ones named by ``x-simulator-mcp-tools`` (default: the first),
    with ``x-simulator-mcp-arguments`` (JSON) or sample arguments, plus the first client tool when
    ``x-simulator-mcp-mixed: 1``. Otherwise: the first client tool, unless the conversation just returned
    a tool result.
    """
    injected = [(name, schema) for name, schema in tools if name.startswith(INJECTED_PREFIX)]
    client = [(name, schema) for name, schema in tools if not name.startswith(INJECTED_PREFIX)]
    if injected and injected_rounds < controls.mcp_rounds:
        schemas = dict(injected)
        names = list(controls.mcp_tools) or [injected[0][0]]
        calls = [PlannedCall(name, _planned_arguments(schemas.get(name), controls)) for name in names]
        if controls.mcp_mixed and client:
            calls.append(PlannedCall(client[0][0], sample_arguments(client[0][1])))
        return calls
    if follow_up or not client:
        return []
    return [PlannedCall(client[0][0], sample_arguments(client[0][1]))]


def _planned_arguments(schema: Any, controls: Controls) -> Any:
    if controls.mcp_arguments is not None:
        return orjson.loads(controls.mcp_arguments)
    return sample_arguments(schema)
