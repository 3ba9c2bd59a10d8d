"""Budgets on against budgets off: the added latency of the budget check on the proxy's hot path.

Three AI Bridge proxies, ``off`` (the default), ``on`` (``AIBRIDGE_BUDGETS=true``, reading budgets and
spend from an embedded store prepared here) and ``off-2`` (the default again), take turns with the
simulator directly in 1-second windows of one open-loop run (``proxy_ab.py``), so a drift of the shared
machine lands on all alike. ``off-2`` minus ``off`` is an A/A difference: what two identical proxies
differ by on this machine, the noise floor against which ``on`` minus ``off`` is read. The store
holds a month budget for the benchmark's user, far above what the run spends, so every request of ``on``
goes through the whole check (budget lookup, spend, comparison) and is admitted: the run reads ``on``'s
``aibridge_proxy_budget_decisions_total`` afterwards and fails unless it counted a ``within`` decision
for every request. Results go to bench/results/budgets_ab.json for bench/report.py.

Rerun:  .venv/bin/python bench/budgets_ab.py   # about 1 minute with the defaults
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import multiprocessing
import statistics
import sys
import tempfile
import timeit
import uuid
from decimal import Decimal
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).parent))
import proxy_ab
import results as bench_results

DECISIONS = "aibridge_proxy_budget_decisions_total"
LIMIT_USD = Decimal("1000000")  # far above the run's spend: every request is checked and admitted
DATABASE = "aibridge"


def prepare_store(url: str, timings: Path) -> None:
    """Migrate the embedded store at ``url``, give the benchmark's user a month budget, and time the
    guard's two per-request calls on it (written to ``timings``).

    Runs in a child process: the embedded engine belongs to one process at a time, and the proxy opens it next.
    """
    from aibridge import budgets, store
    from aibridge.budgets import Budget, Period, Scope

    client = store.connect(url, DATABASE, create_database=True)
    store.migrate(client)
    budget = Budget(Scope.USER, proxy_ab.BENCH_USER, Period.MONTH, LIMIT_USD, Decimal("0.8"))
    budgets.save(client, budget, "bench", datetime.datetime.now(datetime.UTC))
    timings.write_bytes(orjson.dumps(time_guard(client)))


def time_guard(client: object) -> dict[str, float]:
    """Median µs of ``BudgetGuard.check`` (a user with a budget, admitted) and of ``BudgetGuard.recorded``
    (one token usage priced and counted), each over 20 rounds of 5,000 calls."""
    from aibridge import pricing
    from aibridge.auth import Identity, Role
    from aibridge.events import EventType
    from aibridge.groups import GroupMap
    from aibridge.proxy.guards.budgets import BudgetGuard

    guard = BudgetGuard(client, GroupMap({}), pricing.builtin(), interval=3600)  # type: ignore[arg-type]
    asyncio.run(guard.refresh())
    identity = Identity("bench-id", proxy_ab.BENCH_USER, Role.MEMBER, "jti", 0.0)
    assert guard.check(identity) is None and guard.book, "the budget was not read"
    usage = {
        "type": EventType.TOKEN_USAGE,
        "provider": "openai",
        "model": "gpt-4o-mini",
        "input_tokens": 20,
        "output_tokens": 10,
        "cache_read_input_tokens": 0,
        "cache_write_input_tokens": 0,
        "initiator": {"id": "bench-id"},
    }
    calls, rounds = 5_000, 20
    events = iter([usage | {"event_id": str(uuid.uuid4())} for _ in range(calls * rounds)])
    check = timeit.repeat(lambda: guard.check(identity), number=calls, repeat=rounds)
    recorded = timeit.repeat(lambda: guard.recorded(next(events)), number=calls, repeat=rounds)  # type: ignore[arg-type]
    return {
        "check_us_p50": statistics.median(check) / calls * 1e6,
        "recorded_us_p50": statistics.median(recorded) / calls * 1e6,
    }


def decisions(lines: list[str]) -> dict[str, float]:
    """``{outcome: count}`` from the samples of the decisions counter."""
    counts = {}
    for line in lines:
        name, value = line.rsplit(" ", 1)
        if name.startswith(DECISIONS + "{"):
            counts[name.split('outcome="', 1)[1].split('"', 1)[0]] = float(value)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per variant")
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument(
        "--refresh-interval", type=float, default=10.0, help="AIBRIDGE_BUDGET_REFRESH_INTERVAL of 'on' (default 10)"
    )
    bench_results.add_json_argument(parser, "budgets_ab")
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="aibridge-bench-store-"))
    url, timings = f"chdb://{directory / 'store'}", directory / "guard-timings.json"
    child = multiprocessing.get_context("spawn").Process(target=prepare_store, args=(url, timings))
    child.start()
    child.join()
    if child.exitcode != 0:
        sys.exit(f"preparing the store failed (exit code {child.exitcode})")
    in_process = orjson.loads(timings.read_bytes())
    print(
        f"in process: check {in_process['check_us_p50']:.2f} µs, recorded {in_process['recorded_us_p50']:.2f} µs "
        "per call (median)"
    )
    settings = f"AIBRIDGE_BUDGETS=true:AIBRIDGE_CLICKHOUSE_URL={url}"
    on = f"on:{settings}:AIBRIDGE_BUDGET_REFRESH_INTERVAL={args.refresh_interval:g}"
    variants = ["off", on, "off-2"]
    params = {
        "variants": variants,
        "duration": args.duration,
        "rate": args.rate,
        "refresh_interval": args.refresh_interval,
    }
    run_record = bench_results.Run("budgets_ab", params)
    rows, scraped = proxy_ab.measure(variants, args.rate, args.duration, scrape=(DECISIONS,))
    checked, unchecked = decisions(scraped["on"]), decisions(scraped["off"]) | decisions(scraped["off-2"])
    # Each of the two measured runs (blocking, streaming) sends rate x duration requests to each target.
    least = 2 * args.rate * args.duration
    if checked.get("within", 0) < least or set(checked) - {"within"} or unchecked:
        sys.exit(
            f"the budget check did not run on every request: on {checked}, off {unchecked} (>= {least:.0f} within)"
        )
    decided = {"on": checked, "off": unchecked}
    run_record.write(args.json, {"rows": rows, "decisions": decided, "in_process": in_process})


if __name__ == "__main__":
    main()
