"""``aibridge interceptions list`` against a running API: every output format, --all, errors."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from datetime import timedelta

import pytest
from api_rows import BASE, Spec, newest_first

from aibridge import cli


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = cli.main(["interceptions", "list", *argv])
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, api_url: str, tokens: dict[str, str]) -> None:
    monkeypatch.setenv("AIBRIDGE_URL", api_url)
    monkeypatch.setenv("AIBRIDGE_TOKEN", tokens["auditor"])


@pytest.mark.usefixtures("env")
def test_json_is_the_api_results_array(capsys: pytest.CaptureFixture[str], specs: list[Spec]) -> None:
    status, out, _ = run(capsys, "--limit", "5")
    assert status == 0
    results = json.loads(out)
    assert [r["id"] for r in results] == newest_first(specs)[:5]
    assert set(results[0]) >= {"id", "initiator", "token_usages", "user_prompts", "tool_usages", "started_at"}


@pytest.mark.usefixtures("env")
def test_all_pages_through_everything_with_the_filters(capsys: pytest.CaptureFixture[str], specs: list[Spec]) -> None:
    after = BASE + timedelta(minutes=3)
    status, out, _ = run(
        capsys, "--all", "--limit", "4", "--client", "Claude Code", "--started-after", f"{after:%Y-%m-%dT%H:%M:%SZ}"
    )
    assert status == 0
    expected = [s for s in specs if s.client == "Claude Code" and s.started_at >= after]
    assert [r["id"] for r in json.loads(out)] == newest_first(expected)
    assert len(expected) > 8  # several pages


@pytest.mark.usefixtures("env")
def test_jsonl_one_result_per_line(capsys: pytest.CaptureFixture[str], specs: list[Spec]) -> None:
    status, out, _ = run(capsys, "--all", "--limit", "7", "--initiator", "bob", "-o", "jsonl")
    assert status == 0
    lines = out.splitlines()
    assert [json.loads(line)["id"] for line in lines] == newest_first([s for s in specs if s.username == "bob"])


@pytest.mark.usefixtures("env")
def test_csv_flattens_tokens_tools_and_prompt(capsys: pytest.CaptureFixture[str], specs: list[Spec]) -> None:
    status, out, _ = run(capsys, "--all", "--limit", "1000", "--model", "o3", "-o", "csv")
    assert status == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    o3 = sorted((s for s in specs if s.model == "o3"), key=Spec.sort_key, reverse=True)
    assert [row["id"] for row in rows] == [str(s.id) for s in o3]
    first, spec = rows[0], o3[0]
    assert (first["initiator_username"], first["prompt"], first["tool_calls"]) == (
        spec.username,
        spec.prompt,
        str(spec.tools),
    )
    assert (first["input_tokens"], first["cache_read_input_tokens"]) == (str(spec.input_tokens), str(spec.cache_read))


@pytest.mark.usefixtures("env")
def test_table_has_a_header_and_a_line_per_result(capsys: pytest.CaptureFixture[str], specs: list[Spec]) -> None:
    status, out, _ = run(capsys, "--limit", "3", "-o", "table")
    assert status == 0
    header, *lines = out.splitlines()
    assert header.split()[:3] == ["STARTED", "USER", "PROVIDER"]
    assert [line.split()[-1] for line in lines] == newest_first(specs)[:3]
    assert "in flight" in lines[0]


@pytest.mark.usefixtures("env")
def test_an_api_error_is_one_line_and_a_failure(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, err = run(capsys, "--started-after", "yesterday")
    assert status == 1
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("error: the API answered 400:") and "started_after:yesterday" in err


def test_flags_win_over_the_environment_and_403_is_reported(
    capsys: pytest.CaptureFixture[str], env: None, tokens: dict[str, str]
) -> None:
    status, _, err = run(capsys, "--token", tokens["alice"], "--initiator", "bob")
    assert status == 1
    assert "the API answered 403" in err and "initiator:bob is not you" in err


def test_missing_configuration_and_unreachable_api(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tokens: dict[str, str]
) -> None:
    monkeypatch.delenv("AIBRIDGE_URL", raising=False)
    monkeypatch.delenv("AIBRIDGE_TOKEN", raising=False)
    status, _, err = run(capsys, "--token", "x")
    assert status == 2 and "AIBRIDGE_URL" in err
    status, _, err = run(capsys, "--url", "http://127.0.0.1:9")
    assert status == 2 and "AIBRIDGE_TOKEN" in err
    status, _, err = run(capsys, "--url", "http://127.0.0.1:9", "--token", tokens["admin"])
    assert status == 1 and err.startswith("error: cannot reach the API at http://127.0.0.1:9")
    assert tokens["admin"] not in err


def test_the_installed_command(api_url: str, tokens: dict[str, str], specs: list[Spec]) -> None:
    environment = os.environ | {"AIBRIDGE_URL": api_url, "AIBRIDGE_TOKEN": tokens["admin"]}
    done = subprocess.run(
        [sys.executable, "-m", "aibridge.cli", "interceptions", "list", "--limit", "2", "-o", "jsonl"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["id"] for line in done.stdout.splitlines()] == newest_first(specs)[:2]
