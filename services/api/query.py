"""The ``q`` search grammar (Coder-compatible), as a pure function from text to :class:`Filters`.

``q`` is space-separated ``key:value`` terms combined with AND. A value with spaces is double-quoted
(``client:"Claude Code"``; ``\\"`` and ``\\\\`` escape inside quotes). Keys: ``client``, ``initiator``
(user id, username or ``me``), ``provider``, ``model``, ``session_id``, ``thread_id`` (the id of the
interception that started the thread), ``started_after`` (inclusive) and
``started_before`` (exclusive), both RFC 3339 with a time zone. Every error names the offending term.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from aibridge.api.errors import BadRequest

TEXT_KEYS: Final = ("initiator", "provider", "model", "client", "session_id", "thread_id")
TIME_KEYS: Final = ("started_after", "started_before")
KEYS: Final = TEXT_KEYS + TIME_KEYS
MAX_VALUE_LENGTH: Final = 256
# What a DateTime64(6) column and its TTL can hold; anything outside would fail in the store.
EARLIEST: Final = datetime(1970, 1, 2, tzinfo=UTC)
LATEST: Final = datetime(2105, 12, 31, tzinfo=UTC)

_RFC3339: Final = re.compile(r"(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2}:\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")


@dataclass(frozen=True, slots=True)
class Filters:
    initiator: str | None = None
    provider: str | None = None
    model: str | None = None
    client: str | None = None
    started_after: datetime | None = None
    started_before: datetime | None = None
    session_id: str | None = None
    thread_id: str | None = None

    def merged(self, other: Filters) -> Filters:
        """These filters plus ``other``'s; a key set in both is a 400."""
        values = dataclasses.asdict(self)
        for key, value in dataclasses.asdict(other).items():
            if value is None:
                continue
            if values[key] is not None:
                raise BadRequest(f"{key} is given twice: once in q and once as a parameter")
            values[key] = value
        return Filters(**values)


def parse_q(text: str | None) -> Filters:
    """Parse ``q``; raise :class:`BadRequest` naming the first bad term."""
    values: dict[str, object] = {}
    for key, value, term in _terms(text or ""):
        if key not in KEYS:
            raise BadRequest(f"unknown search key {key!r} in term {term!r}: use one of {', '.join(KEYS)}")
        if key in values:
            raise BadRequest(f"search key {key!r} is given twice (term {term!r})")
        values[key] = parse_time(value, term) if key in TIME_KEYS else _text(value, term)
    filters = Filters(**values)  # type: ignore[arg-type]
    check_range(filters)
    return filters


def check_range(filters: Filters) -> None:
    after, before = filters.started_after, filters.started_before
    if after is not None and before is not None and after >= before:
        raise BadRequest("started_after must be earlier than started_before")


def parse_time(value: str, term: str) -> datetime:
    """An RFC 3339 time with a zone (``2025-01-01T00:00:00Z``), as UTC; fractions beyond µs are cut."""
    match = _RFC3339.fullmatch(value)
    if match is None:
        raise BadRequest(f"{term!r} is not an RFC 3339 time with a time zone, e.g. 2025-01-01T00:00:00Z")
    date, clock, fraction, zone = match.groups()
    text = f"{date}T{clock}{(fraction or '')[:7]}{'+00:00' if zone in 'Zz' else zone}"
    try:
        moment = datetime.fromisoformat(text).astimezone(UTC)
    except ValueError as exc:
        raise BadRequest(f"{term!r} is not a valid time: {exc}") from exc
    if not EARLIEST <= moment <= LATEST:
        raise BadRequest(f"{term!r} is outside the supported range 1970-01-02..2105-12-31")
    return moment


def _text(value: str, term: str) -> str:
    if not value:
        raise BadRequest(f"term {term!r} has an empty value")
    if len(value) > MAX_VALUE_LENGTH:
        raise BadRequest(f"the value of term {term[:40]!r}... is longer than {MAX_VALUE_LENGTH} characters")
    return value


def _terms(text: str) -> list[tuple[str, str, str]]:
    """Split into (key, value, term as written)."""
    terms: list[tuple[str, str, str]] = []
    position = 0
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if position == len(text):
            return terms
        start = position
        key_end = _key_end(text, position)
        key = text[start:key_end].lower()
        value, position = _value(text, key_end + 1, start)
        terms.append((key, value, text[start:position]))


def _key_end(text: str, start: int) -> int:
    position = start
    while position < len(text) and text[position] != ":" and not text[position].isspace():
        if text[position] == '"':
            raise BadRequest(f'term {_word(text, start)!r} has a quote in its key: write key:"value"')
        position += 1
    if position == len(text) or text[position] != ":" or position == start:
        raise BadRequest(f"term {_word(text, start)!r} is not of the form key:value")
    return position


def _value(text: str, start: int, term_start: int) -> tuple[str, int]:
    if start < len(text) and text[start] == '"':
        return _quoted(text, start, term_start)
    position = start
    while position < len(text) and not text[position].isspace():
        if text[position] == '"':
            raise BadRequest(f"term {_word(text, term_start)!r} has a quote inside its value: quote the whole value")
        position += 1
    return text[start:position], position


def _quoted(text: str, start: int, term_start: int) -> tuple[str, int]:
    chars, position = [], start + 1
    while position < len(text):
        char = text[position]
        if char == "\\" and position + 1 < len(text) and text[position + 1] in '"\\':
            chars.append(text[position + 1])
            position += 2
            continue
        if char == '"':
            end = position + 1
            if end < len(text) and not text[end].isspace():
                raise BadRequest(f"term {text[term_start : end + 1]!r}...: a closing quote must end the term")
            return "".join(chars), end
        chars.append(char)
        position += 1
    raise BadRequest(f"term {text[term_start:]!r} has an unterminated quote")


def _word(text: str, start: int) -> str:
    end = start
    while end < len(text) and not text[end].isspace():
        end += 1
    return text[start:end]
