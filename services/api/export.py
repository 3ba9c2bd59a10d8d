"""``aibridge interceptions list``: export interceptions from the API as JSON, JSON lines, CSV or a table.

The server and token come from ``--url``/``--token`` or ``AIBRIDGE_URL``/``AIBRIDGE_TOKEN``. The flags
become the API's ``q``; ``--all`` follows the ``after_id`` cursor page after page and writes each page as
it arrives. An API error is one line on stderr and exit status 1 (2 for missing configuration).
Every request says it is an export (``X-AIBridge-Export: true``), so the API's access audit records
it as ``interceptions.export``.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol, TextIO

import httpx
import orjson
from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from aibridge import __version__
from aibridge.secret_files import resolve_secret_files, secret_value

PATH = "/api/v2/aibridge/interceptions"
FILTERS = ("initiator", "provider", "model", "client", "started_after", "started_before")
CSV_COLUMNS = (
    "id", "started_at", "ended_at", "initiator_id", "initiator_username", "provider", "model", "client",
    "status", "input_tokens", "output_tokens", "cache_read_input_tokens", "cache_write_input_tokens",
    "tool_calls", "prompt", "cost", "injected_tool_calls",
)  # fmt: skip
TABLE_COLUMNS = (
    ("STARTED", "started_at", 27), ("USER", "initiator_username", 16), ("PROVIDER", "provider", 9),
    ("MODEL", "model", 20), ("CLIENT", "client", 14), ("IN", "input_tokens", 8), ("OUT", "output_tokens", 8),
    ("CACHE R", "cache_read_input_tokens", 9), ("CACHE W", "cache_write_input_tokens", 8),
    ("TOOLS", "tool_calls", 5), ("MCP", "injected_tool_calls", 4), ("COST $", "cost", 12),
    ("STATUS", "status", 12), ("ID", "id", 36),
)  # fmt: skip


class ExportSettings(BaseSettings):
    """Where the CLI finds the API (env prefix ``AIBRIDGE_``)."""

    model_config = SettingsConfigDict(env_prefix="AIBRIDGE_", extra="ignore")

    url: str | None = Field(default=None, description="Base URL of the API, e.g. http://localhost:8081.")
    token: SecretStr | None = Field(default=None, description="Bridge token (an auditor's to see everyone).")
    token_file: Path | None = Field(default=None, description="A file holding the bridge token instead.")

    @model_validator(mode="after")
    def _read_token_file(self) -> ExportSettings:
        resolve_secret_files(self, ("token",))
        return self


class ExportError(Exception):
    """One line for stderr; ``status`` is the exit status."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


class Writer(Protocol):
    def write(self, result: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def main(args: argparse.Namespace) -> int:
    try:
        url, token = connection(args)
        writer = _writer(args.output, sys.stdout)
        with httpx.Client(base_url=url, headers=request_headers(token), timeout=60) as client:
            for result in results(client, args):
                writer.write(result)
        writer.close()
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.status
    except BrokenPipeError:
        sys.stderr.close()  # the reader (e.g. head) stopped early: not an error
    return 0


def connection(args: argparse.Namespace) -> tuple[str, str]:
    try:
        settings = ExportSettings()
    except ValidationError as exc:
        raise ExportError("; ".join(str(error["msg"]) for error in exc.errors()), 2) from None
    url, token = args.url or settings.url, args.token or secret_value(settings.token)
    if not url:
        raise ExportError("no API URL: pass --url or set AIBRIDGE_URL (e.g. http://localhost:8081)", 2)
    if not token:
        raise ExportError("no bridge token: pass --token or set AIBRIDGE_TOKEN", 2)
    return url.rstrip("/"), token


def request_headers(token: str) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {token}",
        "User-Agent": f"aibridge-cli/{__version__}",
        "X-AIBridge-Export": "true",  # the access audit records the reads as an export
    }


def build_q(args: argparse.Namespace) -> str:
    """The flags as ``q`` terms; values with spaces or quotes are quoted."""
    terms = []
    for key in FILTERS:
        value = getattr(args, key, None)
        if value:
            terms.append(f"{key}:{quote(str(value))}")
    return " ".join(terms)


def quote(value: str) -> str:
    if value and not any(char.isspace() or char in '"\\' for char in value):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def results(client: httpx.Client, args: argparse.Namespace) -> Iterator[dict[str, Any]]:
    """Every result of one page, or of every page after another with ``--all``."""
    params: dict[str, Any] = {"limit": args.limit}
    q = build_q(args)
    if q:
        params["q"] = q
    if args.after_id:
        params["after_id"] = args.after_id
    while True:
        page = _get(client, params)
        yield from page
        if not args.all or len(page) < args.limit:
            return
        params["after_id"] = page[-1]["id"]


def _get(client: httpx.Client, params: dict[str, Any]) -> list[dict[str, Any]]:
    try:
        answer = client.get(PATH, params=params)
    except httpx.HTTPError as exc:
        raise ExportError(f"cannot reach the API at {client.base_url}: {exc}") from exc
    if answer.status_code != 200:
        raise ExportError(f"the API answered {answer.status_code}: {_message(answer)}")
    try:
        results: list[dict[str, Any]] = orjson.loads(answer.content)["results"]
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise ExportError(f"the API at {client.base_url} did not answer with interceptions") from exc
    return results


def _message(answer: httpx.Response) -> str:
    try:
        body = orjson.loads(answer.content)
        message = str(body.get("message") or body)
    except (orjson.JSONDecodeError, AttributeError):
        message = answer.text.strip()[:200] or answer.reason_phrase
    return " ".join(message.split())


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """One flat row per interception (CSV and table): token totals, tool calls (and of them the injected MCP
    calls the bridge ran or withheld), the last prompt."""
    usages, prompts = result.get("token_usages", []), result.get("user_prompts", [])
    tools = result.get("tool_usages", [])
    row = {
        "id": result["id"],
        "started_at": result["started_at"],
        "ended_at": result.get("ended_at") or "",
        "initiator_id": result["initiator"]["id"],
        "initiator_username": result["initiator"]["username"],
        "provider": result["provider"],
        "model": result["model"],
        "client": result["client"],
        "status": result.get("status") or "in flight",
        "tool_calls": len(tools),
        "injected_tool_calls": sum(1 for tool in tools if tool.get("injected")),
        "prompt": prompts[-1]["prompt"] if prompts else "",
        "cost": cost_text(result.get("cost"), bool(result.get("cost_unpriced"))),
    }
    for field in ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_write_input_tokens"):
        row[field] = sum(int(usage[field]) for usage in usages)
    return row


def cost_text(cost: str | None, unpriced: bool) -> str:
    """A cost for CSV and tables: '-' when nothing is priced, a trailing '+' when part of it is not."""
    if cost is None:
        return "-"
    return f"{cost}+" if unpriced else cost


class JsonWriter:
    """A JSON array, one result per line, written as results arrive."""

    def __init__(self, out: TextIO) -> None:
        self._out, self._count = out, 0

    def write(self, result: dict[str, Any]) -> None:
        self._out.write(("[\n" if self._count == 0 else ",\n") + orjson.dumps(result).decode())
        self._count += 1

    def close(self) -> None:
        self._out.write("\n]\n" if self._count else "[]\n")
        self._out.flush()


class JsonLinesWriter:
    def __init__(self, out: TextIO) -> None:
        self._out = out

    def write(self, result: dict[str, Any]) -> None:
        self._out.write(orjson.dumps(result).decode() + "\n")

    def close(self) -> None:
        self._out.flush()


class CsvWriter:
    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
        self._writer.writeheader()

    def write(self, result: dict[str, Any]) -> None:
        self._writer.writerow(summary(result))

    def close(self) -> None:
        self._out.flush()


class TableWriter:
    """Fixed-width columns (so rows stream without waiting for the widest value)."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._line([title for title, _, _ in TABLE_COLUMNS])

    def write(self, result: dict[str, Any]) -> None:
        row = summary(result)
        self._line([str(row[key]) for _, key, _ in TABLE_COLUMNS])

    def close(self) -> None:
        self._out.flush()

    def _line(self, values: list[str]) -> None:
        cells = [_fit(value, width) for value, (_, _, width) in zip(values, TABLE_COLUMNS, strict=True)]
        self._out.write("  ".join(cells).rstrip() + "\n")


def _fit(value: str, width: int) -> str:
    return value.ljust(width) if len(value) <= width else value[: width - 1] + "…"


def _writer(output: str, out: TextIO) -> Writer:
    writers: dict[str, type[Writer]] = {
        "json": JsonWriter,
        "jsonl": JsonLinesWriter,
        "csv": CsvWriter,
        "table": TableWriter,
    }
    return writers[output](out)  # type: ignore[call-arg]
