"""ClickHouse over HTTPS: what the store settings hand to clickhouse-connect, checked on the wire.

No ClickHouse server runs here (chDB is embedded and has no HTTP interface), so this does not store
anything over HTTPS. It checks the part that is ours: ``store.connect`` with the settings' CA file,
client certificate and credentials makes clickhouse-connect open a verified TLS connection (a
trustme CA signs a local HTTPS endpoint that records each request and answers every one with an
error), present the client certificate, and send the configured user — or refuse a server whose
certificate another CA signed, before any request (and so any password) is sent.
"""

from __future__ import annotations

import base64
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import trustme

from aibridge import store
from aibridge.settings import StoreSettings


@dataclass
class Seen:
    users: list[str] = field(default_factory=list)
    client_certificates: list[bool] = field(default_factory=list)


@dataclass
class HttpsEndpoint:
    url: str
    seen: Seen


def _handler(seen: Seen) -> type[BaseHTTPRequestHandler]:
    class Recorder(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self._record()

        def do_GET(self) -> None:
            self._record()

        def _record(self) -> None:
            auth = self.headers.get("Authorization", "")
            basic = base64.b64decode(auth.removeprefix("Basic ")).decode() if auth else ""
            header = f"{self.headers.get('X-ClickHouse-User', '')}:{self.headers.get('X-ClickHouse-Key', '')}"
            seen.users.append(basic or header)  # "user:password", however the client sent them
            seen.client_certificates.append(bool(self.connection.getpeercert()))  # type: ignore[attr-defined]
            self.send_response(500)
            self.end_headers()
            self.wfile.write(b"not a ClickHouse server")

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Recorder


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def pems(tmp_path_factory: pytest.TempPathFactory, ca: trustme.CA) -> Path:
    directory = tmp_path_factory.mktemp("clickhouse-tls")
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    trustme.CA().cert_pem.write_to_path(str(directory / "other-ca.pem"))
    client = ca.issue_cert("aibridge-api@example.com")
    client.cert_chain_pems[0].write_to_path(str(directory / "client.pem"))
    client.private_key_pem.write_to_path(str(directory / "client.key"))
    return directory


@pytest.fixture(scope="module")
def endpoint(ca: trustme.CA) -> Iterator[HttpsEndpoint]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    ca.configure_trust(context)
    context.verify_mode = ssl.CERT_OPTIONAL
    seen = Seen()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(seen))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield HttpsEndpoint(f"https://127.0.0.1:{server.server_address[1]}", seen)
    finally:
        server.shutdown()
        server.server_close()


def _connect(settings: StoreSettings) -> Exception:
    with pytest.raises(Exception) as raised:
        store.connect(settings.clickhouse_url, settings.clickhouse_database, **settings.clickhouse_options())
    return raised.value


def test_https_with_the_ca_file_and_credentials_reaches_the_server(endpoint: HttpsEndpoint, pems: Path) -> None:
    before = len(endpoint.seen.users)
    settings = StoreSettings(
        clickhouse_url=endpoint.url,
        clickhouse_ca_file=pems / "ca.pem",
        clickhouse_username="bridge",
        clickhouse_password="s3cret",
    )
    error = _connect(settings)
    assert "not a ClickHouse server" in str(error)  # the TLS handshake succeeded: the server answered
    assert endpoint.seen.users[before:] and set(endpoint.seen.users[before:]) == {"bridge:s3cret"}
    assert not any(endpoint.seen.client_certificates[before:])


def test_the_client_certificate_is_presented(endpoint: HttpsEndpoint, pems: Path) -> None:
    before = len(endpoint.seen.users)
    settings = StoreSettings(
        clickhouse_url=endpoint.url,
        clickhouse_ca_file=pems / "ca.pem",
        clickhouse_client_cert_file=pems / "client.pem",
        clickhouse_client_key_file=pems / "client.key",
    )
    assert "not a ClickHouse server" in str(_connect(settings))
    assert endpoint.seen.client_certificates[before:] and all(endpoint.seen.client_certificates[before:])


def test_a_server_certificate_from_another_ca_is_refused_before_any_request(
    endpoint: HttpsEndpoint, pems: Path
) -> None:
    before = len(endpoint.seen.users)
    settings = StoreSettings(
        clickhouse_url=endpoint.url,
        clickhouse_ca_file=pems / "other-ca.pem",
        clickhouse_username="bridge",
        clickhouse_password="s3cret",
    )
    error = _connect(settings)
    assert "CERTIFICATE_VERIFY_FAILED" in str(error)
    assert endpoint.seen.users[before:] == []


def test_url_credentials_still_work(endpoint: HttpsEndpoint, pems: Path) -> None:
    before = len(endpoint.seen.users)
    url = endpoint.url.replace("https://", "https://auditor:pw@")
    settings = StoreSettings(clickhouse_url=url, clickhouse_ca_file=pems / "ca.pem")
    assert "not a ClickHouse server" in str(_connect(settings))
    assert set(endpoint.seen.users[before:]) == {"auditor:pw"}
