"""How every Kafka client of a service connects: bootstrap servers, TLS and SASL (env prefix ``AIBRIDGE_``).

Validated at start: a SASL protocol needs a mechanism and credentials, TLS files must exist and
load, and the TLS context is built here once and shared by every client of the settings object
(producer, consumer, dead-letter producer, admin).
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, FilePath, PrivateAttr, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from aibridge.secret_files import resolve_secret_files, secret_value
from aibridge.tls import client_context

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
_SECRETS = ("kafka_sasl_password", "kafka_ssl_key_password")
_TLS_FILES = ("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile", "kafka_ssl_key_password")


def _upper(value: Any) -> Any:
    return value.strip().upper().replace("_SHA_", "-SHA-") if isinstance(value, str) else value


class KafkaConnectionSettings(BaseSettings):
    """Where the Kafka cluster is and how to authenticate to it."""

    model_config = SettingsConfigDict(env_prefix="AIBRIDGE_", extra="ignore", populate_by_name=True)

    kafka_bootstrap: str = Field(default="localhost:9092", description="Kafka bootstrap servers.")
    kafka_security_protocol: Annotated[SecurityProtocol, BeforeValidator(_upper)] = Field(
        default="PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."
    )
    kafka_ssl_cafile: FilePath | None = Field(
        default=None, description="CA certificates (PEM) that verify the brokers; the system's CAs when unset."
    )
    kafka_ssl_certfile: FilePath | None = Field(
        default=None, description="Client certificate (PEM) for mutual TLS; may hold the key too."
    )
    kafka_ssl_keyfile: FilePath | None = Field(default=None, description="Private key (PEM) of the client certificate.")
    kafka_ssl_key_password: SecretStr | None = Field(default=None, description="Passphrase of an encrypted key.")
    kafka_ssl_key_password_file: Path | None = None
    kafka_ssl_check_hostname: bool = Field(
        default=True, description="Check that the broker's certificate names the host connected to."
    )
    kafka_sasl_mechanism: Annotated[SaslMechanism | None, BeforeValidator(_upper)] = Field(
        default=None, description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (with a SASL_ protocol)."
    )
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_sasl_password_file: Path | None = None
    _kafka_ssl_context: ssl.SSLContext | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _check_kafka_security(self) -> KafkaConnectionSettings:
        resolve_secret_files(self, _SECRETS)
        sasl, tls = self.kafka_security_protocol.startswith("SASL_"), self.kafka_security_protocol.endswith("SSL")
        if sasl:
            _require_sasl(self.kafka_security_protocol, self.kafka_sasl_mechanism, self.kafka_sasl_username,
                          self.kafka_sasl_password)  # fmt: skip
        elif self.kafka_sasl_mechanism:
            raise ValueError(
                f"AIBRIDGE_KAFKA_SASL_MECHANISM needs AIBRIDGE_KAFKA_SECURITY_PROTOCOL SASL_SSL or SASL_PLAINTEXT"
                f" (it is {self.kafka_security_protocol})"
            )
        if tls:
            self._kafka_ssl_context = self._build_ssl_context()
        elif set_files := [f"AIBRIDGE_{name.upper()}" for name in _TLS_FILES if getattr(self, name) is not None]:
            raise ValueError(
                f"{', '.join(set_files)} need AIBRIDGE_KAFKA_SECURITY_PROTOCOL SSL or SASL_SSL"
                f" (it is {self.kafka_security_protocol})"
            )
        return self

    def _build_ssl_context(self) -> ssl.SSLContext:
        if self.kafka_ssl_keyfile is not None and self.kafka_ssl_certfile is None:
            raise ValueError("AIBRIDGE_KAFKA_SSL_KEYFILE needs AIBRIDGE_KAFKA_SSL_CERTFILE (the client certificate)")
        return client_context(
            cafile=self.kafka_ssl_cafile,
            certfile=self.kafka_ssl_certfile,
            keyfile=self.kafka_ssl_keyfile,
            key_password=secret_value(self.kafka_ssl_key_password),
            check_hostname=self.kafka_ssl_check_hostname,
        )

    def kafka_client_options(self) -> dict[str, Any]:
        """Connection options shared by every aiokafka client of this service (one TLS context for all)."""
        options: dict[str, Any] = {
            "bootstrap_servers": self.kafka_bootstrap,
            "security_protocol": self.kafka_security_protocol,
        }
        if self._kafka_ssl_context is not None:
            options["ssl_context"] = self._kafka_ssl_context
        if self.kafka_sasl_mechanism:
            options |= {
                "sasl_mechanism": self.kafka_sasl_mechanism,
                "sasl_plain_username": self.kafka_sasl_username,
                "sasl_plain_password": secret_value(self.kafka_sasl_password),
            }
        return options


def _require_sasl(protocol: str, mechanism: str | None, username: str | None, password: SecretStr | None) -> None:
    if mechanism is None:
        raise ValueError(
            f"AIBRIDGE_KAFKA_SECURITY_PROTOCOL {protocol} needs AIBRIDGE_KAFKA_SASL_MECHANISM"
            " (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)"
        )
    if not username or password is None:
        raise ValueError(
            f"AIBRIDGE_KAFKA_SASL_MECHANISM {mechanism} needs AIBRIDGE_KAFKA_SASL_USERNAME and"
            " AIBRIDGE_KAFKA_SASL_PASSWORD (or AIBRIDGE_KAFKA_SASL_PASSWORD_FILE)"
        )
