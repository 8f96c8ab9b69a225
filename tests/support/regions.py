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
from pathlib import Path

import httpx

from bookstore.config import Region, Topology

# Each test process gets its own /16 of loopback addresses, so parallel workers never collide.
_counter = itertools.count(1)


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def isolated_topology(
    path: Path, regions: tuple[str, ...] = ("eu-west-1", "ap-southeast-1")
) -> tuple[Topology, Path]:
    """A topology like the default but on addresses and ports no other test uses; written to `path`."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or "0"
    defaults = {r.id: r for r in Topology().regions}
    lines = [f'home_region = "{regions[0]}"', f"active = {list(regions)!r}".replace("'", '"'), ""]
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
    path.write_text("\n".join(lines), encoding="utf-8")
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
    process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
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
