"""Settings shared by every service. Each service extends :class:`CommonSettings` with its own fields.

Nothing else in the code base reads ``os.environ``: a service builds its settings object once at
start, which validates every value and fails with a message naming the variable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from aibridge.durations import parse_duration

DEFAULT_TOPIC = "aibridge.interceptions.v1"

Seconds = Annotated[int, BeforeValidator(parse_duration)]


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


CsvList = Annotated[list[str], BeforeValidator(_split_csv)]


class CommonSettings(BaseSettings):
    """Settings every component reads (env prefix ``AIBRIDGE_``)."""

    model_config = SettingsConfigDict(env_prefix="AIBRIDGE_", extra="ignore", populate_by_name=True)

    auth_public_key_file: Path | None = Field(
        default=None, description="Ed25519 public key (PEM) that verifies bridge tokens."
    )
    auth_revoked_file: Path | None = Field(
        default=None, description="File of revoked token ids (jti), one per line; re-read when it changes."
    )
    kafka_bootstrap: str = Field(default="localhost:9092", description="Kafka bootstrap servers.")
    kafka_topic: str = Field(default=DEFAULT_TOPIC, description="Topic of interception events.")
    kafka_security_protocol: str = Field(default="PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL.")
    kafka_sasl_mechanism: str | None = Field(default=None, description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512.")
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = Field(default=None, repr=False)
    kafka_compression: Literal["lz4", "zstd", "snappy", "gzip", "none"] = Field(
        default="lz4",
        description="Compression of produced batches; lz4 costs the proxy the least CPU (gzip: ~10x more).",
    )
    structured_logs: bool = Field(default=False, description="One JSON log line per recorded record.")
    log_level: str = Field(default="INFO")
    trace_enable: bool = Field(default=False, description="Export OpenTelemetry traces over OTLP.")
    trace_logs: bool = Field(default=False, description="Attach log records to the active span.")
    shutdown_grace: float = Field(
        default=30.0, ge=0, description="Seconds in-flight requests and streams get to finish at shutdown."
    )
    metrics_initiator_label: bool = Field(
        default=True,
        description="Label the proxy's usage metrics with the initiator (username); false to bound cardinality.",
    )
    metrics_max_models: int = Field(
        default=200,
        ge=1,
        description="Distinct models the proxy's metrics name; later ones are labelled model=other (events keep"
        " the real name). The model comes from the request body: this bounds what a client can add.",
    )

    def kafka_client_options(self) -> dict[str, Any]:
        """Connection options shared by every aiokafka client of this service."""
        options: dict[str, Any] = {
            "bootstrap_servers": self.kafka_bootstrap,
            "security_protocol": self.kafka_security_protocol,
        }
        if self.kafka_sasl_mechanism:
            options |= {
                "sasl_mechanism": self.kafka_sasl_mechanism,
                "sasl_plain_username": self.kafka_sasl_username,
                "sasl_plain_password": self.kafka_sasl_password,
            }
        return options


class StoreSettings(BaseSettings):
    """How to reach the ClickHouse store (recorder and API)."""

    model_config = SettingsConfigDict(env_prefix="AIBRIDGE_", extra="ignore", populate_by_name=True)

    clickhouse_url: str = Field(
        default="chdb:///var/lib/aibridge/store",
        description="http(s)://user:password@host:8123 for a server, chdb:///dir for the embedded engine.",
    )
    clickhouse_database: str = Field(default="aibridge", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    retention: Seconds = Field(default=60 * 86400, description="How long records are kept; 0 keeps forever.")


class TokenSettings(BaseSettings):
    """Only ``aibridge token issue`` reads the signing key."""

    model_config = SettingsConfigDict(env_prefix="AIBRIDGE_", extra="ignore")

    auth_private_key_file: Path | None = None
