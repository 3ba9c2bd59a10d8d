"""``aibridge dlq``: list the dead-letter topic, and replay its letters once their cause is fixed.

``list`` reads the whole topic without a consumer group and prints one JSON line per letter: where it
lies, when it was dead-lettered, why (kind and reason), where it came from, and the ids it names
(never its contents). ``replay`` consumes the topic as its own consumer group and sends each letter
back to the events topic as it was first published (same key, value and headers, the dead-letter
headers removed), then commits: a second replay sends only letters added since. A letter whose cause
is still there is dead-lettered again, as a new letter.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from aibridge.bus import BusError, Message, Partition
from aibridge.events import parse_time
from aibridge.kafka import KafkaConsumer, KafkaProducer, read_topic
from aibridge.recorder.settings import RecorderSettings
from aibridge.recorder.stages import KIND_HEADER, REASON_HEADER

DLQ_HEADER_PREFIX: Final = "aibridge-dlq-"
_JOIN_TIMEOUT: Final = 30.0


def original_headers(letter: Message) -> list[tuple[str, bytes]]:
    """The headers the message had before it was dead-lettered."""
    return [(name, value) for name, value in letter.headers if not name.startswith(DLQ_HEADER_PREFIX)]


def describe(letter: Message) -> dict[str, Any]:
    """One letter for an operator: ids, times and reasons, never the event's contents."""
    headers = dict(letter.headers)
    source = {name.removeprefix(f"{DLQ_HEADER_PREFIX}source-"): value.decode("utf-8", "replace")
              for name, value in headers.items() if name.startswith(f"{DLQ_HEADER_PREFIX}source-")}  # fmt: skip
    described: dict[str, Any] = {
        "letter": f"{letter.partition.topic}[{letter.partition.index}]@{letter.offset}",
        "dead_lettered_at": _time_text(letter.timestamp_ms),
        "kind": headers.get(KIND_HEADER, b"").decode("utf-8", "replace"),
        "reason": headers.get(REASON_HEADER, b"").decode("utf-8", "replace"),
        "source": f"{source.get('topic', '?')}[{source.get('partition', '?')}]@{source.get('offset', '?')}",
        "interception_id": letter.key.decode("utf-8", "replace") if letter.key else None,
    }
    return described | _event_ids(letter.value)


def _event_ids(value: bytes) -> dict[str, Any]:
    try:
        event = orjson.loads(value)
    except orjson.JSONDecodeError:
        return {}
    if not isinstance(event, dict):
        return {}
    return {name: event[name] for name in ("event_id", "type") if isinstance(event.get(name), str)}


def _time_text(timestamp_ms: int) -> str | None:
    if not timestamp_ms:
        return None
    return datetime.fromtimestamp(timestamp_ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _in_window(letter: Message, since: datetime | None, until: datetime | None) -> bool:
    moment = datetime.fromtimestamp(letter.timestamp_ms / 1000, UTC)
    return (since is None or moment >= since) and (until is None or moment < until)


async def list_letters(settings: RecorderSettings, args: argparse.Namespace) -> int:
    since, until = _window(args)
    letters = sorted(await read_topic(settings, settings.dlq_topic), key=lambda m: (m.timestamp_ms, m.offset))
    shown = [letter for letter in letters if _in_window(letter, since, until)][: args.max]
    for letter in shown:
        _print(describe(letter))
    print(f"{len(shown)} of {len(letters)} dead letters in {settings.dlq_topic}", file=sys.stderr)
    return 0


async def replay(settings: RecorderSettings, args: argparse.Namespace) -> int:
    """Send letters not yet replayed by ``args.group`` back to the events topic; commit after each poll."""
    consumer = KafkaConsumer(settings, args.group, settings.dlq_topic)
    producer = KafkaProducer(settings)
    await consumer.start()
    try:
        if not args.dry_run:
            await producer.start()
        replayed = await _replay_all(consumer, producer, settings, args)
    finally:
        await producer.stop()
        await consumer.stop()
    verb = "would replay" if args.dry_run else "replayed"
    print(f"{verb} {replayed} dead letters from {settings.dlq_topic} to {settings.kafka_topic}", file=sys.stderr)
    return 0


async def _replay_all(
    consumer: KafkaConsumer, producer: KafkaProducer, settings: RecorderSettings, args: argparse.Namespace
) -> int:
    replayed, deadline = 0, time.monotonic() + _JOIN_TIMEOUT
    while args.max is None or replayed < args.max:
        room = 500 if args.max is None else min(500, args.max - replayed)
        letters = await consumer.poll(room, 0.5)
        if not letters:
            if await consumer.caught_up():
                break
            if time.monotonic() > deadline:
                raise BusError(f"no partition of {settings.dlq_topic} was assigned within {_JOIN_TIMEOUT:g}s")
            continue
        for letter in letters:
            if not args.dry_run:
                await producer.send(settings.kafka_topic, letter.key, letter.value, original_headers(letter))
            _print(describe(letter) | {"replayed_to": settings.kafka_topic, "dry_run": args.dry_run})
        replayed += len(letters)
        if not args.dry_run:
            await consumer.commit(_next_offsets(letters))
    return replayed


def _next_offsets(letters: Sequence[Message]) -> dict[Partition, int]:
    offsets: dict[Partition, int] = {}
    for letter in letters:
        offsets[letter.partition] = max(offsets.get(letter.partition, 0), letter.offset + 1)
    return offsets


def _window(args: argparse.Namespace) -> tuple[datetime | None, datetime | None]:
    return (
        parse_time(args.since) if args.since else None,
        parse_time(args.until) if args.until else None,
    )


def _print(record: dict[str, Any]) -> None:
    sys.stdout.write(orjson.dumps(record).decode() + "\n")


def main(args: argparse.Namespace) -> int:
    overrides = {"kafka_topic": args.topic} if args.topic else {}
    settings = RecorderSettings(**overrides)
    command = list_letters if args.dlq_command == "list" else replay
    try:
        return asyncio.run(command(settings, args))
    except BusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
