"""Settings of the query API (env prefix ``AIBRIDGE_``), validated once at start."""

from __future__ import annotations

from pydantic import Field

from aibridge.settings import CommonSettings, Seconds, StoreSettings


class ApiSettings(CommonSettings, StoreSettings):
    """Where the API listens and how long one store query may take."""

    listen: str = Field(default="0.0.0.0:8081", description="HOST:PORT the API listens on.")
    api_query_timeout: Seconds = Field(
        default=30, gt=0, description="Longest a single store query may run (e.g. 30s); then the request is a 503."
    )
