"""`bookstore up`: starts the regions as processes of their own, waits for them, stops them on Ctrl-C."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from bookstore.config import Region, Topology

log = logging.getLogger("bookstore.supervisor")


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


def wait_healthy(region: Region, process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    """Block until the region answers /health; raise if its process exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"region {region.id} exited with code {process.returncode} while starting")
        try:
            if httpx.get(f"{region.api_url}/health", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"region {region.id} did not answer {region.api_url}/health within {timeout_s:.0f} s")


def stop(processes: dict[str, subprocess.Popen[bytes]], grace_s: float = 10.0) -> None:
    for process in processes.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for process in processes.values():
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def up(topology: Topology, data_dir: Path, topology_file: Path | None, regions: list[str]) -> None:
    """Run the given regions until Ctrl-C (or SIGTERM); a region that dies is reported, not restarted."""
    processes: dict[str, subprocess.Popen[bytes]] = {}
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        for region_id in regions:
            cmd = region_command(region_id, data_dir, topology_file)
            processes[region_id] = subprocess.Popen(cmd, env=env)
        for region_id, process in processes.items():
            wait_healthy(topology.region(region_id), process)
        print("\nThe Bookstore is up:", flush=True)
        for region_id in regions:
            region = topology.region(region_id)
            print(f"  {region.flag}  {region.name:<12} {region.id:<15} {region.api_url}/books", flush=True)
        print(f"Data in {data_dir.resolve()}. Ctrl-C stops everything.\n", flush=True)
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        reported: set[str] = set()
        while True:
            for region_id, process in processes.items():
                if process.poll() is not None and region_id not in reported:
                    reported.add(region_id)
                    log.warning("region %s exited with code %s", region_id, process.returncode)
            if len(reported) == len(processes):
                return
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\nstopping...", flush=True)
    finally:
        stop(processes)
