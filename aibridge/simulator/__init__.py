"""A built-in simulated provider: OpenAI chat completions and responses, Anthropic messages, offline.

Serves ``/v1/chat/completions``, ``/v1/responses``, ``/v1/responses/compact``, ``/v1/responses/{id}`` (GET,
DELETE) and its ``/input_items``, ``/v1/messages``, ``/v1/messages/count_tokens`` and ``/v1/models`` (OpenAI's
or Anthropic's list, told apart by the ``anthropic-version`` or ``x-api-key`` header). It
works mounted under any prefix: with the app at ``/_simulator``, the OpenAI base URL is
``http://HOST:PORT/_simulator/v1`` and the Anthropic one ``http://HOST:PORT/_simulator``.

Answers: a tool call when the request offers tools and its last message is not a tool result, text
otherwise; usage with cache fields; each provider's error shape. Test controls (request headers,
forwarded by the proxy): ``x-simulator-status: 529`` answers with that error status;
``x-simulator-stall-ms`` waits before answering; ``x-simulator-chunk-delay-ms`` paces stream chunks;
``x-simulator-fail-after-chunks`` drops the connection mid-stream; ``x-simulator-cache-read-tokens``,
``x-simulator-cache-write-tokens`` and ``x-simulator-reasoning-tokens`` set those usage counts.

For benchmarks, ``x-simulator-timing: <tag>`` has the simulator time its own part of a request: from the
request reaching the app to the last byte of the answer handed to the server (``time.perf_counter``, one
clock for every process on the machine). ``GET /timings`` (under the app's prefix) answers ``{tag: seconds}``
for the requests so timed since the last such call (at most ``TIMINGS_KEPT``) and forgets them: what a client
measured through a proxy, less that, is the proxy's part, the provider's own work taken out request by
request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aibridge.simulator import anthropic_sim, openai_sim, responses_sim, stored_sim
from aibridge.simulator.common import Controls, SimulatorState
from aibridge.simulator.stored_sim import StoredResponses

__all__ = ["SimulatorState", "create_simulator_app"]

_STATUS_MESSAGES = {
    400: "simulated invalid request",
    401: "simulated authentication failure",
    404: "simulated not found",
    429: "simulated rate limit: slow down",
    500: "simulated internal server error",
    503: "simulated service unavailable",
    529: "Overloaded",
}


def _is_anthropic(request: Request) -> bool:
    return "anthropic-version" in request.headers or "x-api-key" in request.headers


def _key_error(request: Request, state: SimulatorState, anthropic: bool) -> str | None:
    if anthropic and state.anthropic_key is not None:
        bearer = request.headers.get("authorization") == f"Bearer {state.anthropic_key}"
        return None if bearer or request.headers.get("x-api-key") == state.anthropic_key else "invalid x-api-key"
    expected = f"Bearer {state.openai_key}"
    if not anthropic and state.openai_key is not None and request.headers.get("authorization") != expected:
        return "Incorrect API key provided."
    return None


async def _prelude(request: Request, state: SimulatorState, anthropic: bool) -> tuple[Any, Controls, Response | None]:
    """Log the request, apply the controls, check the key; an early response when one is due."""
    try:
        raw = await state.remember(request)
    except ClientDisconnect:  # the client left before sending its whole body: nobody to answer
        return None, Controls.from_headers(request.headers), Response(status_code=499)
    controls = Controls.from_headers(request.headers)
    error = anthropic_sim.error if anthropic else openai_sim.error
    if controls.stall:
        await asyncio.sleep(controls.stall)
    if (problem := _key_error(request, state, anthropic)) is not None:
        return None, controls, error(401, problem)
    if controls.status is not None and controls.status >= 400:
        return None, controls, error(controls.status, _STATUS_MESSAGES.get(controls.status, "simulated error"))
    if request.method != "POST":
        return None, controls, None
    try:
        return orjson.loads(raw), controls, None
    except orjson.JSONDecodeError:
        return None, controls, error(400, "The request body is not valid JSON.")


def _endpoint(state: SimulatorState, anthropic: bool, answer: Callable[[Any, Controls], Response]) -> Any:
    async def endpoint(request: Request) -> Response:
        body, controls, early = await _prelude(request, state, anthropic)
        if early is not None:
            return early
        problem = anthropic_sim.validate(body) if anthropic else openai_sim.validate(body)
        if problem is not None:
            return (anthropic_sim.error if anthropic else openai_sim.error)(400, problem)
        return answer(body, controls)

    return endpoint


def _chat(body: Any, controls: Controls) -> Response:
    return openai_sim.stream(body, controls) if body.get("stream") is True else openai_sim.complete(body, controls)


def _messages(body: Any, controls: Controls) -> Response:
    return (
        anthropic_sim.stream(body, controls) if body.get("stream") is True else anthropic_sim.complete(body, controls)
    )


def _responses_endpoint(state: SimulatorState, store: StoredResponses) -> Any:
    async def endpoint(request: Request) -> Response:
        body, controls, early = await _prelude(request, state, False)
        if early is not None:
            return early
        problem = responses_sim.validate(body)
        return openai_sim.error(400, problem) if problem else responses_sim.answer(body, controls, store)

    return endpoint


def _compact_endpoint(state: SimulatorState, store: StoredResponses) -> Any:
    async def endpoint(request: Request) -> Response:
        body, controls, early = await _prelude(request, state, False)
        if early is not None:
            return early
        problem = stored_sim.validate_compaction(body)
        return openai_sim.error(400, problem) if problem else stored_sim.compact(body, controls, store)

    return endpoint


def _stored_endpoint(state: SimulatorState, store: StoredResponses) -> Any:
    """A stored response by id: GET retrieves it, DELETE deletes it; ``/input_items`` lists its input."""

    async def endpoint(request: Request) -> Response:
        _, _, early = await _prelude(request, state, False)
        if early is not None:
            return early
        response_id, query = request.path_params["response_id"], dict(request.query_params)
        if request.url.path.endswith("/input_items"):
            return store.list_input_items(response_id, query)
        if request.method == "DELETE":
            return store.delete(response_id)
        return store.retrieve(response_id, query)

    return endpoint


def _count_tokens_endpoint(state: SimulatorState) -> Any:
    async def endpoint(request: Request) -> Response:
        body, _, early = await _prelude(request, state, True)
        if early is not None:
            return early
        problem = anthropic_sim.validate(body, counting=True)
        return anthropic_sim.error(400, problem) if problem else anthropic_sim.count(body)

    return endpoint


def _models_endpoint(state: SimulatorState) -> Any:
    async def endpoint(request: Request) -> Response:
        anthropic = _is_anthropic(request)
        _, _, early = await _prelude(request, state, anthropic)
        if early is not None:
            return early
        return anthropic_sim.models() if anthropic else openai_sim.models()

    return endpoint


TIMINGS_KEPT = 100_000


class _Timed:
    """Times the requests tagged ``x-simulator-timing`` (see the module), into ``state.timings``."""

    def __init__(self, app: ASGIApp, state: SimulatorState) -> None:
        self.app = app
        self.timings = state.timings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        tag = Headers(scope=scope).get("x-simulator-timing") if scope["type"] == "http" else None
        if tag is None:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        timings = self.timings

        async def timed(message: Message) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                if len(timings) >= TIMINGS_KEPT:
                    timings.clear()
                timings[tag] = time.perf_counter() - started

        await self.app(scope, receive, timed)


def _timings_endpoint(state: SimulatorState) -> Any:
    async def endpoint(request: Request) -> Response:
        timings = dict(state.timings)
        state.timings.clear()  # the same dict the middleware fills
        return Response(orjson.dumps(timings), media_type="application/json")

    return endpoint


def create_simulator_app(
    *, openai_key: str | None = None, anthropic_key: str | None = None, state: SimulatorState | None = None
) -> Starlette:
    """The simulated provider. With a key given, requests without exactly that key get a 401."""
    state = state or SimulatorState()
    state.openai_key, state.anthropic_key = openai_key, anthropic_key
    store = StoredResponses()
    stored = _stored_endpoint(state, store)
    routes = [
        Route("/v1/chat/completions", _endpoint(state, False, _chat), methods=["POST"]),
        Route("/v1/responses", _responses_endpoint(state, store), methods=["POST"]),
        Route("/v1/responses/compact", _compact_endpoint(state, store), methods=["POST"]),
        Route("/v1/responses/{response_id}", stored, methods=["GET", "DELETE"]),
        Route("/v1/responses/{response_id}/input_items", stored, methods=["GET"]),
        Route("/v1/messages", _endpoint(state, True, _messages), methods=["POST"]),
        Route("/v1/messages/count_tokens", _count_tokens_endpoint(state), methods=["POST"]),
        Route("/v1/models", _models_endpoint(state), methods=["GET"]),
        Route("/timings", _timings_endpoint(state), methods=["GET"]),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(_Timed, state=state)])
    app.state.simulator = state
    return app
