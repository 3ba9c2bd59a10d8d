"""Structured logs (``AIBRIDGE_STRUCTURED_LOGS=true``): one log record per stored row, for SIEMs.

Each record goes to the logger ``aibridge.recorder.records`` with the message set to its
``record_type`` (interception_start, interception_end, prompt_usage, token_usage, tool_usage, reasoning) and the
row's fields as ``extra`` attributes, so the process's JSON formatter (:class:`aibridge.logs.JsonFormatter`)
writes one flat JSON line per record. The fields are the row the store received, under its column
names: an interception's ``id`` is written as ``interception_id``, ``metadata`` as a JSON object,
times as RFC 3339 UTC. Records are logged after the insert succeeded. They hold no secrets:
``api_key_id`` is a bridge token's id, never a token. Delivery is at least once, like the store's: a
redelivered event logs again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Final

import orjson

from aibridge import store
from aibridge.events import format_time
from aibridge.recorder.rows import Row

LOGGER_NAME: Final = "aibridge.recorder.records"
_NOT_LOGGED: Final[dict[str, frozenset[str]]] = {
    "interception_start": frozenset({"version", "status", "http_status", "error", "ended_at"}),
    "interception_end": frozenset({"version"}),
}
_NOTHING: Final[frozenset[str]] = frozenset()


def record_fields(row: Row) -> dict[str, Any]:
    """The logged fields of one stored row, ``record_type`` first."""
    skipped = _NOT_LOGGED.get(row.record_type, _NOTHING)
    fields: dict[str, Any] = {"record_type": row.record_type}
    for column, value in row.fields().items():
        if column in skipped:
            continue
        name = "interception_id" if column == "id" and row.table == store.INTERCEPTIONS else column
        fields[name] = _loggable(column, value)
    return fields


def _loggable(column: str, value: Any) -> Any:
    if column == "metadata":
        return orjson.loads(value)
    if isinstance(value, datetime):
        return format_time(value)
    return value


class RecordsLog:
    """Logs :func:`record_fields` of each stored row on ``aibridge.recorder.records`` at INFO."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._logger = logger or logging.getLogger(LOGGER_NAME)
        if self._logger.level == logging.NOTSET:
            self._logger.setLevel(logging.INFO)

    def emit(self, rows: Iterable[Row]) -> None:
        if not self._logger.isEnabledFor(logging.INFO):
            return
        for row in rows:
            self._logger.info(row.record_type, extra=record_fields(row))
