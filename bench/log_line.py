"""The interception log line's cost: microseconds of the calling thread per line, p50 and p99.

``log_interception`` (services/proxy/recording/outcome.py) is timed call by call after a warm-up, in
alternating rounds, three ways, each writing the same JSON line to a pipe that another process drains
(as a container runtime reads a proxy's stderr):

- ``logging``: through the logging module (``LogRecord``, ``JsonFormatter``, ``StreamHandler``), as the
  proxy does when the direct path is off (a terminal, ``--trace-logs``, a handler of one's own);
- ``direct``: the direct path (:class:`aibridge.logs.DirectLines`), one write per line, as for a line
  written outside a recording batch (a rejected request);
- ``direct, batch of N``: the direct path inside ``DirectLines.held``, as the proxy's deferred
  recording writes the lines of the interceptions it records together (time per batch / N; whole
  lines, up to 4,096 bytes a write).

One process on a machine that may be shared: rerun it rather than trusting one run.

    .venv/bin/python bench/log_line.py [--lines 40000] [--rounds 10]
"""

from __future__ import annotations

import argparse
import io
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import results as bench_results

from aibridge.events import InterceptionContext, Status
from aibridge.logs import configure_logging, direct_lines, note_record_origin
from aibridge.proxy.providers.records import ResponseSummary, ToolCall, Usage
from aibridge.proxy.recording.outcome import log, log_interception

BATCHES = (4, 32)


def interception() -> tuple[InterceptionContext, ResponseSummary]:
    context = InterceptionContext(
        initiator_id="user-0f3c9a",
        initiator_username="alice",
        provider="anthropic",
        model="claude-sonnet-4-5",
        client="Claude Code",
        streaming=True,
        route="/v1/messages",
        api_key_id="key-1",
    )
    usage = Usage(input_tokens=1204, output_tokens=312, cache_read_input_tokens=18211, cache_write_input_tokens=2048)
    return context, ResponseSummary(usage=usage, tool_calls=[ToolCall("call-1", "Read", "{}")])


def drained_pipe() -> tuple[subprocess.Popen[bytes], io.TextIOWrapper]:
    """A text stream like a non-terminal stderr (line-buffered) into a pipe that ``cat`` empties."""
    reader = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    assert reader.stdin is not None
    return reader, io.TextIOWrapper(reader.stdin, encoding="utf-8", errors="backslashreplace", line_buffering=True)


def timed(run: Callable[[], None], calls: int, lines_per_call: int = 1) -> list[float]:
    samples = []
    for _ in range(calls):
        started = time.perf_counter_ns()
        run()
        samples.append((time.perf_counter_ns() - started) / 1000 / lines_per_call)
    return samples


def summary(samples: list[float]) -> dict[str, float]:
    samples.sort()
    p99 = samples[min(len(samples) - 1, round(len(samples) * 0.99))]
    return {"p50_us": round(statistics.median(samples), 2), "p99_us": round(p99, 2)}


def paths() -> dict[str, tuple[bool, Callable[[], None], int]]:
    """Each path: whether it is direct, one call, and the lines a call writes."""
    context, answer = interception()
    ended = context.started_at

    def line() -> None:
        log_interception(context, Status.COMPLETED, 200, answer, ended)

    def batch(size: int) -> Callable[[], None]:
        def run() -> None:
            with direct_lines.held():
                for _ in range(size):
                    line()

        return run

    batches = {f"direct, batch of {size}": (True, batch(size), size) for size in BATCHES}
    return {"logging": (False, line, 1), "direct": (True, line, 1)} | batches


def cases(lines: int, rounds: int) -> dict[str, dict[str, float]]:
    """About ``lines`` lines per path, in ``rounds`` alternating rounds (a drift of the machine lands on all)."""
    installed = direct_lines.handler
    samples: dict[str, list[float]] = {}
    for index in range(rounds + 1):  # the first round warms up
        for name, (direct, run, size) in paths().items():
            direct_lines.install(installed if direct else None)
            assert (direct_lines.handler_for(log) is not None) == direct, name
            taken = timed(run, max(10, lines // rounds // size), size)
            samples.setdefault(name, []).extend(taken if index else [])
    direct_lines.install(installed)
    return {name: summary(taken) for name, taken in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=40_000, help="timed lines per path")
    parser.add_argument("--rounds", type=int, default=10, help="alternating rounds over the paths")
    bench_results.add_json_argument(parser, "log_line")
    args = parser.parse_args()
    run_record = bench_results.Run("log_line", {"lines": args.lines, "rounds": args.rounds, "batches": list(BATCHES)})
    reader, stream = drained_pipe()
    stderr, sys.stderr = sys.stderr, stream
    try:
        configure_logging("INFO", json_lines=True)
        note_record_origin(False)  # as the proxy runs unless spans attach log records
        measured = cases(args.lines, args.rounds)
    finally:
        sys.stderr = stderr
        stream.close()
        reader.wait(10)
    print(f"{'path':22} {'p50 us':>8} {'p99 us':>8}")
    for name, numbers in measured.items():
        print(f"{name:22} {numbers['p50_us']:>8.2f} {numbers['p99_us']:>8.2f}")
    run_record.write(args.json, {"per_line": measured})
    print(f"rerun: {bench_results.rerun_command()}")


if __name__ == "__main__":
    main()
