"""The proxy's metrics after known traffic carry exactly the expected values: interceptions by status
with every label, tokens by type as the provider reported them to the client, prompts, tool
selections, durations, time to first byte, the bridge's overhead, in-flight and published events."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson
import pytest
from telemetry_support import OPENAI_CHAT, PROVIDER_KEY, Deltas, running_proxy, sample, wait_until

from aibridge import metrics
from aibridge.auth import TokenVerifier
from aibridge.bus import InProcessBus
from aibridge.settings import DEFAULT_TOPIC
from aibridge.simulator import create_simulator_app
from aibridge.testing.server import serve_in_thread

CODEX = {"user-agent": "codex_cli_rs/0.58.0 (Linux; x86_64)"}
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
BASE = {"provider": "openai", "model": "gpt-4o"}
USAGE = BASE | {"client": "Codex"}


@pytest.fixture(scope="module")
def simulator() -> Iterator[str]:
    with serve_in_thread(create_simulator_app(openai_key=PROVIDER_KEY, anthropic_key=PROVIDER_KEY)) as url:
        yield url


def _ended(status: str, initiator: str) -> tuple[str, dict[str, str]]:
    labels = USAGE | {"status": status, "route": "/v1/chat/completions", "method": "POST", "initiator": initiator}
    return "aibridge_proxy_interceptions_ended_total", labels


def _chat(url: str, token: str, extra: dict[str, Any] | None = None, **headers: str) -> dict[str, Any]:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "weather in Lisbon?"}]} | (extra or {})
    answer = httpx.post(f"{url}{OPENAI_CHAT}", json=body, headers=CODEX | headers | _auth(token), timeout=30)
    return {"status": answer.status_code} | orjson.loads(answer.content)


def _streamed_usage(url: str, token: str, **headers: str) -> dict[str, Any]:
    body = {
        "model": "gpt-4o",
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "and tomorrow?"}],
    }
    with httpx.stream(
        "POST", f"{url}{OPENAI_CHAT}", json=body, headers=CODEX | headers | _auth(token), timeout=30
    ) as r:
        lines = [line[6:] for line in r.iter_lines() if line.startswith("data: {")]
    usage: dict[str, Any] = orjson.loads(lines[-1])["usage"]
    return usage


def _auth(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def _tokens(usages: list[dict[str, Any]]) -> dict[str, int]:
    """The client-visible usage in the bridge's convention: input excludes the cached tokens."""
    cached = sum(u["prompt_tokens_details"]["cached_tokens"] for u in usages)
    return {
        "input": sum(u["prompt_tokens"] for u in usages) - cached,
        "output": sum(u["completion_tokens"] for u in usages),
        "cache_read": cached,
        "cache_write": 0,
    }


def test_known_traffic_gives_exact_metrics(
    simulator: str, verifier: TokenVerifier, make_token: Callable[..., str]
) -> None:
    token = make_token("alice")
    token_keys = [
        ("aibridge_proxy_tokens_total", USAGE | {"initiator": "alice", "type": t}) for t in metrics.TOKEN_TYPES
    ]
    deltas = Deltas(
        _ended("completed", "alice"),
        _ended("upstream_error", "alice"),
        ("aibridge_proxy_prompts_total", USAGE | {"initiator": "alice"}),
        ("aibridge_proxy_tool_selections_total", USAGE),
        ("aibridge_proxy_interception_duration_seconds_count", BASE | {"streaming": "false"}),
        ("aibridge_proxy_interception_duration_seconds_count", BASE | {"streaming": "true"}),
        ("aibridge_proxy_upstream_time_to_first_byte_seconds_count", BASE),
        ("aibridge_proxy_overhead_seconds_count", {"provider": "openai", "streaming": "false"}),
        ("aibridge_proxy_overhead_seconds_count", {"provider": "openai", "streaming": "true"}),
        ("aibridge_proxy_events_published_total", {}),
        *token_keys,
    )
    dropped = sample("aibridge_proxy_events_dropped_total", reason="buffer_full")
    bus = InProcessBus()
    with running_proxy(simulator, bus.producer(), verifier) as (url, component):
        plain = _chat(url, token, **{"x-simulator-cache-read-tokens": "40"})
        with_tool = _chat(url, token, {"tools": [TOOL]})
        streamed = _streamed_usage(url, token, **{"x-simulator-cache-read-tokens": "8"})
        failed = _chat(url, token, **{"x-simulator-status": "503"})
        wait_until(lambda: component.emitter.published == 16, what="16 events published")
    assert [plain["status"], with_tool["status"], failed["status"]] == [200, 200, 503]
    assert len(with_tool["choices"][0]["message"]["tool_calls"]) == 1

    expected_tokens = _tokens([plain["usage"], with_tool["usage"], streamed])
    assert expected_tokens["cache_read"] == 48
    names = [f"{name}{{{','.join(f'{k}={v}' for k, v in sorted(labels.items()))}}}" for name, labels in token_keys]
    got = deltas.now()
    assert {t: got[name] for t, name in zip(metrics.TOKEN_TYPES, names, strict=True)} == expected_tokens
    assert [value for key, value in got.items() if "tokens_total" not in key] == [
        3,  # completed
        1,  # upstream_error
        4,  # prompts: the failed request's prompt is recorded too
        1,  # tool selections
        3,  # blocking durations
        1,  # streamed duration
        4,  # time to first byte, one per upstream call
        3,  # overhead, blocking
        1,  # overhead, streamed
        16,  # events: 4 + 5 (tool) + 4 + 3 (failed: started, prompt, ended)
    ]
    assert sample("aibridge_proxy_events_dropped_total", reason="buffer_full") == dropped
    assert sample("aibridge_proxy_events_buffered") == 0


def test_overhead_excludes_waiting_on_the_upstream_and_in_flight_follows_the_stream(
    simulator: str, verifier: TokenVerifier, make_token: Callable[..., str]
) -> None:
    streaming = {"provider": "openai", "streaming": "true"}
    in_flight = BASE | {"route": "/v1/chat/completions"}
    before = (
        sample("aibridge_proxy_interception_duration_seconds_sum", **BASE, streaming="true"),
        sample("aibridge_proxy_overhead_seconds_sum", **streaming),
    )
    with running_proxy(simulator, InProcessBus().producer(), verifier) as (url, _):
        thread = threading.Thread(
            target=_streamed_usage, args=(url, make_token()), kwargs={"x-simulator-chunk-delay-ms": "150"}
        )
        thread.start()
        wait_until(lambda: sample("aibridge_proxy_interceptions_in_flight", **in_flight) == 1, what="one in flight")
        thread.join(30)
        wait_until(lambda: sample("aibridge_proxy_interceptions_in_flight", **in_flight) == 0, what="none in flight")
    duration = sample("aibridge_proxy_interception_duration_seconds_sum", **BASE, streaming="true") - before[0]
    overhead = sample("aibridge_proxy_overhead_seconds_sum", **streaming) - before[1]
    assert duration > 0.9  # about nine chunks 150 ms apart
    assert 0 < overhead < 0.25, (duration, overhead)


def test_the_initiator_label_can_be_switched_off(
    simulator: str, verifier: TokenVerifier, make_token: Callable[..., str]
) -> None:
    deltas = Deltas(
        _ended("completed", ""),
        _ended("completed", "bob"),
        ("aibridge_proxy_prompts_total", USAGE | {"initiator": ""}),
        ("aibridge_proxy_tokens_total", USAGE | {"initiator": "", "type": "output"}),
    )
    with running_proxy(simulator, InProcessBus().producer(), verifier, metrics_initiator_label=False) as (url, proxy):
        answer = _chat(url, make_token("bob"))
        wait_until(lambda: proxy.emitter.published == 4, what="4 events published")
    assert list(deltas.now().values()) == [1, 0, 1, answer["usage"]["completion_tokens"]]


def test_models_past_the_limit_are_counted_as_other_and_events_keep_the_name(
    simulator: str, verifier: TokenVerifier, make_token: Callable[..., str], caplog: pytest.LogCaptureFixture
) -> None:
    token = make_token("carol")
    models = ["limit-model-a", "limit-model-b", "limit-model-c", "limit-model-d"]
    ended = [_ended("completed", "carol")[1] | {"model": model} for model in [*models, "other"]]
    deltas = Deltas(*(("aibridge_proxy_interceptions_ended_total", labels) for labels in ended))
    bus = InProcessBus()
    with (
        caplog.at_level("WARNING", logger="aibridge.metrics"),
        running_proxy(simulator, bus.producer(), verifier, metrics_max_models=2) as (url, proxy),
    ):
        for model in [*models, "limit-model-a"]:
            assert _chat(url, token, {"model": model})["status"] == 200
        wait_until(lambda: proxy.emitter.published == 20, what="20 events published")
    # the first two models keep their names, later ones are "other"; a known one stays known
    assert list(deltas.now().values()) == [2, 1, 0, 0, 2]
    events = [orjson.loads(message.value) for message in bus.take(DEFAULT_TOPIC, 100)]
    assert sorted({event["model"] for event in events}) == models
    warnings = [record.getMessage() for record in caplog.records if record.name == "aibridge.metrics"]
    assert len(warnings) == 1 and "more than 2 distinct models" in warnings[0]


def test_model_labels_keep_the_first_names_up_to_the_limit() -> None:
    labels = metrics.ModelLabels(limit=2)
    assert [labels(m) for m in ["a", "b", "c", "a", "b", "d"]] == ["a", "b", "other", "a", "b", "other"]
    labels.reset(3)
    assert [labels(m) for m in ["c", "d", "e", "f"]] == ["c", "d", "e", "other"]
