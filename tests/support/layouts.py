"""Where a system test's regions run: on one machine (`bookstore up`) or on separate hosts (namespaces).

A test takes the `layout` fixture (tests/system/conftest.py) and deploys with `layout.up(...)`; the deployment
answers the same calls in both layouts, so one test body runs in both. On one machine the supervisor
runs the regions behind the link simulator; on separate hosts each region runs `bookstore region serve`
in a network namespace of its own (`tests.support.hosts`), links are direct, and the test itself runs
as the operator on a host of its own: its requests, threads and `bookstore` commands start there.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from bookstore.config import Topology
from bookstore.kernel.clock import SystemClock
from bookstore.runtime.agents import agent_call
from bookstore.runtime.operator import operator_headers
from bookstore.runtime.secret import operator_secret
from bookstore.runtime.switches import switch_faults
from bookstore.runtime.tls import CA_CERT, TLS_DIR
from bookstore.runtime.tls import verify as tls_verify
from tests.support import waiting
from tests.support.hosts import Hosts, separate_hosts, stop, tail
from tests.support.prerequisites import require_netns
from tests.support.regions import Running, System, bookstore, system_up

EU, AP, US = "eu-west-1", "ap-southeast-1", "us-east-1"
ONE_MACHINE, HOSTS = "one-machine", "hosts"
# The hosts and the last octet of each one's address on the bridge (tests.support.hosts' subnet).
HOST_OCTET = {"eu": 1, "ap": 2, "us": 3, "edge": 10, "operator": 20}
REGION_HOST = {EU: "eu", AP: "ap", US: "us"}
START_S = 60.0
# Where each host's agent listens (kills and starts its region for the drills and `kill`/`start`).
AGENT_PORT = 7071
# What a topology adds for TLS between hosts (tests/system/test_tls_between_hosts.py).
TLS_ON = "\n[tls]\nenabled = true\n"


@dataclass
class Deployment(Running):
    """A running system as a test drives it in its layout: what `Running` holds, drills, and the faults
    a test injects (kill, start, cut, heal, skew, pause)."""

    layout: str = ONE_MACHINE

    def drill(self, *args: str) -> tuple[int, dict[str, Any], str]:
        """`bookstore drill ARGS --attach --json` on this system; its exit code, record and stderr."""
        done = self.cli("drill", *args, "--attach", "--json", "--data-dir", str(self.data_dir), check=False)
        assert done.stdout.strip(), f"no record printed (exit {done.returncode}): {done.stderr[-3000:]}"
        return done.returncode, json.loads(done.stdout), done.stderr

    @contextmanager
    def operating(self) -> Iterator[None]:
        """The calling thread where the operator and the shoppers are, for the block (on one machine:
        where it is; on separate hosts: the operator's host). What it starts there, stays there."""
        yield

    def kill(self, region_id: str) -> None:
        """kill -9 the region's process; returns once it is gone."""
        raise NotImplementedError

    def start(self, region_id: str) -> None:
        """Start the region's process (again); returns once it answers /health."""
        raise NotImplementedError

    def running(self, region_id: str) -> bool:
        raise NotImplementedError

    def cut(self, a: str, b: str, *, reset: bool = False) -> None:
        """Nothing crosses between regions `a` and `b` until `heal` (`reset`: open connections fail now)."""
        raise NotImplementedError

    def heal(self, a: str, b: str) -> None:
        raise NotImplementedError

    def cut_pairs(self) -> set[tuple[str, str]]:
        """The (source, destination) region pairs that are cut now."""
        raise NotImplementedError

    def skew_clock(self, region_id: str, skew_ms: int) -> None:
        """The region's clock runs `skew_ms` ahead (0: back to the true time)."""
        raise NotImplementedError

    def pause_replication(self, region_id: str) -> None:
        """The region applies nothing it receives (a test-only switch: BOOKSTORE_TEST_FAULTS=1)."""
        raise NotImplementedError


@dataclass
class OnOneMachine(Deployment):
    """`bookstore up`: the supervisor's control API kills, starts, cuts and skews."""

    system: System | None = None

    def control(self, method: str, path: str, body: dict[str, object] | None = None) -> Any:
        assert self.system is not None
        return self.system.control(method, path, body)

    def kill(self, region_id: str) -> None:
        self._region("kill", region_id, "not running")

    def start(self, region_id: str) -> None:
        self._region("start", region_id, "running, pid")

    def _region(self, action: str, region_id: str, said: str) -> None:
        done = self.cli("region", action, region_id, check=False)
        assert done.returncode == 0 and said in done.stdout, f"region {action}: {done.stdout}{done.stderr}"

    def running(self, region_id: str) -> bool:
        states = {r["regionId"]: r["running"] for r in self.control("GET", "/regions")["regions"]}
        return bool(states[region_id])

    def cut(self, a: str, b: str, *, reset: bool = False) -> None:
        self.control("POST", f"/links/{a}/{b}", {"cut": True, "reset": reset, "both": True})

    def heal(self, a: str, b: str) -> None:
        self.control("POST", f"/links/{a}/{b}", {"cut": False, "both": True})

    def cut_pairs(self) -> set[tuple[str, str]]:
        return {(link["src"], link["dst"]) for link in self.control("GET", "/links")["links"] if link["cut"]}

    def skew_clock(self, region_id: str, skew_ms: int) -> None:
        self.control("POST", f"/clock/{region_id}", {"skewMs": skew_ms})

    def pause_replication(self, region_id: str) -> None:
        assert self.control("POST", f"/replication/{region_id}/pause")["replication"] == "paused"


@dataclass
class OnHosts(Deployment):
    """Regions, edge and operator on hosts of their own: no supervisor, no link simulator, direct links."""

    hosts: Hosts | None = None
    root: Path = Path()
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def on(self) -> Hosts:
        assert self.hosts is not None
        return self.hosts

    @contextmanager
    def operating(self) -> Iterator[None]:
        with self.on.entered("operator"):
            yield

    def host_data(self, host: str) -> Path:
        return self.root / host / "data"

    def tls(self, *args: str) -> None:
        """`bookstore tls ARGS` on the operator's host (where the CA is kept)."""
        self.on.bookstore("operator", "tls", *args, "--data-dir", str(self.data_dir))

    @property
    def verify(self) -> ssl.SSLContext | bool:
        """What the operator's requests verify the regions with: the deployment's CA with [tls] on."""
        return tls_verify(self.topology, self.data_dir)

    def serve(self, host: str, *args: str) -> subprocess.Popen[bytes]:
        """`bookstore ARGS --topology T --data-dir D` started on `host` (its output in ROOT/HOST/*.log)."""
        log = self.root / host / f"{args[0]}.log"
        more = ["--topology", str(self.topology_file), "--data-dir", str(self.host_data(host))]
        return self.on.start(host, [*args, *more], log)

    def kill(self, region_id: str) -> None:
        assert self._agent(region_id, "kill")["running"] is False

    def start(self, region_id: str) -> None:
        if region_id not in self.processes:
            # A region not active until now: its host starts the agent, which starts the region.
            self.launch(region_id)
            self.wait_healthy(region_id)
            return
        assert self._agent(region_id, "start")["running"] is True

    def _agent(self, region_id: str, action: str) -> dict[str, Any]:
        """The region's host's agent, asked as the drills ask it (signed as the operator)."""
        region, secret = self.topology.region(region_id), operator_secret(self.data_dir)
        return asyncio.run(agent_call(region, action, secret, SystemClock(), verify=self.verify))

    def launch(self, region_id: str) -> None:
        """The region's agent on its host, which starts the region (`region agent`, as a host would run it);
        an agent launched before is stopped first (and its region with it). Returns without waiting."""
        if region_id in self.processes:
            stop(self.processes.pop(region_id))
        self.processes[region_id] = self.serve(
            REGION_HOST[region_id], "region", "agent", "--region", region_id
        )

    def wait_healthy(self, region_id: str) -> None:
        process, url = self.processes[region_id], self.topology.region(region_id).api_url + "/health"
        log = self.root / REGION_HOST[region_id] / "region.log"

        def health() -> int:
            if process.poll() is not None:
                pytest.fail(f"region {region_id} exited {process.returncode}:\n{tail(log)}")
            return httpx.get(url, timeout=2, verify=self.verify).status_code

        waiting.wait_for(f"{region_id} healthy at {url}", health, lambda status: status == 200, START_S)

    def running(self, region_id: str) -> bool:
        return region_id in self.processes and bool(self._agent(region_id, "status")["running"])

    def cut(self, a: str, b: str, *, reset: bool = False) -> None:
        # A blackhole route fails every packet from then on, so an open connection carries nothing more:
        # `reset` needs nothing else here.
        self.on.cut(REGION_HOST[a], REGION_HOST[b])

    def heal(self, a: str, b: str) -> None:
        self.on.heal(REGION_HOST[a], REGION_HOST[b])

    def cut_pairs(self) -> set[tuple[str, str]]:
        region_of = {host: region for region, host in REGION_HOST.items()}
        return {
            (region_of[a], region_of[b]) for a, b in self.on.cut_pairs() if a in region_of and b in region_of
        }

    def skew_clock(self, region_id: str, skew_ms: int) -> None:
        self._switch(region_id, clockSkewMs=skew_ms)

    def pause_replication(self, region_id: str) -> None:
        assert self._switch(region_id, replication="paused")["replication"] == "paused"

    def _switch(self, region_id: str, **switches: str | int) -> dict[str, Any]:
        """A region's own fault switch, asked of the region (what `bookstore api break` does here)."""
        region = self.topology.region(region_id)
        secret = operator_secret(self.data_dir)
        return asyncio.run(
            switch_faults(region.api_url, region.id, secret, SystemClock(), switches, verify=self.verify)
        )


class Layout:
    """One of the two layouts; `up` deploys a system in it for the length of a `with` block."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name

    @contextmanager
    def up(
        self,
        tmp_path: Path,
        regions: tuple[str, ...] = (EU, AP),
        active: tuple[str, ...] | None = None,
        edge: str | None = None,
        anti_entropy_s: float = 2.0,
        operate: bool = True,
    ) -> Iterator[Deployment]:
        """The system with `regions` in the topology, `active` ones running (all by default), the edge
        if `edge` is given ("" or lines of its [edge] table), seeded and its storefront published; with
        `operate`, the calling thread is the operator's for the block (`Deployment.operating`)."""
        deployed = self._deployed(tmp_path, regions, active or regions, edge, anti_entropy_s)
        with deployed as d, d.operating() if operate else nullcontext():
            yield d

    @contextmanager
    def _deployed(
        self, tmp_path: Path, regions: tuple[str, ...], active: tuple[str, ...], edge: str | None, ae_s: float
    ) -> Iterator[Deployment]:
        if self.name == HOSTS:
            with on_hosts(tmp_path, regions, active, edge, ae_s) as deployment:
                yield deployment
            return
        with system_up(tmp_path, regions, active, edge=edge, anti_entropy_s=ae_s) as system:
            yield OnOneMachine(system.topology, system.topology_file, system.data_dir, system=system)


LAYOUTS = (Layout(ONE_MACHINE), Layout(HOSTS))


def one_machine_only(reason: str) -> pytest.MarkDecorator:
    """Marks a test that runs on one machine only; its hosts variant is skipped with `reason`."""
    return pytest.mark.one_machine_only(reason)


def layout_for(request: pytest.FixtureRequest) -> Layout:
    """The layout of a fixture parametrized over `LAYOUTS` (`request.param`).

    The hosts variant needs `ip netns` (skipped outside CI without it, failed in CI) and is skipped, with
    the mark's reason, for a test marked `one_machine_only`.
    """
    layout: Layout = request.param
    skip_marked(request, layout.name)
    if layout.name == HOSTS:
        require_netns()
    return layout


def skip_marked(request: pytest.FixtureRequest, layout: str) -> None:
    """Skips the hosts variant of a test marked `one_machine_only`, saying the mark's reason."""
    marked = request.node.get_closest_marker("one_machine_only")
    if layout == HOSTS and marked is not None:
        pytest.skip(f"one machine only: {marked.args[0]}")


def topology_text(
    hosts: Hosts, regions: tuple[str, ...], active: tuple[str, ...], edge: str | None, anti_entropy_s: float
) -> str:
    """Regions at their hosts' addresses on their default ports, each with its host's agent, direct links,
    no supervisor; the edge (enabled when `edge` is given, with those lines) on a host of its own."""
    defaults = {r.id: r for r in Topology().regions}
    address = hosts.address["edge"]
    lines = [
        f'home_region = "{regions[0]}"',
        "active = [" + ", ".join(f'"{r}"' for r in active) + "]",
        'links = "direct"',
        "supervised = false",
        "",
        "[edge]",
        f'address = "{address}"',
        # Bound to every address of its host, reached at its own: as behind NAT (so is Singapore).
        'bind_address = "0.0.0.0"',
        "port = 8080",
        f'dns_address = "{address}"',
        "dns_port = 5353",
        "enabled = false" if edge is None else edge,
        "",
        "[replication]",
        f"anti_entropy_s = {anti_entropy_s}",
        "anti_entropy_settle_s = 1.0",
        "",
    ]
    for region_id in regions:
        region = defaults[region_id]
        lines += [
            "[[regions]]",
            f'id = "{region.id}"',
            f'name = "{region.name}"',
            f'flag = "{region.flag}"',
            f'address = "{hosts.address[REGION_HOST[region_id]]}"',
            f"agent_port = {AGENT_PORT}",
            *(['bind_address = "0.0.0.0"'] if region_id == AP else []),
            f"location = [{region.location[0]}, {region.location[1]}]",
            "",
        ]
    return "\n".join(lines)


@contextmanager
def on_hosts(
    tmp_path: Path,
    regions: tuple[str, ...],
    active: tuple[str, ...],
    edge: str | None,
    anti_entropy_s: float,
    *,
    tls: bool = False,
) -> Iterator[OnHosts]:
    """Each region on its host with `region serve`, the edge on its own, the test as the operator on its
    own; the credentials made on the home region's host and imported on the others (the documented
    step), the catalog seeded and the storefront published from the operator's host, as `up` does.
    With `tls`, TLS between hosts, its material made and carried as documented (`_issue_tls`)."""
    ip = require_netns()
    names = [REGION_HOST[r] for r in regions] + ["edge", "operator"]
    with separate_hosts(ip, {name: HOST_OCTET[name] for name in names}) as hosts:
        topology_file = tmp_path / "topology.toml"
        text = topology_text(hosts, regions, active, edge, anti_entropy_s) + (TLS_ON if tls else "")
        topology_file.write_text(text, encoding="utf-8")
        d = OnHosts(
            Topology.load(topology_file), topology_file, tmp_path / "operator" / "data",
            layout=HOSTS, hosts=hosts, root=tmp_path,
        )  # fmt: skip
        with d.operating():
            if tls:
                _issue_tls(d, regions)
            _set_up(d, regions, active, edge)
        yield d


def _issue_tls(d: OnHosts, regions: tuple[str, ...]) -> None:
    """The documented steps: the CA on the operator's host, a certificate per region's host for its
    address, the CA's certificate alone for the edge's host (which only connects)."""
    d.tls("init")
    for region_id in regions:
        out = d.host_data(REGION_HOST[region_id]) / TLS_DIR
        d.tls("issue", "--ip", d.topology.region(region_id).address, "--out", str(out))
    (d.host_data("edge") / TLS_DIR).mkdir(parents=True)
    shutil.copy(d.data_dir / TLS_DIR / CA_CERT, d.host_data("edge") / TLS_DIR / CA_CERT)


def _set_up(d: OnHosts, regions: tuple[str, ...], active: tuple[str, ...], edge: str | None) -> None:
    home, hosts = REGION_HOST[regions[0]], d.on
    exported = d.root / "credentials.json"
    hosts.bookstore_into(home, exported, "secrets", "export", "--data-dir", str(d.host_data(home)))
    for name in hosts.address:
        if name != home:
            bookstore("secrets", "import", str(exported), "--data-dir", str(d.host_data(name)))
    for region_id in active:
        d.launch(region_id)
    for region_id in active:
        d.wait_healthy(region_id)
    d.cli("seed")
    d.cli("publish")
    if edge is not None:
        d.serve("edge", "edge", "serve")
        wait_edge_ready(d, active)


def wait_edge_ready(d: OnHosts, active: tuple[str, ...]) -> None:
    """Until the edge answers and sees every active region's API healthy, as `up` waits for it."""
    url, headers = d.topology.edge.url + "/edge/status", operator_headers(d.token)

    def healthy() -> set[str]:
        status = httpx.get(url, headers=headers, timeout=2).json()
        api = {t["regionId"] for t in status["targets"] if t["kind"] == "api" and t["healthy"]}
        return api if status["edge"]["ready"] else set()

    log = d.root / "edge" / "edge.log"
    waiting.wait_for(
        f"the edge ready at {url} ({tail(log, 5)})", healthy, lambda seen: set(active) <= seen, 60
    )
