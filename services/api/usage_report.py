"""``aibridge usage``: cost and tokens from the API's ``/usage``, as a table, CSV or JSON.

The server and token come as for ``aibridge interceptions list`` (``--url``/``--token`` or
``AIBRIDGE_URL``/``AIBRIDGE_TOKEN``). ``--since``/``--until`` (or ``--started-after``/``--started-before``)
bound the window; ``--unpriced`` lists the models whose usages have no price instead.
An API error is one line on stderr and exit status 1 (2 for missing configuration).
"""

from __future__ import annotations

import argparse
import csv
import sys
from typing import Any, Final, TextIO

import httpx
import orjson

from aibridge import __version__
from aibridge.api.export import ExportError, build_q, connection

PATH: Final = "/api/v2/aibridge/usage"
TOKEN_COLUMNS: Final = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_write_input_tokens")
TOKEN_TITLES: Final = ("IN", "OUT", "CACHE R", "CACHE W")
UNPRICED_COLUMNS: Final = ("provider", "model", "token_usages", "interceptions")


def main(args: argparse.Namespace) -> int:
    try:
        url, token = connection(args)
        headers = {"Authorization": f"Bearer {token}", "User-Agent": f"aibridge-cli/{__version__}"}
        with httpx.Client(base_url=url, headers=headers, timeout=120) as client:
            report = fetch(client, args)
        write(report, args, sys.stdout)
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.status
    except BrokenPipeError:
        sys.stderr.close()
    return 0


def fetch(client: httpx.Client, args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {"group_by": args.group_by}
    for name, value in (("started_after", args.since), ("started_before", args.until)):
        if value:
            params[name] = value
    if args.unpriced:
        params["unpriced"] = "true"
    q = build_q(args)
    if q:
        params["q"] = q
    try:
        answer = client.get(PATH, params=params)
    except httpx.HTTPError as exc:
        raise ExportError(f"cannot reach the API at {client.base_url}: {type(exc).__name__}") from None
    if answer.status_code != 200:
        raise ExportError(f"the API answered {answer.status_code}: {_message(answer)}")
    report: dict[str, Any] = answer.json()
    return report


def _message(answer: httpx.Response) -> str:
    try:
        return str(answer.json().get("message", answer.text))[:200]
    except ValueError:
        return answer.text.strip()[:200] or answer.reason_phrase


def write(report: dict[str, Any], args: argparse.Namespace, out: TextIO) -> None:
    if args.output == "json":
        out.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    keys = report["group_by"].split(",")
    if args.unpriced:
        header = list(UNPRICED_COLUMNS)
        rows = [[str(model[column]) for column in UNPRICED_COLUMNS] for model in report["unpriced_models"]]
        titles = header
    else:
        header = [*keys, "interceptions", *TOKEN_COLUMNS, "cost_usd", "unpriced_interceptions"]
        rows = [_cells(row, keys, readable=args.output == "table") for row in report["results"]]
        titles = [*keys, "interceptions", *TOKEN_TITLES, "cost $", "unpriced"]
    if args.output == "csv":
        csv.writer(out, lineterminator="\n").writerows([header, *rows])
        return
    _table([[title.upper() for title in titles], *rows], out)


def _cells(row: dict[str, Any], keys: list[str], *, readable: bool) -> list[str]:
    """A row's cells; ``readable`` (the table) names users by username and the users in no group."""
    shown = {**row["keys"]}
    if readable and row.get("initiator") is not None:
        shown["user"] = row["initiator"]["username"] or row["initiator"]["id"]
    if readable and shown.get("group") == "":
        shown["group"] = "(no group)"
    cost = "-" if row["cost"] is None else row["cost"]
    tokens = [str(row[column]) for column in TOKEN_COLUMNS]
    return [*(shown[key] for key in keys), str(row["interceptions"]), *tokens, cost, str(row["unpriced_interceptions"])]


def _table(lines: list[list[str]], out: TextIO) -> None:
    widths = [max(len(line[index]) for line in lines) for index in range(len(lines[0]))]
    for line in lines:
        out.write("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip() + "\n")
