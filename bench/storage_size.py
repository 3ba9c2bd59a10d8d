"""Storage per interception: event bytes on the Kafka topic and bytes on disk in ClickHouse.

Builds ``--interceptions`` interceptions shaped like agentic coding sessions (the mix below), publishes
their events to a real Kafka-protocol broker (Tansu), records them with one recorder (the real
RecorderComponent with the Kafka consumer) into the embedded ClickHouse engine (chDB), merges every
table's parts (``OPTIMIZE TABLE ... FINAL``, what background merges reach over time) and reads the
sizes ClickHouse reports for the active parts (``system.parts``, projections included).

The mix (per interception): 60 % Claude Code on Anthropic, 40 % Codex on the Responses API; 95 %
streamed; a prompt in 25 % of them (the rest continue an agent loop with tool results); a token usage
in 98 % (not for failed requests); 0/1/2/3 tool calls with 25/60/10/5 % (mean 0.95): Read, Bash, Grep,
Edit, Write and TodoWrite with inputs of their real shape. Text (prompts, edited code, commands) is cut
from this repository's own documentation and source, so it compresses like real text and code.

Results are printed and written as JSON (--json, default bench/results/storage_size.json) for
bench/report.py; docs/deploy.md's sizing guide is computed from them.

    .venv/bin/python bench/storage_size.py [--interceptions 50000]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import lz4.frame
import orjson
from aiokafka import AIOKafkaProducer
from clickhouse_connect.driver.client import Client

from aibridge import store
from aibridge.events import Event, InterceptionContext, Status, encode_event
from aibridge.kafka import KafkaConsumer, KafkaProducer
from aibridge.recorder.component import RecorderComponent
from aibridge.testing.broker import start_broker

sys.path.insert(0, str(Path(__file__).parent))
import recorder_throughput as rt
import results as bench_results

REPOSITORY = Path(__file__).resolve().parent.parent
KAFKA_BATCH_EVENTS = 100  # events compressed together, as the proxy's publisher batches them


class Corpus:
    """Real text to cut prompts and code from: the repository's docs and Python sources."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.prose = " ".join((REPOSITORY / "docs").joinpath(name).read_text() for name in sorted(_docs()))
        self.code = "\n".join(path.read_text() for path in sorted((REPOSITORY / "services").rglob("*.py")))
        self.paths = [str(path.relative_to(REPOSITORY)) for path in sorted((REPOSITORY / "services").rglob("*.py"))]

    def cut(self, text: str, length: int) -> str:
        start = self.rng.randrange(max(1, len(text) - length))
        return text[start : start + length]

    def prompt(self) -> str:
        return self.cut(self.prose, min(4000, max(20, int(self.rng.lognormvariate(5.7, 0.9)))))

    def code_lines(self, low: int, high: int) -> str:
        return self.cut(self.code, self.rng.randint(low, high))

    def path(self) -> str:
        return f"/home/dev/src/aibridge/{self.rng.choice(self.paths)}"


def _docs() -> list[str]:
    return [path.name for path in (REPOSITORY / "docs").glob("*.md")]


TOOLS = (("Read", 35), ("Bash", 25), ("Edit", 20), ("Grep", 10), ("Write", 5), ("TodoWrite", 5))


def tool_input(tool: str, corpus: Corpus) -> str:
    rng = corpus.rng
    inputs: dict[str, Any] = {
        "Read": lambda: {"file_path": corpus.path()},
        "Bash": lambda: {"command": corpus.code_lines(20, 160), "description": corpus.prompt()[:60]},
        "Edit": lambda: {
            "file_path": corpus.path(),
            "old_string": corpus.code_lines(80, 1200),
            "new_string": corpus.code_lines(80, 1500),
        },
        "Grep": lambda: {"pattern": corpus.code_lines(5, 30), "path": corpus.path(), "output_mode": "content"},
        "Write": lambda: {"file_path": corpus.path(), "content": corpus.code_lines(500, 4000)},
        "TodoWrite": lambda: {
            "todos": [
                {"content": corpus.prompt()[:80], "status": rng.choice(["pending", "in_progress", "completed"])}
                for _ in range(rng.randint(2, 6))
            ]
        },
    }
    return orjson.dumps(inputs[tool]()).decode()


def interception(corpus: Corpus, user: int, session: str) -> list[Event]:
    rng = corpus.rng
    claude = rng.random() < 0.6
    context = InterceptionContext(
        initiator_id=str(uuid.UUID(int=user + 1)),
        initiator_username=f"developer{user}",
        provider="anthropic" if claude else "openai",
        model=rng.choice(
            ["claude-sonnet-4-5", "claude-opus-4-1", "claude-haiku-4-5"] if claude else ["gpt-5", "gpt-5-mini"]
        ),
        client="Claude Code" if claude else "Codex",
        streaming=rng.random() < 0.95,
        route="/v1/messages" if claude else "/v1/responses",
        api_key_id=str(uuid.UUID(int=(user + 1) << 64)),
        user_agent="claude-cli/2.1.332 (external, sdk-cli)" if claude else "codex_exec/0.171.0 (Debian 12.0.0; x86_64)",
        metadata={"session_id": session},
    )
    response = f"msg_{uuid.uuid4().hex[:24]}" if claude else f"resp_{uuid.uuid4().hex}"
    events = [context.started()]
    if rng.random() < 0.25:
        events.append(context.prompt(corpus.prompt(), response))
    outcome = rng.random()
    if outcome >= 0.02:
        events.append(
            context.token_usage(
                provider_response_id=response,
                input_tokens=rng.randint(5, 4000),
                output_tokens=rng.randint(20, 3000),
                cache_read_input_tokens=rng.randint(10_000, 150_000),
                cache_write_input_tokens=rng.choice([0, 0, 0, rng.randint(100, 8000)]),
            )
        )
        calls = rng.choices([0, 1, 2, 3], weights=[25, 60, 10, 5])[0]
        for _ in range(calls):
            tool = rng.choices([name for name, _ in TOOLS], weights=[weight for _, weight in TOOLS])[0]
            call_id = f"toolu_{uuid.uuid4().hex[:24]}" if claude else f"call_{uuid.uuid4().hex[:24]}"
            events.append(
                context.tool_usage(
                    provider_response_id=response, tool=tool, call_id=call_id, tool_input=tool_input(tool, corpus)
                )
            )
    if outcome < 0.02:
        events.append(context.ended(Status.UPSTREAM_ERROR, 529, "overloaded_error: Overloaded"))
    else:
        events.append(context.ended(Status.COMPLETED, 200))
    return events


def workload(count: int, users: int, seed: int) -> list[list[Event]]:
    corpus = Corpus(random.Random(seed))
    sessions = [str(uuid.UUID(int=corpus.rng.getrandbits(128))) for _ in range(users)]
    return [interception(corpus, index % users, sessions[index % users]) for index in range(count)]


def event_sizes(interceptions: list[list[Event]]) -> dict[str, Any]:
    """JSON bytes per event type, per interception, and on the topic (lz4 batches of 100 events, plus key)."""
    encoded = [(event["type"], encode_event(event)) for events in interceptions for event in events]
    by_type: dict[str, list[int]] = {}
    for kind, payload in encoded:
        by_type.setdefault(kind, []).append(len(payload))
    payloads = [payload for _, payload in encoded]
    compressed = sum(
        len(lz4.frame.compress(b"".join(payloads[start : start + KAFKA_BATCH_EVENTS])))
        for start in range(0, len(payloads), KAFKA_BATCH_EVENTS)
    )
    total = sum(len(payload) for payload in payloads)
    key = len(interceptions[0][0]["interception_id"])
    return {
        "interceptions": len(interceptions),
        "events": len(encoded),
        "events_per_interception": len(encoded) / len(interceptions),
        "per_type": {
            kind: {
                "count": len(sizes),
                "per_interception": len(sizes) / len(interceptions),
                "mean_bytes": sum(sizes) / len(sizes),
            }
            for kind, sizes in sorted(by_type.items())
        },
        "json_bytes_per_event": total / len(encoded),
        "json_bytes_per_interception": total / len(interceptions),
        "lz4_bytes_per_event": compressed / len(encoded),
        "lz4_ratio": total / compressed,
        "key_bytes": key,
    }


async def record(interceptions: list[list[Event]], data_dir: str) -> Client:
    """Publish every event and let one recorder store them all; returns the store's client."""
    broker = start_broker()
    try:
        await rt.create_topics(broker.bootstrap, "bench.s", "bench.s.dlq")
        settings = rt.settings_for(broker.bootstrap, "bench.s", data_dir, "sizes")
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=20, max_batch_size=1 << 20)
        await producer.start()
        events = [event for group in interceptions for event in group]
        for start in range(0, len(events), 5000):
            await rt.publish(producer, settings.kafka_topic, events[start : start + 5000])
        await producer.stop()
        client = store.connect(settings.clickhouse_url, settings.clickhouse_database, create_database=True)
        consumer = KafkaConsumer(settings, settings.consumer_group, **settings.kafka_consumer_options())
        recorder = RecorderComponent(settings, consumer, KafkaProducer(settings), client)
        rows_before = rt.written_rows()
        await recorder.start()
        deadline = time.monotonic() + 600
        # the recorder counts the rows it wrote; polling that counter is cheaper than querying the store
        while rt.written_rows() - rows_before < len(events) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        await recorder.stop()
        if (stored := rt.stored_rows(client)) != len(events):
            raise AssertionError(f"{stored} events stored, {len(events)} expected")
        return client
    finally:
        broker.stop()


def disk_sizes(client: Client, count: int) -> dict[str, Any]:
    """Merge every table, then each table's active parts as ClickHouse reports them.

    ``bytes_on_disk`` counts a part's files, its projections included; ``compressed`` and ``uncompressed``
    are the table's own columns (projections excluded), whose ratio is the compression ClickHouse reaches.
    """
    tables = [row[0] for row in client.query(
        "SELECT name FROM system.tables WHERE database = currentDatabase() AND engine LIKE '%MergeTree'"
    ).result_rows]  # fmt: skip
    for table in tables:
        client.command(f"OPTIMIZE TABLE {table} FINAL")
    parts = client.query(
        "SELECT table, sum(rows), sum(bytes_on_disk), sum(data_compressed_bytes), sum(data_uncompressed_bytes) "
        "FROM system.parts WHERE database = currentDatabase() AND active AND table != 'schema_migrations' "
        "GROUP BY table ORDER BY table"
    ).result_rows
    projection_rows = client.query(
        "SELECT table, sum(bytes_on_disk) FROM system.projection_parts "
        "WHERE database = currentDatabase() AND active GROUP BY table"
    ).result_rows
    projections = {str(table): int(size) for table, size in projection_rows}
    per_table = {
        str(table): {
            "rows": int(rows),
            "bytes_on_disk": int(disk),
            "bytes_on_disk_per_interception": int(disk) / count,
            "compressed": int(packed),
            "uncompressed": int(raw),
            "projection_bytes_on_disk": int(projections.get(table, 0)),
        }
        for table, rows, disk, packed, raw in parts
    }
    on_disk = sum(table["bytes_on_disk"] for table in per_table.values())
    packed = sum(table["compressed"] for table in per_table.values())
    raw = sum(table["uncompressed"] for table in per_table.values())
    return {
        "tables": per_table,
        "bytes_on_disk_total": on_disk,
        "bytes_on_disk_per_interception": on_disk / count,
        "compressed_bytes_per_interception": packed / count,
        "uncompressed_bytes_per_interception": raw / count,
        "compression_ratio": raw / packed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--interceptions", type=int, default=50_000)
    parser.add_argument("--users", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=14)
    bench_results.add_json_argument(parser, "storage_size")
    args = parser.parse_args()
    run_record = bench_results.Run("storage_size", {"interceptions": args.interceptions, "users": args.users})
    interceptions = workload(args.interceptions, args.users, args.seed)
    events = event_sizes(interceptions)
    print(orjson.dumps(events, option=orjson.OPT_INDENT_2).decode())
    with tempfile.TemporaryDirectory(prefix="aibridge-bench-sizes-") as data_dir:
        client = asyncio.run(record(interceptions, data_dir))
        disk = disk_sizes(client, args.interceptions)
    print(orjson.dumps(disk, option=orjson.OPT_INDENT_2).decode())
    print(f"rerun: {bench_results.rerun_command()}")
    run_record.write(args.json, {"events": events, "clickhouse": disk})


if __name__ == "__main__":
    main()
