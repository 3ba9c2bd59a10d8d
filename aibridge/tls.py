"""Client TLS contexts for the services' connections (Kafka), built once at start from PEM files.

Errors are :class:`ValueError` with the setting to fix, so a settings object fails at start, not on
the first connection.
"""

from __future__ import annotations

import ssl
from pathlib import Path


def client_context(
    *,
    cafile: Path | None,
    certfile: Path | None,
    keyfile: Path | None,
    key_password: str | None,
    check_hostname: bool = True,
    prefix: str = "AIBRIDGE_KAFKA_SSL",
) -> ssl.SSLContext:
    """A context that verifies the server (with ``cafile``, else the system's CAs) and, when
    ``certfile`` is set, presents that client certificate (mutual TLS)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.check_hostname = check_hostname
    if cafile is not None:
        try:
            context.load_verify_locations(cafile=str(cafile))
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"{prefix}_CAFILE: {cafile} holds no usable CA certificate ({_reason(exc)})") from None
    if certfile is not None:
        try:
            # A callable, never None: with None OpenSSL would prompt on a terminal for an encrypted key.
            context.load_cert_chain(str(certfile), str(keyfile) if keyfile else None, lambda: key_password or "")
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(
                f"{prefix}_CERTFILE/{prefix}_KEYFILE: cannot load the client certificate and key ({_reason(exc)});"
                f" a key with a passphrase needs {prefix}_KEY_PASSWORD"
            ) from None
    return context


def _reason(exc: OSError | ssl.SSLError) -> str:
    return str(exc.args[-1]) if exc.args else type(exc).__name__
