"""Settings shared by every service. Each service extends :class:`CommonSettings` with its own fields.

Nothing else in the code base reads ``os.environ``: a service builds its settings object once at
start, which validates every value and fails with a message naming the variable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BeforeValidator, Field, FilePath, SecretStr, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from aibridge.durations import parse_duration
from aibridge.kafka_settings import KafkaConnectionSettings
from aibridge.secret_files import resolve_secret_files

DEFAULT_TOPIC = "aibridge.interceptions.v1"
_CLICKHOUSE_TLS_FILES = ("clickhouse_ca_file", "clickhouse_client_cert_file", "clickhouse_client_key_file")

Seconds = Annotated[int, BeforeValidator(parse_duration)]


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


CsvList = Annotated[list[str], NoDecode, BeforeValidator(_split_csv)]


class CommonSettings(KafkaConnectionSettings):
    """Settings every component reads (env prefix ``AIBRIDGE_``); Kafka's connection settings come
    from :class:`KafkaConnectionSettings`."""

    model_config = SettingsConfigDict(env_prefix="AIBRIDGE_", extra="ignore", populate_by_name=True)

    auth_public_key_file: Path | None = Field(
        default=None, description="Ed25519 public key (PEM) that verifies bridge tokens."
    )
    auth_revoked_file: Path | None = Field(
        default=None, description="File of revoked token ids (jti), one per line; re-read when it changes."
    )
    oidc_issuer: str | None = Field(
        default=None,
        description="The identity provider's issuer URL; its JWTs are then accepted beside bridge tokens"
        " (keys from {issuer}/.well-known/openid-configuration).",
    )
    oidc_audience: str | None = Field(
        default=None, description="The 'aud' the provider's tokens must name (required with oidc_issuer)."
    )
    oidc_user_id_claim: str = Field(default="sub", min_length=1, description="Claim that holds the user id.")
    oidc_username_claims: CsvList = Field(
        default=["preferred_username", "email"], description="Claims tried in order for the username."
    )
    oidc_groups_claim: str = Field(default="groups", min_length=1, description="Claim listing the user's groups.")
    oidc_auditor_groups: CsvList = Field(default=[], description="Groups whose members get the auditor role.")
    oidc_admin_groups: CsvList = Field(default=[], description="Groups whose members get the admin role.")
    oidc_leeway: Seconds = Field(default=60, ge=0, description="Clock skew allowed on exp, nbf and iat.")
    oidc_jwks_refetch_interval: Seconds = Field(
        default=30, ge=1, description="Least time between two fetches of the provider's keys (unknown kid, refresh)."
    )
    oidc_jwks_max_age: Seconds = Field(
        default=3600, ge=1, description="Keys older than this are refetched in the background."
    )
    oidc_http_timeout: float = Field(default=5.0, gt=0, description="Seconds one discovery or JWKS fetch may take.")
    kafka_topic: str = Field(default=DEFAULT_TOPIC, description="Topic of interception events.")
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
    prices_file: FilePath | None = Field(
        default=None,
        description="YAML file of model prices (USD per million tokens) that replace or add to the built-in table.",
    )
    groups_file: FilePath | None = Field(
        default=None, description="YAML file mapping each group to its members (user ids or usernames)."
    )

    @model_validator(mode="after")
    def _oidc_needs_audience(self) -> CommonSettings:
        if self.oidc_issuer and not self.oidc_audience:
            raise ValueError("set AIBRIDGE_OIDC_AUDIENCE with AIBRIDGE_OIDC_ISSUER: the 'aud' its tokens must name")
        if self.oidc_issuer and not self.oidc_issuer.startswith(("https://", "http://")):
            raise ValueError("AIBRIDGE_OIDC_ISSUER must be the provider's https:// issuer URL")
        return self


class StoreSettings(BaseSettings):
    """How to reach the ClickHouse store (recorder and API)."""

    model_config = SettingsConfigDict(env_prefix="AIBRIDGE_", extra="ignore", populate_by_name=True)

    clickhouse_url: str = Field(
        default="chdb:///var/lib/aibridge/store",
        description="http(s)://user:password@host:8123 for a server, chdb:///dir for the embedded engine.",
    )
    clickhouse_database: str = Field(default="aibridge", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    clickhouse_username: str | None = Field(default=None, description="Server user (instead of one in the URL).")
    clickhouse_password: SecretStr | None = Field(default=None, description="That user's password.")
    clickhouse_password_file: Path | None = None
    clickhouse_ca_file: FilePath | None = Field(
        default=None, description="CA certificates (PEM) that verify an https:// server; the system's CAs when unset."
    )
    clickhouse_client_cert_file: FilePath | None = Field(
        default=None, description="Client certificate (PEM) for mutual TLS with an https:// server."
    )
    clickhouse_client_key_file: FilePath | None = Field(default=None, description="Its private key (PEM).")
    retention: Seconds = Field(default=60 * 86400, description="How long records are kept; 0 keeps forever.")

    @model_validator(mode="after")
    def _check_store_connection(self) -> StoreSettings:
        resolve_secret_files(self, ("clickhouse_password",))
        url = urlsplit(self.clickhouse_url)
        if (self.clickhouse_username or self.clickhouse_password) and (url.username or url.password):
            raise ValueError(
                "AIBRIDGE_CLICKHOUSE_URL has credentials and AIBRIDGE_CLICKHOUSE_USERNAME/PASSWORD are set: use one"
            )
        tls_files = [name for name in _CLICKHOUSE_TLS_FILES if getattr(self, name) is not None]
        if tls_files and url.scheme != "https":
            named = ", ".join(f"AIBRIDGE_{name.upper()}" for name in tls_files)
            raise ValueError(f"{named} need an https:// AIBRIDGE_CLICKHOUSE_URL")
        if (self.clickhouse_client_cert_file is None) != (self.clickhouse_client_key_file is None):
            raise ValueError(
                "set AIBRIDGE_CLICKHOUSE_CLIENT_CERT_FILE and AIBRIDGE_CLICKHOUSE_CLIENT_KEY_FILE together"
            )
        return self

    def clickhouse_options(self) -> dict[str, Any]:
        """clickhouse-connect options beyond the URL: credentials and TLS files (see :func:`aibridge.store.connect`)."""
        options: dict[str, Any] = {}
        if self.clickhouse_username is not None:
            options["username"] = self.clickhouse_username
        if self.clickhouse_password is not None:
            options["password"] = self.clickhouse_password.get_secret_value()
        for option, path in (
            ("ca_cert", self.clickhouse_ca_file),
            ("client_cert", self.clickhouse_client_cert_file),
            ("client_cert_key", self.clickhouse_client_key_file),
        ):
            if path is not None:
                options[option] = str(path)
        return options


class TokenSettings(BaseSettings):
    """Only ``aibridge token issue`` reads the signing key."""

    model_config = SettingsConfigDict(env_prefix="AIBRIDGE_", extra="ignore")

    auth_private_key_file: Path | None = None


class LoginSettings(BaseSettings):
    """What ``aibridge login`` reads: the identity provider, its public client, where the token is kept."""

    model_config = SettingsConfigDict(env_prefix="AIBRIDGE_", extra="ignore")

    url: str | None = Field(default=None, description="The bridge's base URL, for the printed exports.")
    oidc_issuer: str | None = None
    oidc_client_id: str | None = Field(default=None, description="Public client (device flow) registered at the IdP.")
    oidc_scopes: str = Field(default="openid profile email offline_access", description="Scopes asked for at login.")
    oidc_token_file: Path = Field(
        default_factory=lambda: Path.home() / ".config" / "aibridge" / "token.json",
        description="Where the token set is saved (0600).",
    )
