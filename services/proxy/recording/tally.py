"""The metric updates of one recording batch, summed per series and written when the batch ends.

Each Prometheus sample write takes a lock (in multiprocess mode, a write into the worker's mapped file),
and a histogram observation walks its buckets: recording one interception made about a dozen such
writes. Recording runs in batches (:mod:`.deferred`: the interceptions that end together are recorded
together), and within a batch most interceptions land on the same few series: inside
:meth:`Tally.held` an update only adds to a sum (a counter's amount, a histogram's count per bucket and
its sum), and each series is written once when the outermost block ends. Outside a block (a rejection
recorded at once) an update is written as it comes. The scrape sees the same totals either way, a
batch's later (by the batch's length: about a millisecond).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class Tally:
    def __init__(self) -> None:
        self._depth = 0
        self._added: dict[Any, float] = {}  # a counter's (or gauge's) child -> what to add
        self._observed: dict[Any, list[float]] = {}  # a histogram's child -> the values observed

    def add(self, child: Any, amount: float = 1.0) -> None:
        """``child.inc(amount)``, now or when the batch ends."""
        if not self._depth:
            child.inc(amount)
            return
        self._added[child] = self._added.get(child, 0.0) + amount

    def observe(self, child: Any, value: float) -> None:
        """``child.observe(value)``, now or when the batch ends."""
        if not self._depth:
            child.observe(value)
            return
        values = self._observed.get(child)
        if values is None:
            self._observed[child] = [value]
        else:
            values.append(value)

    @contextmanager
    def held(self) -> Iterator[None]:
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if not self._depth:
                self.flush()

    def flush(self) -> None:
        added, self._added = self._added, {}
        observed, self._observed = self._observed, {}
        for child, amount in added.items():
            child.inc(amount)
        for child, values in observed.items():
            observe_all(child, values)


def observe_all(child: Any, values: list[float]) -> None:
    """``child.observe(value)`` for each value, a histogram's buckets and sum written once each.

    Written as :meth:`prometheus_client.Histogram.observe` keeps them: each observation counts in the
    first bucket whose upper bound holds it (the exposition sums them); any other kind of child (or a
    histogram laid out otherwise) observes one value at a time."""
    bounds = getattr(child, "_upper_bounds", None)
    buckets = getattr(child, "_buckets", None)
    total = getattr(child, "_sum", None)
    if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
        for value in values:
            child.observe(value)
        return
    child._raise_if_not_observable()
    counts = [0] * len(bounds)
    for value in values:
        counts[bisect_left(bounds, value)] += 1  # the first bound >= value; the last is +Inf
    total.inc(sum(values))
    for index, count in enumerate(counts):
        if count:
            buckets[index].inc(count)


tally = Tally()
