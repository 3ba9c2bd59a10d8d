"""Admission limits of one proxy replica, and the provider-shaped answer when a request is turned away.

Three limits, each disabled by ``0`` (the default), checked in this order by :class:`Admission`:

- ``AIBRIDGE_USER_MAX_RPM`` → 429: a GCRA per user, a bucket of ``rpm`` requests refilled at rpm per 60 s;
- ``AIBRIDGE_MAX_RPS`` → 429: a GCRA for the replica, a bucket of ``max(1, rps)`` refilled at rps;
- ``AIBRIDGE_MAX_CONCURRENT`` → 503: a counter of held :class:`Ticket`; full means rejected, never queued.

A request is admitted only when every limit admits it, and only then does it consume anything, so
a rejected request costs the caller's budget nothing. Everything here runs on one event loop
thread: no locks, no awaits, O(1) per request.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

import orjson
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from aibridge import metrics

Clock = Callable[[], float]
"""Monotonic seconds (``time.monotonic`` unless a test injects another)."""


class RejectReason(StrEnum):
    USER_RATE_LIMIT = "user_rate_limit"
    RATE_LIMIT = "rate_limit"
    CONCURRENCY_LIMIT = "concurrency_limit"
    CIRCUIT_OPEN = "circuit_open"
    BUDGET_EXCEEDED = "budget_exceeded"
    BUDGET_UNKNOWN = "budget_unknown"


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why the bridge answers a request itself instead of forwarding it."""

    status: int
    reason: RejectReason
    message: str
    retry_after: int | None = None


def retry_after_seconds(wait: float) -> int:
    """A ``Retry-After`` value: whole seconds, rounded up, at least 1."""
    return max(1, math.ceil(wait))


class LimitSettings(BaseSettings):
    """Mix into ``ProxySettings`` (env prefix ``AIBRIDGE_``)."""

    model_config = SettingsConfigDict(env_prefix="AIBRIDGE_", extra="ignore", populate_by_name=True)

    max_rps: float = Field(default=0, ge=0, description="Requests per second per replica (429 over it); 0 = off.")
    max_concurrent: int = Field(default=0, ge=0, description="Concurrent requests per replica (503 over it); 0 = off.")
    user_max_rpm: float = Field(default=0, ge=0, description="Requests per minute per user (429 over it); 0 = off.")


class Gcra:
    """Generic cell rate algorithm: ``rate`` per second with bursts of ``burst``; one float of state.

    ``tat`` (theoretical arrival time) is when the bucket is full again. A request at ``now`` fits
    when ``tat - now <= tolerance``; taking it moves ``tat`` one ``interval`` later.
    """

    __slots__ = ("interval", "tolerance")

    def __init__(self, rate: float, burst: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a GCRA needs rate > 0 and burst >= 1")
        self.interval = 1.0 / rate
        self.tolerance = (math.floor(burst) - 1) * self.interval

    def wait(self, tat: float, now: float) -> float:
        """Seconds until one more request fits (0.0 when it fits now, within a microsecond of float error)."""
        wait = tat - self.tolerance - now
        return wait if wait > 1e-6 else 0.0

    def take(self, tat: float, now: float) -> float:
        """The new ``tat`` after admitting one request."""
        return max(tat, now) + self.interval


class RateLimiter:
    """Requests per second for the whole replica (``AIBRIDGE_MAX_RPS``), bursts of ``max(1, rps)``."""

    def __init__(self, rps: float) -> None:
        self.gcra = Gcra(rps, max(1.0, rps))
        self._tat = 0.0
        self._message = f"aibridge: this replica's limit of {rps:g} requests per second is reached; retry later"

    def check(self, now: float) -> Rejection | None:
        wait = self.gcra.wait(self._tat, now)
        if wait > 0:
            return Rejection(429, RejectReason.RATE_LIMIT, self._message, retry_after_seconds(wait))
        return None

    def commit(self, now: float) -> None:
        self._tat = self.gcra.take(self._tat, now)


class UserRateLimiter:
    """Requests per minute per user (``AIBRIDGE_USER_MAX_RPM``), bursts of ``rpm``.

    State is one float per user, kept in least-recently-seen order. A user whose ``tat`` has passed
    has a full bucket, exactly like a user never seen, so forgetting them changes nothing: each call
    forgets up to two such users from the old end. Beyond ``max_users`` the least recently seen user
    is forgotten even if not idle (that user gets a fresh bucket: the error is on the lenient side).
    """

    def __init__(self, rpm: float, *, max_users: int = 100_000) -> None:
        self.gcra = Gcra(rpm / 60.0, max(1.0, rpm))
        self._tats: OrderedDict[str, float] = OrderedDict()
        self._max_users = max_users
        self._message = f"aibridge: your limit of {rpm:g} requests per minute is reached; retry later"

    def __len__(self) -> int:
        return len(self._tats)

    def check(self, user: str, now: float) -> Rejection | None:
        self._forget_idle(now)
        wait = self.gcra.wait(self._tats.get(user, 0.0), now)
        if wait > 0:
            return Rejection(429, RejectReason.USER_RATE_LIMIT, self._message, retry_after_seconds(wait))
        return None

    def commit(self, user: str, now: float) -> None:
        self._tats[user] = self.gcra.take(self._tats.pop(user, 0.0), now)
        if len(self._tats) > self._max_users:
            self._tats.popitem(last=False)

    def _forget_idle(self, now: float) -> None:
        for _ in range(2):
            oldest = next(iter(self._tats.items()), None)
            if oldest is None or oldest[1] > now:
                return
            del self._tats[oldest[0]]


class Ticket:
    """An admitted request's hold on a concurrency slot; :meth:`release` it when the response is done.

    Releasing twice is harmless, so a ``finally`` and a background task may both call it.
    """

    __slots__ = ("_limiter",)

    def __init__(self, limiter: ConcurrencyLimiter | None) -> None:
        self._limiter = limiter

    def release(self) -> None:
        limiter, self._limiter = self._limiter, None
        if limiter is not None:
            limiter.in_flight -= 1

    def __enter__(self) -> Ticket:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()

    async def __aenter__(self) -> Ticket:
        return self

    async def __aexit__(self, *_: object) -> None:
        self.release()


FREE_TICKET: Final = Ticket(None)
"""What admitted requests hold when no concurrency limit is set: releasing it does nothing."""


class ConcurrencyLimiter:
    """At most ``limit`` requests in flight (``AIBRIDGE_MAX_CONCURRENT``); no waiting room."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("a concurrency limit must be at least 1")
        self.limit = limit
        self.in_flight = 0
        self._rejection = Rejection(
            503,
            RejectReason.CONCURRENCY_LIMIT,
            f"aibridge: this replica is at its limit of {limit} concurrent requests; retry shortly",
            1,
        )

    def check(self) -> Rejection | None:
        return self._rejection if self.in_flight >= self.limit else None

    def acquire(self) -> Ticket:
        """Take a slot (call :meth:`check` first; this does not refuse)."""
        self.in_flight += 1
        return Ticket(self)

    def try_acquire(self) -> Ticket | Rejection:
        return self.check() or self.acquire()


class Admission:
    """All three limits for one replica; :meth:`admit` is the one call on the request path."""

    def __init__(
        self, *, max_rps: float = 0, max_concurrent: int = 0, user_max_rpm: float = 0, clock: Clock = time.monotonic
    ) -> None:
        self.users = UserRateLimiter(user_max_rpm) if user_max_rpm > 0 else None
        self.rate = RateLimiter(max_rps) if max_rps > 0 else None
        self.concurrency = ConcurrencyLimiter(max_concurrent) if max_concurrent > 0 else None
        self.enabled = any(limit is not None for limit in (self.users, self.rate, self.concurrency))
        self._clock = clock

    @classmethod
    def from_settings(cls, settings: LimitSettings, clock: Clock = time.monotonic) -> Admission:
        return cls(
            max_rps=settings.max_rps,
            max_concurrent=settings.max_concurrent,
            user_max_rpm=settings.user_max_rpm,
            clock=clock,
        )

    def admit(self, user: str) -> Ticket | Rejection:
        """A :class:`Ticket` to release when the response has finished, or why not (counted)."""
        if not self.enabled:
            return FREE_TICKET
        now = self._clock()
        rejection = self._first_rejection(user, now)
        if rejection is not None:
            metrics.PROXY_REJECTIONS.labels(rejection.reason.value).inc()
            return rejection
        if self.users is not None:
            self.users.commit(user, now)
        if self.rate is not None:
            self.rate.commit(now)
        return self.concurrency.acquire() if self.concurrency is not None else FREE_TICKET

    def _first_rejection(self, user: str, now: float) -> Rejection | None:
        if self.users is not None and (rejection := self.users.check(user, now)) is not None:
            return rejection
        if self.rate is not None and (rejection := self.rate.check(now)) is not None:
            return rejection
        return self.concurrency.check() if self.concurrency is not None else None


# ---- the provider's error shape ----------------------------------------------------------------

_OPENAI_KINDS: Final[dict[int, tuple[str, str]]] = {
    429: ("requests", "rate_limit_exceeded"),
    503: ("service_unavailable_error", "server_is_overloaded"),
}
_ANTHROPIC_KINDS: Final[dict[int, str]] = {429: "rate_limit_error", 503: "overloaded_error"}


def rejection_body(provider: str, rejection: Rejection) -> bytes:
    """The JSON error body ``provider`` itself sends for this status (429 or 503)."""
    if provider == "openai":
        kind, code = _OPENAI_KINDS[rejection.status]
        if rejection.reason is RejectReason.BUDGET_EXCEEDED:
            kind = code = "insufficient_quota"  # what OpenAI answers when an account's quota is spent
        return orjson.dumps({"error": {"message": rejection.message, "type": kind, "param": None, "code": code}})
    if provider == "anthropic":
        error = {"type": _ANTHROPIC_KINDS[rejection.status], "message": rejection.message}
        return orjson.dumps({"type": "error", "error": error})
    raise ValueError(f"unknown provider {provider!r}")


def render_rejection(provider: str, rejection: Rejection) -> tuple[int, dict[str, str], bytes]:
    """``(status, headers, body)`` for a Starlette ``Response(body, status, headers)``."""
    headers = {"content-type": "application/json"}
    if rejection.retry_after is not None:
        headers["retry-after"] = str(rejection.retry_after)
    return rejection.status, headers, rejection_body(provider, rejection)
