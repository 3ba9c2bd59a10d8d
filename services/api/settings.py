"""Settings of the query API (env prefix ``AIBRIDGE_``), validated once at start."""

from __future__ import annotations

import ipaddress

from pydantic import Field, field_validator

from aibridge.settings import CommonSettings, Seconds, StoreSettings

DEFAULT_AUDIT_TOPIC = "aibridge.audit.v1"

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ApiSettings(CommonSettings, StoreSettings):
    """Where the API listens, how long one store query may take, where access audit records go."""

    listen: str = Field(default="0.0.0.0:8081", description="HOST:PORT the API listens on.")
    api_query_timeout: Seconds = Field(
        default=30, gt=0, description="Longest a single store query may run (e.g. 30s); then the request is a 503."
    )
    audit_topic: str = Field(
        default=DEFAULT_AUDIT_TOPIC,
        min_length=1,
        description="Kafka topic of access audit records (who read whose prompts); distributed mode only.",
    )
    api_trusted_proxies: str = Field(
        default="",
        description="Comma-separated addresses or CIDR ranges of reverse proxies in front of the API whose"
        " X-Forwarded-For the access audit believes; empty: the client is the peer address.",
    )

    @field_validator("api_trusted_proxies")
    @classmethod
    def _valid_networks(cls, value: str) -> str:
        parse_networks(value)
        return value

    def trusted_proxies(self) -> tuple[IpNetwork, ...]:
        return parse_networks(self.api_trusted_proxies)


def parse_networks(text: str) -> tuple[IpNetwork, ...]:
    """``10.0.0.0/8, 192.0.2.1`` as networks; a bad entry is a ValueError naming it."""
    networks = []
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError as exc:
            raise ValueError(f"{entry!r} is not an IP address or CIDR range") from exc
    return tuple(networks)
