"""The control API's calls a drill makes, answered on a topology without a supervisor by the hosts themselves.

A region's agent kills and starts it (runtime.agents), the two regions of a link cut each other off with
their own fault switch (`cut`; healing lifts it), a link's delay is what its source region adds to what
it sends the other (`slow`; 0 lifts it: no simulator runs, the hosts' network has a delay of its own that
nothing reads), the regions promote the blog (as `bookstore blog promote`), and the other switches go to
the region they name (runtime.switches.switches_of). Every request is signed as the operator with the
deployment's secret.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bookstore.config import Topology
from bookstore.kernel.clock import SystemClock
from bookstore.replication.blog.operator import Operator
from bookstore.runtime import tls
from bookstore.runtime.agents import ACTIONS, agent_call
from bookstore.runtime.secret import operator_secret
from bookstore.runtime.switches import switch_faults, switches_of


async def ask_hosts(
    topology: Topology, data_dir: Path, method: str, path: str, body: Mapping[str, Any]
) -> Any:
    """What the control API would answer to `method path body`, asked of the hosts; RuntimeError for a
    call only the supervisor can answer (a link's jitter or loss: no simulator runs)."""
    if (method, path) == ("GET", "/links"):
        # The hosts' own network: no simulated link whose delay the drill could read.
        return {"links": []}
    secret, verify, clock = operator_secret(data_dir), tls.verify(topology, data_dir), SystemClock()
    parts = path.strip("/").split("/")
    if method == "POST" and len(parts) == 3 and parts[0] == "regions" and parts[2] in ACTIONS:
        return await agent_call(topology.region(parts[1]), parts[2], secret, clock, verify=verify)
    if (
        method == "POST"
        and len(parts) == 3
        and parts[0] == "links"
        and set(body) <= {"cut", "both", "delayMs"}
    ):
        # Each side's switches: a cut one's clients do not reach the other, nor does it take what the other
        # sends; a slowed one sends the other everything late.
        a, b = parts[1], parts[2]
        sides = ((a, b), (b, a)) if body.get("both") else ((a, b),)
        for here, there in sides:
            region = topology.region(here)
            state = await switch_faults(region.api_url, here, secret, clock, {}, verify=verify)
            wanted: dict[str, list[str] | dict[str, int]] = {}
            if "cut" in body:
                cut = set(state["cut"]) | {there} if body["cut"] else set(state["cut"]) - {there}
                wanted["cut"] = sorted(cut)
            if "delayMs" in body:
                wanted["slow"] = {**state["slow"], there: round(body["delayMs"])}
            await switch_faults(region.api_url, here, secret, clock, wanted, verify=verify)
        return {"src": a, "dst": b, **body}
    if method == "POST" and len(parts) == 3 and parts[:2] == ["blog", "promote"]:
        urls = {r.id: r.api_url for r in topology.regions}

        def promote() -> dict[str, Any]:
            with Operator(urls, secret, clock, verify=verify) as operator:
                return operator.promote(parts[2], force=bool(body.get("force")))

        return await asyncio.to_thread(promote)
    asked = switches_of(method, path, body)
    if asked is None:
        raise RuntimeError(f"{method} {path} needs the supervisor, which this topology has none of")
    region_id, switches = asked
    region = topology.region(region_id)
    return await switch_faults(region.api_url, region.id, secret, clock, switches, verify=verify)
