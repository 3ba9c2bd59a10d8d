from __future__ import annotations

import asyncio
import os
import signal
import struct
import subprocess
import sys
import textwrap
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client import REGISTRY

from aibridge.bus import BusError, Headers, InProcessBus, Partition
from aibridge.kafka import KafkaProducer
from aibridge.proxy.recording.spool import Spool, SpooledRecord, SpoolLocked, SpoolSettings, drain, encode_record
from aibridge.settings import CommonSettings
from aibridge.testing.broker import Broker


def sample(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def values(records: list[SpooledRecord]) -> list[bytes]:
    return [record.value for record in records]


def segments(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.glob("*.seg"))


def fill(spool: Spool, start: int, stop: int) -> None:
    for i in range(start, stop):
        assert spool.append(f"k{i % 3}".encode(), f"event-{i:04d}".encode(), [("traceparent", f"t{i}".encode())])


def expected(start: int, stop: int) -> list[bytes]:
    return [f"event-{i:04d}".encode() for i in range(start, stop)]


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    return tmp_path / "spool"


@pytest.fixture
def spool(spool_dir: Path) -> Iterator[Spool]:
    spool = Spool(spool_dir, 1 << 20, segment_bytes=1024)
    yield spool
    spool.close()


def test_records_come_back_exactly_and_peek_removes_nothing(spool: Spool) -> None:
    headers: Headers = [("traceparent", b"00-abc-01"), ("empty", b""), ("ünïcode", b"\x00\xff")]
    assert spool.append(None, b"", ())
    assert spool.append(b"", b"{}", headers)
    assert spool.append(b"interception-1", b"x" * 5000, headers)  # bigger than a segment: gets its own
    first = spool.peek(10)
    assert [(r.key, r.value, r.headers) for r in first] == [
        (None, b"", ()),
        (b"", b"{}", tuple(headers)),
        (b"interception-1", b"x" * 5000, tuple(headers)),
    ]
    assert spool.peek(10) == first
    assert spool.peek(2) == first[:2]
    assert spool.pending_records == 3


def test_ack_forgets_through_a_record_and_rejects_stale_acks(spool: Spool) -> None:
    fill(spool, 0, 10)
    batch = spool.peek(4)
    spool.ack(batch[1])
    assert spool.pending_records == 8
    assert values(spool.peek(3)) == expected(2, 5)
    with pytest.raises(ValueError, match="not pending"):
        spool.ack(batch[1])
    spool.ack(spool.peek(100)[-1])
    assert spool.pending_records == 0 and spool.peek() == []


def test_order_is_kept_across_segments_and_restarts(spool_dir: Path) -> None:
    spool = Spool(spool_dir, 1 << 20, segment_bytes=512)
    fill(spool, 0, 60)
    assert len(segments(spool_dir)) > 5
    spool.ack(spool.peek(25)[-1])
    spool.close()

    spool = Spool(spool_dir, 1 << 20, segment_bytes=512)
    assert spool.pending_records == 35
    fill(spool, 60, 80)
    assert values(spool.peek(1000)) == expected(25, 80)
    spool.ack(spool.peek(40)[-1])
    spool.close()

    spool = Spool(spool_dir, 1 << 20, segment_bytes=512)
    assert values(spool.peek(1000)) == expected(65, 80)
    spool.close()


def test_finished_segments_are_deleted_and_an_empty_spool_leaves_no_segment(spool_dir: Path) -> None:
    spool = Spool(spool_dir, 1 << 20, segment_bytes=512)
    fill(spool, 0, 40)
    before = segments(spool_dir)
    spool.ack(spool.peek(20)[-1])
    after = segments(spool_dir)
    assert len(after) < len(before) and after == before[-len(after) :]
    assert spool.disk_bytes == sum((spool_dir / name).stat().st_size for name in after)
    spool.ack(spool.peek(100)[-1])
    assert segments(spool_dir) == [] and spool.disk_bytes == 0
    fill(spool, 40, 42)
    assert values(spool.peek()) == expected(40, 42)
    spool.close()
    assert values(Spool(spool_dir, 1 << 20).peek()) == expected(40, 42)


def test_a_torn_tail_is_cut_off_not_fatal(spool_dir: Path) -> None:
    spool = Spool(spool_dir, 1 << 20)
    fill(spool, 0, 5)
    spool.close()
    [last] = segments(spool_dir)
    torn = encode_record(b"k", b"event-half-written", ())[:13]
    with (spool_dir / last).open("ab") as segment:
        segment.write(torn)
    discarded = sample("aibridge_spool_discarded_bytes_total")

    spool = Spool(spool_dir, 1 << 20)
    assert spool.pending_records == 5
    assert sample("aibridge_spool_discarded_bytes_total") == discarded + 13
    assert (spool_dir / last).stat().st_size == spool.disk_bytes  # cut off on disk too
    fill(spool, 5, 7)
    assert values(spool.peek()) == expected(0, 7)
    spool.close()
    Spool(spool_dir, 1 << 20).close()
    assert sample("aibridge_spool_discarded_bytes_total") == discarded + 13


@pytest.mark.parametrize(
    "tail",
    [
        bytes(4096),  # what a crash can leave: a file extended but never written
        struct.pack("<II", 1, zlib.crc32(b"x", zlib.crc32(struct.pack("<I", 1)))) + b"x",  # valid CRC, no fields
    ],
    ids=["zeros", "too-short"],
)
def test_a_tail_that_cannot_be_a_record_is_cut_off(spool_dir: Path, tail: bytes) -> None:
    spool = Spool(spool_dir, 1 << 20)
    fill(spool, 0, 3)
    spool.close()
    with (spool_dir / segments(spool_dir)[0]).open("ab") as segment:
        segment.write(tail)
    spool = Spool(spool_dir, 1 << 20)
    assert values(spool.peek()) == expected(0, 3)
    spool.close()


def test_corruption_cuts_the_rest_of_its_segment_only(spool_dir: Path) -> None:
    spool = Spool(spool_dir, 1 << 20, segment_bytes=300)
    fill(spool, 0, 12)
    spool.close()
    first = spool_dir / segments(spool_dir)[0]
    data = bytearray(first.read_bytes())
    record = len(encode_record(b"k0", b"event-0000", [("traceparent", b"t0")]))
    data[record + 20] ^= 0xFF  # a flipped bit in the second record
    first.write_bytes(bytes(data))
    spool = Spool(spool_dir, 1 << 20, segment_bytes=300)
    kept = values(spool.peek(1000))
    spool.close()
    lost = len(data) // record - 1  # the rest of the first segment
    assert lost >= 2
    assert kept == expected(0, 1) + expected(1 + lost, 12)


def test_a_full_spool_refuses_and_counts_then_accepts_again_after_acks(spool_dir: Path) -> None:
    spool = Spool(spool_dir, 4096, segment_bytes=1024)
    dropped = REGISTRY.get_sample_value("aibridge_spool_dropped_records_total", {"reason": "full"}) or 0.0
    accepted = 0
    while spool.append(b"k", f"event-{accepted:04d}".encode(), ()):
        accepted += 1
    assert spool.disk_bytes <= 4096 < spool.disk_bytes + len(encode_record(b"k", b"event-0000", ()))
    assert not spool.append(b"k", b"x", ())
    assert REGISTRY.get_sample_value("aibridge_spool_dropped_records_total", {"reason": "full"}) == dropped + 2
    assert not spool.append(b"k", b"x" * 5000, ())  # larger than the whole spool
    spool.ack(spool.peek(accepted // 2)[-1])
    assert spool.append(b"k", b"after", ())
    assert values(spool.peek(1000))[-1] == b"after"
    spool.close()


def test_one_owner_per_directory(spool_dir: Path) -> None:
    spool = Spool(spool_dir, 1 << 20)
    with pytest.raises(SpoolLocked, match="in use"):
        Spool(spool_dir, 1 << 20)
    spool.close()
    Spool(spool_dir, 1 << 20).close()


def test_a_lost_cursor_replays_from_the_oldest_segment(spool_dir: Path) -> None:
    spool = Spool(spool_dir, 1 << 20)
    fill(spool, 0, 6)
    spool.ack(spool.peek(4)[-1])
    spool.close()
    (spool_dir / "cursor").write_text("garbage")
    spool = Spool(spool_dir, 1 << 20)
    assert values(spool.peek()) == expected(0, 6)  # at least once: the sink deduplicates
    spool.close()


def test_metrics_follow_the_spool(spool: Spool) -> None:
    appended, replayed = (
        sample("aibridge_spool_appended_records_total"),
        sample("aibridge_spool_replayed_records_total"),
    )
    fill(spool, 0, 4)
    assert sample("aibridge_spool_records") == 4
    assert sample("aibridge_spool_bytes") == spool.disk_bytes > 0
    spool.ack(spool.peek(3)[-1])
    assert sample("aibridge_spool_records") == 1
    assert sample("aibridge_spool_appended_records_total") == appended + 4
    assert sample("aibridge_spool_replayed_records_total") == replayed + 3


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The descriptors passed to os.fsync (which still runs)."""
    calls: list[int] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        calls.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return calls


def test_fsync_policy(spool_dir: Path, synced: list[int]) -> None:
    every = Spool(spool_dir / "every", 1 << 20, fsync_interval=0)
    fill(every, 0, 3)
    assert len(synced) >= 3
    every.close()

    synced.clear()
    clock = [0.0]
    batched = Spool(spool_dir / "batched", 1 << 20, fsync_interval=1.0, clock=lambda: clock[0])
    fill(batched, 0, 1)
    synced.clear()  # creating the segment synced the directory
    fill(batched, 1, 50)
    assert synced == []
    clock[0] = 1.0
    fill(batched, 50, 51)
    assert len(synced) == 1
    batched.close()


async def test_fsync_timer_on_the_event_loop(spool_dir: Path, synced: list[int]) -> None:
    spool = Spool(spool_dir, 1 << 20, fsync_interval=0.05)
    fill(spool, 0, 1)
    synced.clear()
    fill(spool, 1, 20)
    assert synced == []
    await asyncio.sleep(0.2)
    assert len(synced) == 1
    spool.close()


def test_appends_survive_the_process_being_killed(spool_dir: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from aibridge.proxy.recording.spool import Spool
        spool = Spool(Path({str(spool_dir)!r}), 1 << 24, segment_bytes=4096, fsync_interval=3600)
        i = 0
        while True:
            assert spool.append(b"k", b"event-%06d" % i, [("n", b"%d" % i)])
            i += 1
            if i % 100 == 0:
                print(i, flush=True)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    for _ in range(20):
        confirmed = int(child.stdout.readline())
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    spool = Spool(spool_dir, 1 << 24)
    records = spool.peek(10**6)
    spool.close()
    assert len(records) >= confirmed == 2000
    assert values(records) == [b"event-%06d" % i for i in range(len(records))]


async def test_drain_sends_in_order_and_acks_what_was_taken(spool: Spool) -> None:
    bus = InProcessBus()
    producer = bus.producer()
    fill(spool, 0, 30)
    assert await drain(spool, lambda k, v, h: producer.send("events", k, v, h), batch=7) == 30
    assert spool.pending_records == 0
    taken = bus.take("events", 100)
    assert [m.value for m in taken] == expected(0, 30)
    assert taken[0].key == b"k0" and taken[0].headers == (("traceparent", b"t0"),)


async def test_drain_stops_at_the_first_failure_and_resumes_there(spool: Spool) -> None:
    bus = InProcessBus()
    fill(spool, 0, 10)
    broken_from = [4]

    async def send(key: bytes | None, value: bytes, headers: Headers) -> None:
        if value >= f"event-{broken_from[0]:04d}".encode():
            raise BusError("the broker is away")
        bus.append("events", key, value, headers)

    with pytest.raises(BusError):
        await drain(spool, send)
    assert spool.pending_records == 6
    broken_from[0] = 99
    assert await drain(spool, send) == 6
    assert [m.value for m in bus.take("events", 100)] == expected(0, 10)
    bus.commit({Partition("events", 0): 10})


@pytest.mark.kafka
async def test_drain_to_a_broker_that_was_frozen(own_broker: Broker, spool: Spool) -> None:
    topic = "aibridge.spool.replay"
    admin = AIOKafkaAdminClient(bootstrap_servers=own_broker.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()
    producer = KafkaProducer(CommonSettings(kafka_bootstrap=own_broker.bootstrap), request_timeout=1.0)
    await producer.start()
    try:
        fill(spool, 0, 50)
        own_broker.freeze()
        try:
            with pytest.raises(BusError):
                await drain(spool, lambda k, v, h: producer.send(topic, k, v, h), batch=20)
        finally:
            own_broker.thaw()
        assert spool.pending_records == 50
        await asyncio.wait_for(drain(spool, lambda k, v, h: producer.send(topic, k, v, h), batch=20), 30)
        assert spool.pending_records == 0
    finally:
        await producer.stop()
    received = await read_topic(own_broker.bootstrap, topic, at_least=50)
    first_seen = list(dict.fromkeys(received))  # a send that timed out may still have landed: dedup
    assert first_seen == expected(0, 50)


async def read_topic(bootstrap: str, topic: str, at_least: int) -> list[bytes]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    received: list[bytes] = []
    try:
        async with asyncio.timeout(20):
            while len(received) < at_least:
                batches = await consumer.getmany(timeout_ms=500)
                received += [record.value or b"" for records in batches.values() for record in records]
    finally:
        await consumer.stop()
    return received


def test_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert Spool.from_settings(SpoolSettings()) is None
    monkeypatch.setenv("AIBRIDGE_SPOOL_DIR", str(tmp_path / "s"))
    monkeypatch.setenv("AIBRIDGE_SPOOL_MAX_BYTES", "256MiB")
    monkeypatch.setenv("AIBRIDGE_SPOOL_FSYNC_INTERVAL", "0")
    spool = Spool.from_settings(SpoolSettings())
    assert spool is not None
    assert (spool.max_bytes, spool.fsync_interval, spool.segment_bytes) == (256 * 2**20, 0.0, 32 * 2**20)
    spool.close()
