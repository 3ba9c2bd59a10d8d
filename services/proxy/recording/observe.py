"""Metrics and spans of one interception, from its arrival to its last byte (docs/observability.md).

One :class:`Observation` per intercepted request carries what they need between
:meth:`Interceptor.handle <aibridge.proxy.intercept.Interceptor.handle>` and its end: the arrival time,
the time spent waiting on the upstream and on the client (the bridge's overhead is the rest), the
in-flight labels and — only while tracing is on — the spans. With tracing off it builds no span, no
attribute dict and no header; what remains per request is the Prometheus bookkeeping.

Span tree (names as in Coder's AI Bridge)::

    Intercept                                  arrival → last byte → recorded (server span; continues a traceparent)
    ├── Intercept.CreateInterceptor            token, admission, body, parse, interception context
    ├── Intercept.ProcessRequest               breaker, upstream call, relaying the answer
    │   ├── Intercept.ProcessRequest.Upstream  request sent → last upstream byte read (event "first byte")
    │   └── Intercept.ProcessRequest.ToolCall  one per tool call the model selected
    ├── Intercept.RecordInterception           one per event queued for the bus; each injects its own
    ├── Intercept.RecordPromptUsage            context into the event's Kafka headers, so the
    ├── Intercept.RecordTokenUsage             recorder's spans join this trace
    ├── Intercept.RecordToolUsage
    └── Intercept.RecordInterceptionEnded
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, nullcontext
from datetime import datetime, timedelta
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from starlette.requests import Request

from aibridge import metrics, pricing, telemetry
from aibridge.bus import Headers
from aibridge.events import Event, EventType, InterceptionContext, utcnow
from aibridge.events import Status as Outcome
from aibridge.pricing import PriceTable, Rates
from aibridge.proxy.errors import ProxyError
from aibridge.proxy.providers.records import ResponseSummary
from aibridge.proxy.recording.emitter import EventEmitter
from aibridge.proxy.recording.tally import tally
from aibridge.proxy.upstream.client import UpstreamResponse

INTERCEPT = "Intercept"
CREATE = "Intercept.CreateInterceptor"
PROCESS = "Intercept.ProcessRequest"
UPSTREAM = "Intercept.ProcessRequest.Upstream"
TOOL_CALL = "Intercept.ProcessRequest.ToolCall"
PASSTHROUGH = "Passthrough"
RECORD_SPANS = {
    EventType.INTERCEPTION_STARTED: "Intercept.RecordInterception",
    EventType.PROMPT: "Intercept.RecordPromptUsage",
    EventType.TOKEN_USAGE: "Intercept.RecordTokenUsage",
    EventType.TOOL_USAGE: "Intercept.RecordToolUsage",
    EventType.INTERCEPTION_ENDED: "Intercept.RecordInterceptionEnded",
}
_TOKEN_FIELDS: tuple[tuple[metrics.TokenType, str], ...] = (
    ("input", "input_tokens"),
    ("output", "output_tokens"),
    ("cache_read", "cache_read_input_tokens"),
    ("cache_write", "cache_write_input_tokens"),
)
_FAILED = frozenset({Outcome.UPSTREAM_ERROR, Outcome.BRIDGE_ERROR})
_UNCOUNTED = frozenset({EventType.INTERCEPTION_STARTED, EventType.INTERCEPTION_ENDED, EventType.REASONING})
_PROMPT, _TOOL_USAGE = EventType.PROMPT.value, EventType.TOOL_USAGE.value


class _Spans:
    """The open spans of one interception (tracing on only)."""

    def __init__(self, request: Request, provider: str) -> None:
        self.tracer = telemetry.tracer(telemetry.PROXY_SERVICE)
        self.intercept = self.tracer.start_span(
            INTERCEPT,
            context=telemetry.extract_from_http(request.headers.raw),
            kind=SpanKind.SERVER,
            attributes={
                "aibridge.provider": provider,
                "url.path": request.url.path,
                "http.request.method": request.method,
            },
        )
        self.context = trace.set_span_in_context(self.intercept)
        self.create: Span | None = self.tracer.start_span(CREATE, context=self.context)
        self.process: Span | None = None
        self.upstream: Span | None = None

    def child(self, name: str, parent: Span | None = None, **attributes: Any) -> Span:
        context = self.context if parent is None else trace.set_span_in_context(parent)
        return self.tracer.start_span(name, context=context, attributes=attributes)


class Observation:
    def __init__(
        self, request: Request, provider: str, include_initiator: bool, prices: PriceTable | None = None
    ) -> None:
        self.arrival = time.perf_counter()
        self.method = request.method
        self.provider = provider
        self.include_initiator = include_initiator
        self.prices = prices or pricing.builtin()
        self.upstream_wait = 0.0
        self.client_wait = 0.0
        self.sent_upstream = False
        self.deferred = False
        self._model = ""
        self._returned_at = 0.0
        self._end = 0.0  # when the answer ended (perf_counter), once known; recording may come later
        self._counts_in_flight = False
        self._in_flight: tuple[str, str, str] | None = None
        self._spans = _Spans(request, provider) if telemetry.enabled() else None

    # ---- the request's phases ---------------------------------------------------------------------

    def active(self) -> Any:
        """Make ``Intercept`` the current span (log records become its events with trace logs on)."""
        return nullcontext() if self._spans is None else trace.use_span(self._spans.intercept, end_on_exit=False)

    def in_flight(self, leave: Callable[[], None]) -> Callable[[], None]:
        """``leave`` (idempotent), also counting this interception out of the in-flight gauge."""
        self._counts_in_flight = True

        def both() -> None:
            leave()
            if self._in_flight is not None:
                metrics.child(metrics.PROXY_INTERCEPTIONS_IN_FLIGHT, *self._in_flight).dec()
                self._in_flight = None

        return both

    def created(self, context: InterceptionContext) -> None:
        """The interception context exists: the model is known."""
        self._model = metrics.model_label(context.model)
        if self._counts_in_flight and self._in_flight is None:
            self._in_flight = (context.provider, self._model, context.route)
            metrics.child(metrics.PROXY_INTERCEPTIONS_IN_FLIGHT, *self._in_flight).inc()
        if self._spans is not None:
            _describe(self._spans.intercept, context)
            self._end_create()

    def processing(self, model: str) -> None:
        """The request is parsed and goes on to the upstream (the model is known)."""
        self._model = metrics.model_label(model)
        if self._spans is not None:
            self._end_create()
            self._spans.process = self._spans.child(PROCESS)

    def sending(self, headers: dict[str, str]) -> None:
        """The request is about to go upstream: the ``Upstream`` span starts (tracing on) and the
        forwarded ``headers`` carry its context, so the provider's side joins this trace under it."""
        spans = self._spans
        if spans is None:
            return
        spans.upstream = spans.child(UPSTREAM, spans.process, **{"server.address": self.provider})
        telemetry.trace_http_headers(headers, trace.set_span_in_context(spans.upstream))

    async def request(self, call: Awaitable[UpstreamResponse]) -> UpstreamResponse:
        """Await the upstream's status line and headers (time to first byte); :meth:`sending` first."""
        self.sent_upstream = True
        spans = self._spans
        started = time.perf_counter()
        try:
            response = await call
        except ProxyError as exc:
            self.upstream_wait += time.perf_counter() - started
            self.upstream_done(exc)
            raise
        waited = time.perf_counter() - started
        self.upstream_wait += waited
        metrics.child(metrics.PROXY_UPSTREAM_TTFB_SECONDS, self.provider, self._model).observe(waited)
        if spans is not None and spans.upstream is not None:
            spans.upstream.add_event("first byte")
            spans.upstream.set_attribute("http.response.status_code", response.status)
        return response

    async def read(self, response: UpstreamResponse) -> bytes:
        """The whole upstream body; ends the ``Upstream`` span."""
        started = time.perf_counter()
        try:
            answer = await response.read()
        except ProxyError as exc:
            self.upstream_done(exc)
            raise
        finally:
            self.upstream_wait += time.perf_counter() - started
        self.upstream_done()
        return answer

    def upstream_done(self, error: BaseException | str | None = None) -> None:
        spans = self._spans
        if spans is None or spans.upstream is None:
            return
        if error is not None:
            if isinstance(error, BaseException):
                spans.upstream.record_exception(error)
            spans.upstream.set_status(Status(StatusCode.ERROR, type(error).__name__))
        spans.upstream.end(end_time=self._end_time_ns())  # a stream's: when the relay ended, before its recording
        spans.upstream = None

    def streamed(self, upstream_wait: float, client_wait: float, error: str | None, ended: float) -> None:
        """A relayed stream finished (at ``ended``, perf_counter); the waits are the relay's."""
        self.upstream_wait += upstream_wait
        self.client_wait += client_wait
        self._end = ended
        self.upstream_done(error)

    def defer(self) -> None:
        """The interception ends after the response was returned (a stream, or recording in the background)."""
        self.deferred = True

    def returned(self, http_status: int) -> None:
        """The handler returned; close everything unless the end comes later."""
        if self.deferred:
            self._returned_at = time.perf_counter()
            return
        self._close(http_status, None)

    def sent_to_client(self) -> None:
        """A blocking answer has been written to the client: the interception's end (recorded later)."""
        self._end = time.perf_counter()
        if self._returned_at:
            self.client_wait += self._end - self._returned_at

    def ended_at(self) -> datetime:
        """When the answer ended, as a UTC time (now, if it has not been marked)."""
        now = utcnow()
        return now - timedelta(seconds=time.perf_counter() - self._end) if self._end else now

    def processed(self, summary: ResponseSummary | None) -> None:
        """The answer is through: one ``ToolCall`` span per selected tool, then ``ProcessRequest`` ends."""
        spans = self._spans
        if spans is None or spans.process is None:
            return
        for call in summary.tool_calls if summary else ():
            attributes = {"aibridge.tool.name": call.name or "unknown", "aibridge.tool.call_id": call.call_id}
            spans.child(TOOL_CALL, spans.process, **attributes).end()
        spans.process.end()
        spans.process = None

    # ---- recording ----------------------------------------------------------------------------------

    def emit(self, emitter: EventEmitter, event: Event) -> None:
        """Queue ``event`` for the bus (in its ``Intercept.Record…`` span, whose context rides along in the
        message headers) and count it in the usage metrics."""
        _count(event, self.include_initiator, self.prices)
        if self._spans is None:
            emitter.emit(event)
            return
        kind = event["type"]
        attributes: dict[str, Any] = {"aibridge.event.type": kind, "aibridge.interception_id": event["interception_id"]}
        if kind == EventType.TOOL_USAGE:
            attributes |= {"aibridge.tool.name": event["tool"], "aibridge.tool.call_id": event["call_id"]}
        span = self._spans.child(RECORD_SPANS[EventType(kind)], **attributes)
        headers: Headers = telemetry.inject_headers(trace.set_span_in_context(span))
        emitter.emit(event, headers)
        span.end()

    def ended(self, context: InterceptionContext, status: Outcome, http_status: int) -> None:
        """The interception's end: the ended counter, duration and overhead; every span closes."""
        labels = metrics.interception_labels(
            provider=context.provider,
            model=self._model,
            status=status.value,
            route=context.route,
            method=self.method,
            client=context.client,
            initiator=context.initiator_username,
            include_initiator=self.include_initiator,
        )
        ended, durations, overheads = _end_metrics(labels, context.streaming)
        tally.add(ended)
        duration = (self._end or time.perf_counter()) - self.arrival
        tally.observe(durations, duration)
        if self.sent_upstream:
            tally.observe(overheads, max(0.0, duration - self.upstream_wait - self.client_wait))
        self._close(http_status, status)

    def _end_create(self) -> None:
        if self._spans is not None and self._spans.create is not None:
            self._spans.create.end()
            self._spans.create = None

    def _close(self, http_status: int, status: Outcome | None) -> None:
        spans, self._spans = self._spans, None
        if spans is None:
            return
        for span in (spans.create, spans.upstream, spans.process):
            if span is not None:
                span.end()
        spans.intercept.set_attribute("http.response.status_code", http_status)
        if status is not None:
            spans.intercept.set_attribute("aibridge.status", status.value)
        if status in _FAILED or http_status >= 500:
            spans.intercept.set_status(Status(StatusCode.ERROR))
        spans.intercept.end()  # after the recording, which it contains (the Record spans)

    def _end_time_ns(self) -> int | None:
        """The answer's end as a span end time (None: now)."""
        if not self._end:
            return None
        return time.time_ns() - round((time.perf_counter() - self._end) * 1e9)


def _describe(span: Span, context: InterceptionContext) -> None:
    span.set_attributes(
        {
            "aibridge.interception_id": context.interception_id,
            "aibridge.user_id": context.initiator_id,
            "aibridge.username": context.initiator_username,
            "aibridge.model": context.model,
            "aibridge.client": context.client,
            "aibridge.streaming": context.streaming,
            "http.route": context.route,
        }
    )


_END_METRICS: dict[tuple[tuple[str, ...], bool], tuple[Any, Any, Any]] = {}


def _end_metrics(labels: tuple[str, ...], streaming: bool) -> tuple[Any, Any, Any]:
    """The ended counter, the duration and the overhead histograms of one label set (remembered)."""
    found = _END_METRICS.get((labels, streaming))
    if found is None:
        provider, model = labels[0], labels[1]
        flag = "true" if streaming else "false"
        found = _END_METRICS[(labels, streaming)] = (
            metrics.child(metrics.PROXY_INTERCEPTIONS_ENDED, *labels),
            metrics.child(metrics.PROXY_INTERCEPTION_DURATION_SECONDS, provider, model, flag),
            metrics.child(metrics.PROXY_OVERHEAD_SECONDS, provider, flag),
        )
    return found


_USAGE_COUNTERS: dict[tuple[str, str, str, str], tuple[Any, ...]] = {}


def _usage_counters(labels: tuple[str, str, str, str]) -> tuple[Any, ...]:
    """The prompt counter and the four token counters of one label set (looked up once, then remembered)."""
    found = _USAGE_COUNTERS.get(labels)
    if found is None:
        tokens = tuple(metrics.child(metrics.PROXY_TOKENS, *labels, token_type) for token_type, _ in _TOKEN_FIELDS)
        found = _USAGE_COUNTERS[labels] = (metrics.child(metrics.PROXY_PROMPTS, *labels), *tokens)
    return found


def _count(event: Event, include_initiator: bool, prices: PriceTable) -> None:
    kind = event["type"]
    if kind in _UNCOUNTED:
        return
    provider, model, client = event["provider"], metrics.model_label(event["model"]), event["client"]
    if kind == _TOOL_USAGE:
        tally.add(metrics.child(metrics.PROXY_TOOL_SELECTIONS, provider, model, client))
        return
    labels = metrics.usage_labels(
        provider=provider,
        model=model,
        client=client,
        initiator=event["initiator"]["username"],
        include_initiator=include_initiator,
    )
    prompts, *tokens = _usage_counters(labels)
    if kind == _PROMPT:
        tally.add(prompts)
        return
    for counter, (_, field) in zip(tokens, _TOKEN_FIELDS, strict=True):
        if count := event[field]:  # the series exists from the lookup; adding 0 changes nothing
            tally.add(counter, count)
    _count_cost(event, model, labels[-1], prices)


def _count_cost(event: Event, model_label: str, initiator_label: str, prices: PriceTable) -> None:
    """The cost counter, in floats (a Prometheus counter is one): the same rates and tiers as the
    recorded cost, which the recorder computes exactly (:mod:`aibridge.pricing`)."""
    provider = event["provider"]
    price = prices.resolve(provider, event["model"])
    if price is None:
        tally.add(metrics.child(metrics.PROXY_UNPRICED_INTERCEPTIONS, provider, model_label))
        return
    fresh, output = event["input_tokens"], event["output_tokens"]
    read, written = event["cache_read_input_tokens"], event["cache_write_input_tokens"]
    per_token = _per_token(price.rates_for(fresh + read + written))
    cost = fresh * per_token[1] + output * per_token[2] + read * per_token[3] + written * per_token[4]
    tally.add(metrics.child(metrics.PROXY_COST_USD, provider, model_label, initiator_label), cost)


_PER_TOKEN: dict[int, tuple[Rates, float, float, float, float]] = {}


def _per_token(rates: Rates) -> tuple[Rates, float, float, float, float]:
    """USD per token of each kind as floats, remembered per rates object (kept in the entry, so a
    reused ``id`` of a price table's discarded rates is never mistaken for it)."""
    found = _PER_TOKEN.get(id(rates))
    if found is None or found[0] is not rates:
        million = 1_000_000
        found = _PER_TOKEN[id(rates)] = (
            rates,
            float(rates.input) / million,
            float(rates.output) / million,
            float(rates.cache_read) / million,
            float(rates.cache_write) / million,
        )
    return found


@contextmanager
def passthrough_span(request: Request, provider: str, route: str) -> Iterator[Span]:
    """The ``Passthrough`` server span of a forwarded route (call only with tracing on)."""
    tracer = telemetry.tracer(telemetry.PROXY_SERVICE)
    context: Context = telemetry.extract_from_http(request.headers.raw)
    attributes = {
        "aibridge.provider": provider,
        "http.route": route,
        "http.request.method": request.method,
        "url.path": request.url.path,
    }
    with tracer.start_as_current_span(
        PASSTHROUGH, context=context, kind=SpanKind.SERVER, attributes=attributes
    ) as span:
        yield span
