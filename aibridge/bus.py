"""The message bus seam between the proxy and the recorder.

Two implementations of one contract: Kafka (``aibridge.proxy.publisher`` produces,
``aibridge.recorder.consumer`` consumes, both with aiokafka) and :class:`InProcessBus`, an in-memory
partitioned log for the embedded ``aibridge up``. The recorder's stages only see :class:`BusConsumer`
and the proxy's emitter only sees :class:`BusProducer`, so both modes run the same code.

Consumer contract (as Kafka's): messages of a partition arrive in offset order; ``commit`` takes the
*next* offset to read per partition; after a restart a group resumes at its committed offsets.
"""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import orjson

Headers = Sequence[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class Partition:
    topic: str
    index: int


@dataclass(frozen=True, slots=True)
class Message:
    partition: Partition
    offset: int
    key: bytes | None
    value: bytes
    headers: Headers = ()
    timestamp_ms: int = 0


class BusError(Exception):
    """The bus could not take or deliver a message (broker unreachable, timeout, rejected)."""


class BusProducer(Protocol):
    async def start(self) -> None: ...

    async def send(self, topic: str, key: bytes | None, value: bytes, headers: Headers = ()) -> None:
        """Return once the bus has accepted the message; raise :class:`BusError` otherwise."""

    async def stop(self) -> None: ...


OutgoingMessage = tuple[bytes | None, bytes, Headers]  # key, value, headers


@runtime_checkable
class BatchProducer(Protocol):
    """A producer that can take many messages at once, cheaper than one :meth:`BusProducer.send` each."""

    async def send_batch(self, topic: str, messages: Sequence[OutgoingMessage]) -> list[BusError | None]:
        """Hand every message to the bus, then wait for all of them; per message, None once the bus
        accepted it, else the :class:`BusError` saying why not (the others are not affected)."""


class BusConsumer(Protocol):
    async def start(self) -> None: ...

    async def poll(self, max_records: int, timeout: float) -> list[Message]:
        """Up to ``max_records`` messages, waiting at most ``timeout`` seconds for the first."""

    async def commit(self, offsets: Mapping[Partition, int]) -> None: ...

    def pause(self) -> None:
        """Stop fetching new messages (backpressure); ``poll`` then returns nothing."""

    def resume(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass
class _Log:
    messages: list[Message] = field(default_factory=list)
    committed: int = 0
    position: int = 0


class InProcessBus:
    """A partitioned in-memory log with one consumer group. Messages live until committed."""

    def __init__(self, partitions: int = 1) -> None:
        self._partitions = partitions
        self._logs: dict[Partition, _Log] = {}
        self._arrived = asyncio.Event()

    def producer(self) -> InProcessProducer:
        return InProcessProducer(self)

    def consumer(self, topic: str) -> InProcessConsumer:
        return InProcessConsumer(self, topic)

    def append(self, topic: str, key: bytes | None, value: bytes, headers: Headers) -> None:
        index = zlib.crc32(key) % self._partitions if key else 0
        partition = Partition(topic, index)
        log = self._logs.setdefault(partition, _Log())
        offset = log.committed + len(log.messages)
        log.messages.append(Message(partition, offset, key, value, tuple(headers)))
        self._arrived.set()

    def take(self, topic: str, max_records: int) -> list[Message]:
        taken: list[Message] = []
        for partition, log in self._logs.items():
            if partition.topic != topic:
                continue
            start = log.position - log.committed
            batch = log.messages[start : start + max_records - len(taken)]
            log.position += len(batch)
            taken.extend(batch)
        if not taken:
            self._arrived.clear()
        return taken

    async def wait(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._arrived.wait(), timeout)

    def commit(self, offsets: Mapping[Partition, int]) -> None:
        for partition, next_offset in offsets.items():
            log = self._logs[partition]
            drop = next_offset - log.committed
            if drop > 0:
                del log.messages[:drop]
                log.committed = next_offset

    def rewind(self, topic: str) -> None:
        """Forget uncommitted reads, as a consumer group does when a member restarts."""
        for partition, log in self._logs.items():
            if partition.topic == topic:
                log.position = log.committed

    def pending(self, topic: str | None = None) -> int:
        """Messages not yet committed (of one topic, or of all)."""
        return sum(len(log.messages) for p, log in self._logs.items() if topic in (None, p.topic))

    def unread(self, topic: str) -> int:
        """Messages of ``topic`` not yet taken by its consumer (the consumer lag)."""
        return sum(
            log.committed + len(log.messages) - log.position for p, log in self._logs.items() if p.topic == topic
        )


class InProcessProducer:
    def __init__(self, bus: InProcessBus) -> None:
        self._bus = bus

    async def start(self) -> None:
        return None

    async def send(self, topic: str, key: bytes | None, value: bytes, headers: Headers = ()) -> None:
        self._bus.append(topic, key, value, headers)

    async def stop(self) -> None:
        return None


class InProcessConsumer:
    def __init__(self, bus: InProcessBus, topic: str) -> None:
        self._bus = bus
        self._topic = topic
        self._paused = False

    async def start(self) -> None:
        self._bus.rewind(self._topic)

    async def poll(self, max_records: int, timeout: float) -> list[Message]:
        if self._paused:
            await asyncio.sleep(timeout)
            return []
        messages = self._bus.take(self._topic, max_records)
        if not messages:
            await self._bus.wait(timeout)
            messages = self._bus.take(self._topic, max_records)
        return messages

    async def commit(self, offsets: Mapping[Partition, int]) -> None:
        self._bus.commit(offsets)

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        self._paused = False

    async def lag(self) -> int:
        return self._bus.unread(self._topic)

    async def stop(self) -> None:
        self._bus.rewind(self._topic)


class JsonlProducer:
    """Appends messages to a JSON-lines file: the embedded mode's dead-letter destination."""

    def __init__(self, path: Path) -> None:
        self._path = path

    async def start(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)

    async def send(self, topic: str, key: bytes | None, value: bytes, headers: Headers = ()) -> None:
        record = {
            "topic": topic,
            "key": key.decode("utf-8", "replace") if key else None,
            "value": value.decode("utf-8", "replace"),
            "headers": {name: data.decode("utf-8", "replace") for name, data in headers},
        }
        with self._path.open("ab") as sink:
            sink.write(orjson.dumps(record) + b"\n")

    async def stop(self) -> None:
        return None
