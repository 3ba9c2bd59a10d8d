"""One interception: authenticate, parse, forward with the central key, relay, record on the side.

Per provider, everything that can be computed once (upstream URL, key header, parsers) is a
:class:`~aibridge.proxy.providers.spec.ProviderSpec`. The request path does: verify the token (cached),
pass the admission limits (per user, per replica), read and parse the body, pass the user's budgets
(:mod:`aibridge.proxy.guards.budgets`) and the model's circuit breaker, send upstream, then either
return the blocking answer (recording after the response is sent) or relay the stream chunk by chunk
through a tee that parses it. Every end is recorded and logged once
(:mod:`aibridge.proxy.recording.outcome`), including the requests the bridge turns away itself
(``rejected``, ``budget_exceeded``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from typing import cast

from starlette.background import BackgroundTask
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from aibridge.auth import AuthError, Identity, Verifier
from aibridge.events import Event, InterceptionContext, Status
from aibridge.metrics import PROXY_AUTH_FAILURES
from aibridge.pricing import PriceTable
from aibridge.proxy.clients import Client, classify, session_id
from aibridge.proxy.errors import InvalidRequestBody, ProxyError, RequestTooLarge, error_body
from aibridge.proxy.flow import Flow
from aibridge.proxy.guards.breaker import Breakers, parse_retry_after
from aibridge.proxy.guards.budgets import BudgetGuard, Standing, standing_headers
from aibridge.proxy.guards.limits import Admission, Rejection, RejectReason, Ticket, render_rejection
from aibridge.proxy.incoming import authenticate, forward_headers, header_map, read_body
from aibridge.proxy.mcp.injector import McpInjector
from aibridge.proxy.mcp.loop import McpRun
from aibridge.proxy.mcp.recorded import round_events
from aibridge.proxy.mcp.streamed import InjectedRounds, LaterRoundFailed, RoundsTee, prepare_streamed, stream_edit
from aibridge.proxy.providers.records import Provider, ResponseSummary
from aibridge.proxy.providers.spec import ProviderSpec
from aibridge.proxy.recording.deferred import Deferred
from aibridge.proxy.recording.emitter import EventEmitter
from aibridge.proxy.recording.observe import Observation
from aibridge.proxy.recording.outcome import log_interception
from aibridge.proxy.relay import ClientWatch, Relay, RelayResponse, Tee
from aibridge.proxy.upstream.client import Body, Upstream, UpstreamResponse, with_headers
from aibridge.redaction import DEFAULT_POLICY, CapturePolicy, ProviderMessage

log = logging.getLogger("aibridge.proxy")

_ERROR_WINDOW = 4096  # bytes of an upstream error body kept for its record: redacted, then cut to ERROR_LIMIT


class InFlight:
    """Counts requests between admission and their last byte; ``idle`` is set when there are none."""

    def __init__(self) -> None:
        self.count = 0
        self.idle = asyncio.Event()
        self.idle.set()

    def enter(self, ticket: Ticket) -> Callable[[], None]:
        """Count one request in; the returned function (idempotent) counts it out and frees its slot."""
        self.count += 1
        self.idle.clear()
        left = False

        def leave() -> None:
            nonlocal left
            if not left:
                left = True
                ticket.release()
                self.count -= 1
                if self.count == 0:
                    self.idle.set()

        return leave


class Interceptor:
    """Serves one provider's intercepted route."""

    def __init__(
        self,
        spec: ProviderSpec,
        *,
        upstream: Upstream,
        verifier: Verifier,
        emitter: EventEmitter,
        in_flight: InFlight,
        max_body: int,
        admission: Admission,
        breakers: Breakers,
        deferred: Deferred,
        metrics_initiator_label: bool = True,
        capture: CapturePolicy = DEFAULT_POLICY,
        budgets: BudgetGuard | None = None,
        prices: PriceTable | None = None,
        mcp: McpInjector | None = None,
    ) -> None:
        self.spec = spec
        self._mcp = mcp
        self._budgets = budgets
        self._prices = prices
        self._capture = capture
        self._deferred = deferred
        self._initiator_label = metrics_initiator_label
        self._upstream = upstream
        self._verifier = verifier
        self._emitter = emitter
        self._max_body = max_body
        self._in_flight = in_flight
        self._admission = admission
        self._breakers = breakers

    async def handle(self, request: Request) -> Response:
        obs = Observation(request, self.spec.provider.value, self._initiator_label, self._prices)
        http_status = 500
        try:
            with obs.active():
                response = await self._handle(request, obs)
            http_status = response.status_code
            return response
        finally:
            obs.returned(http_status)

    async def _handle(self, request: Request, obs: Observation) -> Response:
        headers = header_map(request.scope["headers"])
        try:
            identity = await authenticate(headers, self._verifier)
        except AuthError as exc:
            PROXY_AUTH_FAILURES.labels(type(exc).__name__).inc()
            log.info("refused %s: %s", request.url.path, exc)
            return self.spec.error(401, str(exc))
        admitted = self._admission.admit(identity.user_id)
        if isinstance(admitted, Rejection):
            return self._reject(self._context(headers, identity, "", False, obs), admitted, obs)
        leave = obs.in_flight(self._in_flight.enter(admitted))
        streaming = False
        try:
            response = await self._admitted(request, headers, identity, leave, obs)
            streaming = isinstance(response, RelayResponse)
            return response
        finally:
            if not streaming:
                leave()

    async def _admitted(
        self,
        request: Request,
        headers: dict[str, str],
        identity: Identity,
        leave: Callable[[], None],
        obs: Observation,
    ) -> Response:
        try:
            raw = await read_body(request.receive, headers, self._max_body)
        except ClientDisconnect:
            return Response(status_code=499)
        except RequestTooLarge as exc:
            return self._invalid(headers, identity, exc, obs)
        try:
            parsed = self.spec.parse_request(raw)
        except InvalidRequestBody as exc:
            return self._invalid(headers, identity, exc, obs)
        obs.processing(parsed.model)
        standing = self._budgets.check(identity) if self._budgets is not None else None
        if isinstance(standing, Rejection):
            return self._reject(self._context(headers, identity, parsed.model, parsed.stream, obs), standing, obs)
        permit = self._breakers.check(self.spec.provider.value, parsed.model)
        if isinstance(permit, Rejection):
            return self._reject(self._context(headers, identity, parsed.model, parsed.stream, obs), permit, obs)
        flow = Flow(self.spec, request, headers, identity, raw, parsed, permit, obs, leave)
        try:
            response = await self._send(flow)
        finally:
            permit.release()
        return _with_standing(response, standing)

    def _context(
        self, headers: dict[str, str], identity: Identity, model: str, streaming: bool, obs: Observation
    ) -> InterceptionContext:
        user_agent = headers.get("user-agent", "")
        context = InterceptionContext(
            initiator_id=identity.user_id,
            initiator_username=identity.username,
            provider=self.spec.provider.value,
            model=model,
            client=classify(user_agent, headers).value,
            streaming=streaming,
            route=self.spec.route,
            api_key_id=identity.token_id,
            user_agent=user_agent,
            capture=self._capture,
        )
        obs.created(context)
        return context

    def _started(self, flow: Flow) -> InterceptionContext:
        """The interception's context: built, and its started event queued, by the first call (from the
        loop right after the request is written upstream, or earlier if something needs it first)."""
        if flow.context is None:
            context = self._context(flow.headers, flow.identity, flow.parsed.model, flow.parsed.stream, flow.obs)
            key = session_id(Client(context.client), flow.headers, flow.parsed.body)
            flow.obs.emit(self._emitter, context.started(session_id=key, turn=flow.parsed.turn))
            flow.context = context
        return flow.context

    def _invalid(self, headers: dict[str, str], identity: Identity, exc: ProxyError, obs: Observation) -> Response:
        context = self._context(headers, identity, "", False, obs)
        obs.emit(self._emitter, context.started())
        self._end(context, Status.INVALID_REQUEST, exc.status, str(exc), obs)
        return self.spec.error(exc.status, str(exc))

    def _reject(self, context: InterceptionContext, rejection: Rejection, obs: Observation) -> Response:
        """The bridge answers itself (a limit, an open breaker, a spent budget): recorded as ``rejected``
        or ``budget_exceeded``."""
        obs.emit(self._emitter, context.started())
        ended = Status.BUDGET_EXCEEDED if rejection.reason is RejectReason.BUDGET_EXCEEDED else Status.REJECTED
        self._end(context, ended, rejection.status, rejection.message, obs)
        status, headers, body = render_rejection(self.spec.provider.value, rejection)
        return Response(body, status, headers)

    async def _send(self, flow: Flow) -> Response:
        """Send upstream first; the interception's context and started event are built while the
        provider works (:meth:`_started`)."""
        body: Body | None = None
        tee: Tee | None = None  # a run streams through its own (:class:`RoundsTee`)
        if self._mcp is not None and self.spec.tool_format is not None:
            run = McpRun.begin(self._mcp, self.spec.tool_format, flow.parsed.body, flow.identity.user_id, flow.headers)
            if run is not None:
                if flow.parsed.stream:
                    prepare_streamed(run, self.spec.tool_format)
                if (body := run.first_body(flow.raw)) is not None:  # None: it goes without injection
                    flow.mcp = run
        if body is None:
            body, tee = self.spec.prepare(flow.parsed, flow.raw)
        query = flow.request.scope["query_string"]
        url = f"{self.spec.url}?{query.decode('latin-1')}" if query else self.spec.url
        headers = forward_headers(flow.request.scope["headers"], self.spec.key_headers)
        flow.obs.sending(headers)
        watch = flow.watch = ClientWatch(flow.request.receive, start=False)
        loop = asyncio.get_running_loop()
        loop.call_soon(self._while_upstream_works, flow)
        # a streamed run's rounds, set up while the provider works (kept here, not on the flow, which its
        # next round's closure refers to: no reference cycle)
        set_up: list[RoundsTee] = []
        if flow.mcp is not None and flow.parsed.stream:
            loop.call_soon(self._set_up_rounds, flow, flow.mcp, url, headers, set_up)
        handed_over = False
        try:
            response = await self._exchange(flow, url, headers, body, tee, set_up)
            handed_over = isinstance(response, RelayResponse)
            return response
        except asyncio.CancelledError:
            if not watch.gone:
                raise
            watch.absorb()
            return await self._client_left(flow)
        finally:
            if not handed_over:
                watch.stop()

    def _while_upstream_works(self, flow: Flow) -> None:
        """Run by the loop right after the request is written upstream, off the path to the provider."""
        self._started(flow)
        if flow.watch is not None:
            flow.watch.start()

    async def _client_left(self, flow: Flow) -> Response:
        for answer in flow.answers:
            await answer.close()  # an unfinished body: the connection is dropped, the provider stops
        flow.obs.upstream_done()
        error = "the client went away before the answer"
        self._record(flow, None, status=Status.CLIENT_DISCONNECTED, http_status=499, error=error)
        return Response(status_code=499)

    async def _exchange(  # noqa: PLR0917
        self, flow: Flow, url: str, headers: dict[str, str], body: Body, tee: Tee | None, set_up: list[RoundsTee]
    ) -> Response:
        """The upstream call and the answer; ``flow.answers`` receives the provider's response once it has
        one. ``tee``: the stream's parser, None when ``flow.mcp`` streams it (:meth:`_stream_rounds`, with
        the rounds in ``set_up`` once :meth:`_set_up_rounds` has run)."""
        obs = flow.obs
        try:
            response = await obs.request(self._upstream.request("POST", url, headers, body))
        except ProxyError as exc:
            self._started(flow)
            flow.permit.failure(type(exc).__name__)
            self._record(flow, None, status=Status.UPSTREAM_ERROR, http_status=exc.status, error=str(exc))
            return self.spec.error(exc.status, str(exc))
        flow.answers.append(response)
        self._started(flow)
        flow.permit.record(response.status, parse_retry_after(_header(response.headers, "retry-after")))
        try:
            if response.status >= 400:
                answer = await obs.read(response)
                message = ProviderMessage.from_body(answer, _ERROR_WINDOW)
                self._record(flow, None, status=Status.UPSTREAM_ERROR, http_status=response.status, error=message)
                return with_headers(Response(answer, response.status), response.headers)
            if flow.parsed.stream and flow.mcp is not None:
                # set up while the provider worked (or now, if the loop has not run that yet)
                return self._stream_rounds(flow, self._set_up_rounds(flow, flow.mcp, url, headers, set_up), response)
            if flow.parsed.stream:
                assert tee is not None  # prepared for every request without a run
                return self._stream(flow, response, tee)
            answer = await obs.read(response)
            if flow.mcp is not None:  # most answers provably call no injected tool: nothing to run or merge
                shown = flow.mcp.unread(answer)
                if shown is None:
                    response, answer = await self._rounds(flow, flow.mcp, url, headers, response, answer)
                else:
                    answer = shown
        except ProxyError as exc:
            self._record(flow, None, status=Status.UPSTREAM_ERROR, http_status=exc.status, error=str(exc))
            return self.spec.error(exc.status, str(exc))
        obs.defer()
        then = cast("BackgroundTask", _Answered(self, flow, answer, response.status))
        return with_headers(Response(answer, response.status, background=then), response.headers)

    async def _rounds(  # noqa: PLR0917
        self, flow: Flow, run: McpRun, url: str, headers: dict[str, str], response: UpstreamResponse, answer: bytes
    ) -> tuple[UpstreamResponse, bytes]:
        """Further rounds while the model calls injected tools only; the client's answer merges them.
        A provider's error in a later round goes to the client as it is. Called for a first answer that
        may call an injected tool (:meth:`McpRun.unread` could not show it calls none)."""
        while response.status < 400 and await run.settle(answer):
            flow.obs.sending(headers)
            response = await flow.obs.request(self._upstream.request("POST", url, headers, run.request_body()))
            flow.answers.append(response)
            answer = await flow.obs.read(response)
        return response, run.merged(answer) if response.status < 400 else answer

    def _stream_rounds(self, flow: Flow, tee: RoundsTee, response: UpstreamResponse) -> RelayResponse:
        """A streamed request with injected tools: the rounds joined into the client's one stream."""
        rounds = tee.rounds
        rounds.first_answer(response)
        return self._stream(flow, rounds, tee, getattr(rounds.edit, "error_event", None))

    def _set_up_rounds(
        self, flow: Flow, run: McpRun, url: str, headers: dict[str, str], set_up: list[RoundsTee]
    ) -> RoundsTee:
        """A streamed run's rounds and their tee (into ``set_up``), before the provider's first answer: run by
        the loop right after the request is written upstream (as :meth:`_while_upstream_works`), off the
        path to the provider and to the client. Set up once: a later call returns what the first made."""
        if set_up:
            return set_up[0]

        async def next_round(body: bytes) -> UpstreamResponse:
            flow.obs.upstream_done()
            flow.obs.sending(headers)
            later = await flow.obs.request(self._upstream.request("POST", url, headers, body))
            flow.answers.append(later)
            if later.status >= 400:
                refused = ProviderMessage.from_body(await flow.obs.read(later), _ERROR_WINDOW)
                raise LaterRoundFailed(f"the provider refused a later round ({later.status}): {refused}")
            return later

        assert self.spec.tool_format is not None  # a run exists only on routes that offer tools
        edit = stream_edit(self.spec.tool_format, flow.parsed.body)
        rounds = InjectedRounds(run, edit, None, next_round, flow.obs.active)
        set_up.append(RoundsTee(rounds, self.spec.parse_response))
        return set_up[0]

    def _stream(
        self,
        flow: Flow,
        response: UpstreamResponse,
        tee: Tee,
        own: Callable[[ProxyError], bytes] | None = None,
    ) -> RelayResponse:
        def finished(relay: Relay, summary: ResponseSummary, status: Status, error: str | None) -> None:
            upstream_error = error if status is Status.UPSTREAM_ERROR else None
            flow.obs.streamed(relay.upstream_wait, relay.client_wait, upstream_error, relay.ended)
            flow.leave()
            self._record(flow, summary, status=status, http_status=response.status, error=error)

        own = own or getattr(tee, "error_event", None)  # an OwnErrorEvents tee (isinstance on a Protocol is slow)
        error_event: Callable[[ProxyError], bytes] = own if own is not None else self._stream_error
        relay = Relay(response, tee, finished, error_event, self._deferred.call)
        flow.obs.defer()
        return with_headers(RelayResponse(relay, response.status, flow.watch), response.headers)

    def answered(self, flow: Flow, answer: bytes, http_status: int) -> None:
        """The blocking answer is sent: its end is now, its recording comes a little later (:mod:`.deferred`)."""
        flow.obs.sent_to_client()
        self._deferred.call(self._record_blocking, flow, answer, http_status)

    def _record_blocking(self, flow: Flow, answer: bytes, http_status: int) -> None:
        summary = self.spec.parse_response(answer)
        if http_status >= 400 and summary.error is None:  # a provider's error in a later MCP round
            summary.error = ProviderMessage.from_body(answer, _ERROR_WINDOW)
        status = Status.COMPLETED if summary.error is None else Status.UPSTREAM_ERROR
        self._record(flow, summary, status=status, http_status=http_status, error=summary.error)

    def _stream_error(self, exc: ProxyError) -> bytes:
        payload = error_body(self.spec.provider, exc.status, str(exc))
        if self.spec.provider is Provider.ANTHROPIC:
            return b"event: error\ndata: " + payload + b"\n\n"
        return b"data: " + payload + b"\n\n"

    def _record(
        self,
        flow: Flow,
        summary: ResponseSummary | None,
        *,
        status: Status,
        http_status: int,
        error: str | None,
    ) -> None:
        context, obs = self._started(flow), flow.obs
        obs.processed(summary)
        ended_at = obs.ended_at()  # the time of each event of the interception's end
        response_id = summary.response_id if summary else ""
        if flow.parsed.prompt is not None:
            obs.emit(self._emitter, context.prompt(flow.parsed.prompt, response_id, occurred_at=ended_at))
        rounds = flow.mcp.rounds if flow.mcp is not None else ()
        for event in round_events(context, rounds, self.spec.parse_response):
            obs.emit(self._emitter, event)
            self._spent(event)
        if summary is not None and summary.usage is not None and not rounds:
            usage = summary.usage
            event = context.token_usage(
                provider_response_id=response_id,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cache_read_input_tokens=usage.cache_read_input_tokens,
                cache_write_input_tokens=usage.cache_write_input_tokens,
                metadata=usage.metadata,
                occurred_at=ended_at,
            )
            obs.emit(self._emitter, event)
            self._spent(event)
        for found in summary.reasoning if summary and not rounds else ():
            reasoning = context.reasoning(found.kind, found.text, response_id, found.metadata, occurred_at=ended_at)
            obs.emit(self._emitter, reasoning)
        for call in summary.tool_calls if summary and not rounds else ():
            obs.emit(
                self._emitter,
                context.tool_usage(
                    provider_response_id=response_id,
                    tool=call.name or "unknown",
                    call_id=call.call_id,
                    tool_input=call.arguments,
                    metadata=call.metadata,
                    occurred_at=ended_at,
                ),
            )
        mcp_calls = sum(len(made.injected) for made in rounds)
        self._end(context, status, http_status, error, obs, summary, mcp_calls, ended_at)

    def _spent(self, event: Event) -> None:
        """A token usage counts against the user's budgets in this replica at once (the store has it later)."""
        if self._budgets is not None:
            self._budgets.recorded(event)

    def _end(  # noqa: PLR0917
        self,
        context: InterceptionContext,
        status: Status,
        http_status: int,
        error: str | None,
        obs: Observation,
        summary: ResponseSummary | None = None,
        mcp_calls: int = 0,
        ended_at: datetime | None = None,
    ) -> None:
        ended_at = ended_at or obs.ended_at()
        obs.emit(self._emitter, context.ended(status, http_status, error, ended_at))
        with obs.active():
            log_interception(context, status, http_status, summary, ended_at, mcp_calls=mcp_calls)
        obs.ended(context, status, http_status)


class _Answered:
    """A blocking response's ``background``, which Starlette awaits after the last byte: it calls
    :meth:`Interceptor.answered`. Not a ``BackgroundTask``, which asks on every call whether its
    function is a coroutine function and awaits a second coroutine."""

    __slots__ = ("_args", "_interceptor")

    def __init__(self, interceptor: Interceptor, flow: Flow, answer: bytes, http_status: int) -> None:
        self._interceptor = interceptor
        self._args = (flow, answer, http_status)

    async def __call__(self) -> None:
        self._interceptor.answered(*self._args)


def _with_standing(response: Response, standing: Standing | None) -> Response:
    """A user past a budget's warning threshold learns from the headers what is left and when it resets."""
    if standing is not None:
        response.raw_headers.extend(standing_headers(standing))
    return response


def _header(headers: list[tuple[str, str]], name: str) -> str | None:
    return next((value for key, value in headers if key.lower() == name), None)
