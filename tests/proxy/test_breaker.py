from __future__ import annotations

import orjson
import pytest
from prometheus_client import REGISTRY

from aibridge.proxy.guards.breaker import (
    BreakerPolicy,
    Breakers,
    BreakerSettings,
    BreakerState,
    Permit,
    is_failure_status,
    parse_retry_after,
)
from aibridge.proxy.guards.limits import Rejection, RejectReason, render_rejection

POLICY = BreakerPolicy(failures=3, open_seconds=10.0, max_open_seconds=35.0, probe_timeout=60.0)


class FakeClock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


def gauge(provider: str, model: str) -> float | None:
    return REGISTRY.get_sample_value("aibridge_circuit_breaker_state", {"provider": provider, "model": model})


def permit(outcome: Permit | Rejection) -> Permit:
    assert isinstance(outcome, Permit), outcome
    return outcome


def rejection(outcome: Permit | Rejection) -> Rejection:
    assert isinstance(outcome, Rejection), outcome
    return outcome


def fail(breakers: Breakers, times: int, model: str = "m", status: int = 503) -> None:
    for _ in range(times):
        permit(breakers.check("anthropic", model)).record(status)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def breakers(clock: FakeClock) -> Breakers:
    return Breakers(POLICY, clock)


def test_failure_statuses() -> None:
    assert [s for s in (200, 400, 401, 404, 429, 500, 502, 503, 504, 529) if is_failure_status(s)] == [
        429,
        503,
        504,
        529,
    ]


def test_opens_after_n_consecutive_failures_and_answers_503_with_retry_after(
    breakers: Breakers, clock: FakeClock
) -> None:
    fail(breakers, 2, model="opus", status=529)
    assert breakers.state("anthropic", "opus") is BreakerState.CLOSED
    assert gauge("anthropic", "opus") == 0
    permit(breakers.check("anthropic", "opus")).failure("connect timeout")
    assert breakers.state("anthropic", "opus") is BreakerState.OPEN
    assert gauge("anthropic", "opus") == 1
    clock.now += 2.5
    refused = rejection(breakers.check("anthropic", "opus"))
    assert (refused.status, refused.reason, refused.retry_after) == (503, RejectReason.CIRCUIT_OPEN, 8)
    assert "anthropic is failing for model opus (last failure: connect timeout)" in refused.message
    status, headers, body = render_rejection("anthropic", refused)
    assert (status, headers["retry-after"]) == (503, "8")
    assert orjson.loads(body)["error"]["type"] == "overloaded_error"


def test_a_success_resets_the_streak(breakers: Breakers) -> None:
    fail(breakers, 2)
    permit(breakers.check("anthropic", "m")).record(200)
    fail(breakers, 2)
    permit(breakers.check("anthropic", "m")).record(400)  # the upstream answered: not an outage
    fail(breakers, 2)
    assert breakers.state("anthropic", "m") is BreakerState.CLOSED
    fail(breakers, 1)
    assert breakers.state("anthropic", "m") is BreakerState.OPEN


def test_breakers_are_per_provider_and_model(breakers: Breakers) -> None:
    fail(breakers, 3, model="opus")
    permit(breakers.check("anthropic", "haiku"))
    permit(breakers.check("openai", "opus"))
    rejection(breakers.check("anthropic", "opus"))


def test_half_open_lets_exactly_one_probe_through_and_its_success_closes(breakers: Breakers, clock: FakeClock) -> None:
    fail(breakers, 3)
    clock.now += 10.0
    probe = permit(breakers.check("anthropic", "m"))
    assert breakers.state("anthropic", "m") is BreakerState.HALF_OPEN
    assert gauge("anthropic", "m") == 2
    waiting = rejection(breakers.check("anthropic", "m"))
    assert (waiting.status, waiting.retry_after) == (503, 1)
    probe.record(200)
    assert breakers.state("anthropic", "m") is BreakerState.CLOSED
    assert gauge("anthropic", "m") == 0
    permit(breakers.check("anthropic", "m"))
    fail(breakers, 2)  # the streak starts again from zero
    assert breakers.state("anthropic", "m") is BreakerState.CLOSED


def test_a_failed_probe_reopens_with_a_doubled_interval_up_to_the_maximum(breakers: Breakers, clock: FakeClock) -> None:
    fail(breakers, 3)
    for expected in (20, 35, 35):
        clock.now += 100.0
        permit(breakers.check("anthropic", "m")).record(429)
        assert breakers.state("anthropic", "m") is BreakerState.OPEN
        assert rejection(breakers.check("anthropic", "m")).retry_after == expected
    clock.now += 35.0
    permit(breakers.check("anthropic", "m")).record(204)
    fail(breakers, 3)
    assert rejection(breakers.check("anthropic", "m")).retry_after == 10  # closing reset the backoff


def test_the_upstream_retry_after_lengthens_the_open_interval_within_the_maximum(breakers: Breakers) -> None:
    fail(breakers, 2, status=429)
    permit(breakers.check("anthropic", "m")).record(429, retry_after=25.0)
    assert rejection(breakers.check("anthropic", "m")).retry_after == 25
    breakers = Breakers(POLICY, FakeClock())
    fail(breakers, 2, status=429)
    permit(breakers.check("anthropic", "m")).record(429, retry_after=3600.0)
    assert rejection(breakers.check("anthropic", "m")).retry_after == 35


def test_a_released_probe_lets_the_next_request_probe(breakers: Breakers, clock: FakeClock) -> None:
    fail(breakers, 3)
    clock.now += 10.0
    permit(breakers.check("anthropic", "m")).release()  # the client went away before the upstream answered
    assert breakers.state("anthropic", "m") is BreakerState.HALF_OPEN
    permit(breakers.check("anthropic", "m")).record(200)
    assert breakers.state("anthropic", "m") is BreakerState.CLOSED


def test_an_unanswered_probe_is_replaced_after_the_probe_timeout(breakers: Breakers, clock: FakeClock) -> None:
    fail(breakers, 3)
    clock.now += 10.0
    stale = permit(breakers.check("anthropic", "m"))
    clock.now += 59.0
    rejection(breakers.check("anthropic", "m"))
    clock.now += 1.0
    fresh = permit(breakers.check("anthropic", "m"))
    stale.record(200)  # too late: only the current probe decides
    assert breakers.state("anthropic", "m") is BreakerState.HALF_OPEN
    fresh.record(503)
    assert breakers.state("anthropic", "m") is BreakerState.OPEN


def test_outcomes_of_requests_admitted_before_opening_do_not_move_it(breakers: Breakers, clock: FakeClock) -> None:
    early = [permit(breakers.check("anthropic", "m")) for _ in range(3)]
    fail(breakers, 3)
    early[0].record(503)
    early[1].record(200)
    assert rejection(breakers.check("anthropic", "m")).retry_after == 10
    clock.now += 10.0
    probe = permit(breakers.check("anthropic", "m"))
    early[2].record(200)  # not the probe
    assert breakers.state("anthropic", "m") is BreakerState.HALF_OPEN
    probe.record(200)
    assert breakers.state("anthropic", "m") is BreakerState.CLOSED


def test_a_permit_reports_once(breakers: Breakers) -> None:
    once = permit(breakers.check("anthropic", "m"))
    for _ in range(3):
        once.record(503)
    assert breakers.state("anthropic", "m") is BreakerState.CLOSED
    fail(breakers, 2)
    assert breakers.state("anthropic", "m") is BreakerState.OPEN


def test_rejections_are_counted(breakers: Breakers) -> None:
    before = REGISTRY.get_sample_value("aibridge_proxy_rejections_total", {"reason": "circuit_open"}) or 0.0
    fail(breakers, 3)
    for _ in range(4):
        rejection(breakers.check("anthropic", "m"))
    assert REGISTRY.get_sample_value("aibridge_proxy_rejections_total", {"reason": "circuit_open"}) == before + 4


def test_zero_failures_disables_the_breaker(clock: FakeClock) -> None:
    breakers = Breakers(BreakerPolicy(failures=0), clock)
    for _ in range(50):
        permit(breakers.check("openai", "gpt")).record(503)
    assert breakers.state("openai", "gpt") is BreakerState.CLOSED
    assert gauge("openai", "gpt") is None


def test_tracked_breakers_are_bounded_and_forgotten_ones_leave_no_gauge(clock: FakeClock) -> None:
    breakers = Breakers(POLICY, clock, max_tracked=2)
    fail(breakers, 1, model="bounded-a")
    fail(breakers, 3, model="bounded-b")
    fail(breakers, 1, model="bounded-c")  # forgets bounded-a, the oldest closed one
    assert gauge("anthropic", "bounded-a") is None
    assert (gauge("anthropic", "bounded-b"), gauge("anthropic", "bounded-c")) == (1, 0)
    fail(breakers, 2, model="bounded-a")  # a fresh streak: one remembered failure would have opened it
    assert breakers.state("anthropic", "bounded-a") is BreakerState.CLOSED
    assert gauge("anthropic", "bounded-c") is None  # bounded-a's return forgot bounded-c, the closed one ...
    assert breakers.state("anthropic", "bounded-b") is BreakerState.OPEN  # ... never an open one


def test_parse_retry_after() -> None:
    assert [parse_retry_after(v) for v in (None, "", "7", "1.5", "-3", "Wed, 21 Oct 2015 07:28:00 GMT")] == [
        None,
        None,
        7.0,
        1.5,
        None,
        None,
    ]


def test_policy_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIBRIDGE_BREAKER_FAILURES", "7")
    monkeypatch.setenv("AIBRIDGE_BREAKER_OPEN_SECONDS", "30")
    monkeypatch.setenv("AIBRIDGE_BREAKER_MAX_OPEN_SECONDS", "5")
    assert BreakerPolicy.from_settings(BreakerSettings()) == BreakerPolicy(7, 30.0, 30.0, 60.0)
