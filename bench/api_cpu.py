"""CPU per request of a region process under wrk, per endpoint, beside the raw ceiling's: trees alternated.

    .venv/bin/python -m bench.api_cpu [--against SRC ...] [--rounds N]

Not a module of `make bench`: the steadier figure to compare two trees on a shared, loaded machine, where
requests/s swing with the load but the CPU a process spends per request much less. Each round runs, for
this checkout and then each `--against` src/ (through PYTHONPATH, with this checkout's virtualenv): the
raw ASGI ceiling of bench/ceiling.py, always this checkout's (one anchor for every tree), then a freshly
seeded region of the tree driven one endpoint after another as `python -m bench api` drives it (the
same wrk scripts, pinning and load, BENCH_DURATION and friends).
For each, requests/s and the server process's CPU (user + system, every thread, from /proc) over the
measured run divided by the requests answered. The ratio "by CPU" is the ceiling's CPU per request over
the endpoint's: what the requests/s ratio would be with the server's core to itself.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson

from bench import api, ceiling
from bench.loadgen import Load, cores, lua_script, run
from bench.procstat import cpu_seconds
from bench.servers import running
from bookstore.supervisor.launch import free_port


@dataclass(frozen=True)
class Cost:
    """One endpoint of one run: requests/s and the server's CPU per request."""

    requests_per_s: float
    cpu_us: float


def _measured(pid: int, url: str, load: Load, script: Path, core: int | None) -> Cost:
    if load.warmup_s > 0:
        run(url, load, duration_s=load.warmup_s, script=script, core=core)
    before = cpu_seconds(pid)
    result = run(url, load, script=script, core=core)
    return Cost(result.requests_per_s, (cpu_seconds(pid) - before) / result.requests * 1e6)


@contextmanager
def _env(src: Path | None) -> Iterator[None]:
    """PYTHONPATH at `src` for the processes started in the block (this checkout's code when None)."""
    saved = os.environ.get("PYTHONPATH")
    if src is not None:
        os.environ["PYTHONPATH"] = str(src)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


def _ceiling(work: Path, load: Load, server: int | None, client: int | None) -> Cost:
    port = free_port(api.CEILING_HOST)
    url = f"http://{api.CEILING_HOST}:{port}{ceiling.PATH}"
    book = work / "ceiling-book.json"
    book.write_bytes(orjson.dumps(api.ceiling_book()))
    argv = [sys.executable, "-m", "bench.ceiling", "--host", api.CEILING_HOST, "--port", str(port)]
    argv += ["--kind", "raw", "--book", str(book)]
    script = work / "get-ceiling.lua"
    script.write_text(lua_script("GET", {}, None), encoding="utf-8")
    with running(argv, url, work / "ceiling.log", core=server) as proc:
        return _measured(proc.pid, url, load, script, client)


def _region(work: Path, load: Load, server: int | None, client: int | None) -> dict[str, Cost]:
    topology_path = work / "topology.toml"
    region = api.topology_file(topology_path).region(api.REGION_ID)
    common = ["--data-dir", str(work / "data"), "--topology", str(topology_path)]
    api.bookstore("seed", "--region", api.REGION_ID, *common)
    api.bookstore("users", "add", api.EMAIL, "--password", api.PASSWORD, "--region", api.REGION_ID, *common)
    argv = [sys.executable, "-m", "bookstore", "region", "serve", "--region", api.REGION_ID, *common]
    costs: dict[str, Cost] = {}
    with (
        running(argv, f"{region.api_url}/health", work / "region.log", core=server) as proc,
        httpx.Client(base_url=region.api_url, timeout=10.0) as http,
    ):
        token = api.sign_in(http)
        for endpoint in api.endpoints(api.pick_book(http)):
            headers = {"Content-Type": "application/json"} if endpoint.body is not None else {}
            if endpoint.needs_token:
                headers["Authorization"] = f"Bearer {token}"
            script = work / (re.sub(r"[^a-z0-9]+", "-", endpoint.label.lower()) + ".lua")
            script.write_text(lua_script(endpoint.method, headers, endpoint.body), encoding="utf-8")
            api.check(http, endpoint, headers)
            costs[endpoint.label] = _measured(
                proc.pid, f"{region.api_url}{endpoint.path}", load, script, client
            )
    return costs


def measure(src: Path | None, load: Load) -> dict[str, Cost]:
    """The ceiling's and every endpoint's cost, with the region's code from `src` (None: this checkout)."""
    server, client = cores()
    with tempfile.TemporaryDirectory(prefix="bookstore-api-cpu-") as tmp:
        work = Path(tmp)
        top = _ceiling(work, load, server, client)
        with _env(src):
            return {"ceiling": top, **_region(work, load, server, client)}


def report(name: str, costs: dict[str, Cost]) -> str:
    top = costs["ceiling"]
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    lines = [
        f"{name}: ceiling {top.requests_per_s:,.0f} req/s, {top.cpu_us:.1f} us CPU/request (load average "
        f"{load} after the round)"
    ]
    for label, cost in costs.items():
        if label != "ceiling":
            by_rate, by_cpu = cost.requests_per_s / top.requests_per_s, top.cpu_us / cost.cpu_us
            lines.append(
                f"  {label}: {cost.requests_per_s:,.0f} req/s ({by_rate:.3f}x), "
                f"{cost.cpu_us:.1f} us CPU/request ({by_cpu:.3f}x by CPU)"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.api_cpu", description=__doc__.split("\n")[0])
    parser.add_argument("--against", type=Path, action="append", default=[], help="another tree's src/")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args(argv)
    trees: list[tuple[str, Path | None]] = [("this checkout", None)]
    trees += [(str(src), src.resolve()) for src in args.against]
    load = Load.from_env()
    for round_number in range(1, args.rounds + 1):
        for name, src in trees:
            print(f"round {round_number}, {report(name, measure(src, load))}", flush=True)


if __name__ == "__main__":
    main()
