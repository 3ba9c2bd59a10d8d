"""scripts/lib.sh's run_pytest, run with a stand-in pytest that exits with a chosen status."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_pytest(tmp_path: Path, pytest_status: int, *args: str) -> subprocess.CompletedProcess[str]:
    fake = tmp_path / ".venv" / "bin" / "pytest"
    fake.parent.mkdir(parents=True, exist_ok=True)
    fake.write_text(f"#!/bin/sh\nexit {pytest_status}\n")
    fake.chmod(0o755)
    script = f'set -euo pipefail; source "{ROOT}/scripts/lib.sh"; run_pytest "$@"'
    return subprocess.run(
        ["bash", "-c", script, "run_pytest", *args], cwd=tmp_path, capture_output=True, text=True, check=False
    )


def test_the_whole_suite_collecting_nothing_fails(tmp_path: Path) -> None:
    result = run_pytest(tmp_path, 5)
    assert result.returncode == 5
    assert "must never be empty" in result.stderr


def test_a_filter_that_collects_nothing_passes(tmp_path: Path) -> None:
    result = run_pytest(tmp_path, 5, "-k", "no_such_test")
    assert result.returncode == 0
    assert "for the arguments given: -k no_such_test" in result.stdout


@pytest.mark.parametrize("status", [0, 1, 2])
def test_other_statuses_pass_through(tmp_path: Path, status: int) -> None:
    assert run_pytest(tmp_path, status).returncode == status
    assert run_pytest(tmp_path, status, "tests/api").returncode == status
