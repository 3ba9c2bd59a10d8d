"""The interception log line's cost: microseconds of the calling thread per line, p50 and p99.

``log_interception`` (services/proxy/recording/outcome.py) is timed call by call after a warm-up, three
ways, each writing the same JSON line to a pipe that another process drains (as a container runtime
reads a proxy's stderr):

- ``logging``: through the logging module (``LogRecord``, ``JsonFormatter``, ``StreamHandler``), as the
  proxy does when the direct path is off (a terminal, ``--trace-logs``, a handler of one's own);
- ``direct``: the direct path (:class:`aibridge.logs.DirectLines`), one write per line, as for a line
  written outside a recording batch (a rejected request);
- ``direct, batch of N``: the direct path inside ``DirectLines.held``, as the proxy's deferred
  recording writes the lines of the interceptions it records together (time per batch / N).

One process on a machine that may be shared: rerun it rather than trusting one run.

    .venv/bin/python bench/log_line.py [--rounds 20000]
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


def per_line(run: Callable[[], None], rounds: int, lines_per_run: int = 1) -> list[float]:
    for _ in range(min(rounds, 500)):
        run()
    samples = []
    for _ in range(rounds):
        started = time.perf_counter_ns()
        run()
        samples.append((time.perf_counter_ns() - started) / 1000 / lines_per_run)
    return sorted(samples)


def summary(samples: list[float]) -> dict[str, float]:
    p99 = samples[min(len(samples) - 1, round(len(samples) * 0.99))]
    return {"p50_us": round(statistics.median(samples), 2), "p99_us": round(p99, 2)}


def cases(rounds: int) -> dict[str, dict[str, float]]:
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

    installed = direct_lines.handler
    direct_lines.install(None)
    measured = {"logging": summary(per_line(line, rounds))}
    direct_lines.install(installed)
    assert direct_lines.handler_for(log) is not None, "the direct path is not taken"
    measured["direct"] = summary(per_line(line, rounds))
    for size in BATCHES:
        measured[f"direct, batch of {size}"] = summary(per_line(batch(size), max(100, rounds // size), size))
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20_000, help="timed lines per case")
    bench_results.add_json_argument(parser, "log_line")
    args = parser.parse_args()
    run_record = bench_results.Run("log_line", {"rounds": args.rounds, "batches": list(BATCHES)})
    reader, stream = drained_pipe()
    stderr, sys.stderr = sys.stderr, stream
    try:
        configure_logging("INFO", json_lines=True)
        note_record_origin(False)  # as the proxy runs unless spans attach log records
        measured = cases(args.rounds)
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
