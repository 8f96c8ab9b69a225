"""What a region joining N items costs its peers and itself: CPU per process, pushes refused, rounds.

`python -m bench.join_waste WORKDIR N ANTI_ENTROPY_S OCTET` (issue 16): `bookstore up` of three regions
on 127.OCTET.x.1 (the third not started), N cart rows seeded into the first, then the third started;
prints JSON: the join's seconds, each region's CPU seconds from the start until it held everything, the
413s the new region answered and the anti-entropy log lines about it. The work directory is kept (its
up.log holds every region's log). Another tree's code runs with PYTHONPATH=<tree>/src:<tree>.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import time
from pathlib import Path

import httpx

from bench.backlog import DEST, NEW, SOURCE, _count, _head, _pid, _seed, _wait_checkpoint
from bench.procstat import cpu_seconds
from bench.replication import System
from bench.servers import end_process, pin_threads, set_link_delay
from bookstore.runtime.secret import operator_token
from bookstore.supervisor.launch import launched, loopback_topology


def metric_lines(url: str, pattern: str) -> list[str]:
    text = httpx.get(url + "/metrics", timeout=10).text
    return [line for line in text.splitlines() if re.search(pattern, line) and not line.startswith("#")]


def main() -> None:
    work, n, ae_s, octet = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
    work.mkdir(parents=True, exist_ok=True)
    addresses = {SOURCE: f"127.{octet}.1.1", DEST: f"127.{octet}.2.1", NEW: f"127.{octet}.3.1"}
    path = work / "topology.toml"
    topology = loopback_topology(
        path,
        f"127.{octet}.1.250",
        addresses,
        active=[SOURCE, DEST],
        extra=f"[replication]\nanti_entropy_s = {ae_s}\n",
    )
    urls = {"control": topology.control_url} | {r: topology.region(r).api_url for r in addresses}
    data = work / "data"
    system = System(urls, data, {SOURCE: None, DEST: None, NEW: None})
    out: dict[str, object] = {"n": n, "antiEntropyS": ae_s, "loadBefore": os.getloadavg()}
    try:
        with launched(data, work / "up.log", path) as proc:
            pin_threads(proc.pid, None)
            system.pin_regions()
            token = operator_token(data)
            for a, b in ((SOURCE, DEST), (SOURCE, NEW), (DEST, NEW)):
                set_link_delay(urls["control"], token, a, b, 0.0)
            _seed(system, None, "join", n)
            head = _head(system.db(SOURCE))
            _wait_checkpoint(system.db(DEST), SOURCE, head, "dest following")
            heads = {SOURCE: head, DEST: _head(system.db(DEST))}
            pids = {r: _pid(system, r) for r in (SOURCE, DEST)}
            cpu = {r: cpu_seconds(p) for r, p in pids.items()}
            started = time.monotonic()
            system.start(NEW)
            new_pid = _pid(system, NEW)
            done = max(_wait_checkpoint(system.db(NEW), p, h, "joining") for p, h in heads.items())
            out["joinS"] = done - started
            out["cpuS"] = {r: cpu_seconds(p) - cpu[r] for r, p in pids.items()} | {NEW: cpu_seconds(new_pid)}
            out["held"] = _count(system.db(NEW), "join")
            out["pushesAtNew"] = metric_lines(
                urls[NEW], r'bookstore_http_requests.*(replication/push|status="413")'
            )
            out["loadAfter"] = os.getloadavg()
            logs = {}
            text = (work / "up.log").read_text(errors="replace")
            for region in (SOURCE, DEST):
                mine = [line for line in text.splitlines() if f"region={region} " in line]
                logs[region] = {
                    "aeFailedWithNew": sum(f"anti-entropy with {NEW} failed" in x for x in mine),
                    "aeWaitsJoining": sum(f"anti-entropy with {NEW} waits: it has not" in x for x in mine),
                    "413": sum("answered 413" in x for x in mine),
                }
            out["logs"] = logs
    finally:
        for pid in system.pids:
            with contextlib.suppress(Exception):
                end_process(pid, data)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
