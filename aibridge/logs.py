"""Log set-up for every process: human-readable lines on a terminal, JSON lines otherwise.

:class:`DirectLines` writes a hot logger's JSON line without the logging machinery (no ``LogRecord``,
no formatter call, a batch's lines written together) when that gives exactly the line logging would write.
"""

from __future__ import annotations

import logging
import select
import sys
import threading
import time
from typing import Any, TextIO

import orjson

_STANDARD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": self.formatTime(record, TIME_FORMAT) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        payload |= {key: value for key, value in vars(record).items() if key not in _STANDARD_ATTRIBUTES}
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(payload, default=str).decode()


# A pipe takes a write of up to this many bytes whole, whoever else writes to it (the workers of one
# proxy share their stderr): held lines are written in pieces of at most this size, a line never split.
ATOMIC_WRITE = select.PIPE_BUF
_MILLISECONDS = tuple(f".{millisecond:03d}Z" for millisecond in range(1000))


class UtcTime:
    """The JSON line's ``time`` field for now, as :class:`JsonFormatter` writes it with UTC: the text up
    to the second is made once per second (``strftime`` is most of a field's cost), the milliseconds per call."""

    def __init__(self) -> None:
        self._known = (-1, "")  # a second and its text, replaced whole (lines come from any thread)

    def now(self) -> str:
        now = time.time()
        second = int(now)
        known = self._known
        if second != known[0]:
            known = self._known = (second, time.strftime(TIME_FORMAT, time.gmtime(second)))
        return known[1] + _MILLISECONDS[int((now - second) * 1000)]


class DirectLines:
    """JSON lines written straight to the handler :func:`configure_logging` installed.

    :meth:`handler_for` says whether a logger's record would reach exactly that handler and nothing
    else (no handler or filter on the way, propagation as by default, no other root handler, the
    formatter unchanged, the standard record factory); it is checked on every line, so a handler added
    later (pytest's ``caplog``, ``--trace-logs``, a user's own logging set-up) turns it off at once. When
    it returns ``None`` the caller logs as usual. Inside :meth:`held` a thread's lines are kept and
    written together when the outermost block ends, in writes of whole lines of at most
    :data:`ATOMIC_WRITE` bytes.
    """

    def __init__(self) -> None:
        self.handler: logging.StreamHandler[TextIO] | None = None
        self.formatter: JsonFormatter | None = None
        self.time = UtcTime()
        self._held = threading.local()
        self._block = HeldLines(self)

    def install(self, handler: logging.StreamHandler[TextIO] | None) -> None:
        """The JSON handler now on the root logger (``None``: lines are not JSON, nothing goes direct)."""
        formatter = handler.formatter if handler is not None else None
        self.handler = handler if isinstance(formatter, JsonFormatter) else None
        self.formatter = formatter if isinstance(formatter, JsonFormatter) else None

    def handler_for(self, logger: logging.Logger, level: int = logging.INFO) -> logging.StreamHandler[TextIO] | None:
        """The JSON handler, when a ``level`` record of ``logger`` would reach it and nothing else."""
        handler = self.handler
        if handler is None or logger.disabled or logging.getLogRecordFactory() is not logging.LogRecord:
            return None
        current: logging.Logger | None = logger
        while current is not None and not current.handlers:
            if current.filters or not current.propagate:
                return None
            current = current.parent
        if current is not logging.root or current.filters or current.handlers != [handler] or handler.filters:
            return None
        formatter = self.formatter
        if handler.formatter is not formatter or formatter is None or formatter.converter is not time.gmtime:
            return None
        return handler if handler.level <= level else None

    def write(
        self, handler: logging.StreamHandler[TextIO], level: str, logger: str, message: str, fields: dict[str, Any]
    ) -> None:
        """One JSON line as :class:`JsonFormatter` makes it (time, level, logger, message, then ``fields``),
        written now or, inside :meth:`held`, at the end of the block."""
        payload = {"time": self.time.now(), "level": level, "logger": logger, "message": message} | fields
        encoded = orjson.dumps(payload, default=str, option=orjson.OPT_APPEND_NEWLINE)
        held: list[str] | None = getattr(self._held, "lines", None)
        if held is None:
            self._write(handler, encoded.decode())
            return
        if held and (self._held.handler is not handler or self._held.size + len(encoded) > ATOMIC_WRITE):
            self._write_held()
        held.append(encoded.decode())
        self._held.size += len(encoded)
        self._held.handler = handler

    def held(self) -> HeldLines:
        """A block in which this thread's lines are kept and written together when the (outermost)
        block ends."""
        return self._block

    def _write_held(self) -> None:
        lines: list[str] = self._held.lines
        if lines:
            self._write(self._held.handler, "".join(lines))
            lines.clear()
            self._held.size = 0

    @staticmethod
    def _write(handler: logging.StreamHandler[TextIO], text: str) -> None:
        """As :meth:`logging.StreamHandler.emit` writes: under the handler's lock, so each line stays whole."""
        handler.acquire()
        try:
            stream = handler.stream
            stream.write(text)
            stream.flush()
        except (OSError, ValueError):
            handler.handleError(logging.makeLogRecord({"msg": text.rstrip("\n")}))
        finally:
            handler.release()


class HeldLines:
    """``with``: see :meth:`DirectLines.held` (a plain object, cheaper to enter than a generator's block)."""

    def __init__(self, lines: DirectLines) -> None:
        self._lines = lines

    def __enter__(self) -> None:
        held = self._lines._held
        if getattr(held, "lines", None) is None:
            held.lines, held.depth, held.size = [], 0, 0
        held.depth += 1

    def __exit__(self, *exc_info: object) -> None:
        held = self._lines._held
        held.depth -= 1
        if held.depth == 0:
            try:
                self._lines._write_held()
            finally:
                held.lines = None


direct_lines = DirectLines()
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
    direct_lines.install(handler)
    root.setLevel(level.upper())
    for noisy in ("aiokafka", "kafka", "httpx", "httpcore", "httpx2", "mcp", "clickhouse_connect"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
