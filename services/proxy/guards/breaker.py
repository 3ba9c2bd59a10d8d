"""Circuit breakers per (provider, model): answer fast while an upstream is failing, probe before trusting it.

States (the value of the gauge ``aibridge_circuit_breaker_state{provider,model}``)::

    CLOSED (0) ──N consecutive failures──▶ OPEN (1) ──open interval over──▶ HALF_OPEN (2)
        ▲                                   ▲                                   │ one probe
        └──────────── probe succeeded ──────┼─────────── probe failed ──────────┘

A *failure* is an upstream answer with status 429, 503, 504 or 529, a connection error or a timeout;
any other answer is a success. While open (and while the probe is out) requests get a
:class:`~aibridge.proxy.guards.limits.Rejection` with status 503 and ``Retry-After``; the open interval
doubles with each failed probe (up to a maximum) and is at least the upstream's own ``Retry-After``.

Every request that passes :meth:`Breakers.check` holds a :class:`Permit` and reports its outcome
once: :meth:`Permit.record` (an HTTP status), :meth:`Permit.failure` (no answer) or
:meth:`Permit.release` (outcome unknown, e.g. the client left first). Only the probe's outcome
moves a half-open breaker. Single event-loop thread: no locks, O(1) per request.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from aibridge import metrics
from aibridge.proxy.guards.limits import Clock, Rejection, RejectReason, retry_after_seconds

log = logging.getLogger("aibridge.proxy.breaker")

FAILURE_STATUSES: Final = frozenset({429, 503, 504, 529})

Key = tuple[str, str]


class BreakerState(IntEnum):
    CLOSED = 0
    OPEN = 1
    HALF_OPEN = 2


def is_failure_status(status: int) -> bool:
    return status in FAILURE_STATUSES


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from an upstream ``Retry-After`` header (the delay-seconds form); None if absent or a date."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


class BreakerSettings(BaseSettings):
    """Mix into ``ProxySettings`` (env prefix ``AIBRIDGE_``)."""

    model_config = SettingsConfigDict(env_prefix="AIBRIDGE_", extra="ignore", populate_by_name=True)

    breaker_failures: int = Field(
        default=5, ge=0, description="Consecutive upstream failures that open a model's breaker; 0 = no breaker."
    )
    breaker_open_seconds: float = Field(
        default=10.0, gt=0, description="First open interval, doubled per failed probe."
    )
    breaker_max_open_seconds: float = Field(default=120.0, gt=0, description="Longest open interval.")
    breaker_probe_timeout: float = Field(
        default=60.0, gt=0, description="Seconds a probe may stay unanswered before another is let through."
    )


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    failures: int = 5
    open_seconds: float = 10.0
    max_open_seconds: float = 120.0
    probe_timeout: float = 60.0

    @classmethod
    def from_settings(cls, settings: BreakerSettings) -> BreakerPolicy:
        return cls(
            settings.breaker_failures,
            settings.breaker_open_seconds,
            max(settings.breaker_open_seconds, settings.breaker_max_open_seconds),
            settings.breaker_probe_timeout,
        )


@dataclass(slots=True)
class _Circuit:
    state: BreakerState = BreakerState.CLOSED
    failures: int = 0
    openings: int = 0
    open_until: float = 0.0
    probe: int = 0
    probe_deadline: float = 0.0
    last_failure: str = ""


class Permit:
    """One admitted request's duty to report its upstream outcome; only the first report counts."""

    __slots__ = ("_breakers", "key", "probe")

    def __init__(self, breakers: Breakers | None, key: Key, probe: int = 0) -> None:
        self._breakers = breakers
        self.key = key
        self.probe = probe

    def record(self, status: int, retry_after: float | None = None) -> None:
        """The upstream answered with ``status`` (call once its response headers arrive)."""
        if is_failure_status(status):
            self._report(False, f"HTTP {status}", retry_after)
        else:
            self._report(True, "", None)

    def failure(self, what: str = "no answer") -> None:
        """No upstream answer: a connection error or a timeout."""
        self._report(False, what, None)

    def release(self) -> None:
        """The outcome is unknown (the client went away first): count nothing."""
        breakers, self._breakers = self._breakers, None
        if breakers is not None:
            breakers.released(self.key, self.probe)

    def _report(self, success: bool, what: str, retry_after: float | None) -> None:
        breakers, self._breakers = self._breakers, None
        if breakers is None:
            return
        if success:
            breakers.succeeded(self.key, self.probe)
        else:
            breakers.failed(self.key, self.probe, what, retry_after)


class Breakers:
    """The breakers of one replica, created on a model's first failure and forgotten least recently used first.

    At most ``max_tracked`` are kept (each with its gauge series); when full, a closed one is forgotten.
    """

    def __init__(self, policy: BreakerPolicy, clock: Clock = time.monotonic, *, max_tracked: int = 256) -> None:
        self.policy = policy
        self._clock = clock
        self._circuits: OrderedDict[Key, _Circuit] = OrderedDict()
        self._max_tracked = max_tracked
        self._probes = 0

    def state(self, provider: str, model: str) -> BreakerState:
        circuit = self._circuits.get((provider, model))
        return BreakerState.CLOSED if circuit is None else circuit.state

    def check(self, provider: str, model: str) -> Permit | Rejection:
        """A :class:`Permit` to forward the request, or the answer to give instead (counted)."""
        key = (provider, model)
        if self.policy.failures == 0:
            return Permit(None, key)
        circuit = self._circuits.get(key)
        if circuit is None:
            return Permit(self, key)
        now = self._clock()
        if circuit.state is BreakerState.OPEN and now >= circuit.open_until:
            self._set_state(key, circuit, BreakerState.HALF_OPEN)
        if circuit.state is BreakerState.CLOSED:
            return Permit(self, key)
        if circuit.state is BreakerState.HALF_OPEN and (circuit.probe == 0 or now >= circuit.probe_deadline):
            self._probes += 1
            circuit.probe, circuit.probe_deadline = self._probes, now + self.policy.probe_timeout
            return Permit(self, key, circuit.probe)
        metrics.PROXY_REJECTIONS.labels(RejectReason.CIRCUIT_OPEN.value).inc()
        return self._rejection(key, circuit, now)

    def succeeded(self, key: Key, probe: int) -> None:
        circuit = self._circuits.get(key)
        if circuit is None:
            return
        if circuit.state is BreakerState.CLOSED:
            circuit.failures = 0
        elif circuit.state is BreakerState.HALF_OPEN and probe == circuit.probe:
            log.info("circuit closed", extra={"provider": key[0], "model": key[1]})
            circuit.failures = circuit.openings = circuit.probe = 0
            self._set_state(key, circuit, BreakerState.CLOSED)

    def failed(self, key: Key, probe: int, what: str, retry_after: float | None) -> None:
        circuit = self._circuits.get(key) or self._track(key)
        if circuit is None:
            return
        self._circuits.move_to_end(key)
        if circuit.state is BreakerState.CLOSED:
            circuit.failures += 1
            circuit.last_failure = what
            if circuit.failures >= self.policy.failures:
                self._open(key, circuit, retry_after)
        elif circuit.state is BreakerState.HALF_OPEN and probe == circuit.probe:
            circuit.last_failure = what
            self._open(key, circuit, retry_after)

    def released(self, key: Key, probe: int) -> None:
        circuit = self._circuits.get(key)
        if circuit is not None and circuit.state is BreakerState.HALF_OPEN and probe == circuit.probe:
            circuit.probe = 0

    def _open(self, key: Key, circuit: _Circuit, retry_after: float | None) -> None:
        policy = self.policy
        circuit.openings += 1
        interval = min(policy.max_open_seconds, policy.open_seconds * 2.0 ** min(circuit.openings - 1, 32))
        if retry_after is not None:
            interval = max(interval, min(retry_after, policy.max_open_seconds))
        circuit.open_until = self._clock() + interval
        circuit.probe = 0
        self._set_state(key, circuit, BreakerState.OPEN)
        log.warning(
            "circuit opened",
            extra={"provider": key[0], "model": key[1], "last_failure": circuit.last_failure, "seconds": interval},
        )

    def _rejection(self, key: Key, circuit: _Circuit, now: float) -> Rejection:
        wait = circuit.open_until - now if circuit.state is BreakerState.OPEN else 1.0
        seconds = retry_after_seconds(wait)
        message = (
            f"aibridge: {key[0]} is failing for model {key[1]} (last failure: {circuit.last_failure}); "
            f"requests are paused, retry in {seconds} s"
        )
        return Rejection(503, RejectReason.CIRCUIT_OPEN, message, seconds)

    def _track(self, key: Key) -> _Circuit | None:
        if len(self._circuits) >= self._max_tracked and not self._forget_one_closed():
            return None
        circuit = self._circuits[key] = _Circuit()
        self._set_state(key, circuit, BreakerState.CLOSED)
        return circuit

    def _forget_one_closed(self) -> bool:
        victim = next((key for key, c in self._circuits.items() if c.state is BreakerState.CLOSED), None)
        if victim is None:
            return False
        del self._circuits[victim]
        with contextlib.suppress(KeyError):
            metrics.CIRCUIT_BREAKER_STATE.remove(*victim)
        return True

    @staticmethod
    def _set_state(key: Key, circuit: _Circuit, state: BreakerState) -> None:
        circuit.state = state
        metrics.CIRCUIT_BREAKER_STATE.labels(*key).set(state.value)
