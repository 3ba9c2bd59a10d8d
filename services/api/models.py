"""Response shapes, for the OpenAPI schema (Coder's AI Bridge API plus our extras).

Handlers build plain dicts (see :mod:`aibridge.api.render`) and serialize them with orjson; these
models document them, and the schema-driven tests check that answers conform.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Initiator(BaseModel):
    id: str = Field(description="User id (the bridge token's subject).")
    username: str
    name: str = Field(description="Display name; empty (the bridge knows no display names).")
    avatar_url: str = Field(description="Empty (the bridge knows no avatars).")


class TokenUsage(BaseModel):
    id: str
    interception_id: str
    provider_response_id: str
    input_tokens: int
    output_tokens: int
    cache_read_input_tokens: int
    cache_write_input_tokens: int
    cost: str | None = Field(
        description="USD as a decimal string, at the prices known when it was recorded; null when the model has no"
        " price (or the usage was recorded before costs were)."
    )
    metadata: dict[str, Any]
    created_at: str = Field(description="RFC 3339.")


class UserPrompt(BaseModel):
    id: str
    interception_id: str
    provider_response_id: str
    prompt: str
    metadata: dict[str, Any]
    created_at: str


class ToolUsage(BaseModel):
    id: str
    interception_id: str
    provider_response_id: str
    server_url: str = Field(description="MCP server URL; empty for client-side tools.")
    server_name: str | None = Field(
        default=None, description="The MCP server that ran an injected call; null for client-side tools."
    )
    tool: str
    input: str
    injected: bool
    invocation_error: str = Field(description="Empty unless the tool invocation failed.")
    duration_ms: float | None = Field(
        default=None, description="How long the bridge's call of an injected tool took; null when it did not run it."
    )
    metadata: dict[str, Any]
    created_at: str


class Interception(BaseModel):
    id: str
    api_key_id: str
    initiator: Initiator
    provider: str
    model: str
    client: str
    metadata: dict[str, Any]
    started_at: str = Field(description="RFC 3339.")
    ended_at: str | None = Field(description="RFC 3339; null while the interception is in flight.")
    streaming: bool
    route: str = Field(description="Upstream route, e.g. /v1/messages.")
    user_agent: str
    status: str | None = Field(description="How it ended (completed, upstream_error, ...); null while in flight.")
    http_status: int | None = Field(description="HTTP status answered to the client; null while in flight.")
    error: str | None
    session_id: str = Field(description="The client's session key; empty when it sent none.")
    thread_id: str | None = Field(
        description="The id of the interception that started its thread (docs/sessions.md); null without a session."
    )
    turn: str = Field(description="prompt, tool_result, or empty when not known.")
    token_usages: list[TokenUsage]
    user_prompts: list[UserPrompt]
    tool_usages: list[ToolUsage]
    cost: str | None = Field(
        description='USD, the sum of its token usages\' costs (decimal string); "0" without usages; null when'
        " none of its usages is priced."
    )
    cost_unpriced: bool = Field(description="True when a token usage has no price: cost counts only the others.")


class InterceptionsPage(BaseModel):
    count: int = Field(description="Interceptions matching q in total (not only this page).")
    results: list[Interception]


class UsageInitiator(BaseModel):
    id: str
    username: str


class UsageRow(BaseModel):
    key: str = Field(
        description="The group: user id, group name ('' for users in no group), model, provider, client or day"
        " (YYYY-MM-DD, UTC); with several group_by keys, their values joined by '|'."
    )
    keys: dict[str, str] = Field(description="Each group_by key's value.")
    initiator: UsageInitiator | None = Field(description="Set when grouped by user.")
    interceptions: int
    input_tokens: int
    output_tokens: int
    cache_read_input_tokens: int
    cache_write_input_tokens: int
    total_tokens: int = Field(description="input + output + cache read + cache write.")
    cost: str | None = Field(
        description="USD (decimal string, exact) of the priced token usages; null when none of them is priced."
    )
    unpriced_interceptions: int = Field(description="Interceptions with a token usage that has no price.")


class UnpricedModel(BaseModel):
    provider: str
    model: str
    token_usages: int
    interceptions: int


class UsageSummary(BaseModel):
    group_by: str = Field(description="The group_by keys, comma-separated.")
    started_after: str | None
    started_before: str | None
    prices_checked: str = Field(description="The date the price table was checked (YYYY-MM-DD).")
    results: list[UsageRow] = Field(description="Most tokens first.")
    unpriced_models: list[UnpricedModel] | None = Field(
        description="With unpriced=true: the models whose usages have no price, most usages first."
    )


class ErrorResponse(BaseModel):
    message: str
    detail: str | None = None


class SessionSummary(BaseModel):
    id: str = Field(description="The client's session key.")
    initiator: Initiator = Field(description="The user (of the newest interception, if several share the key).")
    client: str
    providers: list[str]
    models: list[str]
    started_at: str = Field(description="RFC 3339: the first interception's start.")
    last_started_at: str = Field(description="RFC 3339: the newest interception's start (the page's order).")
    threads: int = Field(description="Human prompts and the agentic loops they set off (docs/sessions.md).")
    interceptions: int
    input_tokens: int
    output_tokens: int
    cache_read_input_tokens: int
    cache_write_input_tokens: int
    total_tokens: int = Field(description="input + output + cache read + cache write.")


class SessionsPage(BaseModel):
    count: int = Field(description="Sessions matching the filters (not just this page).")
    results: list[SessionSummary] = Field(description="Newest activity first.")


class Reasoning(BaseModel):
    interception_id: str
    id: str
    provider_response_id: str
    kind: str = Field(description="thinking, summary, reasoning_content, redacted or encrypted (docs/sessions.md).")
    text: str = Field(description="As captured; empty with capture metadata and for redacted and encrypted.")
    metadata: dict[str, Any]
    created_at: str = Field(description="RFC 3339.")


class Thread(BaseModel):
    id: str = Field(description="The id of the interception that started it: its prompt, or the first one.")
    initiator: Initiator
    client: str
    prompt: str | None = Field(description="The human prompt that started it (as captured); null without one.")
    started_at: str = Field(description="RFC 3339.")
    ended_at: str | None = Field(description="RFC 3339: when its last interception ended; null while in flight.")
    duration_ms: int | None = Field(description="From its start to its last end; null while in flight.")
    interceptions: list[Interception] = Field(description="In the order they started.")
    tool_calls: list[ToolUsage] = Field(description="Every tool call the model made in it, in order.")
    reasoning: list[Reasoning] = Field(description="The model's reasoning in its interceptions, in order.")
    input_tokens: int
    output_tokens: int
    cache_read_input_tokens: int
    cache_write_input_tokens: int
    total_tokens: int


class SessionDetail(BaseModel):
    id: str
    initiator: Initiator = Field(description="The user of its first interception.")
    client: str
    started_at: str
    last_started_at: str
    interceptions: int
    threads: list[Thread] = Field(description="In the order they started.")
    input_tokens: int
    output_tokens: int
    cache_read_input_tokens: int
    cache_write_input_tokens: int
    total_tokens: int
