"""Every Prometheus metric of every service, declared once, prefixed ``aibridge_``, units in the names.

Sections per component; a process registers only what it uses because all metrics live in the
default registry and are exported by whichever component serves ``/metrics``.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# ---- proxy -------------------------------------------------------------------------------------

PROXY_INTERCEPTIONS = Counter(
    "aibridge_proxy_interceptions", "Interceptions that ended, by provider and status.", ["provider", "status"]
)
PROXY_PASSTHROUGH_REQUESTS = Counter(
    "aibridge_proxy_passthrough_requests",
    "Passthrough requests (models, count_tokens), by provider, route and HTTP status.",
    ["provider", "route", "status"],
)
PROXY_AUTH_FAILURES = Counter(
    "aibridge_proxy_auth_failures", "Requests refused for a missing or bad bridge token, by reason.", ["reason"]
)
PROXY_EVENTS_PUBLISHED = Counter("aibridge_proxy_events_published", "Interception events the bus accepted.")
PROXY_EVENTS_DROPPED = Counter(
    "aibridge_proxy_events_dropped",
    "Interception events that could not be published, by reason (buffer_full, send_failed, shutdown).",
    ["reason"],
)
PROXY_EVENT_SEND_FAILURES = Counter(
    "aibridge_proxy_event_send_failures", "Failed attempts to send an event to the bus (retried or dropped)."
)
PROXY_EVENTS_BUFFERED = Gauge("aibridge_proxy_events_buffered", "Interception events waiting to be published.")

# ---- recorder ----------------------------------------------------------------------------------

# ---- api ---------------------------------------------------------------------------------------

__all__ = ["Counter", "Gauge", "Histogram"]
