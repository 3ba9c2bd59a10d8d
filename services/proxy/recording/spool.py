"""A bounded on-disk spool for events the bus could not take, replayed in order once it is back.

Layout of ``AIBRIDGE_SPOOL_DIR``: ``LOCK`` (flock'ed by the owning process), segments
``00000000000000000007.seg``, ``…08.seg`` (oldest first; only the newest is appended to) and
``cursor`` (segment and offset through which the bus has acknowledged). A record is
``u32 length | u32 crc32(length bytes + payload) | payload``. Opening a spool validates every record:
the first bad one (a torn write after a crash, or corruption) and the rest of its segment are cut off
and counted in ``aibridge_spool_discarded_bytes``, never fatal.

- :meth:`Spool.append` returns True once the record is handed to the operating system (it survives
  the process being killed); False when it would take the segment files over ``max_bytes`` or the
  write fails (counted in ``aibridge_spool_dropped_records``; the caller logs which event it was).
- Power loss: segments are fsync'ed ``fsync_interval`` seconds after an append at the latest (by a
  timer on the running event loop, or by the next append), when sealed, and on :meth:`Spool.close`.
- Replay: :meth:`Spool.peek` returns the oldest unacknowledged records and removes nothing;
  :meth:`Spool.ack` marks them done through a given record, persists the cursor and deletes finished
  segments; :func:`drain` does both against a send function. At least once: after a crash, records
  acknowledged since the last cursor write come back, so sinks deduplicate on the event id.
- One owner: another process on the directory gets :class:`SpoolLocked`. Methods are synchronous,
  short (page-cache writes) and never await, so any task of the owning loop may append; one task
  peeks and acks.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import re
import struct
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from pydantic import ByteSize, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from aibridge import metrics
from aibridge.bus import Headers

log = logging.getLogger("aibridge.proxy.spool")

_FRAME: Final = struct.Struct("<II")
_U32: Final = struct.Struct("<I")
_MIN_PAYLOAD: Final = 2 * _U32.size + 1
_SEGMENT_NAME: Final = re.compile(r"^\d{20}\.seg$")


class SpoolSettings(BaseSettings):
    """Mix into ``ProxySettings`` (env prefix ``AIBRIDGE_``)."""

    model_config = SettingsConfigDict(env_prefix="AIBRIDGE_", extra="ignore", populate_by_name=True)

    spool_dir: Path | None = Field(default=None, description="Where events wait while the bus is down; unset = none.")
    spool_max_bytes: ByteSize = Field(
        default=ByteSize(2**30), ge=64 * 1024, description="Most disk the spool's segment files may use (e.g. 1GiB)."
    )
    spool_fsync_interval: float = Field(
        default=1.0, ge=0, description="Seconds an appended event may wait for fsync; 0 = fsync every event."
    )


class SpoolLocked(Exception):
    """Another process owns this spool directory."""


@dataclass(frozen=True, slots=True)
class SpooledRecord:
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    index: int
    """Position among the records still pending when the spool was opened (0 = oldest)."""
    segment: int
    end: int


@dataclass(slots=True)
class _Segment:
    seq: int
    path: Path
    size: int


def encode_record(key: bytes | None, value: bytes, headers: Headers) -> bytes:
    """A framed record; the payload is length-prefixed fields: key (flagged), value, then header pairs."""
    fields = [b"\x00" if key is None else b"\x01" + key, value]
    fields += [part for name, data in headers for part in (name.encode(), data)]
    payload = b"".join(_U32.pack(len(field)) + field for field in fields)
    length = _U32.pack(len(payload))
    return length + _U32.pack(zlib.crc32(payload, zlib.crc32(length))) + payload


def decode_payload(payload: bytes) -> tuple[bytes | None, bytes, tuple[tuple[str, bytes], ...]]:
    fields, at = [], 0
    while at < len(payload):
        (size,) = _U32.unpack_from(payload, at)
        fields.append(payload[at + 4 : at + 4 + size])
        at += 4 + size
    key = fields[0][1:] if fields[0][:1] == b"\x01" else None
    return key, fields[1], tuple((fields[i].decode(), fields[i + 1]) for i in range(2, len(fields), 2))


def frame_at(buffer: memoryview, offset: int) -> int | None:
    """The end of the valid record starting at ``offset``, or None (torn, corrupt or past the end)."""
    if offset + _FRAME.size > len(buffer):
        return None
    length: int
    crc: int
    length, crc = _FRAME.unpack_from(buffer, offset)
    end = offset + _FRAME.size + length
    if length < _MIN_PAYLOAD or end > len(buffer):
        return None
    if zlib.crc32(buffer[offset + _FRAME.size : end], zlib.crc32(buffer[offset : offset + 4])) != crc:
        return None
    return end


def read_segment(path: Path) -> list[tuple[bytes | None, bytes, tuple[tuple[str, bytes], ...]]]:
    """Every valid record of one segment file, acknowledged or not (for inspection and tests)."""
    buffer = memoryview(path.read_bytes())
    records, offset = [], 0
    while (end := frame_at(buffer, offset)) is not None:
        records.append(decode_payload(bytes(buffer[offset + _FRAME.size : end])))
        offset = end
    return records


class Spool:
    """See the module docstring. Open with ``Spool(directory, max_bytes)``; :meth:`close` when done."""

    def __init__(
        self,
        directory: Path,
        max_bytes: int,
        *,
        segment_bytes: int | None = None,
        fsync_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes or min(64 * 2**20, max(64 * 2**10, max_bytes // 8))
        self.fsync_interval = fsync_interval
        self._clock = clock
        directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _lock(directory / "LOCK")
        self._segments: list[_Segment] = []
        self._writer: int | None = None
        self._dirty_since: float | None = None
        self._sync_timer: asyncio.TimerHandle | None = None
        self._cursor = (0, 0)
        self._last_seq = 0
        self.pending_records = 0
        self._acked = 0
        try:
            self._recover()
        except BaseException:
            os.close(self._lock_fd)
            raise

    @classmethod
    def from_settings(cls, settings: SpoolSettings) -> Spool | None:
        if settings.spool_dir is None:
            return None
        return cls(settings.spool_dir, settings.spool_max_bytes, fsync_interval=settings.spool_fsync_interval)

    @property
    def disk_bytes(self) -> int:
        return sum(segment.size for segment in self._segments)

    def append(self, key: bytes | None, value: bytes, headers: Headers = ()) -> bool:
        """Write one record; False (counted) when the spool is full or the write failed."""
        record = encode_record(key, value, headers)
        if self.disk_bytes + len(record) > self.max_bytes:
            metrics.SPOOL_DROPPED_RECORDS.labels("full").inc()
            return False
        try:
            segment, writer = self._writable(len(record))
            _write_all(writer, record, segment.size)
        except OSError:
            log.exception("cannot write to the spool in %s", self.directory)
            metrics.SPOOL_DROPPED_RECORDS.labels("io_error").inc()
            return False
        segment.size += len(record)
        self.pending_records += 1
        metrics.SPOOL_APPENDED_RECORDS.inc()
        self._publish()
        self._maybe_sync()
        return True

    def sync(self) -> None:
        """fsync what was appended (done by itself ``fsync_interval`` seconds after an append)."""
        if self._sync_timer is not None:
            self._sync_timer.cancel()
            self._sync_timer = None
        if self._writer is not None and self._dirty_since is not None:
            os.fsync(self._writer)
        self._dirty_since = None

    def close(self) -> None:
        if self._lock_fd < 0:
            return
        self._seal()
        os.close(self._lock_fd)
        self._lock_fd = -1

    def _writable(self, size: int) -> tuple[_Segment, int]:
        """The segment to append ``size`` bytes to and its descriptor, sealing the newest when full."""
        if self._writer is not None:
            active = self._segments[-1]
            if active.size == 0 or active.size + size <= self.segment_bytes:
                return active, self._writer
        self._seal()
        self._last_seq += 1
        path = self.directory / f"{self._last_seq:020d}.seg"
        self._writer = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        self._segments.append(_Segment(self._last_seq, path, 0))
        _sync_directory(self.directory)
        return self._segments[-1], self._writer

    def _seal(self) -> None:
        self.sync()
        writer, self._writer = self._writer, None
        if writer is not None:
            os.close(writer)

    def _maybe_sync(self) -> None:
        """fsync now if the oldest unsynced append is ``fsync_interval`` old, else make sure a timer will."""
        now = self._clock()
        if self._dirty_since is None:
            self._dirty_since = now
        if now - self._dirty_since >= self.fsync_interval:
            self.sync()
        elif self._sync_timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            self._sync_timer = loop.call_later(self.fsync_interval, self.sync)

    def peek(self, max_records: int = 500) -> list[SpooledRecord]:
        """The oldest unacknowledged records (at most ``max_records``), in append order; removes nothing."""
        records: list[SpooledRecord] = []
        seq, offset = self._cursor
        for segment in self._segments:
            if len(records) >= max_records:
                break
            if segment.seq < seq:
                continue
            start = offset if segment.seq == seq else 0
            records += self._read(segment, start, max_records - len(records), self._acked + len(records))
        return records

    def ack(self, through: SpooledRecord) -> None:
        """The bus took ``through`` and every record before it: forget them."""
        done = through.index - self._acked + 1
        if done < 1 or done > self.pending_records:
            raise ValueError(f"record {through.index} is not pending (acknowledged so far: {self._acked})")
        self._acked += done
        self.pending_records -= done
        self._cursor = (through.segment, through.end)
        metrics.SPOOL_REPLAYED_RECORDS.inc(done)
        self._write_cursor()
        self._delete_done_segments()
        self._publish()

    def _read(self, segment: _Segment, offset: int, limit: int, index: int) -> list[SpooledRecord]:
        records: list[SpooledRecord] = []
        fd = os.open(segment.path, os.O_RDONLY)
        try:
            while offset < segment.size and len(records) < limit:
                length, _ = _FRAME.unpack(os.pread(fd, _FRAME.size, offset))
                end = offset + _FRAME.size + length
                key, value, headers = decode_payload(os.pread(fd, length, offset + _FRAME.size))
                records.append(SpooledRecord(key, value, headers, index + len(records), segment.seq, end))
                offset = end
        finally:
            os.close(fd)
        return records

    def _delete_done_segments(self) -> None:
        seq, offset = self._cursor
        while self._segments:
            head = self._segments[0]
            if head.seq > seq or (head.seq == seq and offset < head.size):
                return
            if head is self._segments[-1]:
                self._seal()
            head.path.unlink(missing_ok=True)
            self._segments.pop(0)

    def _write_cursor(self) -> None:
        temporary = self.directory / "cursor.tmp"
        temporary.write_text("{} {}\n".format(*self._cursor))
        os.replace(temporary, self.directory / "cursor")

    def _recover(self) -> None:
        cursor = _read_cursor(self.directory / "cursor")
        paths = sorted(path for path in self.directory.iterdir() if _SEGMENT_NAME.match(path.name))
        for path in paths:
            seq = int(path.stem)
            self._last_seq = max(self._last_seq, seq)
            if cursor is not None and seq < cursor[0]:
                path.unlink()
                continue
            segment = _Segment(seq, path, 0)
            start = cursor[1] if cursor is not None and seq == cursor[0] else 0
            self.pending_records += self._scan(segment, start)
            self._segments.append(segment)
        if cursor is not None:
            self._last_seq = max(self._last_seq, cursor[0])
            if self._segments and self._segments[0].seq == cursor[0]:
                self._cursor = (cursor[0], min(cursor[1], self._segments[0].size))
        self._delete_done_segments()
        self._publish()
        if self.pending_records:
            log.info("spool has %d events to replay", self.pending_records, extra={"spool": str(self.directory)})

    def _scan(self, segment: _Segment, start: int) -> int:
        """Validate a segment, cut off its first bad record onwards; the records from ``start`` on."""
        buffer = memoryview(segment.path.read_bytes())
        offset, pending = 0, 0
        while (end := frame_at(buffer, offset)) is not None:
            pending += offset >= start
            offset = end
        if offset < len(buffer):
            discarded = len(buffer) - offset
            log.warning("spool segment %s: %d bytes of torn or corrupt records cut off", segment.path, discarded)
            metrics.SPOOL_DISCARDED_BYTES.inc(discarded)
            os.truncate(segment.path, offset)
        segment.size = offset
        return pending

    def _publish(self) -> None:
        metrics.SPOOL_BYTES.set(self.disk_bytes)
        metrics.SPOOL_RECORDS.set(self.pending_records)


def _lock(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise SpoolLocked(f"the spool {path.parent} is in use by another process") from None
    return fd


def _read_cursor(path: Path) -> tuple[int, int] | None:
    """The acknowledged position, or None when missing or unreadable (then replay starts earlier)."""
    try:
        seq, offset = map(int, path.read_text().split())
    except (FileNotFoundError, ValueError):
        return None
    return seq, offset


def _write_all(fd: int, data: bytes, size_before: int) -> None:
    """Write ``data`` whole, or cut the file back to ``size_before`` and raise."""
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view) :]
    except OSError:
        os.ftruncate(fd, size_before)
        raise


def _sync_directory(directory: Path) -> None:
    """Make a created segment's directory entry durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


Send = Callable[[bytes | None, bytes, Headers], Awaitable[None]]


async def drain(spool: Spool, send: Send, *, batch: int = 500) -> int:
    """Send every spooled record, oldest first, acking what was taken; return how many were sent.

    A batch's sends start in spool order and run concurrently (a Kafka producer keeps their order per
    partition). The batch is acked through the record before the first failed send, and that failure
    is raised: call again later to resume there. Sends after a failure may repeat (at least once).
    """
    sent = 0
    while records := spool.peek(batch):
        outcomes = await asyncio.gather(*(send(r.key, r.value, r.headers) for r in records), return_exceptions=True)
        taken = next((i for i, outcome in enumerate(outcomes) if isinstance(outcome, BaseException)), len(records))
        if taken:
            spool.ack(records[taken - 1])
            sent += taken
        if taken < len(records):
            failure = outcomes[taken]
            assert isinstance(failure, BaseException)
            raise failure
    return sent
