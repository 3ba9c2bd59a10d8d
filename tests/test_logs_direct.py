"""The interception log line written directly (no LogRecord) is the line logging writes, byte for byte;
anything on the way that logging would honour (a handler, a filter, a record factory, another format)
sends it through logging instead; lines held for a batch go out whole, in order, at its end."""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta

import orjson
import pytest

from aibridge.events import InterceptionContext, Status
from aibridge.logs import ATOMIC_WRITE, JsonFormatter, configure_logging, direct_lines
from aibridge.proxy.providers.records import ResponseSummary, ToolCall, Usage
from aibridge.proxy.recording.outcome import log, log_interception

CONTEXT = InterceptionContext(
    initiator_id="user-alice-1",
    initiator_username="alice",
    provider="anthropic",
    model="claude-sonnet-4-5",
    client="Claude Code",
    streaming=True,
    route="/v1/messages",
    api_key_id="key-1",
)
ANSWER = ResponseSummary(
    usage=Usage(input_tokens=1204, output_tokens=312, cache_read_input_tokens=18211, cache_write_input_tokens=2048),
    tool_calls=[ToolCall("call-1", "Read", '{"file_path": "a secret path"}')],
)
ENDED = CONTEXT.started_at + timedelta(seconds=1.2345)


@contextmanager
def json_stderr(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """The process's logging as ``configure_logging`` sets it up for JSON, writing to a captured stderr.

    Entered in the test's body: pytest puts its own capturing handlers on the root logger for each phase.
    """
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = io.StringIO()
    with monkeypatch.context() as patched:
        patched.setattr("sys.stderr", stream)
        configure_logging("INFO", json_lines=True)
    try:
        yield stream
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        direct_lines.install(None)


def no_records(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> logging.LogRecord:
        raise AssertionError("a LogRecord was made")

    monkeypatch.setattr(log, "makeRecord", refuse)


def lines(stream: io.StringIO) -> list[bytes]:
    text = stream.getvalue()
    stream.seek(0)
    stream.truncate()
    assert text.endswith("\n")
    return [line.encode() for line in text.splitlines()]


def through_logging(write: Callable[[], None]) -> None:
    installed = direct_lines.handler
    direct_lines.install(None)
    try:
        write()
    finally:
        direct_lines.install(installed)


@pytest.mark.parametrize(
    ("summary", "mcp_calls", "model"),
    [(ANSWER, 0, "claude-sonnet-4-5"), (ANSWER, 2, "claude-sonnet-4-5"), (None, 0, ""), (ANSWER, 0, 'ünïcode\n"m"')],
    ids=["completed", "mcp", "no-answer", "escapes"],
)
def test_the_direct_line_is_the_logging_line_byte_for_byte(
    monkeypatch: pytest.MonkeyPatch, summary: ResponseSummary | None, mcp_calls: int, model: str
) -> None:
    monkeypatch.setattr(CONTEXT, "model", model)
    monkeypatch.setattr(time, "time", lambda: 1764897600.987654)  # what both the record and the direct line read

    def write() -> None:
        log_interception(CONTEXT, Status.COMPLETED, 200, summary, ENDED, mcp_calls=mcp_calls)

    with json_stderr(monkeypatch) as stderr:
        through_logging(write)
        [logged] = lines(stderr)
        with monkeypatch.context() as patched:
            no_records(patched)
            write()
        [direct] = lines(stderr)
    assert direct == logged
    parsed = orjson.loads(direct)
    assert parsed["time"] == "2025-12-05T01:20:00.987Z"
    assert list(parsed)[:4] == ["time", "level", "logger", "message"]
    assert (parsed["level"], parsed["logger"], parsed["model"], parsed["mcp_calls"]) == (
        "info",
        "aibridge.interceptions",
        model,
        mcp_calls,
    )


def test_the_time_field_follows_each_second_and_millisecond_as_the_formatter_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    moments = [1764897600.0, 1764897600.0009, 1764897600.999, 1764897601.0005, 1764897601.5, 1764897662.25]
    for moment in moments:
        monkeypatch.setattr(time, "time", lambda moment=moment: moment)
        record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
        formatter = JsonFormatter()
        formatter.converter = time.gmtime
        assert direct_lines.time.now() == orjson.loads(formatter.format(record))["time"]


class Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def refuse_all(record: logging.LogRecord) -> bool:
    return False


def a_root_handler(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logging.getLogger(), "handlers", [*logging.getLogger().handlers, Keep()])


def a_handler_on_the_way(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logging.getLogger("aibridge"), "handlers", [Keep()])


def a_filter_on_the_logger(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(log, "filters", [refuse_all])


def a_filter_on_the_handler(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(direct_lines.handler, "filters", [refuse_all])


def no_propagation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(log, "propagate", False)


class OwnRecord(logging.LogRecord):
    pass


def a_record_factory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logging, "_logRecordFactory", OwnRecord)


def another_formatter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(direct_lines.handler, "formatter", JsonFormatter())


def local_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(direct_lines.formatter, "converter", time.localtime)


def a_warning_handler(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(direct_lines.handler, "level", logging.WARNING)


def a_disabled_logger(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(log, "disabled", True)


@pytest.mark.parametrize(
    "change",
    [
        a_root_handler,
        a_handler_on_the_way,
        a_filter_on_the_logger,
        a_filter_on_the_handler,
        no_propagation,
        a_record_factory,
        another_formatter,
        local_time,
        a_warning_handler,
        a_disabled_logger,
    ],
)
def test_anything_logging_would_honour_sends_the_line_through_logging(
    monkeypatch: pytest.MonkeyPatch, change: Callable[[pytest.MonkeyPatch], None]
) -> None:
    made: list[logging.LogRecord] = []
    make_record = log.makeRecord

    def counted(*args: object, **kwargs: object) -> logging.LogRecord:
        made.append(make_record(*args, **kwargs))  # type: ignore[arg-type]
        return made[-1]

    with json_stderr(monkeypatch):
        with monkeypatch.context() as patched:
            patched.setattr(log, "makeRecord", counted)
            log_interception(CONTEXT, Status.COMPLETED, 200, ANSWER, ENDED)
            assert made == [], "the direct path was not taken as set up by configure_logging"
            change(patched)
            assert direct_lines.handler_for(log) is None
            log_interception(CONTEXT, Status.COMPLETED, 200, ANSWER, ENDED)
        assert direct_lines.handler_for(log) is not None, "undone, the direct path is back"
    expected = [] if change is a_disabled_logger else ["aibridge.interceptions"]
    assert [record.name for record in made] == expected


def test_pytests_own_handlers_the_terminal_format_and_caplog_all_go_through_logging(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aibridge.interceptions")
    assert direct_lines.handler_for(log) is None  # pytest's own handlers are on the root logger
    with json_stderr(monkeypatch):
        logging.getLogger().addHandler(caplog.handler)
        assert direct_lines.handler_for(log) is None
        log_interception(CONTEXT, Status.COMPLETED, 200, ANSWER, ENDED)
    [record] = [r for r in caplog.records if r.name == "aibridge.interceptions"]
    assert record.getMessage().startswith("alice (Claude Code) anthropic/claude-sonnet-4-5 completed 200 in=1204 ")
    root = logging.getLogger()
    handlers = root.handlers[:]
    try:
        with monkeypatch.context() as patched:
            stream = io.StringIO()
            patched.setattr("sys.stderr", stream)
            configure_logging("INFO", json_lines=False)
        assert direct_lines.handler_for(log) is None
        log_interception(CONTEXT, Status.COMPLETED, 200, ANSWER, ENDED)
    finally:
        root.handlers[:] = handlers
    assert (
        " INFO  aibridge.interceptions: alice (Claude Code) anthropic/claude-sonnet-4-5 completed" in stream.getvalue()
    )


def test_held_lines_go_out_whole_in_order_in_one_write_at_the_end_of_the_outermost_block(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with json_stderr(monkeypatch) as stderr:
        writes: list[str] = []
        write = stderr.write
        monkeypatch.setattr(stderr, "write", lambda text: writes.append(text) or write(text))
        with direct_lines.held():
            log_interception(CONTEXT, Status.COMPLETED, 200, ANSWER, ENDED)
            with direct_lines.held():
                log_interception(CONTEXT, Status.UPSTREAM_ERROR, 502, None, ENDED)
            logging.getLogger("aibridge.proxy").warning("a line through logging meanwhile")
            assert [orjson.loads(text)["logger"] for text in writes] == ["aibridge.proxy"]
        assert len(writes) == 2
        held = [orjson.loads(line) for line in writes[1].splitlines()]
        assert [(line["status"], line["http_status"]) for line in held] == [("completed", 200), ("upstream_error", 502)]
        log_interception(CONTEXT, Status.COMPLETED, 200, ANSWER, ENDED)  # outside a block: at once
        assert len(writes) == 3
        assert all(text.endswith("\n") for text in writes)


def test_a_failed_write_is_reported_as_logging_reports_it_and_does_not_raise(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with json_stderr(monkeypatch) as stderr:
        stderr.close()
        reported: list[logging.LogRecord] = []
        assert direct_lines.handler is not None
        monkeypatch.setattr(direct_lines.handler, "handleError", reported.append)
        log_interception(CONTEXT, Status.COMPLETED, 200, ANSWER, ENDED)
    [record] = reported
    assert record.getMessage().startswith('{"time":')


def test_held_lines_are_written_in_pieces_a_pipe_takes_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    with json_stderr(monkeypatch) as stderr:
        writes: list[str] = []
        write = stderr.write
        monkeypatch.setattr(stderr, "write", lambda text: writes.append(text) or write(text))
        with direct_lines.held():
            for tokens in range(20):
                usage = Usage(input_tokens=tokens)
                log_interception(CONTEXT, Status.COMPLETED, 200, ResponseSummary(usage=usage), ENDED)
    sizes = [len(text.encode()) for text in writes]
    assert len(writes) > 2 and all(size <= ATOMIC_WRITE for size in sizes), sizes
    assert all(text.endswith("\n") for text in writes)
    held = [orjson.loads(line) for text in writes for line in text.splitlines()]
    assert [line["input_tokens"] for line in held] == list(range(20))


def test_another_threads_line_is_not_held_by_this_threads_block(monkeypatch: pytest.MonkeyPatch) -> None:
    with json_stderr(monkeypatch) as stderr, direct_lines.held():
        log_interception(CONTEXT, Status.COMPLETED, 200, ANSWER, ENDED)
        other = threading.Thread(target=log_interception, args=(CONTEXT, Status.UPSTREAM_ERROR, 502, None, ENDED))
        other.start()
        other.join(10)
        assert [orjson.loads(line)["status"] for line in stderr.getvalue().splitlines()] == ["upstream_error"]
    assert [orjson.loads(line)["status"] for line in stderr.getvalue().splitlines()] == ["upstream_error", "completed"]
