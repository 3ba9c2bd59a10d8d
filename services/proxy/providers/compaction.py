"""Compaction of a long conversation (``POST /v1/responses/compact``, what Codex sends when its context
fills up), parsed on the side: pure functions.

The request has the shape of a Responses request: ``model``, ``input`` (a string or the
conversation's items), ``instructions`` and Codex's ``tools``, ``parallel_tool_calls``, ``reasoning``,
``text``. The answer is one JSON object, never a stream (the API defines no ``stream`` parameter for it):
``{"object": "response.compaction", "id", "output": [the user messages..., {"type": "compaction",
"encrypted_content"}], "usage"}``. A compaction bills its tokens, so it is recorded as an interception
of its own route, with the usage read as :func:`aibridge.proxy.providers.responses.summarize` reads a response's.
"""

from __future__ import annotations

from dataclasses import replace

from aibridge.events import Turn
from aibridge.proxy.errors import InvalidRequestBody
from aibridge.proxy.providers import responses
from aibridge.proxy.providers.records import ParsedRequest

ROUTE = "/v1/responses/compact"


def parse_request(raw: bytes) -> ParsedRequest:
    """A Responses request body; ``stream: true`` is refused here, as the API has no stream for compaction.
    Its turn is not known: the last item is the conversation's, not the request's."""
    parsed = responses.parse_request(raw)
    if parsed.stream:
        raise InvalidRequestBody("'stream' is not supported by /v1/responses/compact: it answers with one JSON object")
    return replace(parsed, turn=Turn.UNKNOWN)  # a client's housekeeping: neither starts nor continues a thread
