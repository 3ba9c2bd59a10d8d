"""What the proxy sends upstream of the client's headers: never a bridge credential or a bridge-only header."""

from __future__ import annotations

from aibridge.proxy.incoming import forward_headers

CENTRAL = {"authorization": "Bearer sk-central"}


def test_credentials_and_bridge_only_headers_stay_behind() -> None:
    raw = [
        (b"Authorization", b"Bearer bridge-token"),
        (b"X-Api-Key", b"bridge-token"),
        (b"Coder-Session-Token", b"bridge-token"),
        (b"X-Aibridge-Mcp-Token-github", b"user-token"),
        (b"X-Aibridge-Mcp", b"off"),
        (b"Anthropic-Version", b"2023-06-01"),
        (b"Connection", b"keep-alive"),
    ]
    headers = forward_headers(raw, CENTRAL)
    assert "bridge-token" not in str(headers) and "user-token" not in str(headers)
    assert headers == {
        "Anthropic-Version": "2023-06-01",
        "content-type": "application/json",
        "authorization": "Bearer sk-central",
    }
