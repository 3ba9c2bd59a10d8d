"""OpenTelemetry tracing for every component, off by default and then free of cost.

Each component asks :func:`tracer` for its tracer by service name (``aibridge-proxy``,
``aibridge-recorder``, ``aibridge-api``). With tracing disabled that is OpenTelemetry's no-op tracer.
With it enabled, each service name gets its own ``TracerProvider`` (so ``service.name`` is right
even when ``aibridge up`` hosts all three in one process), exporting over OTLP as configured by the
standard ``OTEL_EXPORTER_OTLP_*`` variables (``grpc`` or ``http/protobuf``).

Trace context crosses Kafka in the W3C ``traceparent``/``tracestate`` message headers
(:func:`inject_headers`, :func:`extract_context`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from aibridge import __version__

PROXY_SERVICE = "aibridge-proxy"
RECORDER_SERVICE = "aibridge-recorder"
API_SERVICE = "aibridge-api"

_propagator = TraceContextTextMapPropagator()
_lock = threading.Lock()


class OtlpSettings(BaseSettings):
    """The standard OpenTelemetry exporter variables this module needs to choose an exporter."""

    model_config = SettingsConfigDict(env_prefix="OTEL_EXPORTER_OTLP_", extra="ignore")

    protocol: str = Field(default="grpc", description="grpc or http/protobuf")
    traces_protocol: str | None = None


@dataclass
class _State:
    enabled: bool = False
    trace_logs: bool = False
    exporter: SpanExporter | None = None
    providers: dict[str, TracerProvider] | None = None


_state = _State()


def configure(enabled: bool, *, trace_logs: bool = False, exporter: SpanExporter | None = None) -> None:
    """Turn tracing on or off for this process. ``exporter`` replaces OTLP (tests use an in-memory one)."""
    with _lock:
        _shutdown_providers()
        _state.enabled, _state.trace_logs, _state.exporter = enabled, trace_logs and enabled, exporter
        _state.providers = {}
    _install_log_handler(_state.trace_logs)


def enabled() -> bool:
    return _state.enabled


def tracer(service: str) -> trace.Tracer:
    if not _state.enabled:
        return trace.NoOpTracer()
    with _lock:
        providers = _state.providers if _state.providers is not None else {}
        _state.providers = providers
        provider = providers.get(service)
        if provider is None:
            provider = providers[service] = _new_provider(service)
    return provider.get_tracer("aibridge", __version__)


def _new_provider(service: str) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": service, "service.version": __version__}))
    if _state.exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(_state.exporter))
    else:
        provider.add_span_processor(BatchSpanProcessor(_otlp_exporter()))
    return provider


def _otlp_exporter() -> SpanExporter:
    settings = OtlpSettings()
    protocol = (settings.traces_protocol or settings.protocol).lower()
    if protocol.startswith("http"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        return HttpExporter()
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

    return GrpcExporter()


def shutdown() -> None:
    """Flush and close every provider (call at process exit)."""
    with _lock:
        _shutdown_providers()


def _shutdown_providers() -> None:
    for provider in (_state.providers or {}).values():
        provider.shutdown()
    _state.providers = {}


def inject_headers(context: Context | None = None) -> list[tuple[str, bytes]]:
    """W3C trace context of the current (or given) span as Kafka message headers."""
    if not _state.enabled:
        return []
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, context=context)
    return [(name, value.encode()) for name, value in carrier.items()]


def trace_http_headers(headers: dict[str, str], context: Context | None = None) -> None:
    """Replace any W3C trace context in outgoing HTTP ``headers`` with the current (or given) span's.

    With tracing on, the provider then continues the bridge's span rather than the client's (which the
    bridge's own server span continues). With tracing off this does nothing: the client's headers go
    through untouched, as a transparent proxy's would.
    """
    if not _state.enabled:
        return
    for name in [name for name in headers if name.lower() in _HEADER_NAMES]:
        del headers[name]
    _propagator.inject(headers, context=context)


def extract_context(headers: Iterable[tuple[str, bytes]]) -> Context:
    """The trace context carried by Kafka message headers (empty context when none)."""
    carrier = {name.lower(): value.decode("latin-1") for name, value in headers if name.lower() in _HEADER_NAMES}
    return _propagator.extract(carrier)


def extract_from_http(headers: Sequence[tuple[bytes, bytes]]) -> Context:
    """The trace context of an incoming HTTP request (ASGI raw headers)."""
    carrier = {name.decode("latin-1"): value.decode("latin-1") for name, value in headers if name in _RAW_NAMES}
    return _propagator.extract(carrier)


_HEADER_NAMES = frozenset(_propagator.fields)
_RAW_NAMES = frozenset(name.encode() for name in _propagator.fields)


class SpanEventHandler(logging.Handler):
    """Attaches each log record to the active span as a span event (``AIBRIDGE_TRACE_LOGS``)."""

    def emit(self, record: logging.LogRecord) -> None:
        span = trace.get_current_span()
        if not span.is_recording():
            return
        span.add_event(
            record.getMessage(),
            {"log.severity": record.levelname, "log.logger": record.name, "code.function": record.funcName},
        )


_span_handler = SpanEventHandler()


def _install_log_handler(install: bool) -> None:
    root = logging.getLogger()
    if install and _span_handler not in root.handlers:
        root.addHandler(_span_handler)
    elif not install and _span_handler in root.handlers:
        root.removeHandler(_span_handler)
