"""Consistent store rows for the API tests, inserted the way the recorder writes them.

An :class:`Spec` is one interception; :func:`insert` writes its ``started`` row (version 0) and, unless
it is in flight, its ``ended`` row (version 1) in separate inserts (separate parts, as when the two
events land in different batches), plus its prompt, token usage and tool usages. ``duplicate=True``
writes every row once more in yet another part, as a redelivery after a recorder restart would.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from clickhouse_connect.driver.client import Client

from aibridge import store
from aibridge.api.settings import ApiSettings

BASE = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
_MASK64 = (1 << 64) - 1

INTERCEPTION_COLUMNS = (
    "id", "version", "initiator_id", "initiator_username", "provider", "model", "client", "api_key_id",
    "route", "streaming", "user_agent", "status", "http_status", "error", "metadata", "started_at", "ended_at",
)  # fmt: skip
CONTEXT = ("initiator_id", "initiator_username", "provider", "model", "client")
PROMPT_COLUMNS = ("id", "interception_id", *CONTEXT, "provider_response_id", "prompt", "metadata", "created_at")
TOKEN_COLUMNS = (
    "id", "interception_id", *CONTEXT, "provider_response_id", "input_tokens", "output_tokens",
    "cache_read_input_tokens", "cache_write_input_tokens", "metadata", "created_at",
)  # fmt: skip
TOOL_COLUMNS = (
    "id", "interception_id", *CONTEXT, "provider_response_id", "call_id", "server_url", "tool", "input",
    "injected", "invocation_error", "metadata", "created_at",
)  # fmt: skip


def user_id(username: str) -> str:
    """The id ``aibridge token issue`` derives for a username (what make_token puts in ``sub``)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"aibridge:user:{username}"))


def clickhouse_order(value: uuid.UUID) -> tuple[int, int]:
    """How ClickHouse orders UUIDs: the second 64 bits first."""
    return value.int & _MASK64, value.int >> 64


@dataclass
class Spec:
    username: str
    provider: str
    model: str
    client: str
    started_at: datetime
    in_flight: bool = False
    tools: int = 1
    input_tokens: int = 100
    output_tokens: int = 10
    cache_read: int = 1000
    cache_write: int = 50
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    prompt: str = "fix the bug"

    @property
    def initiator_id(self) -> str:
        return user_id(self.username)

    @property
    def ended_at(self) -> datetime | None:
        return None if self.in_flight else self.started_at + timedelta(seconds=3)

    def sort_key(self) -> tuple[datetime, tuple[int, int]]:
        return self.started_at, clickhouse_order(self.id)

    def context(self) -> tuple[Any, ...]:
        return self.initiator_id, self.username, self.provider, self.model, self.client

    def interception_row(self, ended: bool) -> list[Any]:
        return [
            self.id, 1 if ended else 0, *self.context(), f"key-{self.username}",
            "/v1/messages" if self.provider == "anthropic" else "/v1/chat/completions", True,
            "claude-cli/2.1.332", "completed" if ended else "", 200 if ended else 0, None,
            orjson.dumps({"session": self.username}).decode(), self.started_at,
            self.ended_at if ended else None,
        ]  # fmt: skip

    def child_rows(self) -> dict[str, list[list[Any]]]:
        at = self.started_at + timedelta(milliseconds=500)
        response = f"msg_{self.id.hex[:12]}"
        prompts = [[_child_id(self.id, "prompt"), self.id, *self.context(), response, self.prompt, "{}", at]]
        tokens = [[
            _child_id(self.id, "tokens"), self.id, *self.context(), response, self.input_tokens,
            self.output_tokens, self.cache_read, self.cache_write, '{"service_tier": "standard"}', at,
        ]]  # fmt: skip
        tools = [
            [
                _child_id(self.id, f"tool{n}"), self.id, *self.context(), response, f"call_{n}",
                None if n % 2 == 0 else "https://mcp.example/sse", "Read", '{"path": "a.py"}', n % 2 == 1,
                None, "{}", at + timedelta(milliseconds=n),
            ]
            for n in range(self.tools)
        ]  # fmt: skip
        return {store.USER_PROMPTS: prompts, store.TOKEN_USAGES: tokens, store.TOOL_USAGES: tools}


def _child_id(interception_id: uuid.UUID, name: str) -> uuid.UUID:
    return uuid.uuid5(interception_id, name)


_CHILD_COLUMNS = {
    store.USER_PROMPTS: PROMPT_COLUMNS,
    store.TOKEN_USAGES: TOKEN_COLUMNS,
    store.TOOL_USAGES: TOOL_COLUMNS,
}


def insert(client: Client, specs: list[Spec], *, duplicate: bool = False) -> None:
    """Write the specs' rows: started rows, then ended rows, then children, each its own insert."""
    copies = 2 if duplicate else 1
    for _ in range(copies):
        started = [spec.interception_row(ended=False) for spec in specs]
        client.insert(store.INTERCEPTIONS, started, column_names=list(INTERCEPTION_COLUMNS))
        ended = [spec.interception_row(ended=True) for spec in specs if not spec.in_flight]
        if ended:
            client.insert(store.INTERCEPTIONS, ended, column_names=list(INTERCEPTION_COLUMNS))
        for table, columns in _CHILD_COLUMNS.items():
            rows = [row for spec in specs for row in spec.child_rows()[table]]
            if rows:
                client.insert(table, rows, column_names=list(columns))


def newest_first(specs: list[Spec]) -> list[str]:
    return [str(spec.id) for spec in sorted(specs, key=Spec.sort_key, reverse=True)]


USERS = ("alice", "bob", "carol")
MODELS = (("anthropic", "claude-sonnet-4-5"), ("anthropic", "claude-haiku-4-5"), ("openai", "gpt-5"), ("openai", "o3"))
CLIENTS = ("Claude Code", "Codex", "Cursor")


def dataset(count: int = 60) -> list[Spec]:
    """A deterministic mix of users, models and clients, one a minute, with a tie on started_at and
    the two newest in flight."""
    specs = []
    for n in range(count):
        provider, model = MODELS[n % len(MODELS)]
        specs.append(
            Spec(
                username=USERS[n % len(USERS)] if n % 7 else "alice",
                provider=provider,
                model=model,
                client=CLIENTS[(n // 2) % len(CLIENTS)],
                started_at=BASE + timedelta(minutes=n // 2 * 2 if n in (10, 11) else n),
                in_flight=n >= count - 2,
                tools=n % 3,
                input_tokens=100 + n,
                output_tokens=10 + n,
                cache_read=1000 * n,
                cache_write=n,
                id=uuid.uuid5(uuid.NAMESPACE_URL, f"aibridge:test:interception:{n}"),
                prompt=f"prompt number {n}",
            )
        )
    return specs


def new_database(chdb_url: str) -> Client:
    client = store.connect(chdb_url, f"api_{uuid.uuid4().hex[:12]}", create_database=True)
    store.migrate(client)
    return client


def api_settings(chdb_url: str, client: Client) -> ApiSettings:
    return ApiSettings(clickhouse_url=chdb_url, clickhouse_database=client.database)
