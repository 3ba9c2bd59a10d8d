"""Metric updates summed over a recording batch: the exposition after the batch is what one write per
update gives, histograms included (bucket edges, +Inf, the sum)."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, Summary, generate_latest

from aibridge.proxy.recording.tally import Tally

BUCKETS = (0.001, 0.01, 0.1, 1.0)
VALUES = [0.0, 0.001, 0.0011, 0.01, 0.05, 0.1, 0.5, 1.0, 3.0, 1e9, 0.0005]


def metrics(registry: CollectorRegistry) -> tuple[Counter, Histogram, Summary]:
    counter = Counter("calls", "", ["kind"], registry=registry)
    histogram = Histogram("took_seconds", "", ["kind"], buckets=BUCKETS, registry=registry)
    summary = Summary("sizes", "", registry=registry)
    return counter, histogram, summary


def exposition(registry: CollectorRegistry) -> list[str]:
    return sorted(line for line in generate_latest(registry).decode().splitlines() if "_created" not in line)


def test_a_batch_exposes_what_one_write_per_update_gives() -> None:
    direct, tallied = CollectorRegistry(), CollectorRegistry()
    (counter, histogram, summary), (counter2, histogram2, summary2) = metrics(direct), metrics(tallied)
    tally = Tally()
    with tally.held():
        for value in VALUES:
            for kind in ("a", "b"):
                counter.labels(kind).inc(value)
                histogram.labels(kind).observe(value)
                tally.add(counter2.labels(kind), value)
                tally.observe(histogram2.labels(kind), value)
            summary.observe(value)
            tally.observe(summary2, value)  # no buckets: observed one by one
        assert tallied.get_sample_value("took_seconds_count", {"kind": "a"}) == 0.0  # nothing written yet
        assert tallied.get_sample_value("calls_total", {"kind": "a"}) == 0.0
    assert exposition(tallied) == exposition(direct)


def test_outside_a_batch_updates_are_written_at_once_and_nested_blocks_write_at_the_outermost() -> None:
    registry = CollectorRegistry()
    counter, histogram, _ = metrics(registry)
    tally = Tally()
    tally.add(counter.labels("a"))
    tally.observe(histogram.labels("a"), 0.5)
    assert registry.get_sample_value("calls_total", {"kind": "a"}) == 1.0
    assert registry.get_sample_value("took_seconds_count", {"kind": "a"}) == 1.0
    with tally.held():
        with tally.held():
            tally.add(counter.labels("a"), 2)
        assert registry.get_sample_value("calls_total", {"kind": "a"}) == 1.0
    assert registry.get_sample_value("calls_total", {"kind": "a"}) == 3.0


def test_a_batch_that_raises_still_writes_what_it_counted() -> None:
    registry = CollectorRegistry()
    counter, _, _ = metrics(registry)
    tally = Tally()
    with pytest.raises(RuntimeError), tally.held():
        tally.add(counter.labels("a"), 4)
        raise RuntimeError("a recording job failed")
    assert registry.get_sample_value("calls_total", {"kind": "a"}) == 4.0
