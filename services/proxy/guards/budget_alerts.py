"""Budget alerts for the SIEM (``schemas/aibridge.alerts.v1.schema.json``): a user passed a budget's
warning threshold, or spent it.

A replica raises each alert once per user, budget, period and threshold. Its ``event_id`` is derived
from exactly those, so the copies raised by several replicas carry the same id and a sink keeps one.
Every alert is a log line (logger ``aibridge.alerts``); with Kafka it is also a message on the alerts
topic (key: the user id). A message the broker does not take is counted and its log line remains.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import uuid
from typing import Any, Final

import orjson

from aibridge.auth import Identity
from aibridge.budgets import period_start
from aibridge.bus import BusError, BusProducer
from aibridge.events import SCHEMA_DIR, format_time, utcnow
from aibridge.metrics import PROXY_EVENTS_DROPPED
from aibridge.proxy.guards.budgets import Standing

SCHEMA_PATH: Final = SCHEMA_DIR / "aibridge.alerts.v1.schema.json"
EXAMPLES_DIR: Final = SCHEMA_DIR / "examples" / "alerts"
_NAMESPACE: Final = uuid.UUID("5b0f7c55-8f0e-4d55-9b43-6a1a3e0c2b71")
_EPSILON: Final = datetime.timedelta(microseconds=1)

log = logging.getLogger("aibridge.alerts")

Alert = dict[str, Any]


def budget_alert(identity: Identity, standing: Standing, threshold: str) -> Alert:
    """The ``budget.alert`` event for ``identity`` at ``threshold`` (``warn`` or ``exceeded``)."""
    budget, resets_at = standing.budget, standing.resets_at
    period_start = format_time(_period_start(standing))
    key = "|".join((identity.user_id, budget.scope, budget.name, budget.period, period_start, threshold))
    return {
        "schema_version": 1,
        "event_id": str(uuid.uuid5(_NAMESPACE, key)),
        "type": "budget.alert",
        "occurred_at": format_time(utcnow()),
        "threshold": threshold,
        "initiator": {"id": identity.user_id, "username": identity.username},
        "budget": {
            "scope": budget.scope.value,
            "name": budget.name,
            "period": budget.period.value,
            "limit": _plain(budget.limit),
            "warn": _plain(budget.warn),
        },
        "spent": _plain(standing.spent),
        "remaining": _plain(standing.remaining),
        "period_start": period_start,
        "resets_at": format_time(resets_at),
    }


class AlertPublisher:
    """Logs each alert and, given a producer (Kafka), sends it to ``topic`` without holding up the request."""

    def __init__(self, producer: BusProducer | None, topic: str) -> None:
        self._producer = producer
        self._topic = topic
        self._sending: set[asyncio.Task[None]] = set()

    def __call__(self, identity: Identity, standing: Standing, threshold: str) -> None:
        alert = budget_alert(identity, standing, threshold)
        log.warning("budget %s: %s", threshold, orjson.dumps(alert).decode())
        if self._producer is not None:
            task = asyncio.get_running_loop().create_task(self._send(alert))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, alert: Alert) -> None:
        assert self._producer is not None
        try:
            await self._producer.send(self._topic, alert["initiator"]["id"].encode(), orjson.dumps(alert))
        except BusError as exc:
            PROXY_EVENTS_DROPPED.labels("alert_send_failed").inc()
            log.error("budget alert %s did not reach the topic %s: %s", alert["event_id"], self._topic, exc)

    async def drain(self, timeout: float) -> None:
        if self._sending:
            await asyncio.wait(set(self._sending), timeout=timeout)


def _period_start(standing: Standing) -> datetime.datetime:
    return period_start(standing.budget.period, standing.resets_at - _EPSILON)


def _plain(value: Any) -> str:
    text = f"{value:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text
