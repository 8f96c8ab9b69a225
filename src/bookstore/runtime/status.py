"""`bookstore status`: one view of the running system, gathered from the regions and the control API."""

from __future__ import annotations

from typing import Any

import httpx

from bookstore.blog.replication import overview as blog_overview
from bookstore.blog.replication import render_overview as render_blog
from bookstore.config import Topology
from bookstore.runtime.control import operator_headers


def _get(client: httpx.Client, url: str, headers: dict[str, str] | None = None) -> Any:
    try:
        response = client.get(url, headers=headers)
        return response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


def collect(topology: Topology, token: str | None) -> dict[str, Any]:
    """Health and replication of every region, read directly from each (not through the links);
    the supervisor's and the edge's parts with the operator token (none without it)."""
    operator = operator_headers(token) if token else None
    with httpx.Client(timeout=2.0) as client:
        control = links = edge = None
        if operator is not None:
            control = _get(client, f"{topology.control_url}/regions", operator)
            links = _get(client, f"{topology.control_url}/links", operator)
            if topology.edge.enabled:
                edge = _get(client, f"{topology.edge.url}/edge/status", operator)
        regions = []
        pairs = []
        objects: list[dict[str, Any]] = []
        blog: dict[str, Any] = {}
        for region in topology.regions:
            status = _get(client, f"{region.api_url}/status")
            blog[region.id] = (status or {}).get("blog")
            replication = (status or {}).get("replication") or {}
            regions.append(
                {
                    "regionId": region.id,
                    "name": region.name,
                    "apiUrl": region.api_url,
                    "healthy": status is not None,
                    # A region of the topology that `up` does not start (until `bookstore region start`).
                    "active": region.id in topology.active,
                    "conflicts": replication.get("conflicts"),
                    "consumers": (status or {}).get("consumers"),
                }
            )
            objects.extend(_object_pairs(region.id, (status or {}).get("objects")))
            lags = replication.get("lag", {})
            for peer, state in replication.get("peers", {}).items():
                lag = lags.get(peer, {})
                pairs.append(
                    {
                        "source": peer,
                        "destination": region.id,
                        "connected": state.get("connected"),
                        # False while the source's clock (or a change it sent) runs too far ahead.
                        "followed": state.get("followed", True),
                        "clockOffsetMs": state.get("clockOffsetMs"),
                        "notFollowed": state.get("notFollowed"),
                        "pending": state.get("pending"),
                        "checkpoint": state.get("checkpoint"),
                        "lagP50Ms": lag.get("p50Ms"),
                        "lagP99Ms": lag.get("p99Ms"),
                        "samples": lag.get("count"),
                    }
                )
    return {
        "supervisor": control is not None,
        "processes": (control or {}).get("regions"),
        "regions": regions,
        "replication": pairs,
        "objects": objects,
        "blog": blog_overview(blog),
        "links": (links or {}).get("links"),
        "edge": edge,
    }


def _object_pairs(source: str, objects: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Object replication from `source`, per destination; the pending figures are the source's."""
    if not objects:
        return []
    pending = objects.get("pending") or {}
    failures = objects.get("recentFailures") or []
    out = []
    for destination, state in (objects.get("destinations") or {}).items():
        latency = state.get("latency") or {}
        out.append(
            {
                "source": source,
                "destination": destination,
                "pendingOperations": pending.get("operations"),
                "pendingBytes": pending.get("bytes"),
                "reachable": state.get("reachable"),
                "completed": state.get("completed"),
                "failed": state.get("failed"),
                "latencyP50Ms": latency.get("p50Ms"),
                "latencyP99Ms": latency.get("p99Ms"),
                "lastError": state.get("lastError"),
                "recentFailures": [f for f in failures if destination in str(f.get("destination", ""))],
            }
        )
    return out


def render(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    regions = Table("region", "name", "health", "conflicts", "api", title="Regions")
    for r in report["regions"]:
        health = (
            "[green]healthy[/green]"
            if r["healthy"]
            else "[red]down[/red]"
            if r.get("active", True)
            else "[dim]not started[/dim]"
        )
        regions.add_row(r["regionId"], r["name"], health, _text(r["conflicts"]), r["apiUrl"])
    console.print(regions)
    pairs = Table(
        "source -> destination",
        "link",
        "pending",
        "lag p50 ms",
        "lag p99 ms",
        "checkpoint",
        title="Table replication (lag over the last minute)",
    )
    for p in report["replication"]:
        link = "[green]following[/green]" if p["connected"] else "[red]not following[/red]"
        if p.get("followed") is False:
            held = p.get("notFollowed") or {}
            link = f"[red]not following: clock {_text(held.get('offsetMs'))} ms ahead[/red]"
        pairs.add_row(
            f"{p['source']} -> {p['destination']}",
            link,
            _text(p["pending"]),
            _text(p["lagP50Ms"]),
            _text(p["lagP99Ms"]),
            _text(p["checkpoint"]),
        )
    console.print(pairs)
    if report.get("objects"):
        render_objects(report["objects"])
    if report.get("blog"):
        render_blog(report["blog"])
    if report.get("edge"):
        from bookstore.edge.status import render_edge

        render_edge(report["edge"])
    if report["links"]:
        render_links(report["links"])
    elif not report["supervisor"]:
        console.print("[yellow]no supervisor answers: links and process control are unavailable[/yellow]")


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.0f}" if value >= 10 else f"{value:.1f}"
    return str(value)


def render_objects(pairs: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    table = Table(
        "source -> destination",
        "pending (source)",
        "pending bytes",
        "latency p50 ms",
        "latency p99 ms",
        "completed",
        "failed",
        "last error",
        title="Object replication (latency: write to copy acknowledged, last minute)",
    )
    for p in pairs:
        error = escape(p["lastError"] or "")
        if p["reachable"] is False:
            error = f"[red]{error or 'unreachable'}[/red]"
        table.add_row(
            f"{p['source']} -> {p['destination']}",
            _text(p["pendingOperations"]),
            _text(p["pendingBytes"]),
            _text(p["latencyP50Ms"]),
            _text(p["latencyP99Ms"]),
            _text(p["completed"]),
            _text(p["failed"]),
            error,
        )
    console.print(table)
    for p in pairs:
        for f in p["recentFailures"]:
            what = escape(f"{f['bucket']}/{f['key']} {f['versionId']} -> {f['destination']}: {f['reason']}")
            console.print(f"[red]FAILED[/red] {what}")


def render_links(links: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("link", "delay ms", "jitter ms", "loss", "state", title="Links")
    for link in links:
        state = "[red]cut[/red]" if link.get("cut") else "[green]up[/green]"
        table.add_row(
            f"{link['src']} -> {link['dst']}",
            _text(link.get("delayMs")),
            _text(link.get("jitterMs")),
            _text(link.get("loss")),
            state,
        )
    Console().print(table)


def render_credentials(info: dict[str, Any]) -> None:
    """Where the deployment's credentials are, and the commands that use them (no secret is printed)."""
    from rich.console import Console
    from rich.markup import escape

    console = Console()
    console.print("[bold]Credentials[/bold] (this deployment's own)")
    if info.get("s3AccessKeyId"):
        console.print(f"  S3 access key id {escape(info['s3AccessKeyId'])} ({escape(info['s3Credentials'])})")
    else:
        console.print(f"  no S3 credentials at {escape(info['s3Credentials'])}: not this system's data dir?")
    console.print('  eval "$(bookstore aws-env)" points the aws CLI at it with the secret key')
    console.print(
        f"  operator token in {escape(info['operatorToken'])}; rotate with `bookstore secrets rotate`"
    )
    if info.get("operatorLink"):
        console.print(f"  operator page, one-time sign-in: {escape(info['operatorLink'])}", soft_wrap=True)
