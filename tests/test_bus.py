from __future__ import annotations

from aibridge.bus import InProcessBus


async def test_in_process_bus_redelivers_uncommitted_after_restart() -> None:
    bus = InProcessBus(partitions=2)
    producer, consumer = bus.producer(), bus.consumer()
    await consumer.start()
    for i in range(10):
        await producer.send("t", f"k{i % 3}".encode(), str(i).encode())
    first = await consumer.poll(4, 0.1)
    assert len(first) == 4
    await consumer.commit({m.partition: m.offset + 1 for m in first})
    await consumer.stop()
    consumer = bus.consumer()
    await consumer.start()
    rest = await consumer.poll(100, 0.1)
    committed = {(m.partition, m.offset) for m in first}
    assert {(m.partition, m.offset) for m in rest}.isdisjoint(committed)
    assert len(rest) == 6 and bus.pending() == 6


async def test_in_process_bus_keeps_key_order_and_pauses() -> None:
    bus = InProcessBus(partitions=4)
    producer, consumer = bus.producer(), bus.consumer()
    await consumer.start()
    for i in range(20):
        await producer.send("t", b"same-key", str(i).encode())
    consumer.pause()
    assert await consumer.poll(100, 0.01) == []
    consumer.resume()
    values = [int(m.value) for m in await consumer.poll(100, 0.1)]
    assert values == list(range(20))
