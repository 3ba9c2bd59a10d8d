"""Log set-up for every process: human-readable lines on a terminal, JSON lines otherwise."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

_STANDARD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        payload |= {key: value for key, value in vars(record).items() if key not in _STANDARD_ATTRIBUTES}
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(payload, default=str).decode()


_SOURCE_FILE = logging._srcfile  # where logging looks for the caller's frame; None skips the walk


def note_record_origin(keep: bool) -> None:
    """Whether each log record notes where it was made (file, line, function: a walk up the stack),
    its thread and its process. No log line prints them and they cost about as much as the rest of a
    record (the proxy writes one per interception), so only spans that attach log records
    (``--trace-logs``, which name the function) keep them."""
    logging._srcfile = _SOURCE_FILE if keep else None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = keep


def configure_logging(level: str = "INFO", *, json_lines: bool | None = None) -> None:
    """JSON lines unless stderr is a terminal (or ``json_lines`` says otherwise)."""
    as_json = not sys.stderr.isatty() if json_lines is None else json_lines
    handler = logging.StreamHandler(sys.stderr)
    if as_json:
        formatter: logging.Formatter = JsonFormatter()
        formatter.converter = time.gmtime
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname)-5s %(name)s: %(message)s", "%H:%M:%S")
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiokafka", "kafka", "httpx", "httpcore", "httpx2", "mcp", "clickhouse_connect"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
