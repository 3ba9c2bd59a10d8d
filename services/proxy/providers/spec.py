"""What the bridge knows of each provider once, at start: upstream URL, key header, parsers, stream tee.

:class:`ProviderSpec` is all an :class:`aibridge.proxy.intercept.Interceptor` needs to serve one
intercepted route; the builders below make the four the bridge serves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from starlette.responses import Response

from aibridge.proxy.errors import ProxyError, error_body
from aibridge.proxy.mcp.registry import ToolFormat
from aibridge.proxy.providers import anthropic, compaction, openai, responses
from aibridge.proxy.providers.records import ParsedRequest, Provider, ResponseSummary
from aibridge.proxy.relay import Tee


class OwnErrorEvents(Protocol):
    """A tee that writes the event ending a stream the bridge could not finish (Responses events are numbered)."""

    def error_event(self, exc: ProxyError) -> bytes: ...


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    provider: Provider
    route: str
    url: str
    key_headers: dict[str, str]
    parse_request: Callable[[bytes], ParsedRequest]
    parse_response: Callable[[bytes], ResponseSummary]
    stream_tee: Callable[[ParsedRequest, bytes], tuple[bytes, Tee]] | None = None
    tool_format: ToolFormat | None = None  # how injected MCP tools are offered on this route (None: never)

    def error(self, status: int, message: str, headers: dict[str, str] | None = None) -> Response:
        return Response(error_body(self.provider, status, message), status, headers, "application/json")

    def prepare(self, request: ParsedRequest, raw: bytes) -> tuple[bytes, Tee]:
        """The body to send upstream and the tee for a streamed answer."""
        if self.stream_tee is not None:
            return self.stream_tee(request, raw)
        if self.provider is Provider.OPENAI:
            body, hide_usage = openai.upstream_body(request, raw)
            return body, openai.ChatStream(hide_usage=hide_usage)
        return raw, anthropic.MessageStream()


def openai_spec(base_url: str, key: str | None) -> ProviderSpec:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return ProviderSpec(
        Provider.OPENAI,
        "/v1/chat/completions",
        f"{base_url}/chat/completions",
        headers | {"accept-encoding": "gzip, deflate"},
        openai.parse_request,
        openai.parse_response,
        tool_format=ToolFormat.OPENAI_CHAT,
    )


def responses_spec(base_url: str, key: str | None) -> ProviderSpec:
    """OpenAI's Responses API: OpenAI's key and error shape, its own route, parsers and stream."""
    return replace(
        openai_spec(base_url, key),
        route=responses.ROUTE,
        url=f"{base_url}/responses",
        parse_request=responses.parse_request,
        parse_response=responses.parse_response,
        stream_tee=responses.prepare,
        tool_format=ToolFormat.OPENAI_RESPONSES,
    )


def compaction_spec(base_url: str, key: str | None) -> ProviderSpec:
    """``POST /v1/responses/compact``: a Responses answer's usage, blocking only, the body unchanged."""
    return replace(
        responses_spec(base_url, key),
        route=compaction.ROUTE,
        url=f"{base_url}/responses/compact",
        parse_request=compaction.parse_request,
        tool_format=None,
    )


def anthropic_spec(base_url: str, key: str | None) -> ProviderSpec:
    headers = {"x-api-key": key} if key else {}
    return ProviderSpec(
        Provider.ANTHROPIC,
        "/v1/messages",
        f"{base_url}/v1/messages",
        headers | {"accept-encoding": "gzip, deflate"},
        anthropic.parse_request,
        anthropic.parse_response,
        tool_format=ToolFormat.ANTHROPIC,
    )
