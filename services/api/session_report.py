"""``aibridge sessions list`` and ``aibridge sessions show ID``: sessions from the API as JSON, JSON lines,
CSV or a table.

The server and token come as for ``aibridge interceptions list`` (``--url``/``--token`` or
``AIBRIDGE_URL``/``AIBRIDGE_TOKEN``); the filter flags become the API's ``q``. ``list`` writes one row per
session (``--all`` follows the ``after_id`` cursor); ``show`` writes the session as one JSON document, its
interceptions as JSON lines (each with its ``thread_id``), or one CSV or table row per thread. An API
error is one line on stderr and exit status 1 (2 for missing configuration).
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Iterator
from typing import Any, Final, TextIO
from urllib.parse import quote as quote_path

import httpx
import orjson

from aibridge import __version__
from aibridge.api.export import ExportError, build_q, connection

PATH: Final = "/api/v2/aibridge/sessions"
TOKENS: Final = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_write_input_tokens")
# (title, key, width): what list's CSV (keys) and table (titles, widths) show per session.
SESSION_COLUMNS: Final = (
    ("LAST STARTED", "last_started_at", 27), ("USER", "initiator_username", 16), ("CLIENT", "client", 14),
    ("MODELS", "models", 24), ("THREADS", "threads", 7), ("CALLS", "interceptions", 6),
    ("IN", "input_tokens", 9), ("OUT", "output_tokens", 9), ("CACHE R", "cache_read_input_tokens", 10),
    ("CACHE W", "cache_write_input_tokens", 9), ("STARTED", "started_at", 27), ("ID", "id", 36),
)  # fmt: skip
THREAD_COLUMNS: Final = (
    ("STARTED", "started_at", 27), ("DURATION S", "duration_s", 10), ("CALLS", "interceptions", 6),
    ("TOOLS", "tool_calls", 5), ("IN", "input_tokens", 9), ("OUT", "output_tokens", 9),
    ("CACHE R", "cache_read_input_tokens", 10), ("CACHE W", "cache_write_input_tokens", 9),
    ("THREAD", "id", 36), ("PROMPT", "prompt", 60),
)  # fmt: skip


def main(args: argparse.Namespace) -> int:
    try:
        url, token = connection(args)
        headers = {"Authorization": f"Bearer {token}", "User-Agent": f"aibridge-cli/{__version__}"}
        with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
            if args.sessions_command == "show":
                show(fetch(client, f"{PATH}/{quote_path(args.id, safe='')}", {}), args.output, sys.stdout)
            else:
                write_rows(sessions(client, args), SESSION_COLUMNS, session_row, args.output, sys.stdout)
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.status
    except BrokenPipeError:
        sys.stderr.close()
    return 0


def fetch(client: httpx.Client, path: str, params: dict[str, Any]) -> dict[str, Any]:
    try:
        answer = client.get(path, params=params)
    except httpx.HTTPError as exc:
        raise ExportError(f"cannot reach the API at {client.base_url}: {exc}") from exc
    try:
        body = orjson.loads(answer.content)
    except orjson.JSONDecodeError:
        body = None
    if answer.status_code != 200:
        message = body.get("message") if isinstance(body, dict) else None
        raise ExportError(f"the API answered {answer.status_code}: {message or answer.reason_phrase}")
    if not isinstance(body, dict):
        raise ExportError(f"the API at {client.base_url} did not answer with JSON")
    return body


def sessions(client: httpx.Client, args: argparse.Namespace) -> Iterator[dict[str, Any]]:
    """One page of sessions, or every page after another with ``--all``."""
    params: dict[str, Any] = {"limit": args.limit}
    if q := build_q(args):
        params["q"] = q
    if args.after_id:
        params["after_id"] = args.after_id
    while True:
        page = fetch(client, PATH, params).get("results", [])
        yield from page
        if not args.all or len(page) < args.limit:
            return
        params["after_id"] = page[-1]["id"]


def session_row(session: dict[str, Any]) -> dict[str, Any]:
    return session | {"initiator_username": session["initiator"]["username"], "models": ",".join(session["models"])}


def thread_row(thread: dict[str, Any]) -> dict[str, Any]:
    duration = thread["duration_ms"]
    return thread | {
        "duration_s": "" if duration is None else f"{duration / 1000:.1f}",
        "interceptions": len(thread["interceptions"]),
        "tool_calls": len(thread["tool_calls"]),
        "prompt": " ".join((thread["prompt"] or "").split()),
    }


def show(detail: dict[str, Any], output: str, out: TextIO) -> None:
    if output == "json":
        out.write(orjson.dumps(detail, option=orjson.OPT_INDENT_2).decode() + "\n")
    elif output == "jsonl":
        for thread in detail["threads"]:
            for interception in thread["interceptions"]:
                out.write(orjson.dumps(interception).decode() + "\n")
    else:
        write_rows(iter(detail["threads"]), THREAD_COLUMNS, thread_row, output, out)


def write_rows(
    items: Iterator[dict[str, Any]],
    columns: tuple[tuple[str, str, int], ...],
    flatten: Any,
    output: str,
    out: TextIO,
) -> None:
    """JSON (an array), JSON lines, CSV (the columns' keys) or a fixed-width table, written as items arrive."""
    if output in ("json", "jsonl"):
        count = 0
        for item in items:
            line = orjson.dumps(item).decode()
            out.write(line + "\n" if output == "jsonl" else ("[\n" if count == 0 else ",\n") + line)
            count += 1
        if output == "json":
            out.write("\n]\n" if count else "[]\n")
        return
    if output == "csv":
        writer = csv.DictWriter(
            out, fieldnames=[key for _, key, _ in columns], extrasaction="ignore", lineterminator="\n"
        )
        writer.writeheader()
        for item in items:
            writer.writerow(flatten(item))
        return
    out.write(_line([title for title, _, _ in columns], columns))
    for item in items:
        row = flatten(item)
        out.write(_line([str(row[key]) for _, key, _ in columns], columns))


def _line(values: list[str], columns: tuple[tuple[str, str, int], ...]) -> str:
    cells = [
        value.ljust(width) if len(value) <= width else value[: width - 1] + "…"
        for value, (_, _, width) in zip(values, columns, strict=True)
    ]
    return "  ".join(cells).rstrip() + "\n"
