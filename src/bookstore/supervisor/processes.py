"""`bookstore up`: the regions as processes of their own, the link simulator between them, a control API.

The supervisor is the operator's hand on the system: it starts each region with its own data directory
and address, carries all traffic between regions through the link simulator, and serves the control
API (regions: kill, stop, start; links: cut, heal, delay) that the `bookstore` commands call. The
control API answers only to the operator token, never to a browser (bookstore.runtime.operator).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import ssl
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.types import ASGIApp

from bookstore.config import Region, Topology
from bookstore.netsim.simulator import LinkSimulator
from bookstore.runtime.listeners import Limits, server_config
from bookstore.runtime.operator import LOGIN_TTL_S, login_link
from bookstore.runtime.secret import TOKEN_FILE, Credentials
from bookstore.supervisor.children import die_with_parent
from bookstore.supervisor.control import control_app
from bookstore.supervisor.edge_process import EdgeProcess
from bookstore.supervisor.faults import FaultSwitches

log = logging.getLogger("bookstore.supervisor")
STOP_GRACE_S = 10.0
# Printed once every region is healthy and what `up` prepares is ready: launchers wait for it.
BANNER = "The Bookstore is up"


def region_command(region_id: str, data_dir: Path, topology_file: Path | None) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "bookstore",
        "region",
        "serve",
        "--region",
        region_id,
        "--data-dir",
        str(data_dir),
    ]
    if topology_file is not None:
        cmd += ["--topology", str(topology_file)]
    return cmd


async def wait_healthy(
    region: Region,
    process: asyncio.subprocess.Process,
    timeout_s: float = 90.0,
    verify: ssl.SSLContext | bool = True,
) -> None:
    """Return once the region answers /health; raise if its process exits or time runs out (`verify`:
    the deployment's CA with TLS between hosts)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    async with httpx.AsyncClient(timeout=1.0, verify=verify) as client:
        while loop.time() < deadline:
            if process.returncode is not None:
                raise RuntimeError(f"region {region.id} exited with code {process.returncode} while starting")
            try:
                if (await client.get(f"{region.api_url}/health")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"region {region.id} did not answer {region.api_url}/health within {timeout_s:.0f} s")


async def end(process: asyncio.subprocess.Process, sig: int = signal.SIGKILL) -> None:
    """Send `sig` to a running child (SIGKILL: a crash; SIGTERM: a clean stop, SIGKILL after the grace)."""
    process.send_signal(sig)
    try:
        await asyncio.wait_for(process.wait(), timeout=STOP_GRACE_S)
    except TimeoutError:
        process.kill()
        await process.wait()


class Supervisor:
    """Owns the region processes and the links; every method runs on the supervisor's event loop."""

    def __init__(
        self,
        topology: Topology,
        data_dir: Path,
        topology_file: Path | None,
        regions: list[str],
        credentials: Credentials,
    ) -> None:
        self.topology = topology
        self.data_dir = data_dir
        self.topology_file = topology_file
        self.regions = regions
        self.credentials = credentials
        # The children get the credentials this supervisor loaded, whatever their files say meanwhile.
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **credentials.env()}
        self.processes: dict[str, asyncio.subprocess.Process] = {}
        self.links = LinkSimulator(topology)
        self.edge = EdgeProcess(topology, topology_file, self.env, credentials.operator_token)
        self.faults = FaultSwitches(topology, credentials.secret)
        self._watchers: set[asyncio.Task[None]] = set()

    async def start_region(self, region_id: str) -> dict[str, Any]:
        region = self.topology.region(region_id)
        current = self.processes.get(region_id)
        if current is not None and current.returncode is None:
            return self.region_state(region_id)
        cmd = region_command(region_id, self.data_dir, self.topology_file)
        process = await asyncio.create_subprocess_exec(*cmd, env=self.env, preexec_fn=die_with_parent)
        self.processes[region_id] = process
        watcher = asyncio.create_task(self._watch(region_id, process))
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)
        await wait_healthy(region, process)
        await self.faults.region_started(region_id)
        log.info("region %s started (pid %d)", region_id, process.pid)
        return self.region_state(region_id)

    async def _watch(self, region_id: str, process: asyncio.subprocess.Process) -> None:
        code = await process.wait()
        if code not in (0, -signal.SIGTERM, -signal.SIGKILL):
            log.warning("region %s exited with code %s", region_id, code)

    async def kill_region(self, region_id: str, sig: int = signal.SIGKILL) -> dict[str, Any]:
        """SIGKILL (a crash: nothing flushed, nothing said) or SIGTERM (a clean stop)."""
        self.topology.region(region_id)
        process = self.processes.get(region_id)
        if process is not None and process.returncode is None:
            await end(process, sig)
            log.info("region %s %s", region_id, "killed" if sig == signal.SIGKILL else "stopped")
        return self.region_state(region_id)

    def region_state(self, region_id: str) -> dict[str, Any]:
        region = self.topology.region(region_id)
        process = self.processes.get(region_id)
        running = process is not None and process.returncode is None
        return {
            "regionId": region_id,
            "name": region.name,
            "apiUrl": region.api_url,
            "running": running,
            "pid": process.pid if process is not None and running else None,
            "exitCode": None if process is None or running else process.returncode,
        }

    async def stop_all(self) -> None:
        await asyncio.gather(*(self.kill_region(r, signal.SIGTERM) for r in list(self.processes)))

    async def run(self) -> None:
        await self.links.start()
        app = control_app(
            self.topology, self.credentials.operator_token, self, self.edge, self.faults, self.links
        )
        # Ctrl-C and SIGTERM end `serve()`; the finally below then stops every region.
        server = control_server(app, self.topology.control_address, self.topology.control_port)
        serving = asyncio.create_task(server.serve())
        try:
            # Each start-up step says so on stderr: the first start takes a while.
            log.info("starting regions %s (until each answers /health)", ", ".join(self.regions))
            await asyncio.gather(*(self.start_region(r) for r in self.regions))
            # The edge starts while the buckets are prepared; its first checks find the regions up.
            log.info("starting the edge; preparing the storefront's buckets and files")
            await self.edge.start()
            await self._prepare_objects()
            log.info("waiting for the edge's first health checks")
            await self.edge.wait_ready(self.regions)
            self._banner()
            await serving
        finally:
            server.should_exit = True
            await self.edge.stop()
            await self.stop_all()
            await self.links.stop()
            if not serving.done():
                await serving

    async def _prepare_objects(self) -> None:
        """The regions' storefront buckets and replication rule, as the seed makes them, and the files."""
        from bookstore.domain.errors import BookstoreError
        from bookstore.objectstore.setup import prepare_buckets, publish

        access = self.topology.s3 or self.credentials.s3
        try:
            await asyncio.to_thread(prepare_buckets, self.topology, self.regions, access)
            await asyncio.to_thread(publish, self.topology, access)
        except BookstoreError as exc:
            log.warning("storefront buckets not ready: %s; `bookstore publish` retries", exc.message)

    def _banner(self) -> None:
        print(f"\n{BANNER}:", flush=True)
        for region_id in self.regions:
            region = self.topology.region(region_id)
            print(f"  {region.flag}  {region.name:<12} {region.id:<15} {region.api_url}/books", flush=True)
        print(self.edge.banner(), flush=True)
        if self.topology.edge.enabled:
            link = login_link(self.topology.edge.url, self.credentials.operator_token)
            print(f"Operator page (a one-time sign-in link, for {LOGIN_TTL_S // 60} min): {link}", flush=True)
        print(
            f"Control API {self.topology.control_url} (operator token in "
            f"{(self.data_dir / TOKEN_FILE).resolve()}). Data in {self.data_dir.resolve()}.",
            flush=True,
        )
        print("Try `bookstore status`. Ctrl-C stops everything.\n", flush=True)


def control_server(app: ASGIApp, host: str, port: int, **settings: Any) -> QuietServer:
    """An operator's listener (the control API, a host's agent) that SIGINT and SIGTERM end, so that its
    owner stops its children after; made on the running loop."""
    server = QuietServer(
        server_config(app, limits=Limits(keep_alive_s=5), host=host, port=port, lifespan="off", **settings)
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, setattr, server, "should_exit", True)
    return server


class QuietServer(uvicorn.Server):
    """The control API's server; it leaves signals to the supervisor, which must stop the regions first.

    (uvicorn's own handling re-raises the signal after serving, killing the supervisor before its
    regions are stopped.)
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def up(
    topology: Topology,
    data_dir: Path,
    topology_file: Path | None,
    regions: list[str],
    credentials: Credentials,
) -> None:
    """Run the given regions, their links and the control API until Ctrl-C or SIGTERM."""
    asyncio.run(Supervisor(topology, data_dir, topology_file, regions, credentials).run())
