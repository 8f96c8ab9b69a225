"""A host's agent as callers see it: its paths, the operator's signature, its client (kill, start, status).

The agent (bookstore.supervisor.agent) runs its host's region as a child, as systemd would, and kills or
starts it when the operator asks; the drills ask it where no supervisor runs the topology. Both share
this contract, not each other.
"""

from __future__ import annotations

import ssl
from typing import Any, Final

import httpx

from bookstore.config import Region
from bookstore.kernel.auth import PeerAuth
from bookstore.ports import Clock
from bookstore.runtime.switches import OPERATOR

PREFIX: Final = "/agent/"
ACTIONS: Final = ("kill", "start")
# A start answers once the region is healthy: a region catching up takes a while.
START_TIMEOUT_S = 120.0


class NoAgent(Exception):
    """The region has no agent in the topology (no agent_port)."""


async def agent_call(
    region: Region, action: str, secret: str, clock: Clock, *, verify: ssl.SSLContext | bool = True
) -> dict[str, Any]:
    """POST /agent/kill or /agent/start, or GET /agent/status ("status"), of `region`'s agent, signed as the
    operator; its state ({"regionId", "running", "pid", "exitCode"}).

    Raises NoAgent without one, httpx.HTTPError when it does not answer, RuntimeError when it refuses.
    """
    if region.agent_url is None:
        raise NoAgent(f"{region.id} has no agent (agent_port in its [[regions]] table)")
    method = "GET" if action == "status" else "POST"
    async with httpx.AsyncClient(
        auth=PeerAuth(secret, OPERATOR, clock, destination=region.id), timeout=START_TIMEOUT_S, verify=verify
    ) as client:
        answer = await client.request(method, region.agent_url + PREFIX + action)
    if answer.status_code != 200:
        raise RuntimeError(
            f"the agent of {region.id} refused {action}: {answer.status_code} {answer.text[:300]}"
        )
    state: dict[str, Any] = answer.json()
    return state
