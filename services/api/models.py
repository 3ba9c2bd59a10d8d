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
    tool: str
    input: str
    injected: bool
    invocation_error: str = Field(description="Empty unless the tool invocation failed.")
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
    token_usages: list[TokenUsage]
    user_prompts: list[UserPrompt]
    tool_usages: list[ToolUsage]


class InterceptionsPage(BaseModel):
    count: int = Field(description="Interceptions matching q in total (not only this page).")
    results: list[Interception]


class UsageInitiator(BaseModel):
    id: str
    username: str


class UsageRow(BaseModel):
    key: str = Field(description="The group: user id, model, provider or client.")
    initiator: UsageInitiator | None = Field(description="Set when grouped by user.")
    interceptions: int
    input_tokens: int
    output_tokens: int
    cache_read_input_tokens: int
    cache_write_input_tokens: int
    total_tokens: int = Field(description="input + output + cache read + cache write.")


class UsageSummary(BaseModel):
    group_by: str
    started_after: str | None
    started_before: str | None
    results: list[UsageRow] = Field(description="Most tokens first.")


class ErrorResponse(BaseModel):
    message: str
    detail: str | None = None
