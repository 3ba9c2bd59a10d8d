from __future__ import annotations

from pathlib import Path

import orjson

from aibridge.bus import InProcessBus, JsonlProducer


async def test_in_process_bus_redelivers_uncommitted_after_restart() -> None:
    bus = InProcessBus(partitions=2)
    producer, consumer = bus.producer(), bus.consumer("t")
    await consumer.start()
    for i in range(10):
        await producer.send("t", f"k{i % 3}".encode(), str(i).encode())
    first = await consumer.poll(4, 0.1)
    assert len(first) == 4
    await consumer.commit({m.partition: m.offset + 1 for m in first})
    await consumer.stop()
    consumer = bus.consumer("t")
    await consumer.start()
    rest = await consumer.poll(100, 0.1)
    committed = {(m.partition, m.offset) for m in first}
    assert {(m.partition, m.offset) for m in rest}.isdisjoint(committed)
    assert len(rest) == 6 and bus.pending() == 6


async def test_in_process_bus_keeps_key_order_and_pauses() -> None:
    bus = InProcessBus(partitions=4)
    producer, consumer = bus.producer(), bus.consumer("t")
    await consumer.start()
    for i in range(20):
        await producer.send("t", b"same-key", str(i).encode())
    consumer.pause()
    assert await consumer.poll(100, 0.01) == []
    consumer.resume()
    values = [int(m.value) for m in await consumer.poll(100, 0.1)]
    assert values == list(range(20))


async def test_consumer_sees_only_its_topic_and_jsonl_keeps_dead_letters(tmp_path: Path) -> None:
    bus = InProcessBus()
    producer, consumer = bus.producer(), bus.consumer("main")
    await consumer.start()
    await producer.send("main.dlq", b"k", b"poison")
    await producer.send("main", b"k", b"good")
    assert [m.value for m in await consumer.poll(10, 0.1)] == [b"good"]
    dlq = JsonlProducer(tmp_path / "dlq.jsonl")
    await dlq.start()
    await dlq.send("main.dlq", b"k", b"{bad", [("reason", b"not valid JSON")])
    line = orjson.loads((tmp_path / "dlq.jsonl").read_bytes().splitlines()[0])
    assert line == {"topic": "main.dlq", "key": "k", "value": "{bad", "headers": {"reason": "not valid JSON"}}
