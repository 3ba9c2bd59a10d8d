"""``aibridge budgets set|list|rm``: budgets through the API (an admin's token to change them).

The server and token come from ``--url``/``--token`` or ``AIBRIDGE_URL``/``AIBRIDGE_TOKEN``, as for
``aibridge interceptions list``. ``list`` prints a table (or JSON with ``-o json``); ``--mine`` lists the
budgets that apply to the token's user and their spending this period.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import httpx
import orjson

from aibridge.api.export import ExportError, _message, connection, request_headers

PATH = "/api/v2/aibridge/budgets"
COLUMNS = ("scope", "name", "period", "limit", "warn", "spent", "resets_at", "updated_at", "updated_by")


def main(args: argparse.Namespace) -> int:
    try:
        url, token = connection(args)
        headers = request_headers(token) | {"X-AIBridge-Export": "false"}
        with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
            print(_run(client, args))
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.status
    return 0


def _run(client: httpx.Client, args: argparse.Namespace) -> str:
    if args.budgets_command == "list":
        rows = _call(client, "GET", f"{PATH}/me" if args.mine else PATH)
        return orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode() if args.output == "json" else table(rows)
    target = f"{PATH}/{'user' if args.user else 'group'}/{args.user or args.group}/{args.period}"
    if args.budgets_command == "set":
        budget = _call(client, "PUT", target, {"limit": args.limit, "warn": args.warn})
        return f"set: {table([budget])}"
    _call(client, "DELETE", target)
    return f"removed the {args.period} budget of {'user ' + args.user if args.user else 'group ' + args.group}"


def _call(client: httpx.Client, method: str, path: str, body: dict[str, str] | None = None) -> Any:
    try:
        answer = client.request(method, path, json=body)
    except httpx.HTTPError as exc:
        raise ExportError(f"cannot reach the API at {client.base_url}: {exc}") from exc
    if answer.status_code >= 400:
        raise ExportError(f"{answer.status_code}: {_message(answer)}")
    return None if answer.status_code == 204 else answer.json()


def table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no budgets"
    columns = [column for column in COLUMNS if any(column in row for row in rows)]
    cells = [[str(row.get(column) or "") for column in columns] for row in rows]
    widths = [max(len(column), *(len(line[index]) for line in cells)) for index, column in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in cells]
    return "\n".join(lines)
