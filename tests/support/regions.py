"""Region fixtures: isolated topologies, the `bookstore` command, real region processes on loopback."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bookstore.config import Region, Topology
from bookstore.runtime.supervisor import die_with_parent

# Each test process gets its own /16 of loopback addresses, so parallel workers never collide.
_counter = itertools.count(1)


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def free_udp_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def isolated_topology(
    path: Path,
    regions: tuple[str, ...] = ("eu-west-1", "ap-southeast-1"),
    active: tuple[str, ...] | None = None,
    extra: str = "",
    edge: str | None = None,
) -> tuple[Topology, Path]:
    """A topology like the default but on addresses and ports no other test uses; written to `path`.

    The edge (and its DNS server) listens on the control address, on ports of its own. It is disabled
    (`bookstore up` starts no edge process) unless `edge` is given: "" for the defaults, or more lines
    of the [edge] table (e.g. 'health_preset = "workshop"').
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or "0"
    defaults = {r.id: r for r in Topology().regions}
    control = f"127.{100 + int(worker)}.0.{next(_counter) % 250 + 1}"
    lines = [
        f'home_region = "{regions[0]}"',
        f"active = {list(active or regions)!r}".replace("'", '"'),
        f'control_address = "{control}"',
        f"control_port = {free_port(control)}",
        "",
        "[replication]",
        "anti_entropy_s = 2.0",
        "",
        "[edge]",
        f'address = "{control}"',
        f"port = {free_port(control)}",
        f'dns_address = "{control}"',
        f"dns_port = {free_udp_port(control)}",
        "enabled = false" if edge is None else edge,
        "",
    ]
    for region_id in regions:
        base = defaults[region_id]
        address = f"127.{100 + int(worker)}.{next(_counter) % 250 + 1}.1"
        lines += [
            "[[regions]]",
            f'id = "{base.id}"',
            f'name = "{base.name}"',
            f'flag = "{base.flag}"',
            f'address = "{address}"',
            f"api_port = {free_port(address)}",
            f"s3_port = {free_port(address)}",
            "",
        ]
    path.write_text("\n".join(lines) + extra, encoding="utf-8")
    return Topology.load(path), path


def bookstore(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the `bookstore` command as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "bookstore", *args], capture_output=True, text=True, check=check, timeout=120
    )


@contextmanager
def region_process(region: Region, data_dir: Path, topology_file: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A real region process, healthy on entry; killed (if still alive) on exit."""
    process = start_region(region, data_dir, topology_file)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def start_region(region: Region, data_dir: Path, topology_file: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "bookstore", "region", "serve", "--region", region.id]
    cmd += ["--data-dir", str(data_dir), "--topology", str(topology_file)]
    log = (data_dir / f"{region.id}.log").open("ab")
    process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"region {region.id} exited: {(data_dir / f'{region.id}.log').read_text()[-2000:]}"
            )
        try:
            if httpx.get(f"{region.api_url}/health", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"region {region.id} did not become healthy")


@dataclass
class System:
    """A running `bookstore up`: its topology, data and the supervisor process."""

    topology: Topology
    topology_file: Path
    data_dir: Path
    process: subprocess.Popen[bytes]

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return bookstore(*args, "--topology", str(self.topology_file), check=check)

    def control(self, method: str, path: str, body: dict[str, object] | None = None) -> Any:
        r = httpx.request(method, self.topology.control_url + path, json=body, timeout=30)
        assert r.status_code == 200, r.text
        return r.json()

    def api(self, region_id: str) -> httpx.Client:
        return httpx.Client(base_url=self.topology.region(region_id).api_url, timeout=10)


@contextmanager
def system_up(
    tmp_path: Path,
    regions: tuple[str, ...] = ("eu-west-1", "ap-southeast-1"),
    active: tuple[str, ...] | None = None,
    extra: str = "",
    edge: str | None = None,
) -> Iterator[System]:
    """`bookstore up` on an isolated topology: every active region healthy on entry; stopped on exit."""
    topology, topo_file = isolated_topology(tmp_path / "topology.toml", regions, active, extra, edge)
    data = tmp_path / "data"
    log = (tmp_path / "up.log").open("ab")
    cmd = [sys.executable, "-m", "bookstore", "up", "--data-dir", str(data), "--topology", str(topo_file)]
    process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
    system = System(topology, topo_file, data, process)
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError("bookstore up exited: " + (tmp_path / "up.log").read_text()[-3000:])
            try:
                # The banner comes once every region is healthy and the storefront buckets are made.
                if "The Bookstore is up" in (tmp_path / "up.log").read_text(errors="replace"):
                    httpx.get(topology.control_url + "/regions", timeout=1).raise_for_status()
                    break
            except (httpx.HTTPError, KeyError, ValueError):
                pass
            assert time.monotonic() < deadline, (
                "system did not come up: " + (tmp_path / "up.log").read_text()[-3000:]
            )
            time.sleep(0.2)
        yield system
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
