"""The edge's status as JSON (/edge/status) and as tables (`bookstore status`)."""

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


def _when(ms: Any, now_ms: int) -> str:
    if not isinstance(ms, int):
        return "-"
    clock = time.strftime("%H:%M:%S", time.localtime(ms / 1000)) + f".{ms % 1000:03d}"
    return f"{clock} ({(now_ms - ms) / 1000:.1f} s ago)"


def render_edge(report: dict[str, Any]) -> None:
    """Tables for `bookstore status`: targets, records' answers, counters."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    edge = report.get("edge", {})
    now = int(edge.get("nowMs") or time.time() * 1000)
    check = edge.get("healthCheck", {})
    title = (
        f"Edge {edge.get('url')} health checks (GET {check.get('path')} every {check.get('interval_s')} s, "
        f"timeout {check.get('timeout_s')} s, thresholds {check.get('failure_threshold')}/"
        f"{check.get('success_threshold')}, preset {edge.get('healthPreset')})"
    )
    targets = Table("target", "health", "since", "last check", "breaker", "changes", title=title)
    for t in report.get("targets", []):
        health = {True: "[green]healthy[/green]", False: "[red]unhealthy[/red]"}.get(t["healthy"], "unknown")
        last = t.get("lastCheck") or {}
        breaker = t.get("breaker") or {}
        targets.add_row(
            t["id"],
            health,
            _when(t.get("sinceMs"), now),
            escape(str(last.get("reason", "-"))),
            f"[red]open[/red] {escape(str(breaker.get('reason') or ''))}"
            if breaker.get("open")
            else "closed",
            str(len(t.get("changes", []))),
        )
    console.print(targets)
    routing = report.get("routing", {})
    records = Table("record", "policy", "answer now", "order", title="Edge records")
    api = routing.get("records", {}).get("api", {})
    for client, order in api.get("answers", {}).items():
        records.add_row(
            f"/api (client in {client})", "latency", order[0] if order else "-", " > ".join(order)
        )
    for name in ("blog", "static"):
        rec = routing.get("records", {}).get(name, {})
        order = rec.get("order", [])
        label = "/blog" if name == "blog" else "static (origin group)"
        records.add_row(label, rec.get("policy", ""), order[0] if order else "-", " > ".join(order))
    console.print(records)
    c = report.get("counters", {})
    dns = edge.get("dns", {})
    dns_text = f"DNS {dns.get('address')} " + (
        "listening" if dns.get("listening") else f"off ({dns.get('error')})"
    )
    console.print(
        f"Edge: {c.get('requests', 0)} requests, {c.get('retries', 0)} retried, "
        f"{c.get('failovers', 0)} failed over, "
        f"{c.get('failed', 0)} failed, {c.get('refused', 0)} refused; record answer changes: "
        f"{sum(routing.get('recordFailovers', {}).values())}; {dns_text}"
    )
