"""Every Prometheus metric of every service, declared once, prefixed ``aibridge_``, units in the names.

Sections per component; a process registers only what it uses because all metrics live in the
default registry and are exported by whichever component serves ``/metrics``.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# ---- proxy -------------------------------------------------------------------------------------

# ---- recorder ----------------------------------------------------------------------------------

# ---- api ---------------------------------------------------------------------------------------

__all__ = ["Counter", "Gauge", "Histogram"]
