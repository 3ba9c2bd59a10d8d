"""Log records skip the stack walk for their origin unless spans attach them; the JSON line is the same."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterator

import orjson
import pytest

from aibridge.logs import JsonFormatter, note_record_origin


@pytest.fixture
def json_log() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    formatter = JsonFormatter()
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    logger = logging.getLogger("aibridge.test.logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)
    note_record_origin(True)


def line(logger: logging.Logger, stream: io.StringIO) -> dict[str, object]:
    stream.seek(0)
    stream.truncate()
    logger.info("alice %s completed", "openai/gpt-4o", extra={"interception_id": "i-1", "input_tokens": 3})
    parsed: dict[str, object] = orjson.loads(stream.getvalue())
    return {key: value for key, value in parsed.items() if key != "time"}


def test_the_json_line_is_the_same_without_the_records_origin(json_log: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = json_log
    note_record_origin(True)
    with_origin = line(logger, stream)
    note_record_origin(False)
    assert (
        line(logger, stream)
        == with_origin
        == {
            "level": "info",
            "logger": "aibridge.test.logs",
            "message": "alice openai/gpt-4o completed",
            "interception_id": "i-1",
            "input_tokens": 3,
        }
    )


class Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_without_origin_a_record_names_no_function_thread_or_process_and_with_it_it_does() -> None:
    logger, keep = logging.getLogger("aibridge.test.origin"), Keep()
    logger.addHandler(keep)
    logger.setLevel(logging.INFO)
    try:
        note_record_origin(False)
        logger.info("without")
        note_record_origin(True)
        logger.info("with")
    finally:
        logger.removeHandler(keep)
        note_record_origin(True)
    without, with_origin = keep.records
    assert (without.funcName, without.lineno, without.thread, without.process) == ("(unknown function)", 0, None, None)
    assert (
        with_origin.funcName == "test_without_origin_a_record_names_no_function_thread_or_process_and_with_it_it_does"
    )
    assert with_origin.thread is not None and with_origin.process is not None
