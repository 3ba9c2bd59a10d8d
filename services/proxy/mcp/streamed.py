"""The injection loop for a streamed request: the rounds' streams joined into the one stream the client gets.

:class:`InjectedRounds` stands in for the upstream response the relay reads: it reads one round's
stream (through a :class:`RoundReader`: content events as the provider's bytes, the rest decoded),
forwards what :mod:`.stream_edits` lets through as it comes, then hands the round (rebuilt as a
blocking answer) to :meth:`McpRun.settle <aibridge.proxy.mcp.loop.McpRun.settle>`. Another round due:
the injected calls have run, the next request goes upstream and its stream continues the client's.
Otherwise the withheld terminal events go out, with the usage summed over the rounds. A later round the
provider refuses (or that cannot be reached) ends the stream with an error event in the provider's
shape. :class:`RoundsTee` is the relay's tee: the bytes are already edited, it only reports the end.
Only requests with injected tools take this path; every other stream is relayed as before.

Most answers call no injected tool, so the first round starts unedited (:class:`UneditedRound`): its
whole events go to the client as a stream without injection gets them, each chunk only searched for
``bmcp_`` (a Responses stream's opening and terminal events, which echo the tools, have the injected
ones taken out). Nothing seen by the round's end: the terminal events went out as the provider wrote
them, there is no other round, and after the answer is out the round is read for the record by the
provider's own stream parser, as a stream without injection is. Seen (the start of an injected call,
or text that happens to name one): the round's earlier events are read into the editor without being
sent again (the editor would have forwarded them as they were, nothing having been withheld yet), and
the rest of the round and every later one go through the editor.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractContextManager
from typing import Any

import orjson

from aibridge.events import Status
from aibridge.proxy.errors import ProxyError
from aibridge.proxy.mcp.echo import cut_known_runs
from aibridge.proxy.mcp.loop import McpRun, Round
from aibridge.proxy.mcp.registry import INJECTED, LONG_SEARCH, PREFIX, ToolFormat, injected_at
from aibridge.proxy.mcp.stream_edits import AnthropicStreamEdit, ChatStreamEdit, ResponsesStreamEdit, StreamEdit
from aibridge.proxy.providers.records import ResponseSummary, Usage
from aibridge.proxy.providers.sse import SSEDecoder, SSEEvent
from aibridge.proxy.relay import Handover, Relay
from aibridge.proxy.upstream.client import UpstreamResponse

NextRound = Callable[[bytes], Awaitable[UpstreamResponse]]
INCOMPLETE = "the stream ended before its final event"


class LaterRoundFailed(ProxyError):
    """The provider refused a later round of the injection loop (the client's stream is already under way)."""

    status = 502


def stream_edit(tool_format: ToolFormat, body: dict[str, Any]) -> StreamEdit:
    if tool_format is ToolFormat.ANTHROPIC:
        return AnthropicStreamEdit()
    if tool_format is ToolFormat.OPENAI_CHAT:
        options = body.get("stream_options")
        return ChatStreamEdit(client_usage=isinstance(options, dict) and options.get("include_usage") is True)
    return ResponsesStreamEdit()


def prepare_streamed(run: McpRun, tool_format: ToolFormat) -> None:
    """A streamed chat completion always asks for usage upstream (each round's is recorded and summed)."""
    if tool_format is ToolFormat.OPENAI_CHAT:
        options = run.client_body.get("stream_options")
        run.usage_asked = (options if isinstance(options, dict) else {}) | {"include_usage": True}


class RoundReader:
    """One round's stream through its editor. Whole LF-ended events are offered to the editor as bytes
    first (:meth:`StreamEdit.verbatim`: content passes undecoded); the others, and every event once a CR
    line end is seen, go through the SSE decoder to :meth:`StreamEdit.event`. The decoder only ever gets
    whole events, so the two paths keep the stream's order."""

    def __init__(self, edit: StreamEdit) -> None:
        self._edit = edit
        self._decoder = SSEDecoder()
        self._pending = b""  # the start of an event not yet whole
        self._by_bytes = True

    def feed(self, chunk: bytes) -> bytes:
        if not self._by_bytes:
            return self._decoded(self._decoder.feed(chunk))
        data = self._pending + chunk if self._pending else chunk
        if b"\r" in data:  # CR line ends: the decoder reads the rest of the round
            self._by_bytes, self._pending = False, b""
            return self._decoded(self._decoder.feed(data))
        forwarded = []
        position = 0
        while (end := data.find(b"\n\n", position)) >= 0:
            raw = data[position : end + 2]
            verbatim = self._edit.verbatim(raw)
            forwarded.append(self._decoded(self._decoder.feed(raw)) if verbatim is None else verbatim)
            position = end + 2
        self._pending = data[position:]
        return b"".join(forwarded)

    def close(self) -> bytes:
        events = self._decoder.feed(self._pending) if self._pending else []
        self._pending = b""
        return self._decoded([*events, *self._decoder.close()])

    def _decoded(self, events: list[SSEEvent]) -> bytes:
        return b"".join([self._edit.event(event) for event in events])


_CR = 13  # a carriage return; "13 in chunk" is a memchr, a bytes search costs several times more


class UneditedRound:
    """The first round as the client would get it without injection, while no ``bmcp_`` is seen.

    Only whole events are forwarded (the start of one waits for its end), so an event naming an
    injected tool, even with the name split across chunks, has not reached the client when it is seen.
    """

    __slots__ = ("_edit", "_unedited", "editing", "held", "sent")

    def __init__(self, edit: StreamEdit) -> None:
        self._edit = edit
        self._unedited = edit.unedited
        self.sent: list[bytes] = []  # the round's bytes forwarded so far, whole events
        self.held = b""  # the start of an event not yet whole
        self.editing = False  # an injected name (or a CR line end) was seen: the editor takes over

    def feed(self, chunk: bytes, found: list[int] | None = None) -> bytes:
        """``found``: where ``bmcp_`` is in ``chunk``, when the caller looked (:func:`.registry.injected_at`)."""
        # whole events, as most chunks are
        if not self.held and chunk.endswith(b"\n\n") and _CR not in chunk:
            forwarded = self._unedited(chunk, found)
            if forwarded is None:
                self.held, self.editing = chunk, True
                return b""
            self.sent.append(chunk)
            return forwarded
        data = self.held + chunk if self.held else chunk
        if _CR in data:
            self.held, self.editing = data, True
            return b""
        cut = data.rfind(b"\n\n") + 2
        if cut < 2:
            self.held = data
            return b""
        whole = data[:cut] if cut < len(data) else data
        forwarded = self._unedited(whole)
        if forwarded is None:
            self.held, self.editing = data, True
            return b""
        self.held = data[cut:] if cut < len(data) else b""
        self.sent.append(whole)
        return forwarded

    def end(self) -> bytes:
        """The upstream finished: a last event without its blank line goes out (or hands the round over)."""
        if not self.held:
            return b""
        forwarded = self._edit.unedited(self.held)
        if forwarded is None:
            self.editing = True
            return b""
        self.sent.append(self.held)
        self.held = b""
        return forwarded

    def editor(self) -> tuple[RoundReader, bytes]:
        """The round's reader, the events already sent read into the editor (their bytes dropped: the
        client has them), and what it forwards of the rest seen so far."""
        reader = RoundReader(self._edit)
        for sent in self.sent:
            reader.feed(sent)
        held, self.held = self.held, b""
        return reader, reader.feed(held)

    def recorded(self) -> Round:
        """The round for the record, read by the provider's own stream parser (the client has it)."""
        parser = self._edit.parser()
        for sent in self.sent:  # chunk by chunk, as the relay feeds it (one joined buffer decodes slower)
            parser.feed(sent)
        parser.feed(self.held)
        parser.close()
        return Round(b"", {}, [], summary=parser.summary)


class InjectedRounds:
    """Reads like an upstream response (``ready``, ``chunks``, ``close``) over every round of the loop, with
    :class:`RoundsTee` as the relay's tee.

    The first round's chunks are the provider's own, read by the relay directly (no generator in between:
    the common path); the tee checks each one (:meth:`forward`, as an :class:`UneditedRound`) and once an
    injected name shows hands the stream over (:class:`~aibridge.proxy.relay.Handover`) to
    :meth:`_edited`: the rest of the round, and every later one, through the editor.
    """

    __slots__ = (
        "_active",
        "_echoes",
        "_first",
        "_next_round",
        "_plain",
        "_response",
        "_settled",
        "complete",
        "edit",
        "headers",
        "run",
        "status",
        "unedited",
    )

    def __init__(
        self,
        run: McpRun,
        edit: StreamEdit,
        first: UpstreamResponse | None,
        next_round: NextRound,
        active: Callable[[], AbstractContextManager[Any]],
    ) -> None:
        self.run = run
        self.edit = edit
        if first is not None:
            self.first_answer(first)
        self._next_round = next_round
        self._active = active  # the interception's span as the current one (the calls' spans are its children)
        self.complete = False  # the terminal events were released
        self._settled = False  # the current round went to the loop (False while it streams)
        self.unedited: UneditedRound | None = UneditedRound(edit)  # the first round, while (or since) unedited
        self._plain = edit.plain
        self._echoes = edit.echoes
        self._first: AsyncIterator[bytes] | None = None

    def first_answer(self, first: UpstreamResponse) -> None:
        """The provider's answer to the first round (the rounds may be set up before it arrives)."""
        self.status = first.status
        self.headers = first.headers
        self._response = first

    async def read(self) -> bytes:
        """The whole answer as the client gets it, read by a relay (nothing recorded)."""
        relay = Relay(self, RoundsTee(self, _no_summary), _not_recorded, _no_error_event, _never)
        return relay.ready() + b"".join([chunk async for chunk in relay.chunks()])

    def ready(self) -> bytes:
        """What the upstream sent with its headers: the relay feeds it to the tee like any chunk, and the
        client gets it right behind the headers, as without injection."""
        return self._response.ready()

    def chunks(self) -> AsyncIterator[bytes]:
        """The first round's chunks, as the provider sent them (one iterator, however often asked)."""
        if self._first is None:
            self._first = self._response.chunks()
        return self._first

    def forward(self, chunk: bytes) -> bytes:
        """The tee's ``feed``: a chunk of the first round as the client gets it while no injected name shows
        (whole events only); then :class:`~aibridge.proxy.relay.Handover` to the editor, whose bytes go
        as they are."""
        unedited = self.unedited
        if unedited is None:
            return chunk
        # most chunks: whole events that name no injected tool, forwarded as they are (tested inline)
        found = None  # where bmcp_ is in a long chunk: searched once
        if self._plain and not unedited.held and chunk.endswith(b"\n\n") and _CR not in chunk:
            if self._echoes and (cut := cut_known_runs(chunk)) is not None:  # Responses: clean, or echoes cut
                unedited.sent.append(chunk)
                return cut
            if len(chunk) < LONG_SEARCH:
                clean = chunk.find(INJECTED) < 0
            else:
                found = injected_at(chunk)
                clean = not found
            if clean:
                unedited.sent.append(chunk)
                return chunk
        forwarded = unedited.feed(chunk, found)
        if unedited.editing:
            raise Handover(self._handed_over(unedited))
        return forwarded

    def ending(self) -> bytes:
        """The tee's ``end``: the first round ended with no injected name seen, the client has the whole
        answer (a last event without its blank line goes now); else the editor takes the round over."""
        unedited = self.unedited
        if unedited is None:
            return b""
        tail = unedited.end()
        if unedited.editing:
            raise Handover(self._handed_over(unedited))
        self.complete = True
        return tail

    def _handed_over(self, unedited: UneditedRound) -> AsyncIterator[bytes]:
        self.unedited = None
        reader, sent = unedited.editor()
        return self._edited(reader, sent, self.chunks())

    async def _edited(self, reader: RoundReader, sent: bytes, upstream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """The first round's rest through its editor (``sent``: what the editor forwards of it so far), then
        the later rounds while injected calls are due, then the terminal events."""
        if sent:
            yield sent
        while True:
            async for chunk in upstream:
                if forwarded := reader.feed(chunk):
                    yield forwarded
            if forwarded := reader.close():
                yield forwarded
            if not await self._settle():
                break
            await self._next()
            self.edit.begin_round()
            self._settled = False
            reader, upstream = RoundReader(self.edit), self._response.chunks()
        self.complete = True
        if final := self.edit.release([current.answer for current in self.run.rounds]):
            yield final

    async def _settle(self) -> bool:
        """The round to the loop; True: another round is due."""
        self._settled = True
        answer = self.edit.answer()
        with self._active():
            return await self.run.settle(orjson.dumps(answer) if answer is not None else b"")

    async def _next(self) -> None:
        await self._response.close()
        self._response = await self._next_round(self.run.request_body())

    def unsettled(self) -> None:
        """A round cut short (the client left, the provider failed) still counts for the record, as does
        a first round that went unedited (read now, the answer being out)."""
        if self._settled:
            return
        self._settled = True
        if self.unedited is not None:
            self.run.rounds.append(self.unedited.recorded())
            return
        answer = self.edit.answer()
        if answer is not None:
            self.run.rounds.append(Round(orjson.dumps(answer), answer, []))

    async def close(self) -> None:
        await self._response.close()


def _no_summary(raw: bytes) -> ResponseSummary:
    return ResponseSummary()


def _not_recorded(relay: Relay, summary: ResponseSummary, status: Status, error: str | None) -> None:
    return None


def _no_error_event(exc: ProxyError) -> bytes:
    raise exc


def _never(job: Callable[[], None]) -> None:
    return None


def summed(summaries: list[ResponseSummary]) -> Usage | None:
    """The rounds' token counts added up (for the interception's log line; each round is its own record)."""
    usages = [summary.usage for summary in summaries if summary.usage is not None]
    if not usages:
        return None
    return Usage(
        input_tokens=sum(usage.input_tokens for usage in usages),
        output_tokens=sum(usage.output_tokens for usage in usages),
        cache_read_input_tokens=sum(usage.cache_read_input_tokens for usage in usages),
        cache_write_input_tokens=sum(usage.cache_write_input_tokens for usage in usages),
    )


class RoundsTee:
    """The relay's tee for :class:`InjectedRounds`: checks the first round's chunks and forwards the edited
    bytes (:meth:`InjectedRounds.forward`, bound as ``feed``: no call in between); the record comes from
    the rounds, after the answer is out."""

    __slots__ = ("_parse", "end", "feed", "rounds", "summary")

    feed: Callable[[bytes], bytes]
    end: Callable[[], bytes]

    def __init__(self, rounds: InjectedRounds, parse: Callable[[bytes], ResponseSummary]) -> None:
        self.rounds = rounds
        self._parse = parse
        self.feed = rounds.forward
        self.end = rounds.ending
        # ``summary`` is made by close(), after the answer is out (the relay reads it only then)

    def settle(self) -> None:
        return None

    def close(self) -> bytes:
        self.rounds.unsettled()
        summaries = [self._summary(current) for current in self.rounds.run.rounds]
        summary = ResponseSummary()
        if summaries:
            last = summaries[-1]
            summary = ResponseSummary(response_id=last.response_id, model=last.model, error=last.error)
            summary.usage = summed(summaries)
            # the client's calls, as a blocking merged answer has them (the injected ones have their own spans)
            calls = [call for each in summaries for call in each.tool_calls]
            summary.tool_calls = [call for call in calls if not call.name.startswith(PREFIX)]
        if not self.rounds.complete and summary.error is None:
            summary.error = INCOMPLETE
        self.summary = summary
        return b""

    def _summary(self, current: Round) -> ResponseSummary:
        """The round's summary, parsed once (the round's events are made from it later)."""
        if current.summary is None:
            current.summary = self._parse(current.raw)
        return current.summary
