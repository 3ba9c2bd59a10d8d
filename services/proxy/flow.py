"""One intercepted request's state, handed from step to step of the :class:`~aibridge.proxy.intercept.Interceptor`.

A :class:`Flow` exists once a request is admitted, parsed and past its model's circuit breaker: what
was asked, by whom, under which permit, how it is observed (spans, metrics and the timings of
:class:`~aibridge.proxy.recording.observe.Observation`), and the upstream answers so far. Each step
takes the flow instead of a row of positional values, so a step that runs once per upstream round
can run again with the same flow. Plain data: the steps live in the interceptor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.requests import Request

from aibridge.auth import Identity
from aibridge.events import InterceptionContext
from aibridge.proxy.guards.breaker import Permit
from aibridge.proxy.mcp.loop import McpRun
from aibridge.proxy.providers.records import ParsedRequest
from aibridge.proxy.providers.spec import ProviderSpec
from aibridge.proxy.recording.observe import Observation
from aibridge.proxy.relay import ClientWatch
from aibridge.proxy.upstream.client import UpstreamResponse


@dataclass(slots=True, eq=False)
class Flow:
    spec: ProviderSpec  # the route and its provider
    request: Request
    headers: dict[str, str]  # the client's headers, names lower-cased
    identity: Identity
    raw: bytes  # the body as it arrived
    parsed: ParsedRequest  # what was asked
    permit: Permit  # the model's circuit breaker's; released when the flow is done
    obs: Observation
    leave: Callable[[], None]  # counts the request out of the in-flight limit (idempotent)
    context: InterceptionContext | None = None  # built, and its started event queued, once
    watch: ClientWatch | None = None  # notices the client going away once the request is upstream
    answers: list[UpstreamResponse] = field(default_factory=list)  # the upstream's answers so far
    mcp: McpRun | None = None  # injected MCP tools: the rounds while the model calls them
