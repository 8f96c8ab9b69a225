"""Attacks on a host's agent (kill, start, status of its region): only the operator's signature is obeyed."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx

from bookstore.config import Topology
from bookstore.kernel.auth import PeerAuth
from bookstore.kernel.clock import SystemClock
from bookstore.runtime.switches import OPERATOR
from bookstore.supervisor.agent import Agent, agent_app

EU = "eu-west-1"
SECRET = "the deployment's secret"


def attack(tmp_path: Path) -> dict[str, tuple[int, str]]:
    """Every kind of request to an agent whose child is alive; what each got, and the child's fate."""
    agent = Agent(Topology(), EU, tmp_path, None)
    app = agent_app(agent, SECRET)
    clock = SystemClock()
    seen: dict[str, tuple[int, str]] = {}

    async def scenario() -> None:
        # A real child in the region's place: what a kill would end.
        agent.process = await asyncio.create_subprocess_exec("sleep", "60")
        transport = httpx.ASGITransport(app=app)
        url = "http://agent"

        async def ask(name: str, auth: httpx.Auth | None, path: str = "/agent/kill") -> httpx.Response:
            async with httpx.AsyncClient(transport=transport, base_url=url, auth=auth) as client:
                answer = await client.post(path)
            seen[name] = (answer.status_code, answer.json()["error"] if answer.status_code != 200 else "")
            return answer

        await ask("unsigned", None)
        await ask("wrong secret", PeerAuth("not the secret", OPERATOR, clock, destination=EU))
        await ask("peer region", PeerAuth(SECRET, "ap-southeast-1", clock, destination=EU))
        await ask("other destination", PeerAuth(SECRET, OPERATOR, clock, destination="ap-southeast-1"))
        await ask("unknown path", None, "/")
        # The operator's own request, replayed word for word, is obeyed once.
        signed = httpx.Request("GET", url + "/agent/status")
        flow = PeerAuth(SECRET, OPERATOR, clock, destination=EU).auth_flow(signed)
        headers = dict(next(flow).headers)
        async with httpx.AsyncClient(transport=transport, base_url=url) as client:
            first = await client.get("/agent/status", headers=headers)
            again = await client.get("/agent/status", headers=headers)
        seen["status"] = (first.status_code, str(first.json()["running"]))
        seen["replayed"] = (again.status_code, again.json()["error"])
        seen["still running"] = (0, str(agent.process.returncode is None))
        await ask("operator", PeerAuth(SECRET, OPERATOR, clock, destination=EU))
        seen["killed"] = (0, str(agent.process.returncode))

    asyncio.run(scenario())
    return seen


def test_only_the_operator_s_signed_request_kills_the_region(tmp_path: Path) -> None:
    seen = attack(tmp_path)
    assert seen["unsigned"] == (401, "Unauthorized")
    assert seen["wrong secret"] == (403, "Forbidden")
    assert seen["peer region"] == (403, "Forbidden")
    assert seen["other destination"] == (403, "Forbidden")
    assert seen["unknown path"] == (401, "Unauthorized")
    assert seen["status"] == (200, "True")
    assert seen["replayed"] == (401, "Unauthorized")
    # None of the refused kills reached the child; the operator's did.
    assert seen["still running"] == (0, "True")
    assert seen["operator"] == (200, "")
    assert seen["killed"] == (0, str(-signal.SIGKILL))
