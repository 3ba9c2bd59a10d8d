"""The recorder's stages, each a small class with one contract (after getsentry/arroyo).

- :class:`Decoder` — message value → :class:`~aibridge.recorder.rows.Row`, or a :class:`Rejection`
  saying why the message can never be stored (bad JSON, schema violation, unstorable value).
- :class:`DeadLetters` — publishes a rejected message, unchanged, to the dead-letter topic with the
  reason and its source in the headers; returns only once the bus accepted it, else raises.
- :class:`Batch` — rows per table plus the next offset per partition of every message it accounts
  for (stored or dead-lettered); full by size or by age.
- :class:`BatchWriter` — one insert per table per batch, in a worker thread; a table written once
  is not written again when the batch is retried. Raises :class:`aibridge.store.StoreError`.
- :class:`Backoff` — bounded exponential delays with jitter for retries.

The pipeline (:mod:`aibridge.recorder.pipeline`) commits a batch's offsets only after
:meth:`BatchWriter.write` returned, so a message is committed only once it is stored or
dead-lettered.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import orjson
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import Error as ClickHouseClientError

from aibridge.bus import BusProducer, Message, Partition
from aibridge.events import InvalidEvent
from aibridge.recorder.rows import COLUMNS, Row, process_event
from aibridge.recorder.validation import validate
from aibridge.store import StoreError

RejectionKind = Literal["invalid_json", "schema", "unstorable"]

REASON_HEADER: Final = "aibridge-dlq-reason"
KIND_HEADER: Final = "aibridge-dlq-kind"
SOURCE_TOPIC_HEADER: Final = "aibridge-dlq-source-topic"
SOURCE_PARTITION_HEADER: Final = "aibridge-dlq-source-partition"
SOURCE_OFFSET_HEADER: Final = "aibridge-dlq-source-offset"
_MAX_REASON: Final = 2000


@dataclass(frozen=True, slots=True)
class Rejection:
    kind: RejectionKind
    reason: str


class Decoder:
    """Decode (orjson), validate (compiled JSON Schema) and process one message; never raises."""

    def decode(self, message: Message) -> Row | Rejection:
        try:
            event = orjson.loads(message.value)
        except orjson.JSONDecodeError as exc:
            return Rejection("invalid_json", f"not valid JSON: {exc}")
        try:
            validate(event)
        except InvalidEvent as exc:
            return Rejection("schema", str(exc))
        try:
            return process_event(event)
        except (KeyError, TypeError, ValueError) as exc:  # InvalidEvent is a ValueError
            return Rejection("unstorable", str(exc) or repr(exc))


class DeadLetters:
    """Publishes rejected messages to ``topic`` with the same key and value."""

    def __init__(self, producer: BusProducer, topic: str) -> None:
        self._producer = producer
        self.topic = topic

    async def send(self, message: Message, rejection: Rejection) -> None:
        """Return once the bus accepted the dead letter; raise :class:`aibridge.bus.BusError` otherwise."""
        headers = [
            *message.headers,
            (REASON_HEADER, rejection.reason[:_MAX_REASON].encode()),
            (KIND_HEADER, rejection.kind.encode()),
            (SOURCE_TOPIC_HEADER, message.partition.topic.encode()),
            (SOURCE_PARTITION_HEADER, str(message.partition.index).encode()),
            (SOURCE_OFFSET_HEADER, str(message.offset).encode()),
        ]
        await self._producer.send(self.topic, message.key, message.value, headers)


@dataclass
class Batch:
    """Rows waiting to be written and the offsets they account for."""

    rows: dict[str, list[tuple[Any, ...]]] = field(default_factory=lambda: {table: [] for table in COLUMNS})
    records: list[Row] = field(default_factory=list)
    offsets: dict[Partition, int] = field(default_factory=dict)
    timestamps_ms: list[int] = field(default_factory=list)
    written_tables: set[str] = field(default_factory=set)
    messages: int = 0
    opened_at: float = 0.0

    def add(self, message: Message, row: Row | None) -> None:
        """Account for ``message``; ``row`` is None when the message was dead-lettered."""
        if not self.messages:
            self.opened_at = time.monotonic()
        self.messages += 1
        self.offsets[message.partition] = message.offset + 1
        if row is not None:
            self.rows[row.table].append(row.values)
            self.records.append(row)
            if message.timestamp_ms:
                self.timestamps_ms.append(message.timestamp_ms)

    def seconds_left(self, max_seconds: float) -> float:
        """Time until this batch is due by age (``max_seconds`` when it is empty)."""
        if not self.messages:
            return max_seconds
        return max(0.0, self.opened_at + max_seconds - time.monotonic())

    def is_due(self, max_rows: int, max_seconds: float) -> bool:
        return self.messages >= max_rows or (self.messages > 0 and self.seconds_left(max_seconds) <= 0)


class BatchWriter:
    """Writes a batch with one insert per non-empty table; blocking I/O runs in a worker thread."""

    def __init__(self, client: Client) -> None:
        self._client = client

    async def write(self, batch: Batch) -> None:
        """Return once every table of the batch is stored; raise :class:`StoreError` otherwise."""
        await asyncio.to_thread(self._write, batch)

    def _write(self, batch: Batch) -> None:
        for table, rows in batch.rows.items():
            if not rows or table in batch.written_tables:
                continue
            try:
                self._client.insert(table, rows, column_names=COLUMNS[table])
            except ClickHouseClientError as exc:
                raise StoreError(f"insert into {table} failed: {_first_line(exc)}") from exc
            except Exception as exc:  # the driver also leaks socket and conversion errors; all mean "not stored"
                raise StoreError(f"insert into {table} failed: {type(exc).__name__}: {_first_line(exc)}") from exc
            batch.written_tables.add(table)


class Backoff:
    """Exponential delays from ``minimum`` to ``maximum`` seconds, each with up to 20 % jitter."""

    def __init__(self, minimum: float, maximum: float) -> None:
        self._minimum = minimum
        self._maximum = maximum
        self._next = minimum

    def next(self) -> float:
        delay = self._next
        self._next = min(self._maximum, self._next * 2)
        return delay * random.uniform(0.8, 1.0)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:500]


def offsets_text(offsets: Mapping[Partition, int]) -> str:
    return ", ".join(f"{p.topic}[{p.index}]@{offset}" for p, offset in sorted(offsets.items(), key=str))
