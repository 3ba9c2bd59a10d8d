"""Settings of MCP tool injection, mixed into ``ProxySettings`` (env prefix ``AIBRIDGE_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from aibridge.proxy.mcp.config import load_servers


class McpSettings(BaseSettings):
    """Injection is off unless ``AIBRIDGE_MCP_SERVERS_FILE`` is set."""

    model_config = SettingsConfigDict(env_prefix="AIBRIDGE_", extra="ignore", populate_by_name=True)

    mcp_servers_file: Path | None = Field(
        default=None, description="YAML file of MCP servers whose tools are injected into every request; unset = off."
    )
    mcp_refresh_interval: float = Field(
        default=300.0, gt=0, description="Seconds between refreshes of the MCP tool lists (also on SIGHUP)."
    )
    mcp_connect_timeout: float = Field(default=10.0, gt=0, description="Seconds to open a session to an MCP server.")
    mcp_call_timeout: float = Field(default=30.0, gt=0, description="Seconds one injected tool call may take.")
    mcp_result_max_bytes: int = Field(
        default=64 * 1024, ge=256, description="Bytes of an injected tool's result sent to the model; cut beyond it."
    )
    mcp_max_rounds: int = Field(
        default=8, ge=1, description="Upstream rounds per request at most while the model calls injected tools."
    )
    mcp_pool_max_sessions: int = Field(
        default=1000, ge=1, description="Open per-user MCP sessions (forwarded auth) at most; least recent closed."
    )
    mcp_pool_idle_timeout: float = Field(
        default=300.0, gt=0, description="Seconds an unused per-user MCP session stays open."
    )

    @field_validator("mcp_servers_file")
    @classmethod
    def _servers_load(cls, value: Path | None) -> Path | None:
        if value is not None:
            load_servers(value)  # read again when the proxy starts; here so a bad file stops it with its line
        return value
