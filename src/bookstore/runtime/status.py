"""`bookstore status`: one view of the running system, gathered from the regions and the control API.

Only the gathering: the command line renders the report (cli/render.py), the edge serves it as JSON.
"""

from __future__ import annotations

import ssl
from typing import Any

import httpx

from bookstore.config import Topology
from bookstore.replication.blog.operator import overview as blog_overview
from bookstore.runtime.operator import operator_headers


def _get(client: httpx.Client, url: str, headers: dict[str, str] | None = None) -> Any:
    try:
        response = client.get(url, headers=headers)
        return response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


def collect(topology: Topology, token: str | None, verify: ssl.SSLContext | bool = True) -> dict[str, Any]:
    """Health and replication of every region, read directly from each (not through the links);
    the supervisor's and the edge's parts with the operator token (none without it). `verify`: the
    deployment's CA with TLS between hosts (runtime.tls.verify)."""
    operator = operator_headers(token) if token else None
    with httpx.Client(timeout=2.0, verify=verify) as client:
        control = links = edge = None
        if operator is not None:
            # Without a supervisor (regions on their own hosts) there is no control API to ask.
            if topology.supervised:
                control = _get(client, f"{topology.control_url}/regions", operator)
                links = _get(client, f"{topology.control_url}/links", operator)
            if topology.edge.enabled:
                edge = _get(client, f"{topology.edge.url}/edge/status", operator)
        regions = []
        pairs = []
        objects: list[dict[str, Any]] = []
        blog: dict[str, Any] = {}
        native: dict[str, Any] = {}
        for region in topology.regions:
            status = _get(client, f"{region.api_url}/status")
            blog[region.id] = (status or {}).get("blog")
            if (status or {}).get("native"):
                native[region.id] = status["native"]
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
        "supervised": topology.supervised,
        "supervisor": control is not None,
        "processes": (control or {}).get("regions"),
        "regions": regions,
        "replication": pairs,
        "objects": objects,
        "blog": blog_overview(blog),
        "links": (links or {}).get("links"),
        "edge": edge,
        # The engines that replicate by themselves (DynamoDB, S3, Redis), per region, and what they miss.
        "native": native,
        "warnings": [
            f"{region}: {w}" for region, report in native.items() for w in report.get("warnings", [])
        ],
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
