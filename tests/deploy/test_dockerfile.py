"""The Dockerfile, read as the builder reads it (no Docker engine here), and what its steps rely on."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from aibridge.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
Instruction = tuple[str, str]


def instructions(path: Path) -> list[Instruction]:
    """(KEYWORD, arguments) pairs, continuation lines joined, comments and the parser directive dropped."""
    parsed: list[Instruction] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        parsed.append((keyword.upper(), arguments.strip()))
        pending = ""
    return parsed


def stages(parsed: list[Instruction]) -> list[list[Instruction]]:
    result: list[list[Instruction]] = []
    for keyword, arguments in parsed:
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, arguments))
    return result


def exec_form(arguments: str) -> list[str]:
    value = json.loads(arguments)
    assert isinstance(value, list) and all(isinstance(item, str) for item in value)
    return value


@pytest.fixture(scope="module")
def final_stage() -> list[Instruction]:
    return stages(instructions(ROOT / "Dockerfile"))[-1]


def last(stage: list[Instruction], keyword: str) -> str:
    values = [arguments for name, arguments in stage if name == keyword]
    assert values, f"no {keyword}"
    return values[-1]


def test_multi_stage_on_slim_python_311() -> None:
    parsed = instructions(ROOT / "Dockerfile")
    base = next(arguments for keyword, arguments in parsed if keyword == "ARG").split("=", 1)[1]
    assert base.startswith("python:3.11-slim")
    froms = [arguments for keyword, arguments in parsed if keyword == "FROM"]
    assert froms == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE} AS runtime"]
    final = stages(parsed)[-1]
    assert ("COPY", "--from=build /opt/aibridge /opt/aibridge") in final
    assert not any(keyword == "COPY" and "--from" not in arguments for keyword, arguments in final)


def test_runs_as_a_numeric_non_root_user_matching_the_chart(final_stage: list[Instruction]) -> None:
    user, _, group = last(final_stage, "USER").partition(":")
    assert user.isdigit() and int(user) > 0 and group.isdigit() and int(group) > 0
    last_user = max(i for i, (keyword, _) in enumerate(final_stage) if keyword == "USER")
    assert all(keyword != "RUN" for keyword, _ in final_stage[last_user:])
    chart = yaml.safe_load((ROOT / "deploy/helm/aibridge/values.yaml").read_text())
    assert chart["proxy"]["podSecurityContext"]["runAsUser"] == int(user)


def test_entrypoint_is_the_cli_and_the_default_command_parses(final_stage: list[Instruction]) -> None:
    assert exec_form(last(final_stage, "ENTRYPOINT")) == ["aibridge"]
    command = exec_form(last(final_stage, "CMD"))
    args = build_parser().parse_args(command)
    assert (args.command, args.listen) == ("up", "0.0.0.0:8080")


def test_compose_commands_parse_with_the_cli() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    for component in ("proxy", "recorder", "api"):
        args = build_parser().parse_args(services[component]["command"])
        assert args.command == component


def healthcheck_command(final_stage: list[Instruction]) -> list[str]:
    options, _, command = last(final_stage, "HEALTHCHECK").partition("CMD ")
    assert "--interval=" in options and "--timeout=" in options
    return exec_form(command)


def test_healthcheck_is_python_urllib_on_healthz(final_stage: list[Instruction]) -> None:
    command = healthcheck_command(final_stage)
    assert command[:2] == ["python", "-c"] and "urllib.request" in command[2]
    env = dict(
        pair.split("=", 1) for keyword, arguments in final_stage if keyword == "ENV" for pair in shlex.split(arguments)
    )
    assert env["AIBRIDGE_HEALTHCHECK_URL"] == "http://127.0.0.1:8080/healthz"


class _Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
def test_healthcheck_exit_code_follows_healthz(
    final_stage: list[Instruction], health_server: ThreadingHTTPServer, status: int, healthy: bool
) -> None:
    _Health.status = status
    command = healthcheck_command(final_stage)
    url = f"http://127.0.0.1:{health_server.server_address[1]}/healthz"
    env = {"AIBRIDGE_HEALTHCHECK_URL": url, "PATH": str(Path(sys.executable).parent)}
    result = subprocess.run([sys.executable, *command[1:]], env=env, capture_output=True, timeout=30, check=False)
    assert (result.returncode == 0) is healthy


def test_dockerignore_keeps_the_context_to_what_the_build_copies() -> None:
    rules = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line and line[0] != "#"]
    assert rules[0] == "*"
    allowed = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    build = stages(instructions(ROOT / "Dockerfile"))[0]
    copied = {source for keyword, arguments in build if keyword == "COPY" for source in arguments.split()[:-1]}
    assert copied == allowed


@pytest.mark.slow
def test_the_copied_sources_build_a_complete_wheel(tmp_path: Path) -> None:
    """The build stage copies pyproject.toml, README.md, aibridge/, services/, schemas/ (links kept, as
    COPY keeps them) and runs `pip install .`: the wheel must hold every component and the schema."""
    context = tmp_path / "context"
    build = stages(instructions(ROOT / "Dockerfile"))[0]
    for source in (s for k, a in build if k == "COPY" for s in a.split()[:-1]):
        target = context / source
        if (ROOT / source).is_dir():
            shutil.copytree(ROOT / source, target, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / source, target)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(tmp_path), str(context)],
        check=True,
        timeout=180,
    )
    [wheel] = tmp_path.glob("aibridge-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in ("proxy", "recorder", "api"):
        assert f"aibridge/{package}/__init__.py" in names
    assert "aibridge/schemas/aibridge.interceptions.v1.schema.json" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "aibridge = aibridge.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
