"""Where a benchmark writes its results: one JSON document per run, the source of docs/performance.md's tables.

Each document holds the benchmark's name, the command that produced it, the machine (cores, CPU model,
Python, load average before and after), the date, the parameters and the results. ``bench/report.py``
turns the latest documents into the page's tables.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

RESULTS_DIR = Path(__file__).parent / "results"


def add_json_argument(parser: argparse.ArgumentParser, name: str) -> None:
    """``--json PATH``: where the run's results go (default ``bench/results/<name>.json``)."""
    default = RESULTS_DIR / f"{name}.json"
    parser.add_argument("--json", type=Path, default=default, help=f"write the results here (default {default})")


def rerun_command() -> str:
    """This run's command line, as a reader of the repository would type it."""
    script = Path(sys.argv[0]).resolve()
    try:
        script_arg = str(script.relative_to(Path(__file__).parent.parent))
    except ValueError:
        script_arg = sys.argv[0]
    return shlex.join([".venv/bin/python", script_arg, *sys.argv[1:]])


def cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or "unknown"
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


class Run:
    """One benchmark run: note the load at the start, then ``write`` the document at the end."""

    def __init__(self, name: str, params: dict[str, Any]) -> None:
        self.name = name
        self.params = params
        self.load_before = os.getloadavg()
        self.started = datetime.now(UTC)

    def write(self, path: Path, results: dict[str, Any]) -> None:
        document = {
            "benchmark": self.name,
            "command": rerun_command(),
            "date": self.started.date().isoformat(),
            "machine": machine() | {"load_before": self.load_before, "load_after": os.getloadavg()},
            "params": self.params,
            "results": results,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
        print(f"results written to {path}")
