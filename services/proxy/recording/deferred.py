"""Bookkeeping that runs once the answer is out and the proxy has let the CPU go.

Recording an interception (parsing what is left of a stream, building and queueing its events, the
metrics, the log line) is work nobody waits for. Done right after the answer's last write, it runs
exactly when the client (and, for the next request, the provider) wants a CPU to read that answer:
on a node where the proxy shares cores with them, the client waits for the bookkeeping. Deferred by
a millisecond, it runs after the event loop has slept: the client reads first. In the interleaved
benchmark (``bench/proxy_ab.py``) that cut the added p50 by about 0.15 ms, blocking and streamed
(docs/performance.md). Jobs that come due together run together.

Nothing is lost by the wait: :meth:`Deferred.flush` runs whatever is pending (the proxy calls it
when it stops, before the event emitter flushes), and a job that raises is logged and does not stop
the others. Times are taken when the answer ends, not when the job runs.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from aibridge.logs import direct_lines
from aibridge.proxy.recording.tally import tally

log = logging.getLogger("aibridge.proxy")

DELAY = 0.001  # seconds: long enough for the loop to sleep, short enough to change nothing observable


class Deferred:
    def __init__(self, delay: float = DELAY) -> None:
        self.delay = delay
        self._jobs: deque[tuple[Callable[..., None], tuple[Any, ...]]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._jobs)

    def call(self, job: Callable[..., None], *args: Any) -> None:
        """Run ``job(*args)`` about ``delay`` seconds from now, on this event loop."""
        self._jobs.append((job, args))
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.delay, self._run)

    def flush(self) -> None:
        """Run every pending job now."""
        if self._timer is not None:
            self._timer.cancel()
        self._run()

    def _run(self) -> None:
        self._timer = None
        jobs = self._jobs
        # the batch's interception log lines go out together, its metric updates once per series
        with direct_lines.held(), tally.held():
            while jobs:
                job, args = jobs.popleft()
                try:
                    job(*args)
                except Exception:
                    log.exception("recording an interception failed")
