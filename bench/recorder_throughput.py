"""Recorder benchmark: events/s from the topic to queryable rows, and publish-to-queryable delay.

Starts its own Tansu broker and an embedded chDB store in a temporary directory, then:

1. throughput: publishes N realistic events (whole interceptions: started, prompt, token usage, tool
   usages, ended), starts one recorder (the real RecorderComponent with the Kafka consumer) and times
   until every row is queryable. Reported from the first stored batch (the group join is excluded)
   and from the recorder's start.
2. delay: with the recorder running, publishes at a steady rate and polls the store every
   ``--watch-interval`` seconds for newly visible child rows (prompts, token and tool usages);
   delay = first seen in a query - publish time (so it overstates by up to one watch interval).

Everything runs in this one process (producer, recorder, watcher), on a machine that may be shared.
Results are printed and written as JSON (--json, default bench/results/recorder_throughput.json) for
bench/report.py.

    .venv/bin/python bench/recorder_throughput.py [--events 100000] [--rate 1000] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from clickhouse_connect.driver.client import Client

from aibridge import metrics, store
from aibridge.events import Event, InterceptionContext, Status, encode_event
from aibridge.kafka import KafkaConsumer, KafkaProducer
from aibridge.recorder.component import RecorderComponent
from aibridge.recorder.settings import RecorderSettings
from aibridge.testing.broker import start_broker

sys.path.insert(0, str(Path(__file__).parent))
import results as bench_results

CHILD_TABLES = {"user_prompts": "created_at", "token_usages": "created_at", "tool_usages": "created_at"}


def interception_events(index: int) -> list[Event]:
    """Six events of one realistic interception."""
    context = InterceptionContext(
        initiator_id=f"user-{index % 50}",
        initiator_username=f"dev{index % 50}",
        provider="anthropic" if index % 2 else "openai",
        model="claude-sonnet-4-5" if index % 2 else "gpt-4o",
        client="Claude Code" if index % 2 else "Codex",
        streaming=True,
        route="/v1/messages" if index % 2 else "/v1/chat/completions",
        api_key_id=str(uuid.uuid4()),
        user_agent="claude-cli/2.1.332 (external, sdk-cli)",
    )
    response = f"msg_{index:012d}"
    return [
        context.started(),
        context.prompt("Refactor the retry loop in client.py to use exponential backoff.", response),
        context.tool_usage(provider_response_id=response, tool="Read", call_id=f"c{index}a", tool_input='{"p":1}'),
        context.tool_usage(provider_response_id=response, tool="Edit", call_id=f"c{index}b", tool_input='{"p":2}'),
        context.token_usage(
            provider_response_id=response, input_tokens=1204, output_tokens=356, cache_read_input_tokens=18211
        ),
        context.ended(Status.COMPLETED, 200),
    ]


def event_stream() -> Iterator[Event]:
    index = 0
    while True:
        yield from interception_events(index)
        index += 1


def stored_rows(client: Client) -> int:
    query = " UNION ALL ".join(f"SELECT count() FROM {table}" for table in store.CHILD_TABLES)
    children = sum(int(row[0]) for row in client.query(query).result_rows)
    # started (version 0) and ended (version 1) may already be merged into one row: count max(version) + 1.
    interceptions = client.query("SELECT sum(v + 1) FROM (SELECT max(version) AS v FROM interceptions GROUP BY id)")
    return children + int(interceptions.result_rows[0][0])


def written_rows() -> float:
    return sum(
        sample.value
        for sample in next(iter(metrics.RECORDER_ROWS_WRITTEN.collect())).samples
        if sample.name.endswith("_total")
    )


async def publish(producer: AIOKafkaProducer, topic: str, events: list[Event]) -> None:
    futures = [
        await producer.send(topic, encode_event(event), key=event["interception_id"].encode()) for event in events
    ]
    await asyncio.gather(*futures)


async def throughput(bootstrap: str, settings: RecorderSettings, count: int) -> dict[str, float]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=1 << 20)
    await producer.start()
    stream = event_stream()
    started = time.perf_counter()
    for first in range(0, count, 5000):
        await publish(producer, settings.kafka_topic, [next(stream) for _ in range(min(5000, count - first))])
    published = time.perf_counter() - started
    await producer.stop()
    client = store.connect(settings.clickhouse_url, settings.clickhouse_database, create_database=True)
    recorder = RecorderComponent(
        settings,
        KafkaConsumer(settings, settings.consumer_group, **settings.kafka_consumer_options()),
        KafkaProducer(settings),
        client,
    )
    rows_before = written_rows()
    await recorder.start()
    t_start = time.perf_counter()
    first_rows, t_first = 0.0, 0.0
    # Inserted rows are queryable once the insert returns: follow the recorder's written-rows counter
    # (querying the store this often would compete with the recorder) and confirm with a query at the end.
    while (rows := written_rows() - rows_before) < count:
        if not first_rows and rows:
            first_rows, t_first = rows, time.perf_counter()
        await asyncio.sleep(0.01)
    t_end = time.perf_counter()
    await recorder.stop()
    if (queryable := stored_rows(client)) != count:
        raise AssertionError(f"{queryable} events queryable, {count} expected")
    return {
        "publish_events_per_s": count / published,
        "events_per_s_after_first_batch": (count - first_rows) / max(1e-9, t_end - t_first),
        "events_per_s_from_start_incl_group_join": count / (t_end - t_start),
        "seconds_to_first_batch": t_first - t_start,
    }


async def watch(client: Client, sent: dict[str, float], seen: dict[str, float], interval: float, done: Any) -> None:
    while not done.is_set() or len(seen) < len(sent):
        window = " UNION ALL ".join(
            f"SELECT toString(id) FROM {table} WHERE {column} >= now64(6) - INTERVAL 30 SECOND"
            for table, column in CHILD_TABLES.items()
        )
        rows = await asyncio.to_thread(client.query, window)
        now = time.time()
        for (event_id,) in rows.result_rows:
            if event_id in sent and event_id not in seen:
                seen[event_id] = now
        await asyncio.sleep(interval)


async def delay(
    bootstrap: str, settings: RecorderSettings, rate: int, seconds: float, interval: float
) -> dict[str, float]:
    client = store.connect(settings.clickhouse_url, settings.clickhouse_database, create_database=True)
    recorder = RecorderComponent(
        settings,
        KafkaConsumer(settings, settings.consumer_group, **settings.kafka_consumer_options()),
        KafkaProducer(settings),
        client,
    )
    await recorder.start()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=1)
    await producer.start()
    await publish(producer, settings.kafka_topic, interception_events(-1))  # wait for the group join
    while stored_rows(client) < 6:  # noqa: ASYNC110 - polls the store, not an in-process condition
        await asyncio.sleep(0.05)
    sent: dict[str, float] = {}
    seen: dict[str, float] = {}
    done = asyncio.Event()
    watcher = asyncio.create_task(watch(client, sent, seen, interval, done))
    stream = event_stream()
    tick = 0.01
    start = time.perf_counter()
    for step in range(int(seconds / tick)):
        batch = [next(stream) for _ in range(rate * (step + 1) // 100 - rate * step // 100)]
        for event in batch:
            if event["type"] in ("prompt", "token_usage", "tool_usage"):
                sent[event["event_id"]] = time.time()
            await producer.send(settings.kafka_topic, encode_event(event), key=event["interception_id"].encode())
        await asyncio.sleep(max(0.0, start + (step + 1) * tick - time.perf_counter()))
    await producer.flush()
    done.set()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(watcher, 30)
    await producer.stop()
    await recorder.stop()
    delays = sorted(seen[key] - sent[key] for key in seen)
    quantiles = statistics.quantiles(delays, n=100)
    return {"measured_events": len(delays), "p50_s": quantiles[49], "p99_s": quantiles[98], "max_s": delays[-1]}


def settings_for(bootstrap: str, topic: str, data_dir: str, database: str) -> RecorderSettings:
    return RecorderSettings(
        kafka_bootstrap=bootstrap,
        kafka_topic=topic,
        consumer_group=f"bench-{database}",
        clickhouse_url=f"chdb://{data_dir}",
        clickhouse_database=database,
        kafka_session_timeout_ms=3000,
        kafka_heartbeat_interval_ms=300,
        kafka_rebalance_timeout_ms=500,
    )


async def create_topics(bootstrap: str, *topics: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=4, replication_factor=1) for topic in topics])
    finally:
        await admin.close()


async def main(args: argparse.Namespace) -> None:
    params = {"events": args.events, "rate": args.rate, "seconds": args.seconds, "watch_interval": args.watch_interval}
    run_record = bench_results.Run("recorder_throughput", params)
    results: dict[str, Any] = {}
    broker = start_broker()
    try:
        with tempfile.TemporaryDirectory(prefix="aibridge-bench-") as data_dir:
            await create_topics(broker.bootstrap, "bench.t", "bench.t.dlq", "bench.d", "bench.d.dlq")
            result = await throughput(
                broker.bootstrap, settings_for(broker.bootstrap, "bench.t", data_dir, "t"), args.events
            )
            print(f"throughput ({args.events} events, embedded chDB, one recorder process):")
            for name, value in result.items():
                print(f"  {name:42s} {value:12,.1f}")
            results["throughput"] = result
            settings = settings_for(broker.bootstrap, "bench.d", data_dir, "d")
            result = await delay(broker.bootstrap, settings, args.rate, args.seconds, args.watch_interval)
            print(
                f"publish-to-queryable at {args.rate} events/s for {args.seconds:.0f}s (batch "
                f"{settings.batch_max_rows} rows / {settings.batch_max_seconds}s, watch every {args.watch_interval}s):"
            )
            for name, value in result.items():
                print(f"  {name:42s} {value:12,.3f}")
            results["delay"] = result | {"batch_max_rows": settings.batch_max_rows}
            results["delay"]["batch_max_seconds"] = settings.batch_max_seconds
            failures = next(iter(metrics.RECORDER_FAILURES.collect())).samples
            results["recorder_failures"] = sum(sample.value for sample in failures)
            # the benchmark's process: producer, recorder and the embedded ClickHouse engine together
            results["process_peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"  recorder failures during the run: {results['recorder_failures']:.0f}")
    finally:
        broker.stop()
    print(f"rerun: {bench_results.rerun_command()}")
    run_record.write(args.json, results)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rate", type=int, default=1_000, help="events per second in the delay phase")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the delay phase")
    parser.add_argument("--watch-interval", type=float, default=0.05)
    bench_results.add_json_argument(parser, "recorder_throughput")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
