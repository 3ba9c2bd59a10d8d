"""The recorder's spans, in the traces of the requests that produced its messages.

The proxy's ``Intercept.Record…`` span of each event injects its W3C context into the Kafka message
headers; here it is extracted again, so one trace spans proxy → broker → recorder:

- ``Recorder.Consume`` (kind consumer): decoding and validating one message, as a child of the span
  that published it. Only messages that carry a context get one: a root span per untraced message
  would open a new trace per event.
- ``Recorder.Insert`` (kind client): the store write of the batch that holds the message, one per
  trace among the batch's stored messages, as a child of that trace's first ``Recorder.Consume``
  and timed with the write itself (explicit start and end: the rows were queryable at its end). The
  batch's untraced messages, if any, share one root ``Recorder.Insert``, so a recorder traced on its
  own still shows its writes.

Built only while tracing is on; with it off the pipeline holds no :class:`BatchTracer` and does no
tracing work at all.
"""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode

from aibridge import store, telemetry
from aibridge.bus import Message
from aibridge.recorder.rows import RECORD_TYPES, Row
from aibridge.recorder.stages import Decoder, Rejection

CONSUME_SPAN = "Recorder.Consume"
INSERT_SPAN = "Recorder.Insert"

_EVENT_TYPES = {record_type: str(event_type) for event_type, record_type in RECORD_TYPES.items()}


@dataclass
class _Trace:
    parent: Context
    events: int = 0


class BatchTracer:
    """Consume spans per message and Insert spans per trace of the batch being built."""

    def __init__(self) -> None:
        self._tracer = telemetry.tracer(telemetry.RECORDER_SERVICE)
        self._traces: dict[int, _Trace] = {}
        self._untraced = 0

    def decode(self, decoder: Decoder, message: Message) -> Row | Rejection:
        """``decoder.decode(message)`` inside a ``Recorder.Consume`` span when the message carries a context."""
        parent = telemetry.extract_context(message.headers)
        remote = trace.get_current_span(parent).get_span_context()
        if not remote.is_valid:
            outcome = decoder.decode(message)
            if isinstance(outcome, Row):
                self._untraced += 1
            return outcome
        with self._tracer.start_as_current_span(
            CONSUME_SPAN, context=parent, kind=SpanKind.CONSUMER, attributes=_message_attributes(message)
        ) as span:
            outcome = decoder.decode(message)
            _describe(span, outcome)
        if isinstance(outcome, Row):
            known = self._traces.setdefault(remote.trace_id, _Trace(trace.set_span_in_context(span)))
            known.events += 1
        return outcome

    def inserted(self, batch_events: int, start_ns: int, end_ns: int, attempts: int) -> None:
        """The batch was stored between ``start_ns`` and ``end_ns`` (epoch nanoseconds)."""
        groups = [(known.parent, known.events) for known in self._traces.values()]
        if self._untraced:
            groups.append((Context(), self._untraced))
        for parent, events in groups:
            span = self._tracer.start_span(
                INSERT_SPAN,
                context=parent,
                kind=SpanKind.CLIENT,
                start_time=start_ns,
                attributes={
                    "db.system.name": "clickhouse",
                    "db.operation.name": "INSERT",
                    "aibridge.batch.events": batch_events,
                    "aibridge.batch.trace_events": events,
                    "aibridge.write.attempts": attempts,
                },
            )
            span.end(end_time=end_ns)

    def reset(self) -> None:
        """A new batch begins."""
        self._traces.clear()
        self._untraced = 0


def _message_attributes(message: Message) -> dict[str, str | int]:
    return {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.destination.name": message.partition.topic,
        "messaging.destination.partition.id": str(message.partition.index),
        "messaging.kafka.offset": message.offset,
    }


def _describe(span: trace.Span, outcome: Row | Rejection) -> None:
    if isinstance(outcome, Rejection):
        # The reason can quote the message's content (a prompt, a tool input): only its kind goes here.
        span.set_status(Status(StatusCode.ERROR, f"rejected to the dead-letter topic: {outcome.kind}"))
        span.set_attribute("aibridge.rejection.kind", outcome.kind)
        return
    span.set_attribute("aibridge.event.type", _EVENT_TYPES.get(outcome.record_type, outcome.record_type))
    span.set_attribute("aibridge.interception_id", str(_interception_id(outcome)))


def _interception_id(row: Row) -> object:
    return row.values[0] if row.table == store.INTERCEPTIONS else row.values[1]
