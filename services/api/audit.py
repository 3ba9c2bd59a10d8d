"""Access audit: who read whose prompts (``schemas/aibridge.audit.v1.schema.json``).

Every authenticated request to a route that returns prompts or tool inputs (today only
``GET /interceptions`` and the sessions; the facets and usage do not) writes one record, whatever its outcome: the
actor (user, role, token id; never the token), the source address, the filters and pagination as
asked and as parsed, the status, and how many interceptions came back (never their content). A
route wraps its work in :func:`access`; :class:`aibridge.api.audit_sink.AuditSink` writes the record
to the log and, in distributed mode, to Kafka.

The source ``ip`` is the peer address unless the peer is a trusted proxy
(``AIBRIDGE_API_TRUSTED_PROXIES``): then X-Forwarded-For is read from the right, skipping trusted
proxies, and the first address that is not one is the client.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Protocol

import fastjsonschema
import orjson
from clickhouse_connect.driver.exceptions import ClickHouseError
from starlette.requests import Request

from aibridge.api.errors import ApiError
from aibridge.api.query import parse_q
from aibridge.api.settings import IpNetwork
from aibridge.auth import Identity
from aibridge.events import SCHEMA_DIR, format_time, new_id, utcnow

SCHEMA_VERSION: Final = 1
SCHEMA_PATH: Final = SCHEMA_DIR / "aibridge.audit.v1.schema.json"
EXAMPLES_DIR: Final = SCHEMA_DIR / "examples" / "audit"
EXPORT_HEADER: Final = "x-aibridge-export"
LIST: Final = "interceptions.list"
EXPORT: Final = "interceptions.export"
SESSIONS_LIST: Final = "sessions.list"
SESSIONS_SHOW: Final = "sessions.show"
_MAX_TEXT: Final = 4096

Record = dict[str, Any]


class InvalidRecord(ValueError):
    """A record does not satisfy the audit schema; the message says why."""


class RecordSink(Protocol):
    def write(self, record: Record) -> None:
        """Take one record; never blocks, never raises."""


def validate_record(record: Any) -> Record:
    try:
        _validator()(record)
    except fastjsonschema.JsonSchemaException as exc:
        raise InvalidRecord(f"schema violation: {exc}") from exc
    result: Record = record
    return result


@cache
def _validator() -> Any:
    return fastjsonschema.compile(orjson.loads(SCHEMA_PATH.read_bytes()))


def example_records() -> dict[str, Record]:
    """The audit schema's example payloads, by file stem."""
    return {path.stem: orjson.loads(path.read_bytes()) for path in sorted(Path(EXAMPLES_DIR).glob("*.json"))}


def client_ip(peer: str, forwarded_for: str | None, trusted: tuple[IpNetwork, ...]) -> str:
    """The client's address: ``peer``, or X-Forwarded-For read from the right while hops are trusted."""
    address = peer
    if not trusted or not forwarded_for or not _is_trusted(address, trusted):
        return address
    for hop in reversed([part.strip() for part in forwarded_for.split(",")]):
        if not _is_address(hop):
            return address  # a trusted proxy passed on garbage: its own peer is the last known hop
        address = hop
        if not _is_trusted(hop, trusted):
            return hop
    return address


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _is_trusted(address: str, trusted: Iterable[IpNetwork]) -> bool:
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(parsed in network for network in trusted)


@dataclass(slots=True)
class Pagination:
    limit: int | None = None
    offset: int | None = None
    after_id: str | None = None


@dataclass(slots=True)
class Access:
    """One audited request; the route sets ``rows`` and ``matched`` once it has its answer."""

    sink: RecordSink
    identity: Identity
    request: Request
    trusted: tuple[IpNetwork, ...]
    q: str | None
    pagination: Pagination
    rows: int = 0
    matched: int | None = None
    action: str = LIST
    _error: str | None = field(default=None, init=False)

    def __enter__(self) -> Access:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        status = 200 if error is None else _status_of(error)
        self._error = None if error is None else _message_of(error)
        self.sink.write(self.record(status))

    def record(self, status: int) -> Record:
        allowed = 200 <= status < 300
        return {
            "schema_version": SCHEMA_VERSION,
            "event_id": new_id(),
            "type": "access",
            "occurred_at": format_time(utcnow()),
            "action": self._action(),
            "actor": actor(self.identity),
            "source": self._source(),
            "request": {
                "method": self.request.method,
                "path": self.request.url.path[:1024],
                "q": self.q,
                "filters": parsed_filters(self.q),
                "pagination": dataclasses.asdict(self.pagination),
            },
            "result": {
                "status": status,
                "outcome": outcome(status),
                "rows": self.rows if allowed else 0,
                "matched": self.matched if allowed else None,
                "error": self._error,
            },
        }

    def _action(self) -> str:
        exported = self.request.headers.get(EXPORT_HEADER, "").lower() == "true"
        return EXPORT if exported and self.action == LIST else self.action

    def _source(self) -> dict[str, str]:
        peer = self.request.client.host if self.request.client else ""
        return {
            "ip": client_ip(peer, self.request.headers.get("x-forwarded-for"), self.trusted),
            "peer": peer,
            "user_agent": self.request.headers.get("user-agent", "")[:512],
        }


def actor(identity: Identity) -> dict[str, str]:
    return {
        "user_id": identity.user_id,
        "username": identity.username,
        "role": identity.role.value,
        "token_id": identity.token_id,
    }


def parsed_filters(q: str | None) -> dict[str, str]:
    """The terms of ``q`` as the API understood them; empty when ``q`` does not parse (the record's
    status then says 400)."""
    try:
        filters = parse_q(q)
    except ApiError:
        return {}
    return {key: _text(value) for key, value in dataclasses.asdict(filters).items() if value is not None}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else format_time(value)


def outcome(status: int) -> str:
    if status < 400:
        return "allowed"
    if status == 403:
        return "denied"
    return "invalid" if status < 500 else "failed"


def _status_of(error: BaseException) -> int:
    if isinstance(error, ApiError):
        return error.status_code
    return 503 if isinstance(error, ClickHouseError) else 500


def _message_of(error: BaseException) -> str:
    message = error.message if isinstance(error, ApiError) else type(error).__name__
    return message[:_MAX_TEXT]


def access(request: Request, identity: Identity, q: str | None, pagination: Pagination, action: str = LIST) -> Access:
    """The audit of one request to a route that returns prompts or tool inputs; use it as ``with``.
    ``q`` is recorded as sent and parsed again for the record, so one that fails to parse is recorded too."""
    state = request.app.state
    text = q[:_MAX_TEXT] if q else q
    return Access(state.audit, identity, request, state.trusted_proxies, text, pagination, action=action)
