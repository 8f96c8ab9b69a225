"""What TLS between hosts costs a region: its CPU per API request with `[tls]` on and off, alternated.

    .venv/bin/python -m bench.tls [--rounds R] [--requests N] [--fresh N]

Two region processes of this tree side by side (`region serve`, one region alone, no supervisor, each
with its own data directory on a loopback port), one plain, one with `[tls] enabled = true` and a
certificate from `bookstore tls init|issue`, both pinned to the server core; the client (httpx, on the
other core) sends them requests in turns, plain first in odd rounds and TLS first in even ones. Printed
per round and mode: the server's CPU (user + system, /proc) per request for N GET /books on one
keep-alive connection, and for a new connection per request (the handshake each time).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.loadgen import cores
from bench.objects import ACCESS_KEY, BIN, SECRET_KEY, cpu_seconds, one_region_topology
from bench.servers import running
from bookstore.config import Topology

REGION = "eu-west-1"
ADDRESS = "127.0.0.1"


@dataclass(frozen=True)
class Server:
    """A running region: where it answers, what its clients verify it with, its pid."""

    mode: str
    url: str
    verify: ssl.SSLContext | bool
    pid: int


def _bookstore(*args: str) -> None:
    subprocess.run([str(BIN / "bookstore"), *args], check=True, capture_output=True)


@contextlib.contextmanager
def region(work: Path, tls: bool, core: int | None) -> Iterator[Server]:
    """A region alone on a loopback port, with its credentials (and TLS material when `tls`) made first."""
    data = work / "data"
    extra = ['links = "direct"', "supervised = false", *(["[tls]", "enabled = true"] if tls else [])]
    topology = one_region_topology(work / "region.toml", REGION, ADDRESS, ACCESS_KEY, SECRET_KEY, extra)
    # A region with no supervisor starts only where the deployment's credentials are (export makes them).
    _bookstore("secrets", "export", str(work / "credentials.json"), "--data-dir", str(data))
    verify: ssl.SSLContext | bool = True
    if tls:
        _bookstore("tls", "init", "--data-dir", str(data))
        _bookstore("tls", "issue", "--ip", ADDRESS, "--out", str(data / "tls"), "--data-dir", str(data))
        verify = ssl.create_default_context(cafile=str(data / "tls" / "ca.crt"))
    url = Topology.load(topology).region(REGION).api_url
    argv = [str(BIN / "bookstore"), "region", "serve", "--region", REGION]
    argv += ["--data-dir", str(data), "--topology", str(topology)]
    with running(argv, f"{url}/health", work / "region.log", core=core, verify=verify) as proc:
        _bookstore("seed", "--topology", str(topology), "--data-dir", str(data))
        yield Server("tls" if tls else "plain", url, verify, proc.pid)


def per_request_us(server: Server, requests: int, *, fresh: bool) -> float:
    """The server's CPU per GET /books, in microseconds: one keep-alive connection, or one per request."""
    limits = httpx.Limits(max_keepalive_connections=0) if fresh else httpx.Limits()
    with httpx.Client(base_url=server.url, verify=server.verify, limits=limits, timeout=10) as client:
        for _ in range(20):  # the connection open and the first answers out of the window
            client.get("/books").raise_for_status()
        before = cpu_seconds(server.pid)
        for _ in range(requests):
            client.get("/books").raise_for_status()
        return (cpu_seconds(server.pid) - before) / requests * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tls", description=__doc__)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--requests", type=int, default=2000, help="keep-alive requests per measurement")
    parser.add_argument("--fresh", type=int, default=400, help="requests on new connections per measurement")
    args = parser.parse_args(argv)
    server_core, client_core = cores()
    if client_core is not None and client_core in os.sched_getaffinity(0):
        os.sched_setaffinity(0, {client_core})
    with tempfile.TemporaryDirectory(prefix="bookstore-bench-tls-") as tmp:
        root = Path(tmp)
        (root / "plain").mkdir()
        (root / "tls").mkdir()
        with (
            region(root / "plain", False, server_core) as plain,
            region(root / "tls", True, server_core) as encrypted,
        ):
            time.sleep(2.0)  # start-up work out of the way
            for number in range(1, args.rounds + 1):
                order = (plain, encrypted) if number % 2 else (encrypted, plain)
                figures = {}
                for server in order:
                    kept = per_request_us(server, args.requests, fresh=False)
                    new = per_request_us(server, args.fresh, fresh=True)
                    figures[server.mode] = (kept, new)
                (pk, pn), (tk, tn) = figures["plain"], figures["tls"]
                print(
                    f"round {number} ({order[0].mode} first): keep-alive plain {pk:.0f} / tls {tk:.0f} us "
                    f"({tk / pk:.2f}x); new connection plain {pn:.0f} / tls {tn:.0f} us ({tn / pn:.2f}x); "
                    f"load {os.getloadavg()[0]:.2f}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
