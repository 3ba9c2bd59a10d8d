"""Fixtures for the proxy: the simulated provider as upstream, a proxy per test on the real broker,
and a reader of the events the proxy published (a group-less aiokafka consumer: no join delay)."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from proxy_support import ANTHROPIC_KEY, OPENAI_KEY, Proxy, ProxyFactory, Simulator, ended_count, read_events

from aibridge.auth import TokenVerifier
from aibridge.bus import BusProducer
from aibridge.events import Event
from aibridge.http_limits import HeaderLimitSettings, limited_protocol
from aibridge.kafka import KafkaProducer
from aibridge.proxy.component import create_proxy_app
from aibridge.proxy.flow import Flow
from aibridge.proxy.recording.observe import Observation
from aibridge.proxy.relay import Relay
from aibridge.proxy.settings import ProxySettings
from aibridge.simulator import SimulatorState, create_simulator_app
from aibridge.testing.server import serve_in_thread

_PROTOCOL = limited_protocol(HeaderLimitSettings())  # the server protocol `aibridge proxy` runs


@pytest.fixture(scope="module")
def simulator() -> Iterator[Simulator]:
    state = SimulatorState()
    app = create_simulator_app(openai_key=OPENAI_KEY, anthropic_key=ANTHROPIC_KEY, state=state)
    with serve_in_thread(app) as url:
        yield Simulator(url, state)


@pytest.fixture
def start_proxy(
    simulator: Simulator, kafka_bootstrap: str, kafka_topic: str, verifier: TokenVerifier
) -> Iterator[ProxyFactory]:
    """Start a proxy (in a thread, on its own loop) publishing to the test's topic; stopped after the test."""
    with ExitStack() as stack:

        def start(
            producer: BusProducer | None = None,
            token_verifier: TokenVerifier | None = None,
            store: Any = None,
            **overrides: Any,
        ) -> Proxy:
            options: dict[str, Any] = {
                "kafka_bootstrap": kafka_bootstrap,
                "kafka_topic": kafka_topic,
                "openai_key": OPENAI_KEY,
                "anthropic_key": ANTHROPIC_KEY,
                "openai_base_url": simulator.openai_base_url,
                "anthropic_base_url": simulator.url,
                "event_flush_timeout": 5.0,
                "shutdown_grace": 5.0,
            }
            settings = ProxySettings(**(options | overrides))
            app = create_proxy_app(settings, producer or KafkaProducer(settings), token_verifier or verifier, store)
            own = ExitStack()
            stack.callback(own.close)
            url = own.enter_context(serve_in_thread(app, http=_PROTOCOL))  # as the proxy serves
            return Proxy(url, app.state.component, settings, own.close)

        yield start


@pytest.fixture
def proxy(start_proxy: ProxyFactory) -> Proxy:
    return start_proxy()


@pytest.fixture
def events_of(kafka_bootstrap: str, kafka_topic: str) -> Callable[..., Any]:
    """``await events_of(n)``: the events of the test's topic once ``n`` interceptions have ended."""

    async def read(interceptions: int = 1, timeout: float = 15.0) -> list[Event]:
        return await read_events(kafka_bootstrap, kafka_topic, until=ended_count(interceptions), timeout=timeout)

    return read


@pytest.fixture
def token(make_token: Callable[..., str]) -> str:
    return make_token("alice", user_id="user-alice-1")


@pytest.fixture
def collected() -> Iterator[Callable[[], list[Any]]]:
    """What the garbage collector finds unreachable of a request's objects (flows, observations, relays)
    from here on: kept in ``gc.garbage`` instead of freed, so a reference cycle shows."""
    gc.collect()
    gc.garbage.clear()
    gc.set_debug(gc.DEBUG_SAVEALL)

    def found() -> list[Any]:
        gc.collect()
        return [item for item in gc.garbage if isinstance(item, (Flow, Observation, Relay))]

    try:
        yield found
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
