"""Run `bookstore up` as a child process on a loopback topology of its own: for drills, tests and benches."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from bookstore.config import Topology
from bookstore.supervisor.children import die_with_parent
from bookstore.supervisor.processes import BANNER

UP_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0


class LaunchError(RuntimeError):
    """`bookstore up` exited or did not come up in time; the message ends with its log's last lines."""


def free_port(host: str, kind: int = socket.SOCK_STREAM) -> int:
    """A port nothing listens on at `host` right now (TCP, or UDP with kind=SOCK_DGRAM)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def loopback_topology(
    path: Path,
    control: str,
    addresses: Mapping[str, str],
    *,
    home: str | None = None,
    active: Sequence[str] | None = None,
    edge: str | None = None,
    extra: str = "",
) -> Topology:
    """A topology like the default, written to `path`, on the given loopback addresses and free ports.

    `control` is the address of the control API and of the edge (and its DNS server); `addresses` maps
    each region to its own address (a /24 of its own, so the link simulator tells regions apart). The
    edge is disabled unless `edge` is given: "" for its defaults, or lines of the [edge] table.
    `extra` is appended as is (more tables, e.g. [replication]). A region outside the defaults is named
    by its id, without a flag (a bench's topology of five, say).
    """
    defaults = {r.id: r for r in Topology().regions}
    regions = list(addresses)
    lines = [
        f'home_region = "{home or regions[0]}"',
        "active = [" + ", ".join(f'"{r}"' for r in (active or regions)) + "]",
        f'control_address = "{control}"',
        f"control_port = {free_port(control)}",
        "",
        "[edge]",
        f'address = "{control}"',
        f"port = {free_port(control)}",
        f'dns_address = "{control}"',
        f"dns_port = {free_port(control, socket.SOCK_DGRAM)}",
        "enabled = false" if edge is None else edge,
        "",
    ]
    for region_id, address in addresses.items():
        base = defaults.get(region_id)
        lines += [
            "[[regions]]",
            f'id = "{region_id}"',
            f'name = "{base.name if base else region_id}"',
            f'flag = "{base.flag if base else ""}"',
            f'address = "{address}"',
            f"api_port = {free_port(address)}",
            f"s3_port = {free_port(address)}",
            "",
        ]
    path.write_text("\n".join(lines) + extra, encoding="utf-8")
    return Topology.load(path)


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@contextmanager
def launched(
    data_dir: Path,
    log_path: Path,
    topology_file: Path | None = None,
    *,
    timeout_s: float = UP_TIMEOUT_S,
    env: Mapping[str, str] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """`bookstore up` until the block ends: entered once it printed its banner (every region healthy,
    the storefront's buckets made, the edge started); on exit SIGTERM, then SIGKILL after a grace.

    The child dies with this process, whatever ends it, and its regions die with the child.
    """
    cmd = [sys.executable, "-m", "bookstore", "up", "--data-dir", str(data_dir)]
    if topology_file is not None:
        cmd += ["--topology", str(topology_file)]
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
            env=None if env is None else {**os.environ, **env},
        )
    try:
        deadline = time.monotonic() + timeout_s
        while BANNER not in log_path.read_text(errors="replace"):
            if process.poll() is not None:
                raise LaunchError(f"bookstore up exited {process.returncode} at start:\n{tail(log_path)}")
            if time.monotonic() > deadline:
                raise LaunchError(f"bookstore up did not come up within {timeout_s:.0f} s:\n{tail(log_path)}")
            time.sleep(0.2)
        yield process
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes], grace_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM a child process, SIGKILL it if it is still there after `grace_s`; wait for it either way."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
