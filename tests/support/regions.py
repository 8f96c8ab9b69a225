"""Region fixtures: isolated topologies, the `bookstore` command, real region processes on loopback."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bookstore.config import ObjectStoreAccess, Region, Topology
from bookstore.runtime.operator import control_call
from bookstore.runtime.secret import operator_token, s3_credentials
from bookstore.supervisor.children import die_with_parent
from bookstore.supervisor.launch import launched, loopback_topology

# Each test process gets its own /16 of loopback addresses, so parallel workers never collide;
# BOOKSTORE_TEST_NETWORK moves the whole run to other /16s, so two runs on one machine do not either.
_counter = itertools.count(1)


def loopback_network(offset: int = 0) -> int:
    """This test process's /16 of 127.0.0.0/8 (the address's second byte): BOOKSTORE_TEST_NETWORK (100 by
    default) plus the xdist worker's number plus `offset`, wrapped into 1..254 whatever they add up to."""
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or "0")
    return (int(os.environ.get("BOOKSTORE_TEST_NETWORK", "100")) + worker + offset - 1) % 254 + 1


def isolated_topology(
    path: Path,
    regions: tuple[str, ...] = ("eu-west-1", "ap-southeast-1"),
    active: tuple[str, ...] | None = None,
    extra: str = "",
    edge: str | None = None,
    anti_entropy_s: float = 2.0,
) -> tuple[Topology, Path]:
    """A topology like the default but on addresses and ports no other test uses; written to `path`.

    The edge (and its DNS server) listens on the control address, on ports of its own. It is disabled
    (`bookstore up` starts no edge process) unless `edge` is given: "" for the defaults, or more lines
    of the [edge] table (e.g. 'health_preset = "workshop"'). Anti-entropy runs every `anti_entropy_s`.
    """
    network = loopback_network()
    control = f"127.{network}.0.{next(_counter) % 250 + 1}"
    addresses = {r: f"127.{network}.{next(_counter) % 250 + 1}.1" for r in regions}
    topology = loopback_topology(
        path,
        control,
        addresses,
        active=active,
        edge=edge,
        extra=f"\n[replication]\nanti_entropy_s = {anti_entropy_s}\nanti_entropy_settle_s = 1.0\n" + extra,
    )
    return topology, path


def bookstore(
    *args: str, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the `bookstore` command as a user would (`env`: variables added to this process's)."""
    return subprocess.run(
        [sys.executable, "-m", "bookstore", *args],
        capture_output=True,
        text=True,
        check=check,
        timeout=120,
        env=None if env is None else {**os.environ, **env},
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
class Running:
    """A running system as its operator reaches it: topology, data dir, the `bookstore` command, APIs."""

    topology: Topology
    topology_file: Path
    data_dir: Path

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """`bookstore ARGS` against this system (its topology; its data dir unless ARGS name one)."""
        env = {"BOOKSTORE_DATA_DIR": str(self.data_dir)}
        return bookstore(*args, "--topology", str(self.topology_file), check=check, env=env)

    @property
    def token(self) -> str:
        """The operator token `bookstore up` made in the data dir."""
        return operator_token(self.data_dir)

    @property
    def s3_access(self) -> ObjectStoreAccess:
        """The S3 key pair `bookstore up` made in the data dir."""
        return s3_credentials(self.data_dir, create=False)

    def api(self, region_id: str) -> httpx.Client:
        return httpx.Client(base_url=self.topology.region(region_id).api_url, timeout=10)


@dataclass
class System(Running):
    """A running `bookstore up`: its topology, data and the supervisor process."""

    process: subprocess.Popen[bytes]

    def control(self, method: str, path: str, body: dict[str, object] | None = None) -> Any:
        r = control_call(self.topology.control_url, self.token, method, path, body)
        assert r.status_code == 200, r.text
        return r.json()


@contextmanager
def system_up(
    tmp_path: Path,
    regions: tuple[str, ...] = ("eu-west-1", "ap-southeast-1"),
    active: tuple[str, ...] | None = None,
    extra: str = "",
    edge: str | None = None,
    anti_entropy_s: float = 2.0,
) -> Iterator[System]:
    """`bookstore up` on an isolated topology: every active region healthy on entry; stopped on exit."""
    topology, topo_file = isolated_topology(
        tmp_path / "topology.toml", regions, active, extra, edge, anti_entropy_s=anti_entropy_s
    )
    data = tmp_path / "data"
    with launched(data, tmp_path / "up.log", topo_file) as process:
        yield System(topology, topo_file, data, process)
