"""The injection loop, provider-neutral: one request's rounds while the model calls injected tools.

A :class:`McpRun` holds the request body with the injected tools added and the rounds so far. After
each upstream answer, :meth:`McpRun.settle` decides:

- no injected call: the answer is final;
- injected calls only: the bridge runs them (concurrently, each with the per-call timeout and result
  cap), appends the model's turn and the results in the API's shape and another round is due;
- injected and client calls in one turn (mixed): the injected calls are *not run*; the answer is final
  and the client gets only its own calls (so it never receives a call it cannot run, and the
  conversation it sends back, its calls and their results, is valid for the provider). The model asks
  for the injected tools again later, in the turn after the client's results, if it still needs them;
- injected calls only, but the round cap is reached: the answer is final, the calls not run.

Calls that are not run are recorded (``invocation_error`` says why) and never reach the client.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from opentelemetry.context import Context

from aibridge.metrics import MCP_ROUND_CAP
from aibridge.proxy.errors import InvalidRequestBody
from aibridge.proxy.mcp.client import CallResult
from aibridge.proxy.mcp.injector import McpInjector, ToolCall
from aibridge.proxy.mcp.registry import JsonObject, ToolFormat, count_injected
from aibridge.proxy.mcp.shapes import SHAPES, ModelCall, Shape, ToolOutput
from aibridge.proxy.mcp.splice import with_tools
from aibridge.proxy.providers.openai import MAX_REWRITE_DEPTH
from aibridge.proxy.providers.records import ResponseSummary

if TYPE_CHECKING:
    from aibridge.proxy.upstream.client import Body

log = logging.getLogger("aibridge.proxy.mcp")

NOT_RUN_MIXED = "not run: the model called client tools in the same turn"
_TOO_DEEP = f"the request body's JSON is nested deeper than {MAX_REWRITE_DEPTH} levels, the most the bridge rewrites"
NOT_RUN_ROUND_CAP = "not run: the round cap (AIBRIDGE_MCP_MAX_ROUNDS) was reached"


@dataclass(slots=True)
class Round:
    """One upstream answer: its summary (for the record) and the injected calls it made. A streamed first
    round that went to the client unedited has only its ``summary`` (from the provider's stream parser):
    no call to run, nothing to merge, so no ``raw`` answer is rebuilt for it."""

    raw: bytes
    answer: JsonObject
    injected: list[ModelCall]
    results: list[CallResult] = field(default_factory=list)
    not_run: str | None = None
    summary: ResponseSummary | None = None

    def result_of(self, call_id: str) -> CallResult | None:
        for call, result in zip(self.injected, self.results, strict=False):
            if call.call_id == call_id:
                return result
        return None


class McpRun:
    """One request's injection (the tools, the body for the next round, the rounds so far)."""

    __slots__ = ("_body", "client_body", "headers", "injector", "rounds", "shape", "tools", "usage_asked", "user")

    def __init__(  # noqa: PLR0917 (made on every request with injection: positional arguments cost less)
        self,
        injector: McpInjector,
        shape: Shape,
        body: JsonObject,
        tools: list[JsonObject],
        user: str,
        headers: Mapping[str, str],
    ) -> None:
        self.injector = injector
        self.shape = shape
        self.client_body = body
        self.tools = tools
        self.user = user
        self.headers = headers
        self.rounds: list[Round] = []
        self.usage_asked: JsonObject | None = None  # a streamed chat's stream_options, as every round sends them
        self._body: JsonObject | None = None  # built when a round needs it (most requests have one round)

    @property
    def body(self) -> JsonObject:
        """The next round's request: the client's body with the injected tools (and the rounds so far)."""
        if self._body is None:
            self._body = self.shape.inject(self.client_body, self.tools)
            if self.usage_asked is not None:
                self._body["stream_options"] = self.usage_asked
        return self._body

    @body.setter
    def body(self, body: JsonObject) -> None:
        self._body = body

    @classmethod
    def begin(
        cls, injector: McpInjector | None, shape: ToolFormat, body: JsonObject, user: str, headers: Mapping[str, str]
    ) -> McpRun | None:
        """A run when injection applies to this request (tools available, not opted out, not forbidden)."""
        if injector is None:
            return None
        api = SHAPES[shape]
        if not api.accepts(body):
            return None
        tools = injector.tools_for(shape, headers)
        return cls(injector, api, body, tools, user, headers) if tools else None  # positional: on every request

    def request_body(self) -> bytes:
        """The next round's request, encoded. A body nested deeper than the encoder writes (orjson reads
        1024 levels, writes ``MAX_REWRITE_DEPTH``) cannot go on: :class:`.InvalidRequestBody`, which the
        client gets as an error (blocking) or an error event (streamed)."""
        try:
            return orjson.dumps(self.body)
        except orjson.JSONEncodeError as exc:
            raise InvalidRequestBody(f"{_TOO_DEEP} (to add the injected tools' results)") from exc

    def first_body(self, raw: bytes) -> Body | None:
        """The first request: the client's bytes ``raw`` with the injected tools spliced in where that is
        provably the same body (:mod:`.splice`; in parts, not joined), and the usage a streamed chat
        completion asks for (added first, as the proxy adds it without injection); else the body encoded.
        None: neither can be done (the body is nested deeper than the encoder writes), the request goes
        without injection."""
        options = self.usage_asked
        if options is None or options == self.client_body.get("stream_options"):
            first = b""
        elif "stream_options" in self.client_body:
            return self._encoded()
        else:
            first = b'"stream_options":' + orjson.dumps(options) + b","
        spliced = with_tools(raw, self.client_body, self.tools, first)
        return self._encoded() if spliced is None else spliced

    def _encoded(self) -> bytes | None:
        try:
            return orjson.dumps(self.body)
        except orjson.JSONEncodeError:
            log.warning("MCP injection: %s; this request goes without the injected tools", _TOO_DEEP)
            return None

    async def settle(self, raw: bytes, context: Context | None = None) -> bool:
        """Take one round's answer; run its injected calls when they are due. True: another round follows."""
        answer = answer_object(raw)
        if answer is None:  # not an answer the bridge can read: the client gets it as it is
            return False
        calls = self.shape.calls(answer)
        current = Round(raw, answer, [call for call in calls if call.injected])
        self.rounds.append(current)
        if not current.injected:
            return False
        if len(current.injected) < len(calls):
            current.not_run = NOT_RUN_MIXED
            return False
        if len(self.rounds) >= self.injector.max_rounds:
            current.not_run = NOT_RUN_ROUND_CAP
            MCP_ROUND_CAP.labels(self.shape.tool_format.value).inc()
            log.warning("MCP injection: %d rounds reached, the last injected calls not run", len(self.rounds))
            return False
        requested = [ToolCall(call.name, decode_arguments(call.arguments)) for call in current.injected]
        current.results = await self.injector.call_many(requested, self.user, self.headers, context)
        outputs = [
            ToolOutput(call.call_id, result.content, result.is_error)
            for call, result in zip(current.injected, current.results, strict=True)
        ]
        self.body = self.shape.follow_up(self.body, answer, outputs)
        return True

    def unread(self, raw: bytes) -> bytes | None:
        """The first blocking answer ``raw`` as the client gets it when it provably calls no injected tool,
        found without decoding it: as it is when it names none (most), a Responses answer without the
        injected tools it echoes (:meth:`.Shape.shown`); None: the loop reads it (:meth:`settle`)."""
        injected = count_injected(raw)
        return self.shape.shown(raw, injected) if injected else raw

    def merged(self, last: bytes) -> bytes:
        """The answer the client gets: ``last`` as it is when no round could be read; when the only round
        called no injected tool, ``last`` without the injected tools it may echo; else the rounds merged."""
        if not self.rounds or self.rounds[-1].raw is not last:
            return last
        if len(self.rounds) == 1 and not self.rounds[0].injected:
            return self.shape.unechoed(last, self.rounds[0].answer)
        return orjson.dumps(self.shape.merge([current.answer for current in self.rounds]))


def decode_arguments(text: str) -> Any:
    """The call's arguments as JSON; text that is not JSON stays text (the call then fails as bad arguments)."""
    try:
        return orjson.loads(text or "{}")
    except orjson.JSONDecodeError:
        return text


def answer_object(raw: bytes) -> JsonObject | None:
    try:
        answer = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return answer if isinstance(answer, dict) else None
