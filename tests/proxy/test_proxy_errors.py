"""Every bad input and upstream failure: the provider's error shape, nothing forwarded when refused,
and every outcome recorded (except unauthenticated requests, which have no user to attribute)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from proxy_support import Proxy, ProxyFactory, Simulator, of_type

from aibridge.auth import TokenVerifier, generate_keypair, issue_token, load_private_key
from aibridge.testing.broker import free_port

pytestmark = pytest.mark.kafka

OPENAI_PATH = "/api/v2/aibridge/openai/v1/chat/completions"
ANTHROPIC_PATH = "/api/v2/aibridge/anthropic/v1/messages"
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
MESSAGE = {"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}


def assert_openai_error(response: httpx.Response, status: int, kind: str) -> None:
    assert response.status_code == status
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == kind and body["error"]["message"]


def assert_anthropic_error(response: httpx.Response, status: int, kind: str) -> None:
    assert response.status_code == status
    body = response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == kind and body["error"]["message"]


@pytest.fixture
def revoked_token(tmp_path: Path, keys_dir: Path, make_token: Callable[..., str]) -> tuple[str, TokenVerifier]:
    token = make_token("mallory")
    (tmp_path / "revoked").write_text(jwt.decode(token, options={"verify_signature": False})["jti"] + "\n")
    return token, TokenVerifier.from_files(keys_dir / "signing_key.pub.pem", tmp_path / "revoked")


def bad_tokens(tmp_path: Path, keys_dir: Path) -> dict[str, dict[str, str]]:
    generate_keypair(tmp_path / "other")
    foreign = issue_token(load_private_key(tmp_path / "other" / "signing_key.pem"), "eve")
    expired = issue_token(load_private_key(keys_dir / "signing_key.pem"), "bob", ttl_seconds=60, now=1_000_000)
    return {
        "missing": {},
        "not bearer": {"authorization": "Basic dXNlcjpwYXNz"},
        "malformed": {"authorization": "Bearer not-a-jwt"},
        "wrong signature": {"x-api-key": foreign},
        "expired": {"authorization": f"Bearer {expired}"},
    }


async def test_unauthenticated_requests_get_401_in_each_shape_and_nothing_is_forwarded(  # noqa: PLR0917
    start_proxy: ProxyFactory,
    simulator: Simulator,
    tmp_path: Path,
    keys_dir: Path,
    revoked_token: tuple[str, TokenVerifier],
    events_of: Callable[..., Any],
    token: str,
) -> None:
    revoked, verifier = revoked_token
    proxy = start_proxy(token_verifier=verifier)
    cases = bad_tokens(tmp_path, keys_dir) | {"revoked": {"x-api-key": revoked}}
    seen = len(simulator.state.requests)
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as client:
        for name, headers in cases.items():
            response = await client.post(OPENAI_PATH, json=CHAT, headers=headers)
            assert_openai_error(response, 401, "invalid_request_error")
            assert response.json()["error"]["code"] == "invalid_api_key", name
            response = await client.post(ANTHROPIC_PATH, json=MESSAGE, headers=headers)
            assert_anthropic_error(response, 401, "authentication_error")
            assert "eyJ" not in response.text, "a token must never be echoed"
            response = await client.get("/api/v2/aibridge/openai/v1/models", headers=headers)
            assert response.status_code == 401, name
        assert len(simulator.state.requests) == seen, "a refused request reached the upstream"
        ok = await client.post(OPENAI_PATH, json=CHAT, headers={"authorization": f"Bearer {token}"})
        assert ok.status_code == 200
    events = await events_of(1)
    assert len({event["interception_id"] for event in events}) == 1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b'{"messages": []}', "model"),
        (b'{"model": "gpt-4o"}', "messages"),
    ],
)
async def test_malformed_bodies_get_400_and_are_recorded_as_invalid_requests(  # noqa: PLR0917
    proxy: Proxy, simulator: Simulator, token: str, events_of: Callable[..., Any], body: bytes, message: str
) -> None:
    seen = len(simulator.state.requests)
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10, headers={"x-api-key": token}) as client:
        openai_answer = await client.post(OPENAI_PATH, content=body, headers={"content-type": "application/json"})
        anthropic_answer = await client.post(ANTHROPIC_PATH, content=body)
    assert_openai_error(openai_answer, 400, "invalid_request_error")
    assert message in openai_answer.json()["error"]["message"]
    assert_anthropic_error(anthropic_answer, 400, "invalid_request_error")
    assert len(simulator.state.requests) == seen

    events = await events_of(2)
    ended = of_type(events, "interception.ended")
    assert {e["provider"] for e in ended} == {"openai", "anthropic"}
    for event in ended:
        assert (event["status"], event["http_status"]) == ("invalid_request", 400)
        assert event["initiator"]["username"] == "alice"
        assert message in event["error"]
    assert len(of_type(events, "interception.started")) == 2


async def test_upstream_errors_pass_through_with_status_and_body(
    proxy: Proxy, token: str, events_of: Callable[..., Any]
) -> None:
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10, headers={"x-api-key": token}) as client:
        overloaded = await client.post(ANTHROPIC_PATH, json=MESSAGE, headers={"x-simulator-status": "529"})
        limited = await client.post(OPENAI_PATH, json=CHAT, headers={"x-simulator-status": "429"})
    assert_anthropic_error(overloaded, 529, "overloaded_error")
    assert overloaded.json()["request_id"].startswith("req_")
    assert_openai_error(limited, 429, "rate_limit_error")

    events = await events_of(2)
    statuses = {(e["provider"], e["status"], e["http_status"]) for e in of_type(events, "interception.ended")}
    assert statuses == {("anthropic", "upstream_error", 529), ("openai", "upstream_error", 429)}
    assert [e["prompt"] for e in of_type(events, "prompt")] == ["hi", "hi"]
    assert of_type(events, "token_usage") == []


async def test_unreachable_upstream_is_502_and_timeout_is_504(
    start_proxy: ProxyFactory, token: str, events_of: Callable[..., Any]
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    dead = start_proxy(openai_base_url=f"{closed}/v1", anthropic_base_url=closed)
    async with httpx.AsyncClient(timeout=10, headers={"x-api-key": token}) as client:
        unreachable = await client.post(dead.url + ANTHROPIC_PATH, json=MESSAGE)
        assert_anthropic_error(unreachable, 502, "api_error")
        unreachable = await client.post(dead.url + OPENAI_PATH, json=CHAT)
        assert_openai_error(unreachable, 502, "server_error")
    slow = start_proxy(upstream_read_timeout=0.3)
    async with httpx.AsyncClient(timeout=10, headers={"x-api-key": token, "x-simulator-stall-ms": "1500"}) as client:
        assert_openai_error(await client.post(slow.url + OPENAI_PATH, json=CHAT), 504, "server_error")
        assert_anthropic_error(await client.post(slow.url + ANTHROPIC_PATH, json=MESSAGE), 504, "timeout_error")

    ended = of_type(await events_of(4), "interception.ended")
    assert (
        sorted((e["status"], e["http_status"]) for e in ended)
        == [("upstream_error", 502)] * 2 + [("upstream_error", 504)] * 2
    )


async def test_unknown_routes_get_a_provider_shaped_404(proxy: Proxy, token: str) -> None:
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10, headers={"x-api-key": token}) as client:
        assert_openai_error(
            await client.post("/api/v2/aibridge/openai/v1/embeddings", json={}), 404, "invalid_request_error"
        )
        assert_anthropic_error(
            await client.post("/api/v2/aibridge/anthropic/v1/complete", json={}), 404, "not_found_error"
        )
        assert_openai_error(await client.get(OPENAI_PATH), 404, "invalid_request_error")


async def test_upstream_failing_mid_stream_ends_with_an_error_event_and_is_recorded(
    proxy: Proxy, token: str, events_of: Callable[..., Any]
) -> None:
    headers = {"x-api-key": token, "x-simulator-fail-after-chunks": "3"}
    async with (
        httpx.AsyncClient(base_url=proxy.url, timeout=10, headers=headers) as client,
        client.stream("POST", ANTHROPIC_PATH, json=MESSAGE | {"stream": True}) as response,
    ):
        body = b"".join([chunk async for chunk in response.aiter_raw()])
    assert response.status_code == 200
    assert body.startswith(b"event: message_start")
    assert body.endswith(b"\n\n")
    assert b"event: error\ndata: " in body and b'"type":"error"' in body

    ended = of_type(await events_of(1), "interception.ended")[0]
    assert (ended["status"], ended["http_status"]) == ("upstream_error", 200)
    assert ended["error"]


async def test_client_leaving_mid_stream_is_recorded_as_client_disconnected(
    proxy: Proxy, token: str, events_of: Callable[..., Any]
) -> None:
    headers = {"x-api-key": token, "x-simulator-chunk-delay-ms": "200"}
    async with (
        httpx.AsyncClient(base_url=proxy.url, timeout=10, headers=headers) as client,
        client.stream("POST", OPENAI_PATH, json=CHAT | {"stream": True}) as response,
    ):
        async for _ in response.aiter_raw():
            break
    ended = of_type(await events_of(1), "interception.ended")[0]
    assert ended["status"] == "client_disconnected"
