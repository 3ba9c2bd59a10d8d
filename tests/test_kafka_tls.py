"""Kafka over TLS for real: Tansu behind a TLS-terminating proxy with certificates from a local CA.

Tansu's listener is plain TCP, so :class:`aibridge.testing.tls_proxy.TlsProxy` terminates TLS in front
of it and the broker advertises the proxy's port: after bootstrap every client connection (metadata,
produce, fetch, group coordination) goes through TLS too.
"""

from __future__ import annotations

import ssl
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from aibridge.bus import BusError
from aibridge.kafka import KafkaConsumer, KafkaProducer
from aibridge.kafka_confluent import ConfluentProducer
from aibridge.settings import CommonSettings
from aibridge.testing.broker import create_topics, free_port, start_broker
from aibridge.testing.tls_proxy import TlsProxy


@dataclass
class TlsBroker:
    bootstrap: str
    proxy: TlsProxy


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def pem_dir(tmp_path_factory: pytest.TempPathFactory, ca: trustme.CA) -> Path:
    directory = tmp_path_factory.mktemp("tls")
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    client = ca.issue_cert("aibridge-recorder@example.com")
    client.cert_chain_pems[0].write_to_path(str(directory / "client.pem"))
    client.private_key_pem.write_to_path(str(directory / "client.key"))
    trustme.CA().cert_pem.write_to_path(str(directory / "other-ca.pem"))
    return directory


def _tls_broker(ca: trustme.CA, *, require_client_cert: bool) -> Iterator[TlsBroker]:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_context)
    if require_client_cert:
        ca.configure_trust(server_context)
        server_context.verify_mode = ssl.CERT_REQUIRED
    internal = free_port()
    proxy = TlsProxy(internal, server_context).start()
    broker = start_broker(internal, advertised_port=proxy.port)
    try:
        yield TlsBroker(f"127.0.0.1:{proxy.port}", proxy)
    finally:
        broker.stop()
        proxy.stop()


@pytest.fixture(scope="module")
def tls_broker(ca: trustme.CA) -> Iterator[TlsBroker]:
    yield from _tls_broker(ca, require_client_cert=False)


@pytest.fixture(scope="module")
def mtls_broker(ca: trustme.CA) -> Iterator[TlsBroker]:
    yield from _tls_broker(ca, require_client_cert=True)


PRODUCERS = {"aiokafka": KafkaProducer, "confluent": ConfluentProducer}


async def _round_trip(settings: CommonSettings, producer_client: str = "aiokafka") -> list[bytes]:
    topic = f"aibridge.tls.{uuid.uuid4().hex[:12]}"
    await create_topics(settings.kafka_bootstrap, topic, **settings.kafka_client_options())
    producer = PRODUCERS[producer_client](settings)
    await producer.start()
    try:
        await producer.send(topic, b"k", b"over tls")
    finally:
        await producer.stop()
    consumer = KafkaConsumer(settings, group_id=f"g-{topic}", topic=topic)
    await consumer.start()
    try:
        values: list[bytes] = []
        for _ in range(50):
            values += [message.value for message in await consumer.poll(10, 0.2)]
            if values:
                break
        return values
    finally:
        await consumer.stop()


@pytest.mark.parametrize("producer_client", list(PRODUCERS))
async def test_produce_and_consume_over_tls_verified_by_the_ca_file(
    tls_broker: TlsBroker, pem_dir: Path, producer_client: str
) -> None:
    settings = CommonSettings(
        kafka_bootstrap=tls_broker.bootstrap, kafka_security_protocol="SSL", kafka_ssl_cafile=pem_dir / "ca.pem"
    )
    assert await _round_trip(settings, producer_client) == [b"over tls"]


@pytest.mark.parametrize("producer_client", list(PRODUCERS))
async def test_mutual_tls_works_with_the_client_certificate(
    mtls_broker: TlsBroker, pem_dir: Path, producer_client: str
) -> None:
    settings = CommonSettings(
        kafka_bootstrap=mtls_broker.bootstrap,
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=pem_dir / "ca.pem",
        kafka_ssl_certfile=pem_dir / "client.pem",
        kafka_ssl_keyfile=pem_dir / "client.key",
    )
    assert await _round_trip(settings, producer_client) == [b"over tls"]


async def test_mutual_tls_refuses_a_client_without_certificate(mtls_broker: TlsBroker, pem_dir: Path) -> None:
    settings = CommonSettings(
        kafka_bootstrap=mtls_broker.bootstrap, kafka_security_protocol="SSL", kafka_ssl_cafile=pem_dir / "ca.pem"
    )
    producer = KafkaProducer(settings, request_timeout=3.0)
    with pytest.raises(BusError, match="cannot connect to Kafka"):
        await producer.start()


async def test_a_broker_certificate_from_another_ca_is_refused(
    tls_broker: TlsBroker, pem_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = CommonSettings(
        kafka_bootstrap=tls_broker.bootstrap, kafka_security_protocol="SSL", kafka_ssl_cafile=pem_dir / "other-ca.pem"
    )
    producer = KafkaProducer(settings, request_timeout=3.0)
    with pytest.raises(BusError, match="cannot connect to Kafka"):
        await producer.start()
    # aiokafka logs why each bootstrap connection failed: the certificate, not anything else.
    reasons = [r.getMessage() for r in caplog.records if r.name.startswith("aiokafka")]
    assert reasons and all("CERTIFICATE_VERIFY_FAILED" in reason for reason in reasons)


async def test_plaintext_against_the_tls_listener_does_not_connect(tls_broker: TlsBroker) -> None:
    producer = KafkaProducer(CommonSettings(kafka_bootstrap=tls_broker.bootstrap), request_timeout=3.0)
    with pytest.raises(BusError, match="cannot connect to Kafka"):
        await producer.start()


def test_every_client_shares_the_one_tls_context(pem_dir: Path) -> None:
    settings = CommonSettings(kafka_security_protocol="SSL", kafka_ssl_cafile=pem_dir / "ca.pem")
    context = settings.kafka_client_options()["ssl_context"]
    assert isinstance(context, ssl.SSLContext) and context.verify_mode == ssl.CERT_REQUIRED
    assert settings.kafka_client_options()["ssl_context"] is context
    producer, consumer = KafkaProducer(settings), KafkaConsumer(settings, group_id="g")
    assert producer._options["ssl_context"] is context and consumer._options["ssl_context"] is context
