"""The edge's status as JSON (/edge/status); `bookstore status` renders it (cli/render.py)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bookstore.edge.app import EdgeApp


def edge_status(app: EdgeApp) -> dict[str, Any]:
    """Health per target with every state change, the current answer per record, the counters."""
    edge = app.settings
    return {
        "edge": {
            "url": edge.url,
            "ready": app.ready,
            "startedMs": app.started_ms,
            "nowMs": int(time.time() * 1000),
            "zone": edge.zone,
            "dns": {**app.dns_state, "ttlS": edge.dns_ttl_s},
            "healthPreset": edge.health_preset if edge.health is None else "custom",
            "healthCheck": app.health.model_dump(),
            "retry": edge.retry,
            "breaker": edge.breaker,
        },
        "targets": [t.json() for t in app.checker.targets.values()],
        "routing": app.routing.json(),
        "counters": app.counters.json(),
    }
