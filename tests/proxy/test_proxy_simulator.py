"""The simulated provider on its own, mounted under a prefix as ``aibridge up`` mounts it."""

from __future__ import annotations

import anthropic
import httpx
import openai
from starlette.applications import Starlette
from starlette.routing import Mount

from aibridge.simulator import create_simulator_app
from aibridge.testing.server import serve_in_thread


def mounted_app() -> Starlette:
    return Starlette(routes=[Mount("/_simulator", app=create_simulator_app(openai_key="k1", anthropic_key="k2"))])


def mounted() -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=mounted_app()), base_url="http://sim")


async def test_sdks_work_against_the_mounted_simulator() -> None:
    with serve_in_thread(mounted_app()) as url:
        oai = openai.AsyncOpenAI(base_url=f"{url}/_simulator/v1", api_key="k1", max_retries=0)
        completion = await oai.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
        assert completion.choices[0].finish_reason == "stop"
        assert "gpt-4o" in [m.id async for m in await oai.models.list()]
        claude = anthropic.AsyncAnthropic(base_url=f"{url}/_simulator", api_key="k2", max_retries=0)
        message = await claude.messages.create(
            model="claude-haiku-4-5", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
        assert message.stop_reason == "end_turn" and message.usage.input_tokens > 0
        assert "claude-sonnet-4-5" in [m.id async for m in await claude.models.list()]


async def test_simulator_checks_keys_and_validates_like_the_providers() -> None:
    async with mounted() as http:
        wrong = await http.post("/_simulator/v1/messages", headers={"x-api-key": "nope"}, json={})
        assert wrong.status_code == 401 and wrong.json()["error"]["type"] == "authentication_error"
        wrong = await http.post("/_simulator/v1/chat/completions", headers={"authorization": "Bearer nope"}, json={})
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
        missing = await http.post(
            "/_simulator/v1/messages",
            headers={"x-api-key": "k2"},
            json={"model": "m", "messages": [{"role": "user", "content": "x"}]},
        )
        assert missing.status_code == 400 and "max_tokens" in missing.json()["error"]["message"]
        overloaded = await http.post(
            "/_simulator/v1/messages", headers={"x-api-key": "k2", "x-simulator-status": "529"}, json={}
        )
        assert overloaded.status_code == 529 and overloaded.json()["error"]["type"] == "overloaded_error"


async def test_a_client_leaving_before_its_body_is_sent_gets_no_error_logged() -> None:
    # wrk and connection pools stop mid-request at the end of a benchmark: the simulator (also the
    # offline provider of `aibridge up`) answers 499 quietly instead of raising ClientDisconnect.
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"100")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 2),
    }
    await create_simulator_app()(scope, receive, send)
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 499


async def test_simulator_times_tagged_requests_to_their_last_byte_and_forgets_them_once_read() -> None:
    chat = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    tagged = {"authorization": "Bearer k1", "x-simulator-timing": "blocking", "x-simulator-stall-ms": "80"}
    streamed = {"authorization": "Bearer k1", "x-simulator-timing": "streamed", "x-simulator-chunk-delay-ms": "30"}
    with serve_in_thread(mounted_app()) as url:
        async with httpx.AsyncClient(base_url=f"{url}/_simulator") as http:
            assert (await http.post("/v1/chat/completions", headers=tagged, json=chat)).status_code == 200
            async with http.stream(
                "POST", "/v1/chat/completions", headers=streamed, json=chat | {"stream": True}
            ) as stream:
                chunks = [line async for line in stream.aiter_lines() if line.startswith("data: ")]
            untagged = await http.post("/v1/chat/completions", headers={"authorization": "Bearer k1"}, json=chat)
            assert untagged.status_code == 200
            timings = (await http.get("/timings")).json()
            again = (await http.get("/timings")).json()
    assert set(timings) == {"blocking", "streamed"}  # the untagged request is not timed
    # the loop may wake a sleep a little early by its own clock: a margin below the stall and the pacing
    assert 0.07 <= timings["blocking"] < 5
    assert len(chunks) >= 3 and 0.025 * (len(chunks) - 1) <= timings["streamed"] < 5  # until the last chunk
    assert again == {}
