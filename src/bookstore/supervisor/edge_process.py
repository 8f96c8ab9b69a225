"""The edge as the supervisor's child: started after the regions, started again if it dies, stopped last.

`bookstore up` runs the edge as a process of its own (`bookstore edge serve`); the control API's
GET /edge answers `EdgeProcess.state()`.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import Any

import httpx

from bookstore.config import Topology
from bookstore.runtime.operator import operator_headers
from bookstore.supervisor.children import die_with_parent

log = logging.getLogger("bookstore.supervisor.edge")
STOP_GRACE_S = 10.0
RESTART_DELAY_S = 1.0


def edge_command(topology_file: Path | None) -> list[str]:
    cmd = [sys.executable, "-m", "bookstore", "edge", "serve"]
    if topology_file is not None:
        cmd += ["--topology", str(topology_file)]
    return cmd


class EdgeProcess:
    """Owns the edge process; runs on the supervisor's event loop."""

    def __init__(
        self, topology: Topology, topology_file: Path | None, env: dict[str, str], token: str
    ) -> None:
        self.topology = topology
        self.topology_file = topology_file
        self.env = env
        self.token = token
        self.process: asyncio.subprocess.Process | None = None
        self.stopping = False
        self.restarts = 0
        self._watcher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if not self.topology.edge.enabled:
            return
        self.process = await asyncio.create_subprocess_exec(
            *edge_command(self.topology_file), env=self.env, preexec_fn=die_with_parent
        )
        log.info("edge started (pid %d) at %s", self.process.pid, self.topology.edge.url)
        self._watcher = asyncio.create_task(self._watch(self.process))

    async def _watch(self, process: asyncio.subprocess.Process) -> None:
        """An edge that dies (not stopped by the supervisor) is started again after a second."""
        code = await process.wait()
        if self.stopping:
            return
        log.warning("the edge exited with code %s; starting it again", code)
        await asyncio.sleep(RESTART_DELAY_S)
        if not self.stopping:
            self.restarts += 1
            await self.start()

    async def wait_ready(self, regions: list[str], timeout_s: float = 30.0) -> None:
        """Return once the edge answers and sees every running region's API healthy (or time is up)."""
        if self.process is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        url = f"{self.topology.edge.url}/edge/status"
        async with httpx.AsyncClient(timeout=1.0, headers=operator_headers(self.token)) as client:
            while loop.time() < deadline:
                if self.process.returncode is not None:
                    log.error("the edge exited with code %s", self.process.returncode)
                    return
                try:
                    answer = await client.get(url)
                    if answer.status_code == 200:
                        status = answer.json()
                        healthy = {
                            t["regionId"] for t in status["targets"] if t["kind"] == "api" and t["healthy"]
                        }
                        if status["edge"]["ready"] and set(regions) <= healthy:
                            return
                except (httpx.HTTPError, ValueError, KeyError):
                    pass
                await asyncio.sleep(0.1)
        log.warning("the edge did not see every region healthy within %.0f s", timeout_s)

    async def stop(self) -> None:
        self.stopping = True
        process = self.process
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), timeout=STOP_GRACE_S)
        except TimeoutError:
            process.kill()
            await process.wait()

    def state(self) -> dict[str, Any]:
        process = self.process
        running = process is not None and process.returncode is None
        edge = self.topology.edge
        return {
            "enabled": edge.enabled,
            "url": edge.url,
            "dns": f"{edge.dns_address}:{edge.dns_port}",
            "running": running,
            "pid": process.pid if process is not None and running else None,
            "exitCode": None if process is None or running else process.returncode,
            "restarts": self.restarts,
        }

    def banner(self) -> str:
        edge = self.topology.edge
        if not edge.enabled:
            return "The edge is disabled in the topology."
        return (
            f"Edge {edge.url} (/api/..., /blog/..., the storefront; status at /edge/status), "
            f"DNS {edge.dns_address}:{edge.dns_port} for {edge.zone}."
        )
