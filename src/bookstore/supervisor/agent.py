"""One host's agent: runs its region (`region serve`) as a child, kills or starts it on the operator's word.

What systemd is to a region on a real host, and the hand the drills need where no supervisor runs the
topology (`supervised = false`): `bookstore region agent --region R` starts the region and serves, on the
region's address and its `agent_port`, POST /agent/kill (SIGKILL: a crash), POST /agent/start (answers
once the region is healthy) and GET /agent/status. It restarts nothing by itself. Every request must
be signed as the operator with the deployment's secret (kernel/auth.py, as the region's fault switches):
anything else is refused with 401/403 JSON before it is read. With [tls] on it serves the host's
certificate, as the region does. The client and paths are bookstore.runtime.agents.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from bookstore.config import Topology
from bookstore.kernel.auth import PeerAuthMiddleware
from bookstore.kernel.clock import SystemClock
from bookstore.kernel.http import error_response, json_response
from bookstore.runtime import logs, tls
from bookstore.runtime.agents import PREFIX
from bookstore.runtime.secret import deployment_secret
from bookstore.runtime.switches import OPERATOR
from bookstore.supervisor.children import die_with_parent
from bookstore.supervisor.processes import control_server, end, region_command, wait_healthy

log = logging.getLogger("bookstore.agent")


class Agent:
    """The host's region as a child process; every method runs on the agent's event loop."""

    def __init__(
        self, topology: Topology, region_id: str, data_dir: Path, topology_file: Path | None
    ) -> None:
        self.topology = topology
        self.region = topology.region(region_id)
        self.data_dir = data_dir
        self.topology_file = topology_file
        self.process: asyncio.subprocess.Process | None = None
        self.verify = tls.verify(topology, data_dir)
        # One start at a time. A kill takes no turn: it ends a start that waits for a region that never
        # becomes healthy (that start then answers that the region exited).
        self.starting = asyncio.Lock()

    async def start(self) -> dict[str, Any]:
        async with self.starting:
            if not self.running:
                cmd = region_command(self.region.id, self.data_dir, self.topology_file)
                env = {**os.environ, "PYTHONUNBUFFERED": "1"}
                self.process = await asyncio.create_subprocess_exec(*cmd, env=env, preexec_fn=die_with_parent)
                await wait_healthy(self.region, self.process, verify=self.verify)
                log.info("region %s started (pid %d)", self.region.id, self.process.pid)
            return self.state()

    async def kill(self, sig: int = signal.SIGKILL) -> dict[str, Any]:
        if self.process is not None and self.running:
            await end(self.process, sig)
            log.info("region %s %s", self.region.id, "killed" if sig == signal.SIGKILL else "stopped")
        return self.state()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    def state(self) -> dict[str, Any]:
        process = self.process
        return {
            "regionId": self.region.id,
            "running": self.running,
            "pid": process.pid if process is not None and self.running else None,
            "exitCode": None if process is None or self.running else process.returncode,
        }


def agent_app(agent: Agent, secret: str) -> ASGIApp:
    """The agent's HTTP surface: every path signed as the operator, or refused before it is read."""

    async def act(request: Request) -> Response:
        if getattr(request.state, "peer_region", None) != OPERATOR:
            return error_response(403, "Forbidden", "only the operator asks an agent")
        action = request.path_params["action"]
        if (request.method, action) == ("GET", "status"):
            return json_response(agent.state())
        if (request.method, action) == ("POST", "kill"):
            return json_response(await agent.kill())
        if (request.method, action) == ("POST", "start"):
            try:
                return json_response(await agent.start())
            except RuntimeError as exc:  # the region exited while starting, or never answered
                return error_response(503, "Unavailable", str(exc))
        return error_response(404, "NotFound", "POST /agent/kill, POST /agent/start or GET /agent/status")

    app = Starlette(routes=[Route(PREFIX + "{action}", act, methods=["GET", "POST"])])
    # Protects every path, so an unsigned request learns nothing, not even which paths exist.
    return PeerAuthMiddleware(app, secret, SystemClock(), destination=agent.region.id, protected_prefix="/")


async def _run(agent: Agent, secret: str) -> None:
    region = agent.region
    assert region.agent_port is not None
    material = tls.uvicorn_settings(tls.tls_files(agent.topology, agent.data_dir))
    server = control_server(agent_app(agent, secret), region.listen_address, region.agent_port, **material)
    serving = asyncio.create_task(server.serve())
    # Beside serving, so that a stop while the region starts (or never becomes healthy) is not held up.
    starting = asyncio.create_task(_first_start(agent))
    log.info("agent of %s at %s", region.id, region.agent_url)
    try:
        await serving
    finally:
        server.should_exit = True
        starting.cancel()
        await agent.kill(signal.SIGTERM)
        if not serving.done():
            await serving


async def _first_start(agent: Agent) -> None:
    try:
        await agent.start()
    except RuntimeError as exc:
        # Still serving: the operator sees it in the status and may ask for a start again.
        log.error("region %s did not start: %s", agent.region.id, exc)


def serve(topology: Topology, region_id: str, data_dir: Path, topology_file: Path | None) -> None:
    """Run the region as the agent's child and serve the agent until SIGINT/SIGTERM (which stop both)."""
    logs.configure(f"{region_id}-agent", log_format=topology.observability.log_format)
    agent = Agent(topology, region_id, data_dir, topology_file)
    asyncio.run(_run(agent, deployment_secret(data_dir)))
