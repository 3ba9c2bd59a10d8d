"""OpenAI chat completions, parsed on the side: pure functions over bytes and dicts.

Reasoning: ``reasoning_content``, which OpenAI-compatible providers (DeepSeek and others) send beside
``content`` in a choice's message or, streamed, in its deltas (``null`` in the deltas of the answer).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from aibridge.events import ReasoningKind, Turn
from aibridge.proxy.errors import InvalidRequestBody
from aibridge.proxy.providers.records import (
    ParsedRequest,
    Reasoning,
    ResponseSummary,
    ToolCall,
    Usage,
    as_int,
    mapping,
    message_text,
    recordable,
    upstream_object,
)
from aibridge.proxy.providers.sse import SSEDecoder, SSEEvent
from aibridge.redaction import ProviderMessage

MAX_DEPTH = 1024
"""How deep JSON may nest in a request body: orjson's fixed limit (it refuses deeper documents)."""
MAX_REWRITE_DEPTH = 254
"""How deep a body the bridge re-serializes may nest: orjson writes no deeper."""

_NULL_USAGE = (b',"usage":null', b'"usage":null,', b', "usage": null', b'"usage": null, ')


def load_object(body: bytes) -> dict[str, Any]:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if str(exc).startswith("depth limit exceeded"):
            raise InvalidRequestBody(f"the request body's JSON is nested deeper than {MAX_DEPTH} levels") from exc
        raise InvalidRequestBody(f"the request body is not valid JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise InvalidRequestBody("the request body must be a JSON object")
    return parsed


def require_model_and_messages(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequestBody("you must provide a model parameter")
    if not isinstance(body.get("messages"), list):
        raise InvalidRequestBody("'messages' is a required property and must be an array")
    return model


def parse_request(raw: bytes) -> ParsedRequest:
    body = load_object(raw)
    model = require_model_and_messages(body)
    messages = body["messages"]
    parsed = ParsedRequest(body, model, body.get("stream") is True, last_user_prompt(messages), turn_of(messages))
    if parsed.stream and "stream_options" in body and not wants_usage(body):
        upstream_body(parsed, raw)  # rewritten later: refused here (400) if it cannot be; rare, so written twice
    return parsed


def last_user_prompt(messages: list[Any]) -> str | None:
    """The text of the last message when its role is user (string content or its text parts)."""
    if not messages or not isinstance(messages[-1], dict) or messages[-1].get("role") != "user":
        return None
    return message_text(messages[-1].get("content"), None)


_TURNS = {"user": Turn.PROMPT, "tool": Turn.TOOL_RESULT, "function": Turn.TOOL_RESULT}


def turn_of(messages: list[Any]) -> Turn:
    """A last message of role user is a prompt; of role tool (or the older function) a tool's result."""
    last = messages[-1] if messages else None
    role = last.get("role") if isinstance(last, dict) else None
    return _TURNS.get(role, Turn.UNKNOWN) if isinstance(role, str) else Turn.UNKNOWN


def wants_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def upstream_body(request: ParsedRequest, raw: bytes) -> tuple[bytes, bool]:
    """The body to send upstream and whether usage was added (so the client must not see it).

    A streaming request always asks for usage; other requests go upstream byte for byte.
    """
    if not request.stream or wants_usage(request.body):
        return raw, False
    if "stream_options" not in request.body:  # spliced in: a coding agent's body is often 100s of KB
        start = raw.index(b"{") + 1  # the body parsed as an object: its first brace opens it
        return raw[:start] + b'"stream_options":{"include_usage":true},' + raw[start:], True
    options = request.body.get("stream_options")
    extended = dict(options) if isinstance(options, dict) else {}
    extended["include_usage"] = True
    try:
        return orjson.dumps(request.body | {"stream_options": extended}), True
    except orjson.JSONEncodeError as exc:  # read (orjson reads 1024 levels), but not writable again
        message = f"the request body's JSON is nested deeper than {MAX_REWRITE_DEPTH} levels, the most the bridge"
        raise InvalidRequestBody(f"{message} rewrites (to add stream_options.include_usage)") from exc


def usage_from(usage: dict[str, Any], service_tier: Any = None) -> Usage:
    prompt_details = mapping(usage.get("prompt_tokens_details"))
    cached = as_int(prompt_details.get("cached_tokens"))
    metadata: dict[str, Any] = {}
    extra_prompt = {k: recordable(v) for k, v in prompt_details.items() if k != "cached_tokens" and v}
    if extra_prompt:
        metadata["prompt_tokens_details"] = extra_prompt
    completion_details = {k: recordable(v) for k, v in mapping(usage.get("completion_tokens_details")).items() if v}
    if completion_details:
        metadata["completion_tokens_details"] = completion_details
    if service_tier:
        metadata["service_tier"] = recordable(service_tier)
    return Usage(
        input_tokens=max(0, as_int(usage.get("prompt_tokens")) - cached),
        output_tokens=as_int(usage.get("completion_tokens")),
        cache_read_input_tokens=cached,
        cache_write_input_tokens=0,
        metadata=metadata,
    )


def parse_response(raw: bytes) -> ResponseSummary:
    """A blocking chat completion."""
    body = upstream_object(raw)
    if isinstance(body, ResponseSummary):
        return body
    summary = ResponseSummary(response_id=str(body.get("id") or ""), model=str(body.get("model") or ""))
    if isinstance(body.get("usage"), dict):
        summary.usage = usage_from(body["usage"], body.get("service_tier"))
    for choice in _objects(body.get("choices")):
        message = mapping(choice.get("message"))
        if isinstance(thought := message.get("reasoning_content"), str) and thought:
            summary.reasoning.append(Reasoning(ReasoningKind.REASONING_CONTENT, thought))
        for call in _objects(message.get("tool_calls")):
            function = mapping(call.get("function"))
            summary.tool_calls.append(
                ToolCall(
                    str(call.get("id") or ""), str(function.get("name") or ""), str(function.get("arguments") or "")
                )
            )
    return summary


@dataclass(slots=True)
class _PendingCall:
    call_id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class ChatStream:
    """Tees a streamed chat completion: ``feed`` returns the bytes the client gets.

    When the proxy added ``include_usage`` itself (``hide_usage``), the usage-only chunk and the
    ``"usage":null`` members are removed so the client gets exactly the stream it asked for.

    Parsing waits for :meth:`settle`, which the relay calls once the forwarded bytes are sent: the
    client's bytes never wait for SSE or JSON decoding. Hiding the usage works on the bytes of whole
    events: ``"usage":null`` can only be a JSON member (inside a string its quotes are escaped), so it
    is cut as it is; only events that still hold ``"usage"`` (the usage chunk itself, once per stream)
    are decoded to decide. Streams with CR line ends (rare) go event by event through a decoder.
    """

    def __init__(self, *, hide_usage: bool) -> None:
        self.summary = ResponseSummary()
        self._hide_usage = hide_usage
        self._decoder = SSEDecoder()  # the parsing side (settle)
        self._calls: dict[tuple[int, int], _PendingCall] = {}
        self._reasoning: dict[int, list[str]] = {}  # by choice: its reasoning_content deltas
        self._unparsed: list[bytes] = []  # forwarded, not yet parsed
        self._held = b""  # hiding usage: the start of an event not yet complete
        self._events: SSEDecoder | None = None  # hiding usage, CR line ends: event by event
        self._unobserved: list[SSEEvent] = []  # decoded by ``_events``, not yet parsed
        self._ended = False
        self._done = False  # ``[DONE]`` seen: the provider finished the stream

    def feed(self, chunk: bytes) -> bytes:
        if not self._hide_usage:
            self._unparsed.append(chunk)
            return chunk
        if self._events is None and b"\r" not in chunk:
            data = self._held + chunk if self._held else chunk
            cut = data.rfind(b"\n\n") + 2
            if cut < 2:
                self._held = data
                return b""
            complete, self._held = data[:cut], data[cut:]
            self._unparsed.append(complete)
            return self.hidden_usage(complete)
        if self._events is None:  # from here on, event by event; the parsing side has whole events so far
            self._events = SSEDecoder()
            chunk, self._held = self._held + chunk, b""
        events = self._events.feed(chunk)
        self._unobserved += events
        return b"".join([self.hidden_usage(event.raw) for event in events])

    def settle(self) -> None:
        unparsed, self._unparsed = self._unparsed, []
        for chunk in unparsed:
            for event in self._decoder.feed(chunk):
                self._observe(event)
        unobserved, self._unobserved = self._unobserved, []
        for event in unobserved:
            self._observe(event)

    def end(self) -> bytes:
        if self._ended:
            return b""
        self._ended = True
        if self._events is not None:
            events = self._events.close()
            self._unobserved += events
            return b"".join([self.hidden_usage(event.raw) for event in events])
        if self._held:  # a last event without its blank line
            held, self._held = self._held, b""
            self._unparsed.append(held)
            return self.hidden_usage(held)
        return b""

    def close(self) -> bytes:
        forwarded = self.end()
        self.settle()
        for event in self._decoder.close():
            self._observe(event)
        self.summary.tool_calls = [ToolCall(c.call_id, c.name, "".join(c.arguments)) for c in self._calls.values()]
        self.summary.reasoning = [
            Reasoning(ReasoningKind.REASONING_CONTENT, "".join(parts)) for _, parts in sorted(self._reasoning.items())
        ]
        if not self._done and self.summary.error is None:
            self.summary.error = "the stream ended before its final event ([DONE])"
        return forwarded

    @staticmethod
    def hidden_usage(raw: bytes) -> bytes:
        """``raw`` (whole events) without the ``"usage":null`` members and the usage-only chunk."""
        if b'"usage"' not in raw:
            return raw
        for pattern in _NULL_USAGE:
            if pattern in raw:
                raw = raw.replace(pattern, b"")
        if b"\r" in raw:  # one event (CR line ends go event by event)
            return _unless_usage_only(raw)
        position = raw.find(b'"usage"')
        while position >= 0:  # LF only: decode just the events that still name usage
            before = raw.rfind(b"\n\n", 0, position)
            start = before + 2 if before >= 0 else 0
            end = raw.find(b"\n\n", position)
            end = len(raw) if end < 0 else end + 2
            block = raw[start:end]
            usage_only = b'"choices":[]' in block and b'"usage":{' in block  # as OpenAI writes it: no decoding
            kept = b"" if usage_only else _unless_usage_only(block)
            raw = raw[:start] + kept + raw[end:]
            position = raw.find(b'"usage"', start + len(kept))
        return raw

    def _observe(self, event: SSEEvent) -> None:
        if event.data is None or event.data == "[DONE]":
            self._done = self._done or event.data == "[DONE]"
            return
        if self.summary.response_id and not _worth_decoding(event.raw):
            return  # a content delta: nothing in it is recorded (most events of a stream)
        try:
            chunk = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            return
        if isinstance(chunk, dict):
            self._take(chunk)

    def _take(self, chunk: dict[str, Any]) -> None:
        summary = self.summary
        if not summary.response_id and chunk.get("id"):
            summary.response_id = str(chunk["id"])
            summary.model = str(chunk.get("model") or "")
        if isinstance(error := chunk.get("error"), dict):
            summary.error = ProviderMessage(
                str(error.get("message") or "error in stream"), error.get("type"), error.get("code")
            )
        if isinstance(chunk.get("usage"), dict):
            summary.usage = usage_from(chunk["usage"], chunk.get("service_tier"))
        for choice in _objects(chunk.get("choices")):
            delta = mapping(choice.get("delta"))
            if isinstance(thought := delta.get("reasoning_content"), str) and thought:
                self._reasoning.setdefault(as_int(choice.get("index")), []).append(thought)
            for call in _objects(delta.get("tool_calls")):
                self._take_call(as_int(choice.get("index")), call)

    def _take_call(self, choice: int, call: dict[str, Any]) -> None:
        pending = self._calls.setdefault((choice, as_int(call.get("index"))), _PendingCall())
        if call.get("id"):
            pending.call_id = str(call["id"])
        function = mapping(call.get("function"))
        if function.get("name"):
            pending.name = str(function["name"])
        if isinstance(function.get("arguments"), str):
            pending.arguments.append(function["arguments"])


def _objects(value: Any) -> list[dict[str, Any]]:
    """The JSON objects of an array (a provider's field of the wrong type holds none)."""
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _unless_usage_only(raw: bytes) -> bytes:
    """One event's bytes, or nothing when it is the usage-only chunk (usage set, no choices)."""
    decoder = SSEDecoder()
    kept = []
    for event in decoder.feed(raw) + decoder.close():
        kept.append(event.raw)
        if event.data is None or event.data == "[DONE]":
            continue
        try:
            chunk = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            continue
        if isinstance(chunk, dict) and chunk.get("usage") is not None and not chunk.get("choices"):
            kept.pop()
    return b"".join(kept)


def _worth_decoding(raw: bytes) -> bool:
    """Whether a chunk after the first may carry what is recorded: tool calls, an error, usage, reasoning
    (a ``reasoning_content`` string; it is ``null`` in the deltas of the answer).

    Decided on the bytes (inside a JSON string a quote is escaped, so ``"tool_calls"`` matches only a
    member name); a false positive only costs a decode."""
    if b'"tool_calls"' in raw or b'"error"' in raw:
        return True
    if b'"reasoning_content":"' in raw or b'"reasoning_content": "' in raw:
        return True
    return b'"usage"' in raw and b'"usage":null' not in raw and b'"usage": null' not in raw
