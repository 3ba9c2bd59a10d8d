"""The fast id and timestamp formatting of aibridge.events gives exactly the standard library's text."""

from __future__ import annotations

import os
import random
import uuid
from datetime import UTC, datetime, timedelta, timezone

from aibridge.events import format_time, new_id


def test_new_id_is_a_canonical_random_uuid() -> None:
    ids = {new_id() for _ in range(2000)}
    assert len(ids) == 2000
    for text in ids:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, text)


def test_format_time_matches_strftime_in_every_zone_and_year() -> None:
    rng = random.Random(3)
    zones = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]
    moments = [datetime(1, 1, 1, tzinfo=UTC), datetime(999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)]
    moments += [datetime.fromtimestamp(rng.uniform(0, 4e9), rng.choice(zones)) for _ in range(500)]
    moments += [datetime(2026, 11, 27, 10, 15, 30, tzinfo=UTC), datetime(2026, 11, 27, 10, 15, 30, 123456)]
    for moment in moments:
        assert format_time(moment) == moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert format_time(datetime(2026, 11, 27, 10, 15, 30, tzinfo=UTC)) == "2026-11-27T10:15:30.000000Z"


def test_format_time_reuses_a_seconds_text_only_within_that_second() -> None:
    """UTC times come in runs within one second (the text up to the second is kept) and cross seconds,
    minutes and years, back and forth: each text is still the standard library's."""
    rng = random.Random(5)
    start = datetime(2026, 12, 31, 23, 59, 58, 999_990, tzinfo=UTC)
    moments = [start + timedelta(microseconds=step) for step in range(0, 40)]  # across a second and a year
    moments += [start + timedelta(microseconds=rng.randrange(-3_000_000, 3_000_000)) for _ in range(3000)]
    moments += [moment.replace(year=1970) for moment in moments[:50]] + moments[:50]  # same second, other year
    for moment in moments:
        assert format_time(moment) == moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    new_id()  # the parent holds a batch of randomness now
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child process
        os.write(write_end, "".join(new_id() for _ in range(300)).encode())
        os._exit(0)
    os.close(write_end)
    os.waitpid(child, 0)
    with os.fdopen(read_end) as pipe:
        text = pipe.read()
    from_child = {text[i : i + 36] for i in range(0, len(text), 36)}
    from_parent = {new_id() for _ in range(300)}
    assert len(from_child) == 300 and not from_child & from_parent
