"""CPU a region spends at rest under `bookstore up` (nothing written), this code beside another's.

    .venv/bin/python -m bench.idle [--against SRC ...] [--regions N] [--rounds R]

A region at rest still serves and follows streams (tables, blog, objects), heartbeats, consumers and
health checks; that cost is paid by every region all the time, and grows with the number of peers.
For each source tree (this checkout, then each `--against` src/ through PYTHONPATH, with this
checkout's virtualenv), in turn for `--rounds` rounds (the machine is shared: alternating spreads its
noise over every tree): `bookstore up` of N regions on loopback addresses of its own, anti-entropy
every hour (so no round falls in the window), WAIT_S to settle once every region follows every peer,
then each region's CPU seconds (user + system, /proc/PID/stat) over WINDOW_S, in ms per s.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from bench.procstat import cpu_seconds
from bench.servers import control
from bookstore.runtime.secret import operator_token
from bookstore.supervisor.launch import launched, loopback_topology

REGIONS = ("eu-west-1", "ap-southeast-1", "us-east-1", "us-west-2", "sa-east-1")
WAIT_S = 10.0
WINDOW_S = 20.0
CONNECT_TIMEOUT_S = 60.0


def _connected(urls: Mapping[str, str]) -> None:
    deadline = time.monotonic() + CONNECT_TIMEOUT_S
    waiting = set(urls)
    while waiting and time.monotonic() < deadline:
        for region in list(waiting):
            with contextlib.suppress(httpx.HTTPError, KeyError, TypeError, ValueError):
                peers = httpx.get(urls[region] + "/status", timeout=5).json()["replication"]["peers"]
                if all(p["connected"] for p in peers.values()):
                    waiting.discard(region)
        time.sleep(0.2)
    if waiting:
        raise SystemExit(f"{', '.join(sorted(waiting))} did not follow every peer")


def at_rest(src: Path | None, n: int, work: Path) -> dict[str, float]:
    """Each region's CPU at rest (ms per s) under `bookstore up` of the code in `src` (None: this one)."""
    base = 1 + (os.getpid() % 45) * 5
    ids = REGIONS[:n]
    addresses = {r: f"127.204.{base + i}.1" for i, r in enumerate(ids)}
    path = work / "topology.toml"
    topology = loopback_topology(
        path, f"127.204.{base}.250", addresses, extra="\n[replication]\nanti_entropy_s = 3600.0\n"
    )
    env = {"PYTHONPATH": str(src)} if src is not None else None
    with launched(work / "data", work / "up.log", path, env=env):
        _connected({r: topology.region(r).api_url for r in ids})
        regions = control(topology.control_url, operator_token(work / "data"), "GET", "/regions", None)
        pids = {r["regionId"]: int(r["pid"]) for r in regions["regions"] if r["running"]}
        time.sleep(WAIT_S)
        before = {r: cpu_seconds(p) for r, p in pids.items()}
        started = time.monotonic()
        time.sleep(WINDOW_S)
        took = time.monotonic() - started
        return {r: (cpu_seconds(p) - before[r]) / took * 1000 for r, p in pids.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.idle", description=__doc__)
    parser.add_argument("--against", type=Path, action="append", default=[], help="another tree's src/")
    parser.add_argument("--regions", type=int, default=2, choices=range(2, len(REGIONS) + 1))
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    trees: list[Path | None] = [None, *args.against]
    seen: dict[str, list[float]] = {str(t or "this checkout"): [] for t in trees}
    for round_ in range(args.rounds):
        for tree in trees:
            with tempfile.TemporaryDirectory(prefix="bookstore-bench-idle-") as tmp:
                cpu = at_rest(tree, args.regions, Path(tmp))
            name = str(tree or "this checkout")
            seen[name].append(statistics.mean(cpu.values()))
            load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
            per_region = ", ".join(f"{r} {v:.1f}" for r, v in cpu.items())
            print(f"round {round_ + 1}, {name}: {per_region} ms/s (load {load})", flush=True)
    for name, values in seen.items():
        print(f"{name}: mean over regions and rounds {statistics.mean(values):.1f} ms/s at rest")
    return 0


if __name__ == "__main__":
    sys.exit(main())
