from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anthropic
import openai
import orjson
import pytest
from prometheus_client import REGISTRY
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aibridge.proxy.guards.breaker import BreakerPolicy, BreakerSettings
from aibridge.proxy.guards.limits import (
    FREE_TICKET,
    Admission,
    ConcurrencyLimiter,
    LimitSettings,
    Rejection,
    RejectReason,
    Ticket,
    UserRateLimiter,
    render_rejection,
    retry_after_seconds,
)
from aibridge.proxy.recording.spool import SpoolSettings
from aibridge.settings import CommonSettings
from aibridge.testing.server import serve_in_thread


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def rejections(reason: str) -> float:
    return REGISTRY.get_sample_value("aibridge_proxy_rejections_total", {"reason": reason}) or 0.0


def admitted(outcome: Ticket | Rejection) -> Ticket:
    assert isinstance(outcome, Ticket), outcome
    return outcome


def rejected(outcome: Ticket | Rejection) -> Rejection:
    assert isinstance(outcome, Rejection), outcome
    return outcome


def test_retry_after_is_whole_seconds_rounded_up_and_at_least_one() -> None:
    assert [retry_after_seconds(w) for w in (0.0, 0.001, 1.0, 1.2, 59.01)] == [1, 1, 1, 2, 60]


def test_replica_rate_allows_a_burst_of_rps_then_one_per_interval() -> None:
    clock = FakeClock()
    admission = Admission(max_rps=10, clock=clock)
    before = rejections("rate_limit")
    for _ in range(10):
        admitted(admission.admit("alice"))
    rejection = rejected(admission.admit("bob"))
    assert (rejection.status, rejection.reason, rejection.retry_after) == (429, RejectReason.RATE_LIMIT, 1)
    assert rejections("rate_limit") == before + 1
    clock.now += 0.1
    admitted(admission.admit("bob"))
    rejected(admission.admit("bob"))


def test_fractional_rps_has_a_burst_of_one_and_a_long_retry_after() -> None:
    clock = FakeClock()
    admission = Admission(max_rps=0.25, clock=clock)
    admitted(admission.admit("alice"))
    assert rejected(admission.admit("alice")).retry_after == 4
    clock.now += 3.5
    assert rejected(admission.admit("alice")).retry_after == 1
    clock.now += 0.5
    admitted(admission.admit("alice"))


def test_concurrency_limit_rejects_immediately_and_frees_slots_on_release() -> None:
    admission = Admission(max_concurrent=2)
    first, second = admitted(admission.admit("a")), admitted(admission.admit("b"))
    rejection = rejected(admission.admit("c"))
    assert (rejection.status, rejection.reason, rejection.retry_after) == (503, RejectReason.CONCURRENCY_LIMIT, 1)
    assert "2 concurrent requests" in rejection.message
    first.release()
    first.release()  # a second release must not free a slot someone else holds
    third = admitted(admission.admit("c"))
    rejected(admission.admit("d"))
    second.release()
    third.release()
    assert admission.concurrency is not None and admission.concurrency.in_flight == 0


async def test_ticket_is_a_context_manager_that_releases() -> None:
    limiter = ConcurrencyLimiter(1)
    async with limiter.acquire():
        assert isinstance(limiter.try_acquire(), Rejection)
    with admitted(limiter.try_acquire()):
        assert limiter.in_flight == 1
    assert limiter.in_flight == 0


def test_user_limit_is_per_user_with_a_burst_of_rpm() -> None:
    clock = FakeClock()
    admission = Admission(user_max_rpm=3, clock=clock)
    for _ in range(3):
        admitted(admission.admit("alice"))
    rejection = rejected(admission.admit("alice"))
    assert (rejection.status, rejection.reason, rejection.retry_after) == (429, RejectReason.USER_RATE_LIMIT, 20)
    assert "3 requests per minute" in rejection.message
    admitted(admission.admit("bob"))
    clock.now += 19.9
    rejected(admission.admit("alice"))
    clock.now += 0.1
    admitted(admission.admit("alice"))
    rejected(admission.admit("alice"))


def test_a_rejected_request_consumes_no_budget() -> None:
    clock = FakeClock()
    admission = Admission(max_rps=1, user_max_rpm=1, clock=clock)
    admitted(admission.admit("alice"))
    clock.now += 1.0
    assert rejected(admission.admit("alice")).reason is RejectReason.USER_RATE_LIMIT
    admitted(admission.admit("bob"))  # alice's rejection left the replica's token for bob

    admission = Admission(max_rps=2, max_concurrent=1, clock=clock)
    ticket = admitted(admission.admit("alice"))
    assert rejected(admission.admit("bob")).reason is RejectReason.CONCURRENCY_LIMIT
    ticket.release()
    admitted(admission.admit("bob"))  # bob's first try did not spend the second token


def test_user_limit_is_checked_before_the_replica_limits() -> None:
    clock = FakeClock()
    admission = Admission(max_rps=1, user_max_rpm=1, clock=clock)
    admitted(admission.admit("alice"))
    assert rejected(admission.admit("alice")).reason is RejectReason.USER_RATE_LIMIT
    assert rejected(admission.admit("bob")).reason is RejectReason.RATE_LIMIT


def test_idle_users_are_forgotten_as_requests_arrive() -> None:
    limiter = UserRateLimiter(60)
    for user in range(100):
        limiter.commit(f"user-{user}", 0.0)
    for _ in range(32):
        limiter.commit("user-0", 30.0)  # its bucket is full again only at 62: not idle at 61
    assert len(limiter) == 100
    for _ in range(60):
        assert limiter.check("carol", 61.0) is None
    assert len(limiter) == 1
    assert limiter.check("user-0", 61.0) is None and len(limiter) == 1
    assert limiter.check("user-0", 62.0) is None and len(limiter) == 0


def test_user_table_never_exceeds_its_bound() -> None:
    limiter = UserRateLimiter(1, max_users=3)
    for user in "abcde":
        limiter.commit(user, 0.0)
    assert len(limiter) == 3
    assert limiter.check("a", 1.0) is None  # forgotten: a fresh bucket (lenient, never stricter)
    assert limiter.check("e", 1.0) is not None


def test_all_limits_off_admits_without_reading_the_clock() -> None:
    def clock() -> float:
        raise AssertionError("a disabled admission must not read the clock")

    admission = Admission(clock=clock)
    assert not admission.enabled
    assert admission.admit("alice") is FREE_TICKET
    FREE_TICKET.release()


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIBRIDGE_MAX_RPS", "50")
    monkeypatch.setenv("AIBRIDGE_MAX_CONCURRENT", "8")
    monkeypatch.setenv("AIBRIDGE_USER_MAX_RPM", "120")
    admission = Admission.from_settings(LimitSettings())
    assert admission.rate is not None and admission.rate.gcra.interval == pytest.approx(0.02)
    assert admission.concurrency is not None and admission.concurrency.limit == 8
    assert admission.users is not None and admission.users.gcra.interval == pytest.approx(0.5)
    assert not Admission.from_settings(LimitSettings(_env_file=None, max_rps=0)).rate  # type: ignore[call-arg]
    monkeypatch.setenv("AIBRIDGE_MAX_CONCURRENT", "-1")
    with pytest.raises(ValidationError, match="max_concurrent"):
        LimitSettings()


# ---- the provider's error shape -----------------------------------------------------------------

RATE = Rejection(429, RejectReason.RATE_LIMIT, "slow down", 3)
FULL = Rejection(503, RejectReason.CONCURRENCY_LIMIT, "busy", 1)


def test_openai_shapes() -> None:
    status, headers, body = render_rejection("openai", RATE)
    assert (status, headers) == (429, {"content-type": "application/json", "retry-after": "3"})
    assert orjson.loads(body) == {
        "error": {"message": "slow down", "type": "requests", "param": None, "code": "rate_limit_exceeded"}
    }
    status, headers, body = render_rejection("openai", FULL)
    assert (status, headers["retry-after"]) == (503, "1")
    assert orjson.loads(body) == {
        "error": {"message": "busy", "type": "service_unavailable_error", "param": None, "code": "server_is_overloaded"}
    }


def test_anthropic_shapes() -> None:
    status, headers, body = render_rejection("anthropic", RATE)
    assert (status, headers) == (429, {"content-type": "application/json", "retry-after": "3"})
    assert orjson.loads(body) == {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}
    status, _, body = render_rejection("anthropic", FULL)
    assert status == 503
    assert orjson.loads(body) == {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}


def test_no_retry_after_header_without_a_value_and_unknown_provider_is_an_error() -> None:
    _, headers, _ = render_rejection("openai", Rejection(503, RejectReason.CIRCUIT_OPEN, "x"))
    assert "retry-after" not in headers
    with pytest.raises(ValueError, match="provider"):
        render_rejection("mistral", RATE)


def rejecting_app() -> Starlette:
    canned = {"rate": RATE, "full": FULL}

    async def reject(request: Request) -> Response:
        status, headers, body = render_rejection(request.path_params["provider"], canned[request.path_params["kind"]])
        return Response(body, status, headers)

    return Starlette(routes=[Route("/{provider}/{kind}/v1/{path:path}", reject, methods=["POST"])])


@pytest.fixture(scope="module")
def rejecting_url() -> Iterator[str]:
    with serve_in_thread(rejecting_app()) as url:
        yield url


async def test_the_openai_sdk_understands_the_rejections(rejecting_url: str) -> None:
    messages: list[openai.types.chat.ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
    client = openai.AsyncOpenAI(base_url=f"{rejecting_url}/openai/rate/v1", api_key="k", max_retries=0)
    with pytest.raises(openai.RateLimitError) as limited:
        await client.chat.completions.create(model="gpt-4o", messages=messages)
    assert (limited.value.code, limited.value.type) == ("rate_limit_exceeded", "requests")
    assert limited.value.body == {
        "message": "slow down",
        "type": "requests",
        "param": None,
        "code": "rate_limit_exceeded",
    }
    assert limited.value.response.headers["retry-after"] == "3"
    client = openai.AsyncOpenAI(base_url=f"{rejecting_url}/openai/full/v1", api_key="k", max_retries=0)
    with pytest.raises(openai.InternalServerError) as busy:
        await client.chat.completions.create(model="gpt-4o", messages=messages)
    assert (busy.value.status_code, busy.value.code) == (503, "server_is_overloaded")


async def test_the_anthropic_sdk_understands_the_rejections(rejecting_url: str) -> None:
    client = anthropic.AsyncAnthropic(base_url=f"{rejecting_url}/anthropic/rate", api_key="k", max_retries=0)
    with pytest.raises(anthropic.RateLimitError) as limited:
        await client.messages.create(model="claude-x", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    assert limited.value.body == {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}
    assert limited.value.response.headers["retry-after"] == "3"
    client = anthropic.AsyncAnthropic(base_url=f"{rejecting_url}/anthropic/full", api_key="k", max_retries=0)
    with pytest.raises(anthropic.InternalServerError) as busy:
        await client.messages.create(model="claude-x", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    assert busy.value.status_code == 503
    assert busy.value.body == {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}


def test_the_resilience_settings_mix_into_one_service_settings_class(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    class Composed(CommonSettings, LimitSettings, BreakerSettings, SpoolSettings):
        pass

    for name, value in {
        "MAX_RPS": "100",
        "MAX_CONCURRENT": "64",
        "USER_MAX_RPM": "600",
        "BREAKER_FAILURES": "4",
        "SPOOL_DIR": str(tmp_path),
        "SPOOL_MAX_BYTES": "1GiB",
        "KAFKA_TOPIC": "t",
    }.items():
        monkeypatch.setenv(f"AIBRIDGE_{name}", value)
    settings = Composed()
    assert (settings.max_rps, settings.max_concurrent, settings.user_max_rpm) == (100, 64, 600)
    assert (settings.breaker_failures, settings.spool_dir, settings.spool_max_bytes) == (4, tmp_path, 2**30)
    assert settings.kafka_topic == "t"
    assert Admission.from_settings(settings).enabled
    assert BreakerPolicy.from_settings(settings).failures == 4
