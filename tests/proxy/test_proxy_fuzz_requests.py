"""Arbitrary request bodies through the real proxy (the simulated provider behind it): every answer is the
provider's or a 4xx of the bridge in the provider's error shape, never a 5xx of the proxy's own."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from proxy_support import ProxyFactory

pytestmark = pytest.mark.kafka

ROUTES = {
    "/api/v2/aibridge/openai/v1/chat/completions": "openai",
    "/api/v2/aibridge/openai/v1/responses": "openai",
    "/api/v2/aibridge/openai/v1/responses/compact": "openai",
    "/api/v2/aibridge/anthropic/v1/messages": "anthropic",
    "/api/v2/aibridge/anthropic/v1/messages/count_tokens": "anthropic",
}
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12,
)
shaped = st.fixed_dictionaries(
    {"model": st.sampled_from(["gpt-4o", "claude-sonnet-4-5"]) | json_values},
    optional=dict.fromkeys(["messages", "input", "stream", "stream_options", "max_tokens"], json_values),
)
DEEP_STREAMED = b'{"model":"gpt-4o","stream":true,"stream_options":{},"messages":' + b"[" * 600 + b"]" * 600 + b"}"
bodies = (
    st.binary(max_size=100)
    | json_values.map(orjson.dumps)
    | shaped.map(orjson.dumps)
    | st.integers(300, 1100).map(
        lambda n: b'{"model":"gpt-4o","stream":true,"stream_options":{},"messages":' + b"[" * n + b"]" * n + b"}"
    )
)


def provider_shaped(provider: str, answer: Any) -> bool:
    if provider == "openai":
        return isinstance(answer.get("error"), dict) and {"message", "type", "param", "code"} <= set(answer["error"])
    return answer.get("type") == "error" and {"type", "message"} <= set(answer.get("error", {}))


def test_no_request_body_makes_the_proxy_fail(start_proxy: ProxyFactory, token: str) -> None:
    proxy = start_proxy()
    with httpx.Client(base_url=proxy.url, timeout=20, headers={"x-api-key": token}) as client:

        @settings(
            max_examples=30,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        )
        @given(route=st.sampled_from(sorted(ROUTES)), body=bodies)
        @example(route="/api/v2/aibridge/openai/v1/chat/completions", body=DEEP_STREAMED)  # rewritten: once a 500
        def send(route: str, body: bytes) -> None:
            response = client.post(route, content=body, headers={"content-type": "application/json"})
            assert response.status_code < 500, (response.status_code, response.text[:300])
            if 400 <= response.status_code < 500:
                assert provider_shaped(ROUTES[route], response.json()), response.text[:300]

        send()
