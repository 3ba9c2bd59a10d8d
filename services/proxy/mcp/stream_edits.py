"""A streamed answer with injected tools, edited event by event into the one stream the client gets.

Per API, one :class:`StreamEdit` lives for the whole request (its counters run across the rounds) and
learns each round's events in turn. For each event it answers the bytes to forward now: text and
thinking as they come, with their indexes renumbered so the client sees one message; never an injected
call (its name starts with ``bmcp_``), never a later round's opening, never a round's terminal events,
which wait until it is known whether another round follows. On the side it rebuilds the round as the
blocking answer it stands for (:meth:`StreamEdit.answer`), so the loop of :mod:`.loop` and the
recording treat a streamed round exactly like a blocking one. :meth:`StreamEdit.release` writes the
terminal events once, after the last round, with the usage summed over every round.

- Anthropic: ``content_block_*`` events carry ``index`` (renumbered); a ``tool_use`` block named
  ``bmcp_*`` and its deltas are withheld; ``message_start`` goes out once; ``message_delta`` (usage
  totals, which the SDK's final message takes) and ``message_stop`` come last.
- Chat completions: ``tool_calls`` deltas of an injected call (the name arrives in the first delta of
  an index, later deltas carry the index alone) are cut out, the client's calls renumbered; a later
  round's role is dropped; the ``finish_reason`` chunk, the usage chunk (when the client asked for it)
  and ``[DONE]`` come last.
- Responses: ``output_index`` renumbered, ``sequence_number`` counted anew; an injected
  ``function_call`` item and every event of its output index are withheld; ``response.created`` and
  ``.in_progress`` go out once; the terminal event (``response.completed`` or its siblings) comes
  last, its ``output`` the rounds' visible items. Injected tool definitions are taken out of the
  ``tools`` the response echoes (in a first round that goes unedited too: :mod:`.echo`).

Most events of an answer are text, and most answers call no injected tool: such an event is forwarded
as the provider's bytes (:meth:`StreamEdit.verbatim`), recognised on its bytes in the layout the provider
writes, without SSE or JSON decoding (as the proxy's own stream parsers do; a quote inside a JSON string
is escaped, so a member name cannot be faked by text). Only when nothing about it needs rewriting: its
index is the client's already (no block or item withheld before it; in a later round after a withheld
one, indexes are renumbered), and for Responses its ``sequence_number`` is the one the client is due.
Its text still goes into the rebuilt answer, read from the string's bytes. Anything else (another
layout, a role, a call, a finish, usage, the terminal events) is decoded and edited as described above.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Protocol, cast

import orjson

from aibridge.proxy.errors import ProxyError, openai_error
from aibridge.proxy.mcp.echo import OPENING, TERMINAL, EchoedTools, injected_name, without_injected_tools
from aibridge.proxy.mcp.registry import INJECTED, JsonObject, injected_at
from aibridge.proxy.mcp.shapes import ResponsesShape, summed_usage
from aibridge.proxy.providers.anthropic import MessageStream
from aibridge.proxy.providers.openai import ChatStream
from aibridge.proxy.providers.records import as_int, mapping
from aibridge.proxy.providers.responses import ResponsesStream
from aibridge.proxy.providers.sse import SSEEvent
from aibridge.proxy.relay import Tee

_STRING = rb'"[^"\\\n]*(?:\\.[^"\\\n]*)*"'  # one JSON string literal on one line, escapes and all
# a text or thinking delta as Anthropic writes it, one event
_ANTHROPIC_TEXT = re.compile(
    rb'event: content_block_delta\ndata: \{"type":"content_block_delta","index":(\d+),'
    rb'"delta":\{"type":"(text|thinking)_delta","\2":(' + _STRING + rb")\}\}\n\n"
)
# a chat chunk whose one choice carries content only (no role, no call, no finish)
_CHAT_CONTENT = re.compile(
    rb'"choices":\[\{"index":0,"delta":\{"content":('
    + _STRING
    + rb')\}(?:,"logprobs":null)?,"finish_reason":null\}\](,"usage":null)?'
)
_OUTPUT_INDEX = re.compile(rb'"output_index":(\d+)')
_SEQUENCE_NUMBER = re.compile(rb'"sequence_number":(\d+)')


def _string(literal: bytes) -> str:
    """The text of a JSON string literal (decoded as JSON only when it has an escape)."""
    if b"\\" not in literal:
        return literal[1:-1].decode("utf-8", "replace")
    text = orjson.loads(literal)
    return text if isinstance(text, str) else ""


class StreamEdit(Protocol):
    # True: :meth:`unedited` gives back events that hold no ``bmcp_`` as they are (so a chunk with none can
    # go without the call)
    plain: bool
    echoes: bool  # the stream's opening and terminal events repeat the request's tools (the Responses API)

    def begin_round(self) -> None: ...

    def unedited(self, raw: bytes, found: list[int] | None = None) -> bytes | None:
        """The bytes the client gets for whole LF-ended events ``raw`` of a first round that goes
        unedited (:class:`~aibridge.proxy.mcp.streamed.UneditedRound`): those a stream without injection
        gets. None: an injected name shows, the editor takes the round over (``raw`` not yet sent).
        ``found``: where ``bmcp_`` is in ``raw`` (:func:`.registry.injected_at`), when the caller looked."""

    def parser(self) -> Tee:
        """The provider's own stream parser, the one a stream without injection is recorded by: a round
        that went to the client unedited is read by it for the record, as it would be without injection."""

    def verbatim(self, raw: bytes) -> bytes | None:
        """The bytes the client gets for the one whole LF-ended event ``raw`` (no CR in it) when it is
        content that needs no rewriting (its text taken for the answer), decided without decoding it;
        None: :meth:`event`."""

    def event(self, event: SSEEvent) -> bytes:
        """The bytes the client gets for this upstream event now (b"" when withheld)."""

    def answer(self) -> JsonObject | None:
        """The round so far as the blocking answer it stands for (None: nothing readable arrived)."""

    def release(self, answers: Sequence[JsonObject]) -> bytes:
        """The terminal events after the last round, usage summed over ``answers`` (every round)."""


def _payload(event: SSEEvent) -> JsonObject | None:
    if event.data is None:
        return None
    try:
        payload = orjson.loads(event.data)
    except orjson.JSONDecodeError:
        return None
    return payload if isinstance(payload, dict) else None


def _sse(name: str, payload: JsonObject) -> bytes:
    head = f"event: {name}\n".encode() if name else b""
    return head + b"data: " + orjson.dumps(payload) + b"\n\n"


class AnthropicStreamEdit:
    plain = True
    echoes = False

    def __init__(self) -> None:
        self._opened = False  # the client has its message_start
        self._next_index = 0  # the client's next content block index
        self.begin_round()

    def begin_round(self) -> None:
        self._message: JsonObject = {}
        self._usage: JsonObject = {}
        self._blocks: dict[int, JsonObject] = {}
        self._json: dict[int, list[str]] = {}
        self._client_index: dict[int, int] = {}
        self._final_delta: JsonObject | None = None

    def event(self, event: SSEEvent) -> bytes:
        payload = _payload(event)
        if payload is None:
            return event.raw
        kind = payload.get("type")
        if kind == "message_start":
            return self._start(event, payload)
        if kind in {"content_block_start", "content_block_delta", "content_block_stop"}:
            return self._block_event(event, payload)
        if kind == "message_delta":
            self._final_delta = payload
            self._usage.update({k: v for k, v in mapping(payload.get("usage")).items() if v is not None})
            return b""
        if kind == "message_stop":
            return b""
        return event.raw  # ping, error

    def unedited(self, raw: bytes, found: list[int] | None = None) -> bytes | None:
        if found is None:  # not looked for yet (find: faster than "in" on short bytes)
            return None if raw.find(INJECTED) >= 0 else raw
        return None if found else raw

    def parser(self) -> Tee:
        return MessageStream()

    def verbatim(self, raw: bytes) -> bytes | None:
        """A text or thinking delta of a block the client has under the same index."""
        found = _ANTHROPIC_TEXT.match(raw)
        if found is None or found.end() != len(raw):
            return None
        index = int(found[1])
        block = self._blocks.get(index)
        if block is None or self._client_index.get(index) != index:
            return None
        key = found[2].decode()
        block[key] = str(block.get(key) or "") + _string(found[3])
        return raw

    def _start(self, event: SSEEvent, payload: JsonObject) -> bytes:
        self._message = dict(mapping(payload.get("message")))
        self._usage.update(mapping(self._message.get("usage")))
        if self._opened:
            return b""
        self._opened = True
        return event.raw

    def _block_event(self, event: SSEEvent, payload: JsonObject) -> bytes:
        index = as_int(payload.get("index"))
        kind = payload.get("type")
        if kind == "content_block_start":
            block = dict(mapping(payload.get("content_block")))
            self._blocks[index] = block
            if block.get("type") == "tool_use" and injected_name(block.get("name")):
                return b""
            self._client_index[index] = self._next_index
            self._next_index += 1
        elif kind == "content_block_delta":
            self._apply(index, mapping(payload.get("delta")))
        client = self._client_index.get(index)
        if client is None:  # an injected call's block
            return b""
        return event.raw if client == index else _sse(event.event, payload | {"index": client})

    def _apply(self, index: int, delta: JsonObject) -> None:
        block = self._blocks.get(index)
        if block is None:
            return
        kind = delta.get("type")
        if kind == "text_delta":
            block["text"] = str(block.get("text") or "") + str(delta.get("text") or "")
        elif kind == "thinking_delta":
            block["thinking"] = str(block.get("thinking") or "") + str(delta.get("thinking") or "")
        elif kind == "signature_delta":
            block["signature"] = delta.get("signature")
        elif kind == "input_json_delta":
            self._json.setdefault(index, []).append(str(delta.get("partial_json") or ""))
        elif kind == "citations_delta":
            block.setdefault("citations", []).append(delta.get("citation"))

    def answer(self) -> JsonObject | None:
        if not self._message:
            return None
        content = []
        for index in sorted(self._blocks):
            block = self._blocks[index]
            if index in self._json:
                block = block | {"input": _json_value("".join(self._json[index]))}
            content.append(block)
        delta = mapping((self._final_delta or {}).get("delta"))
        return self._message | {
            "content": content,
            "stop_reason": delta.get("stop_reason"),
            "stop_sequence": delta.get("stop_sequence"),
            "usage": dict(self._usage),
        }

    def release(self, answers: Sequence[JsonObject]) -> bytes:
        if self._final_delta is None or not answers:
            return b""
        delta = dict(mapping(self._final_delta.get("delta")))
        if delta.get("stop_reason") == "tool_use" and not self._client_tool_use():
            delta["stop_reason"] = "end_turn"  # only injected calls, not run (the round cap)
        final = self._final_delta | {"delta": delta, "usage": summed_usage(answers)}
        return _sse("message_delta", final) + _sse("message_stop", {"type": "message_stop"})

    def _client_tool_use(self) -> bool:
        return any(self._blocks[index].get("type") == "tool_use" for index in self._client_index)


def _json_value(text: str) -> Any:
    try:
        return orjson.loads(text or "{}")
    except orjson.JSONDecodeError:
        return text  # the call then fails as bad arguments


class ChatStreamEdit:
    plain = False  # the usage the proxy asked for is taken out
    echoes = False

    def __init__(self, *, client_usage: bool) -> None:
        self._client_usage = client_usage  # the client asked for include_usage itself
        self._opened = False  # the client has its role chunk
        self.begin_round()

    def begin_round(self) -> None:
        self._base: JsonObject | None = None
        self._text: list[str] = []
        self._calls: dict[int, JsonObject] = {}
        self._hidden: set[int] = set()
        self._client_index: dict[int, int] = {}
        self._finish: JsonObject | None = None  # the finish_reason chunk, withheld
        self._usage_chunk: JsonObject | None = None
        self._usage: Any = None

    def event(self, event: SSEEvent) -> bytes:
        chunk = _payload(event)
        if chunk is None:
            return b"" if event.data == "[DONE]" else event.raw
        if self._base is None:
            self._base = {key: value for key, value in chunk.items() if key not in {"choices", "usage"}}
        if isinstance(chunk.get("usage"), dict):
            self._usage = chunk["usage"]
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            if isinstance(chunk.get("usage"), dict):
                self._usage_chunk = chunk
                return b""
            return event.raw  # an error chunk
        edited = self._edit_choice(dict(choices[0]))
        if edited is None:
            return b""
        if not self._client_usage:
            chunk = {key: value for key, value in chunk.items() if key != "usage"}
        return _sse(event.event, chunk | {"choices": [edited, *choices[1:]]})

    def unedited(self, raw: bytes, found: list[int] | None = None) -> bytes | None:
        """As the proxy relays any chat stream: the usage it asked for itself hidden from the client."""
        named = raw.find(INJECTED) >= 0 if found is None else bool(found)  # found: the caller looked already
        if named:
            return None
        return raw if self._client_usage else ChatStream.hidden_usage(raw)

    def parser(self) -> Tee:
        return ChatStream(hide_usage=False)  # reads only: what the client got is already sent

    def verbatim(self, raw: bytes) -> bytes | None:
        """A chunk of content only, its usage null, after the first: forwarded as it came (less its
        ``"usage":null`` when the client did not ask for usage)."""
        if self._base is None or not raw.startswith(b"data: ") or raw.count(b"\n") != 2:  # one data line
            return None
        found = _CHAT_CONTENT.search(raw)  # one choice, its delta content alone (no call, no role)
        if found is None:
            return None
        literal, null_usage = found.group(1, 2)
        if literal == b'""' or (b'"usage"' in raw if null_usage is None else raw.count(b'"usage"') != 1):
            return None  # nothing to say, or a usage value: decoded
        self._text.append(literal[1:-1].decode("utf-8", "replace") if b"\\" not in literal else _string(literal))
        if null_usage is None or self._client_usage:
            return raw
        return raw[: found.start(2)] + raw[found.end(2) :]

    def _edit_choice(self, choice: JsonObject) -> JsonObject | None:
        delta = dict(mapping(choice.get("delta")))
        if isinstance(delta.get("content"), str):
            self._text.append(delta["content"])
        if "role" in delta:
            if self._opened:
                del delta["role"]
            self._opened = True
        if "tool_calls" in delta:
            kept = self._client_calls(delta["tool_calls"])
            if kept:
                delta["tool_calls"] = kept
            else:
                del delta["tool_calls"]
        if choice.get("finish_reason") is not None:
            self._finish = choice
            choice = choice | {"finish_reason": None}
        if not _meaningful(delta) and "role" not in delta:
            return None  # nothing left to say (an injected call's delta, a later role, the finish)
        return choice | {"delta": delta}

    def _client_calls(self, calls: Any) -> list[JsonObject]:
        kept = []
        for call in calls if isinstance(calls, list) else ():
            if not isinstance(call, dict):
                continue
            index = as_int(call.get("index"))
            function = mapping(call.get("function"))
            pending = self._calls.setdefault(index, {"id": "", "type": "function", "function": {}})
            if call.get("id"):
                pending["id"] = call["id"]
            if function.get("name"):
                pending["function"]["name"] = function["name"]
            arguments = str(pending["function"].get("arguments") or "") + str(function.get("arguments") or "")
            pending["function"]["arguments"] = arguments
            if injected_name(function.get("name")):
                self._hidden.add(index)
            if index in self._hidden:
                continue
            client = self._client_index.setdefault(index, len(self._client_index))
            kept.append(call | {"index": client})
        return kept

    def answer(self) -> JsonObject | None:
        if self._base is None:
            return None
        message: JsonObject = {"role": "assistant", "content": "".join(self._text) if self._text else None}
        if self._calls:
            message["tool_calls"] = [self._calls[index] for index in sorted(self._calls)]
        finish = (self._finish or {}).get("finish_reason")
        choice = {"index": 0, "message": message, "finish_reason": finish}
        return self._base | {"object": "chat.completion", "choices": [choice], "usage": self._usage}

    def release(self, answers: Sequence[JsonObject]) -> bytes:
        if self._base is None or self._finish is None:
            return b"data: [DONE]\n\n" if answers else b""
        finish = self._finish
        if finish.get("finish_reason") == "tool_calls" and not self._client_index:
            finish = finish | {"finish_reason": "stop"}  # only injected calls, not run (the round cap)
        chunk = self._base | {"choices": [finish | {"delta": {}}]}
        out = _sse("", chunk | {"usage": None} if self._client_usage else chunk)
        if self._client_usage:
            usage_chunk = (self._usage_chunk or self._base) | {"choices": [], "usage": summed_usage(answers)}
            out += _sse("", usage_chunk)
        return out + b"data: [DONE]\n\n"


def _meaningful(delta: JsonObject) -> bool:
    return any(value not in (None, "", []) for key, value in delta.items() if key != "role")


class ResponsesStreamEdit:
    plain = True
    echoes = True

    def __init__(self) -> None:
        self._sequence = 0  # the client's next sequence_number
        self._next_output = 0  # the client's next output_index
        self._opened: set[str] = set()
        self._echo = EchoedTools()  # the first round's echo events, while it goes unedited
        self.begin_round()

    def begin_round(self) -> None:
        self._hidden: set[int] = set()
        self._output_index: dict[int, int] = {}
        self._terminal: tuple[str, JsonObject] | None = None

    def error_event(self, exc: ProxyError) -> bytes:
        """The ``error`` event ending a stream the bridge could not finish, numbered after those sent (the
        same form as an unedited Responses stream's)."""
        error = cast("dict[str, Any]", openai_error(exc.status, str(exc))["error"])
        event = {"type": "error", "code": error["code"] or error["type"], "message": error["message"], "param": None}
        return self._numbered("error", event | {"error": error})

    def event(self, event: SSEEvent) -> bytes:
        payload = _payload(event)
        if payload is None:
            return event.raw
        kind = str(payload.get("type") or event.event)
        if kind in TERMINAL:
            self._terminal = (kind, payload)
            return b""
        if kind in OPENING:
            if kind in self._opened:
                return b""
            self._opened.add(kind)
            payload = payload | {"response": without_injected_tools(mapping(payload.get("response")))}
        elif "output_index" in payload:
            index = as_int(payload.get("output_index"))
            item = mapping(payload.get("item"))
            if kind == "response.output_item.added" and injected_name(item.get("name")):
                self._hidden.add(index)
            if index in self._hidden:
                return b""
            if index not in self._output_index:
                self._output_index[index] = self._next_output
                self._next_output += 1
            payload = payload | {"output_index": self._output_index[index]}
        return self._numbered(event.event or kind, payload)

    def unedited(self, raw: bytes, found: list[int] | None = None) -> bytes | None:
        """The provider's bytes, but for the opening and terminal events, which echo the request's tools
        (the injected ones among them): those go without the injected tools (:mod:`.echo`), their
        ``sequence_number`` the provider's (nothing was withheld before them). Any other event naming an
        injected tool (a call's ``response.output_item.added``, text naming one) hands the round over."""
        if found is None:
            found = injected_at(raw)
        return self._echo.edited(raw, found) if found else raw

    def parser(self) -> Tee:
        return ResponsesStream()

    def verbatim(self, raw: bytes) -> bytes | None:
        """A delta of an item the client has under the same output index, numbered as the client's next
        event: nothing to rewrite (the answer is the terminal event's, so nothing to take either)."""
        name_end = raw.find(b"\n")
        if not raw.startswith(b"event: ") or not raw.endswith(b".delta", 0, name_end) or raw.count(b"\n") != 3:
            return None
        if not raw.startswith(b"data: ", name_end + 1):
            return None
        index = _OUTPUT_INDEX.search(raw, name_end)
        number = _SEQUENCE_NUMBER.search(raw, name_end)
        if index is None or number is None or int(number[1]) != self._sequence:
            return None
        output = int(index[1])
        if self._output_index.get(output) != output:
            return None
        self._sequence += 1
        return raw

    def _numbered(self, name: str, payload: JsonObject) -> bytes:
        payload = payload | {"sequence_number": self._sequence}
        self._sequence += 1
        return _sse(name, payload)

    def answer(self) -> JsonObject | None:
        if self._terminal is None:
            return None
        response = self._terminal[1].get("response")
        return response if isinstance(response, dict) else None

    def release(self, answers: Sequence[JsonObject]) -> bytes:
        if self._terminal is None or not answers:
            return b""
        kind, payload = self._terminal
        merged = ResponsesShape().merge(answers)  # the echoed injected tools taken out
        if "id" in answers[0]:
            merged["id"] = answers[0]["id"]  # the response the client saw created
        return self._numbered(kind, payload | {"response": merged})
