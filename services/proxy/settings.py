"""The proxy's settings (env prefix ``AIBRIDGE_``), validated once at start."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator

from aibridge.proxy.guards.breaker import BreakerSettings
from aibridge.proxy.guards.budgets import BudgetSettings
from aibridge.proxy.guards.limits import LimitSettings
from aibridge.proxy.mcp.settings import McpSettings
from aibridge.proxy.recording.spool import SpoolSettings
from aibridge.redaction import CaptureMode, load_rules
from aibridge.secret_files import resolve_secret_files
from aibridge.settings import CommonSettings, StoreSettings

UpstreamClient = Literal["builtin", "aiohttp", "httpx"]


class ProxySettings(
    CommonSettings, StoreSettings, LimitSettings, BreakerSettings, SpoolSettings, BudgetSettings, McpSettings
):
    """Where the providers are, which keys to send them, how patient to be with them, the resilience
    settings (admission limits, circuit breakers, event spool: docs/resilience.md) and budgets (the
    store is read for them only: docs/spend.md)."""

    listen: str = Field(default="0.0.0.0:8080", description="HOST:PORT the proxy listens on.")
    kafka_producer: Literal["confluent", "aiokafka"] = Field(
        default="confluent",
        description="The proxy's Kafka client: confluent (librdkafka, batching and compression on its own"
        " threads) or aiokafka (all in the event loop).",
    )
    workers: int = Field(
        default=0,
        ge=0,
        description="Proxy processes sharing the port (one core each); 0 = the container's CPU limit, or the"
        " host's cores.",
    )
    openai_key: SecretStr | None = Field(default=None, description="Central OpenAI API key sent upstream.")
    anthropic_key: SecretStr | None = Field(default=None, description="Central Anthropic API key sent upstream.")
    openai_key_file: Path | None = Field(default=None, description="A file holding the OpenAI key instead.")
    anthropic_key_file: Path | None = Field(default=None, description="A file holding the Anthropic key instead.")
    openai_base_url: str = Field(
        default="https://api.openai.com/v1",
        description="/api/v2/aibridge/openai/v1/X is forwarded to {openai_base_url}/X.",
    )
    anthropic_base_url: str = Field(
        default="https://api.anthropic.com",
        description="/api/v2/aibridge/anthropic/v1/X is forwarded to {anthropic_base_url}/v1/X.",
    )
    upstream_connect_timeout: float = Field(default=10.0, gt=0, description="Seconds to connect upstream.")
    upstream_read_timeout: float = Field(
        default=600.0, gt=0, description="Seconds to wait for the upstream's next bytes (headers or a chunk)."
    )
    upstream_max_connections: int = Field(default=1000, ge=1, description="Pooled upstream connections.")
    upstream_client: UpstreamClient = Field(
        default="builtin",
        description="HTTP client for upstream calls: builtin (HTTP/1.1 on asyncio and llhttp; chosen by measurement), "
        "aiohttp or httpx.",
    )
    event_buffer_size: int = Field(default=100_000, ge=1, description="Events queued for the bus at most.")
    event_batch_size: int = Field(default=500, ge=1, description="Events sent to the bus in one batch at most.")
    event_linger: float = Field(
        default=0.05,
        ge=0,
        description="Seconds the publisher waits for a batch to fill (fewer, larger produce requests: less CPU).",
    )
    event_send_attempts: int = Field(
        default=3, ge=1, description="Tries per event before it is given up (1 with a spool: the spool retries)."
    )
    event_flush_timeout: float = Field(default=10.0, ge=0, description="Seconds to flush events at shutdown.")
    max_body_bytes: int = Field(
        default=32 * 1024 * 1024,
        ge=1024,
        validation_alias=AliasChoices("AIBRIDGE_MAX_BODY_BYTES", "AIBRIDGE_MAX_REQUEST_BYTES"),
        description="Largest request body on any proxy route (413 over it); old name AIBRIDGE_MAX_REQUEST_BYTES.",
    )
    prompt_capture: CaptureMode = Field(
        default=CaptureMode.FULL,
        description="What events keep of prompts and tool inputs: full (known secret shapes replaced), redacted (also"
        " heuristic rules: password= assignments, high-entropy values next to secret-like names) or metadata (none).",
    )
    redaction_rules_file: Path | None = Field(
        default=None, description="YAML or JSON file of redaction rules that extend or override the built-in table."
    )

    @model_validator(mode="after")
    def _read_key_files(self) -> ProxySettings:
        resolve_secret_files(self, ("openai_key", "anthropic_key"))
        return self

    @field_validator("redaction_rules_file")
    @classmethod
    def _rules_load(cls, value: Path | None) -> Path | None:
        if value is not None:
            load_rules(value)  # read again when the proxy starts; here so a bad file stops it with this message
        return value

    @field_validator("openai_base_url", "anthropic_base_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")
