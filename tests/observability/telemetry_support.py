"""Helpers of the observability tests: a proxy on a given bus and upstream, span lookups, metric deltas."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from prometheus_client import REGISTRY

from aibridge.auth import TokenVerifier
from aibridge.bus import BusProducer
from aibridge.proxy.component import ProxyComponent, create_proxy_app
from aibridge.proxy.settings import ProxySettings
from aibridge.testing.server import serve_in_thread

OPENAI_CHAT = "/api/v2/aibridge/openai/v1/chat/completions"
OPENAI_MODELS = "/api/v2/aibridge/openai/v1/models"
PROVIDER_KEY = "sk-central-observability-0123456789"


@contextmanager
def running_proxy(
    upstream_url: str, producer: BusProducer, verifier: TokenVerifier, **overrides: Any
) -> Iterator[tuple[str, ProxyComponent]]:
    """A proxy (its own thread and loop) forwarding OpenAI to ``upstream_url`` and publishing to ``producer``."""
    settings = ProxySettings(
        **{
            "openai_key": PROVIDER_KEY,
            "anthropic_key": PROVIDER_KEY,
            "openai_base_url": f"{upstream_url}/v1",
            "anthropic_base_url": upstream_url,
            "event_flush_timeout": 5.0,
            "shutdown_grace": 5.0,
        }
        | overrides
    )
    app = create_proxy_app(settings, producer, verifier)
    with serve_in_thread(app) as url:
        yield url, app.state.component


def wait_until(condition: Callable[[], object], timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout}s")
        time.sleep(0.02)


def named(spans: Sequence[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name == name]


def one(spans: Sequence[ReadableSpan], name: str) -> ReadableSpan:
    found = named(spans, name)
    assert len(found) == 1, (name, [s.name for s in spans])
    return found[0]


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Deltas:
    """Metric samples before some traffic, to compare with after it (the registry is process-global)."""

    def __init__(self, *keys: tuple[str, dict[str, str]]) -> None:
        self._keys = keys
        self._before = [sample(name, **labels) for name, labels in keys]

    def now(self) -> dict[str, float]:
        return {
            _key(name, labels): sample(name, **labels) - before
            for (name, labels), before in zip(self._keys, self._before, strict=True)
        }


def _key(name: str, labels: dict[str, str]) -> str:
    return name + "{" + ",".join(f"{k}={v}" for k, v in sorted(labels.items())) + "}"
