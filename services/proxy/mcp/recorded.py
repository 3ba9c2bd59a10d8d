"""What an injection loop's rounds add to the record: each round's token usage, each call of the round.

Every upstream answer is its own ``token_usage`` (so the usage of an interception is their sum); every
tool call of every round is a ``tool_usage``. An injected call carries ``injected: true``, its server's
name and URL, the call's duration in milliseconds and ``invocation_error`` (why it failed or was not run);
``metadata`` repeats the server's name and the duration (as before those fields existed) with the outcome
and whether the result was cut.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from aibridge.events import Event, InterceptionContext
from aibridge.proxy.mcp.loop import Round
from aibridge.proxy.providers.records import ResponseSummary, ToolCall


def round_events(
    context: InterceptionContext, rounds: Sequence[Round], parse: Callable[[bytes], ResponseSummary]
) -> Iterator[Event]:
    for current in rounds:
        summary = current.summary or parse(current.raw)
        if summary.usage is not None:
            usage = summary.usage
            yield context.token_usage(
                provider_response_id=summary.response_id,
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cache_read_input_tokens=usage.cache_read_input_tokens,
                cache_write_input_tokens=usage.cache_write_input_tokens,
                metadata=usage.metadata,
            )
        for found in summary.reasoning:
            yield context.reasoning(found.kind, found.text, summary.response_id, found.metadata)
        for call in summary.tool_calls:
            yield tool_event(context, summary.response_id, call, current)


def tool_event(context: InterceptionContext, response_id: str, call: ToolCall, current: Round) -> Event:
    injected = any(made.call_id == call.call_id for made in current.injected)
    if not injected:
        return context.tool_usage(
            provider_response_id=response_id,
            tool=call.name or "unknown",
            call_id=call.call_id,
            tool_input=call.arguments,
            metadata=call.metadata,
        )
    result = current.result_of(call.call_id)
    metadata: dict[str, object] = dict(call.metadata)
    error = current.not_run
    url = server = duration = None
    if result is not None:
        server, duration = result.server or None, round(result.duration * 1000, 3)
        metadata |= {"server": result.server, "duration_ms": duration}
        metadata |= {"outcome": result.outcome.value, "truncated": result.truncated}
        error, url = (result.error_message or result.content) if result.is_error else None, result.url or None
    return context.tool_usage(
        provider_response_id=response_id,
        tool=call.name or "unknown",
        call_id=call.call_id,
        tool_input=call.arguments,
        injected=True,
        invocation_error=error,
        server_url=url,
        server_name=server,
        duration_ms=duration,
        metadata=metadata,
    )
