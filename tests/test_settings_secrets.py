"""Secret settings and their ``…_FILE`` forms; Kafka and ClickHouse connection settings checked at start."""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme
from pydantic import ValidationError

from aibridge.api.export import ExportSettings
from aibridge.proxy.settings import ProxySettings
from aibridge.recorder.settings import RecorderSettings
from aibridge.settings import CommonSettings, StoreSettings

# Every secret setting of every service: (settings class, variable). Each must have a _FILE form.
SECRETS = [
    (ProxySettings, "AIBRIDGE_OPENAI_KEY"),
    (ProxySettings, "AIBRIDGE_ANTHROPIC_KEY"),
    (CommonSettings, "AIBRIDGE_KAFKA_SASL_PASSWORD"),
    (CommonSettings, "AIBRIDGE_KAFKA_SSL_KEY_PASSWORD"),
    (StoreSettings, "AIBRIDGE_CLICKHOUSE_PASSWORD"),
    (ExportSettings, "AIBRIDGE_TOKEN"),
]
# What SASL needs beside a password, so the settings validate.
_CONTEXT = {
    "AIBRIDGE_KAFKA_SASL_PASSWORD": {
        "AIBRIDGE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "AIBRIDGE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "AIBRIDGE_KAFKA_SASL_USERNAME": "bridge",
    },
    "AIBRIDGE_KAFKA_SSL_KEY_PASSWORD": {"AIBRIDGE_KAFKA_SECURITY_PROTOCOL": "SSL"},
    "AIBRIDGE_CLICKHOUSE_PASSWORD": {"AIBRIDGE_CLICKHOUSE_URL": "https://clickhouse:8443"},
}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for _, variable in SECRETS:
        monkeypatch.delenv(variable, raising=False)
        monkeypatch.delenv(f"{variable}_FILE", raising=False)


def _secret(settings: object, variable: str) -> str:
    value = getattr(settings, variable.removeprefix("AIBRIDGE_").lower())
    return str(value.get_secret_value())


@pytest.mark.parametrize(("settings_class", "variable"), SECRETS)
def test_every_secret_reads_from_its_file_form(
    settings_class: type, variable: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in _CONTEXT.get(variable, {}).items():
        monkeypatch.setenv(name, value)
    secret_file = tmp_path / "secret"
    secret_file.write_text("s3cret value\n")  # a trailing newline, as `echo` writes it
    monkeypatch.setenv(f"{variable}_FILE", str(secret_file))
    settings = settings_class()
    assert _secret(settings, variable) == "s3cret value"
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings)


@pytest.mark.parametrize(("settings_class", "variable"), SECRETS)
def test_a_secret_set_both_ways_is_refused(
    settings_class: type, variable: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in _CONTEXT.get(variable, {}).items():
        monkeypatch.setenv(name, value)
    (tmp_path / "secret").write_text("from-file")
    monkeypatch.setenv(variable, "from-env")
    monkeypatch.setenv(f"{variable}_FILE", str(tmp_path / "secret"))
    with pytest.raises(ValidationError, match=f"set {variable} or {variable}_FILE, not both"):
        settings_class()


def test_a_missing_or_empty_secret_file_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"AIBRIDGE_OPENAI_KEY_FILE: cannot read .*absent: No such file"):
        ProxySettings(openai_key_file=tmp_path / "absent")
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValidationError, match=r"AIBRIDGE_ANTHROPIC_KEY_FILE: .*empty is empty"):
        ProxySettings(anthropic_key_file=tmp_path / "empty")


def test_only_one_trailing_newline_is_dropped(tmp_path: Path) -> None:
    (tmp_path / "key").write_text(" key with spaces \n\n")
    assert _secret(ProxySettings(openai_key_file=tmp_path / "key"), "AIBRIDGE_OPENAI_KEY") == " key with spaces \n"


# --- Kafka ----------------------------------------------------------------------------------------------


def test_scram_settings_become_the_clients_sasl_options(tmp_path: Path) -> None:
    (tmp_path / "password").write_text("kafka-pw\n")
    settings = CommonSettings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="scram-sha-256",
        kafka_sasl_username="bridge",
        kafka_sasl_password_file=tmp_path / "password",
    )
    options = settings.kafka_client_options()
    assert options["security_protocol"] == "SASL_SSL" and options["sasl_mechanism"] == "SCRAM-SHA-256"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("bridge", "kafka-pw")
    assert options["ssl_context"] is not None  # SASL_SSL: TLS with the system's CAs when no CA file is set
    assert "kafka-pw" not in repr(settings)


def test_plaintext_has_no_tls_context() -> None:
    assert "ssl_context" not in CommonSettings().kafka_client_options()


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"kafka_security_protocol": "SASL_SSL"}, "SASL_SSL needs AIBRIDGE_KAFKA_SASL_MECHANISM"),
        (
            {"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "SCRAM-SHA256"},
            "'PLAIN', 'SCRAM-SHA-256' or 'SCRAM-SHA-512'",
        ),
        (
            {"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_mechanism": "PLAIN"},
            "needs AIBRIDGE_KAFKA_SASL_USERNAME and AIBRIDGE_KAFKA_SASL_PASSWORD",
        ),
        ({"kafka_sasl_mechanism": "PLAIN"}, "needs AIBRIDGE_KAFKA_SECURITY_PROTOCOL SASL_SSL or SASL_PLAINTEXT"),
        ({"kafka_security_protocol": "TLS"}, "'PLAINTEXT', 'SSL', 'SASL_PLAINTEXT' or 'SASL_SSL'"),
        ({"kafka_security_protocol": "SSL", "kafka_ssl_cafile": "/nonexistent/ca.pem"}, "kafka_ssl_cafile"),
    ],
)
def test_kafka_security_mistakes_fail_at_start(values: dict[str, str], complaint: str) -> None:
    with pytest.raises(ValidationError, match=complaint) as raised:
        CommonSettings(**values)  # type: ignore[arg-type]
    assert "Path does not point to a file" in str(raised.value) or "kafka_ssl_cafile" not in complaint


def test_tls_files_with_a_plaintext_protocol_are_refused(tmp_path: Path) -> None:
    trustme.CA().cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    with pytest.raises(ValidationError, match="AIBRIDGE_KAFKA_SSL_CAFILE need AIBRIDGE_KAFKA_SECURITY_PROTOCOL SSL"):
        CommonSettings(kafka_ssl_cafile=tmp_path / "ca.pem")


def test_a_file_that_is_no_certificate_fails_at_start(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("not a certificate\n")
    with pytest.raises(ValidationError, match=r"AIBRIDGE_KAFKA_SSL_CAFILE: .* holds no usable CA certificate"):
        CommonSettings(kafka_security_protocol="SSL", kafka_ssl_cafile=tmp_path / "ca.pem")


def test_an_encrypted_key_needs_its_password(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    cert = trustme.CA().issue_cert("aibridge@example.com")
    key = serialization.load_pem_private_key(cert.private_key_pem.bytes(), password=None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"key-pass"),
    )
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "client.pem"))
    (tmp_path / "client.key").write_bytes(encrypted)
    files = {
        "kafka_security_protocol": "SSL",
        "kafka_ssl_certfile": tmp_path / "client.pem",
        "kafka_ssl_keyfile": tmp_path / "client.key",
    }
    with pytest.raises(ValidationError, match="needs AIBRIDGE_KAFKA_SSL_KEY_PASSWORD"):
        CommonSettings(**files)  # type: ignore[arg-type]
    (tmp_path / "key-pass").write_text("key-pass\n")
    settings = CommonSettings(**files, kafka_ssl_key_password_file=tmp_path / "key-pass")  # type: ignore[arg-type]
    assert settings.kafka_client_options()["ssl_context"] is not None


def test_the_recorder_builds_its_kafka_settings_the_same_way(tmp_path: Path) -> None:
    trustme.CA().cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    settings = RecorderSettings(kafka_security_protocol="SSL", kafka_ssl_cafile=tmp_path / "ca.pem")
    assert settings.kafka_client_options()["ssl_context"] is settings.kafka_client_options()["ssl_context"]


# --- ClickHouse -----------------------------------------------------------------------------------------


def test_clickhouse_credentials_and_tls_files_become_client_options(tmp_path: Path) -> None:
    for name in ("ca.pem", "client.pem", "client.key"):
        (tmp_path / name).write_text("pem")
    (tmp_path / "password").write_text("ch-pw\n")
    settings = StoreSettings(
        clickhouse_url="https://clickhouse:8443",
        clickhouse_username="bridge",
        clickhouse_password_file=tmp_path / "password",
        clickhouse_ca_file=tmp_path / "ca.pem",
        clickhouse_client_cert_file=tmp_path / "client.pem",
        clickhouse_client_key_file=tmp_path / "client.key",
    )
    assert settings.clickhouse_options() == {
        "username": "bridge",
        "password": "ch-pw",
        "ca_cert": str(tmp_path / "ca.pem"),
        "client_cert": str(tmp_path / "client.pem"),
        "client_cert_key": str(tmp_path / "client.key"),
    }
    assert "ch-pw" not in repr(settings)


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        (
            {"clickhouse_url": "https://u:p@clickhouse:8443", "clickhouse_username": "bridge"},
            "has credentials and AIBRIDGE_CLICKHOUSE_USERNAME/PASSWORD are set",
        ),
        ({"clickhouse_url": "http://clickhouse:8123", "clickhouse_ca_file": "CA"}, "need an https://"),
        ({"clickhouse_url": "https://clickhouse:8443", "clickhouse_client_cert_file": "CA"}, "together"),
    ],
)
def test_clickhouse_connection_mistakes_fail_at_start(values: dict[str, str], complaint: str, tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("pem")
    resolved = {k: str(tmp_path / "ca.pem") if v == "CA" else v for k, v in values.items()}
    with pytest.raises(ValidationError, match=complaint):
        StoreSettings(**resolved)  # type: ignore[arg-type]


def test_the_embedded_engine_takes_no_server_options(tmp_path: Path) -> None:
    from aibridge import store

    with pytest.raises(ValueError, match="apply to a ClickHouse server"):
        store.connect(f"chdb://{tmp_path}", "aibridge", password="x")
