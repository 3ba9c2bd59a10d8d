"""The recorder's stages, each a small class with one contract (after getsentry/arroyo).

- :class:`Decoder` — message value → :class:`~aibridge.recorder.rows.Row`, or a :class:`Rejection`
  saying why the message can never be stored (bad JSON, schema violation, unstorable value).
- :class:`DeadLetters` — publishes a rejected message, unchanged, to the dead-letter topic with the
  reason and its source in the headers; returns only once the bus accepted it, else raises.
- :class:`Batch` — rows per table, each with its message, plus the next offset per partition of every
  message it accounts for (stored or dead-lettered); full by size or by age.
- :class:`BatchWriter` — inserts rows into a table in a worker thread; raises
  :class:`aibridge.store.StoreRejected` when the store refuses the rows' data, else
  :class:`aibridge.store.StoreUnavailable`.
- :class:`Backoff` — bounded exponential delays with jitter for retries.

The pipeline (:mod:`aibridge.recorder.pipeline`) commits a batch's offsets only after every table
of it was written (its refused rows isolated and dead-lettered), so a message is committed only
once it is stored or dead-lettered.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import orjson
from clickhouse_connect.driver.client import Client

from aibridge import store
from aibridge.bus import BusProducer, Message, Partition
from aibridge.events import InvalidEvent
from aibridge.pricing import PriceTable
from aibridge.recorder.rows import COLUMNS, Row, process_event
from aibridge.recorder.validation import validate

# store_rejected: the event decoded and validated, but the store refuses its row every time
# (see aibridge.store.StoreRejected); the other kinds are decided before the store is asked.
RejectionKind = Literal["invalid_json", "schema", "unstorable", "store_rejected"]

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
    """Decode (orjson), validate (compiled JSON Schema) and process one message; never raises.
    Token usages are priced by ``prices`` (default: the built-in table)."""

    def __init__(self, prices: PriceTable | None = None) -> None:
        self._prices = prices

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
            return process_event(event, self._prices)
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


Entry = tuple[Message, Row]


@dataclass
class Batch:
    """Rows waiting to be written (each with the message it came from) and the offsets they account for."""

    entries: dict[str, list[Entry]] = field(default_factory=lambda: {table: [] for table in COLUMNS})
    records: list[Row] = field(default_factory=list)
    offsets: dict[Partition, int] = field(default_factory=dict)
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
            self.entries[row.table].append((message, row))
            self.records.append(row)

    def unwritten_tables(self) -> list[str]:
        return [table for table, entries in self.entries.items() if entries and table not in self.written_tables]

    def values(self, table: str) -> list[tuple[Any, ...]]:
        return [row.values for _, row in self.entries[table]]

    def remove(self, table: str, indexes: Collection[int]) -> list[Entry]:
        """Take the entries at ``indexes`` of ``table`` out of the rows to store and log; return them.
        Their messages stay accounted for (their offsets are still committed with the batch)."""
        entries, wanted = self.entries[table], set(indexes)
        removed = [entries[index] for index in sorted(wanted)]
        self.entries[table] = [entry for index, entry in enumerate(entries) if index not in wanted]
        gone = {id(row) for _, row in removed}
        self.records = [row for row in self.records if id(row) not in gone]
        return removed

    def seconds_left(self, max_seconds: float) -> float:
        """Time until this batch is due by age (``max_seconds`` when it is empty)."""
        if not self.messages:
            return max_seconds
        return max(0.0, self.opened_at + max_seconds - time.monotonic())

    def is_due(self, max_rows: int, max_seconds: float) -> bool:
        return self.messages >= max_rows or (self.messages > 0 and self.seconds_left(max_seconds) <= 0)


class BatchWriter:
    """Inserts rows, one insert per call; blocking I/O runs in a worker thread."""

    def __init__(self, client: Client) -> None:
        self._client = client

    async def insert(self, table: str, rows: Sequence[Sequence[Any]]) -> None:
        """Return once ``rows`` are stored in ``table``; raise :class:`aibridge.store.StoreError` otherwise."""
        await asyncio.to_thread(store.insert, self._client, table, rows, COLUMNS[table])

    async def write(self, batch: Batch) -> None:
        """Insert every table of ``batch`` not yet written, one insert each; the first failure is raised."""
        for table in batch.unwritten_tables():
            await self.insert(table, batch.values(table))
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


def offsets_text(offsets: Mapping[Partition, int]) -> str:
    return ", ".join(f"{p.topic}[{p.index}]@{offset}" for p, offset in sorted(offsets.items(), key=str))
