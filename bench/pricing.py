"""Pricing cost: nanoseconds for one ``PriceTable.cost`` call (what the recorder pays per token usage and
the proxy's budget check per answer), p50 and p99, for a known model (family name and a dated name,
resolved once and remembered), a long-context tier, and an unknown model. Each case is timed call by
call (``time.perf_counter_ns``) after a warm-up, in this one process, on a machine that may be shared:
rerun it rather than trusting one run.

    .venv/bin/python bench/pricing.py [--rounds 200000]
"""

from __future__ import annotations

import argparse
import statistics
import time

from aibridge import pricing

CASES = (
    ("family name", "anthropic", "claude-sonnet-4-5", pricing.Tokens(1204, 356, 18211, 2048)),
    ("dated name", "openai", "gpt-5-2025-08-07", pricing.Tokens(5000, 800, 12000, 0)),
    ("long-context tier", "anthropic", "claude-sonnet-4-5", pricing.Tokens(150_000, 2000, 90_000, 0)),
    ("unknown model", "openai", "house-model-1", pricing.Tokens(100, 10, 0, 0)),
)


def timed(table: pricing.PriceTable, provider: str, model: str, usage: pricing.Tokens, rounds: int) -> list[int]:
    for _ in range(1000):
        table.cost(provider, model, usage)
    samples = []
    for _ in range(rounds):
        started = time.perf_counter_ns()
        table.cost(provider, model, usage)
        samples.append(time.perf_counter_ns() - started)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200_000)
    rounds = parser.parse_args().rounds
    table = pricing.load()
    print(f"{'case':<20} {'p50 ns':>8} {'p99 ns':>8}")
    for name, provider, model, usage in CASES:
        samples = sorted(timed(table, provider, model, usage, rounds))
        p99 = samples[int(len(samples) * 0.99)]
        print(f"{name:<20} {statistics.median(samples):>8.0f} {p99:>8}")
    print(f"rerun: .venv/bin/python bench/pricing.py --rounds {rounds}")


if __name__ == "__main__":
    main()
