"""An egress proxy from the environment (HTTP_PROXY/HTTPS_PROXY, NO_PROXY) is honoured: the builtin
upstream client has no proxy support, so the proxy forwards through aiohttp then, which uses it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from proxy_support import OPENAI_KEY, ProxyFactory, Simulator, of_type

from aibridge.proxy.settings import ProxySettings
from aibridge.proxy.upstream.client import AiohttpUpstream, create_upstream, egress_proxied
from aibridge.proxy.upstream.http1 import Http1Upstream

OPENAI_PATH = "/api/v2/aibridge/openai/v1/chat/completions"
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello through the egress proxy"}]}
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy", "ALL_PROXY")


@pytest.fixture(autouse=True)
def no_ambient_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_which_provider_urls_an_egress_proxy_applies_to(monkeypatch: pytest.MonkeyPatch) -> None:
    openai, anthropic = "https://api.openai.com/v1", "https://api.anthropic.com"
    assert egress_proxied(openai, anthropic) == []
    monkeypatch.setenv("HTTPS_PROXY", "http://egress.corp:3128")
    assert egress_proxied(openai, anthropic, "http://10.0.0.5:8000/v1") == [openai, anthropic]
    monkeypatch.setenv("NO_PROXY", "localhost,.anthropic.com")
    assert egress_proxied(openai, anthropic) == [openai]
    monkeypatch.setenv("HTTP_PROXY", "http://egress.corp:3128")
    assert egress_proxied("http://10.0.0.5:8000/v1", "http://localhost:9000") == ["http://10.0.0.5:8000/v1"]


def test_the_builtin_client_gives_way_to_aiohttp_only_where_a_proxy_applies(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    settings = ProxySettings(openai_base_url="https://api.openai.com/v1")
    assert isinstance(create_upstream(settings), Http1Upstream)
    monkeypatch.setenv("HTTPS_PROXY", "http://egress.corp:3128")
    with caplog.at_level("WARNING", logger="aibridge.proxy"):
        assert isinstance(create_upstream(settings), AiohttpUpstream)
    assert "https://api.openai.com/v1" in caplog.text and "aiohttp" in caplog.text
    monkeypatch.setenv("NO_PROXY", "api.openai.com,api.anthropic.com")
    assert isinstance(create_upstream(settings), Http1Upstream)


class ForwardProxy:
    """A minimal HTTP forward proxy (absolute-form requests to http:// targets), recording what it forwards."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str]]] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            request_line, *lines = head.split("\r\n")[:-2]
            method, target, _ = request_line.split(" ")
            headers = {name.lower(): value.strip() for name, value in (line.split(":", 1) for line in lines)}
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.requests.append((f"{method} {target}", headers))
            url = httpx.URL(target)
            upstream_reader, upstream_writer = await asyncio.open_connection(url.host, url.port)
            kept = "".join(
                f"{name}: {value}\r\n"
                for name, value in headers.items()
                if name not in {"proxy-connection", "connection", "proxy-authorization"}
            )
            path = url.raw_path.decode()
            upstream_writer.write(f"{method} {path} HTTP/1.1\r\n{kept}connection: close\r\n\r\n".encode() + body)
            writer.write(await upstream_reader.read())  # until the provider closes: one answer
            upstream_writer.close()
            await writer.drain()
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def forward_proxy() -> AsyncIterator[tuple[str, ForwardProxy]]:
    proxy = ForwardProxy()
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}", proxy


@pytest.mark.kafka
@pytest.mark.parametrize("stream", [False, True], ids=["blocking", "streaming"])
async def test_requests_go_through_the_egress_proxy_from_the_environment(  # noqa: PLR0917
    start_proxy: ProxyFactory,
    simulator: Simulator,
    token: str,
    events_of: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
    stream: bool,
) -> None:
    async with forward_proxy() as (egress_url, egress):
        monkeypatch.setenv("HTTP_PROXY", egress_url)
        bridge = start_proxy()
        assert isinstance(bridge.component.upstream, AiohttpUpstream)
        async with httpx.AsyncClient(base_url=bridge.url, timeout=10, trust_env=False) as client:
            response = await client.post(
                OPENAI_PATH, json=CHAT | {"stream": stream}, headers={"Authorization": f"Bearer {token}"}
            )
        assert response.status_code == 200
        assert (b"data: [DONE]" in response.content) if stream else response.json()["object"] == "chat.completion"
        assert [line for line, _ in egress.requests] == [f"POST {simulator.openai_base_url}/chat/completions"]
        forwarded = egress.requests[0][1]
        assert forwarded["authorization"] == f"Bearer {OPENAI_KEY}", "the central key, not the bridge token"
        ended = of_type(await events_of(1), "interception.ended")[0]
        assert ended["status"] == "completed"
