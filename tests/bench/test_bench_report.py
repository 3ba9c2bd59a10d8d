"""bench/report.py and bench/sizing.py: the pages' numbers are those of the committed results."""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import report  # noqa: E402
import sizing  # noqa: E402


def results(name: str) -> dict[str, Any]:
    run = report.load(name)
    if run is None:
        pytest.fail(f"bench/results/{name}.json is missing: run the benchmark, then bench/report.py")
    return run


@pytest.mark.parametrize("page", report.PAGES, ids=lambda page: page.name)
def test_each_page_shows_the_committed_results(page: Path) -> None:
    text = page.read_text()
    assert "<!-- bench:" in text
    assert report.regenerate(text) == text, f"{page.name} is out of date: run .venv/bin/python bench/report.py"


def test_a_block_is_filled_from_the_results_and_one_without_results_is_left_alone() -> None:
    page = (
        "<!-- bench:storage_size -->\nstale\n<!-- /bench -->\n<!-- bench:no_such_benchmark -->\nkept\n<!-- /bench -->\n"
    )
    updated = report.regenerate(page)
    assert "stale" not in updated
    per_interception = results("storage_size")["results"]["clickhouse"]["bytes_on_disk_per_interception"]
    assert f"**{per_interception:,.0f} B**" in updated
    assert "<!-- bench:no_such_benchmark -->\nkept\n<!-- /bench -->" in updated


def render(storage: dict[str, Any]) -> str:
    text = sizing.render(results("proxy_overhead"), results("recorder_throughput"), storage, report.api_runs())
    assert text is not None
    return text


def test_clickhouse_disk_follows_the_measured_bytes_per_interception() -> None:
    storage = results("storage_size")
    doubled = copy.deepcopy(storage)
    doubled["results"]["clickhouse"]["bytes_on_disk_per_interception"] *= 2
    measured = storage["results"]["clickhouse"]["bytes_on_disk_per_interception"]
    month = 1_000 * sizing.REQUESTS_PER_DEVELOPER_HOUR * sizing.ACTIVE_HOURS_PER_DAY * sizing.WORKING_DAYS_PER_MONTH
    assert f"{month * measured / 2**30:,.1f} GiB" in render(storage)
    assert f"{month * measured * 2 / 2**30:,.1f} GiB" in render(doubled)


def test_proxy_replicas_follow_the_measured_cpu_per_request() -> None:
    proxy = results("proxy_overhead")
    cheap = copy.deepcopy(proxy)
    for row in cheap["results"]["throughput"]["builtin"]:
        row["proxy_cpu_us_per_request"] /= 100
    dear = copy.deepcopy(proxy)
    for row in dear["results"]["throughput"]["builtin"]:
        row["proxy_cpu_us_per_request"] *= 100
    storage, recorder = results("storage_size"), results("recorder_throughput")
    replicas = [sizing.proxy_replicas(sizing.measured(run, recorder, storage), 10_000) for run in (cheap, proxy, dear)]
    assert replicas[0] == 2  # one replica's capacity covers the peak, plus the spare
    assert replicas[0] <= replicas[1] < replicas[2]
