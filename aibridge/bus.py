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
from typing import Protocol

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

    def consumer(self) -> InProcessConsumer:
        return InProcessConsumer(self)

    def append(self, topic: str, key: bytes | None, value: bytes, headers: Headers) -> None:
        index = zlib.crc32(key) % self._partitions if key else 0
        partition = Partition(topic, index)
        log = self._logs.setdefault(partition, _Log())
        offset = log.committed + len(log.messages)
        log.messages.append(Message(partition, offset, key, value, tuple(headers)))
        self._arrived.set()

    def take(self, max_records: int) -> list[Message]:
        taken: list[Message] = []
        for log in self._logs.values():
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

    def rewind(self) -> None:
        """Forget uncommitted reads, as a consumer group does when a member restarts."""
        for log in self._logs.values():
            log.position = log.committed

    def pending(self) -> int:
        """Messages not yet committed."""
        return sum(len(log.messages) for log in self._logs.values())


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
    def __init__(self, bus: InProcessBus) -> None:
        self._bus = bus
        self._paused = False

    async def start(self) -> None:
        self._bus.rewind()

    async def poll(self, max_records: int, timeout: float) -> list[Message]:
        if self._paused:
            await asyncio.sleep(timeout)
            return []
        messages = self._bus.take(max_records)
        if not messages:
            await self._bus.wait(timeout)
            messages = self._bus.take(max_records)
        return messages

    async def commit(self, offsets: Mapping[Partition, int]) -> None:
        self._bus.commit(offsets)

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        self._paused = False

    async def stop(self) -> None:
        self._bus.rewind()
