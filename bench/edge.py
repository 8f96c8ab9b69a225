"""The edge: its overhead beside requests straight to a region, and the RTO of module 4's break.

Overhead: `bookstore up` with two regions and the edge; wrk drives GET /books/{id} straight at Ireland's
API, GET /api/books/{id} through the edge (whose latency record sends a client without a location
to the home region, Ireland), and the same through nginx as a reverse proxy in front of Ireland (the
anchor a user would pick instead: one worker, keep-alive upstream, access log off, on the edge's core),
alternately, twice each, and the better run of each is kept. Static
content likewise: a cover through the edge's origin group beside the same signed GET (the edge's own
SigV4 request, replayed by wrk) sent straight to Ireland's S3 API. Ireland is pinned to one core;
wrk, the edge, Singapore and the supervisor share the other, as a CloudFront edge sits on the
client's side of the network. Ireland's core is the bottleneck either way: a ratio near 1 (above it
within the runs' noise) says the edge's own work fits beside wrk's on the other core.

RTO: a client sends GET /api/truth through the edge, one request after another; `bookstore api break
eu-west-1` (the control API's POST /api/eu-west-1/break) makes Ireland's API answer 403. The RTO is the
time from just before the break is asked for to the end of the first request after which every answer
comes from Singapore. Measured with the edge's defaults (health checks every 1 s, retries of
idempotent requests, breaker) and with the workshop's preset (10 s checks) without and with the
retries and breaker, each on a fresh system.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.loadgen import Load, Result, cores, lua_script, run, wrk_version
from bench.procstat import cpu_seconds
from bench.report import BenchError, Figure, Goal, PartialResult, Section
from bench.servers import control, end_process, pin_threads, running
from bookstore.config import Topology
from bookstore.runtime.operator import operator_headers
from bookstore.runtime.secret import operator_token, s3_credentials
from bookstore.supervisor.launch import LaunchError, free_port, launched, loopback_topology

HOME = "eu-west-1"
OTHER = "ap-southeast-1"
BOOK = "bk-cook-001"
COVER = f"covers/{BOOK}.svg"
ROOT = Path(__file__).resolve().parent.parent
OVERHEAD_GOAL = 0.7
# Issue 16: the edge, with its features on, at least this fraction of nginx's requests/s.
NGINX_GOAL = 0.8
NGINX_HOST = "127.0.0.1"
RTO_GOAL_S = 2.0
# After the switch, answers must come from Singapore this long before the run ends.
SETTLED_S = 2.0
RTO_TIMEOUT_S = 40.0


@dataclass(frozen=True)
class RtoConfig:
    label: str
    edge_lines: tuple[str, ...]
    goal: float | None


RTO_CONFIGS = (
    RtoConfig("default (checks every 1 s, retries, breaker)", (), RTO_GOAL_S),
    RtoConfig(
        "workshop preset as the original (checks every 10 s, no retries, no breaker)",
        ('health_preset = "workshop"', "retry = false", "breaker = false"),
        None,
    ),
    RtoConfig(
        "workshop preset with retries and breaker",
        ('health_preset = "workshop"',),
        None,
    ),
)


def _topology(path: Path, edge_lines: tuple[str, ...]) -> Topology:
    """Two regions, the control API and the edge on loopback addresses of their own."""
    base = 1 + (os.getpid() % 60) * 4
    addresses = {HOME: f"127.202.{base + 1}.1", OTHER: f"127.202.{base + 2}.1"}
    return loopback_topology(path, f"127.202.{base}.250", addresses, edge="\n".join(edge_lines))


@dataclass
class System:
    """A running `bookstore up` with the edge."""

    topology: Topology
    data: Path
    pids: set[int] = field(default_factory=set)

    def control(self, method: str, path: str) -> Any:
        return control(self.topology.control_url, operator_token(self.data), method, path)

    def pin(self, server_core: int | None, other_core: int | None) -> None:
        """Ireland on the server's core; Singapore and the edge with wrk."""
        for region in self.control("GET", "/regions")["regions"]:
            if region["running"]:
                self.pids.add(region["pid"])
                pin_threads(region["pid"], server_core if region["regionId"] == HOME else other_core)
        edge = self.control("GET", "/edge")
        if not edge["running"]:
            raise BenchError("the edge process is not running")
        self.pids.add(edge["pid"])
        pin_threads(edge["pid"], other_core)


@contextlib.contextmanager
def system_up(work: Path, edge_lines: tuple[str, ...], core: int | None) -> Iterator[System]:
    """`bookstore up` on an isolated topology with the edge; the supervisor pinned to `core`."""
    work.mkdir(parents=True, exist_ok=True)
    topology = _topology(work / "topology.toml", edge_lines)
    system = System(topology, work / "data")
    try:
        with launched(system.data, work / "up.log", work / "topology.toml") as proc:
            pin_threads(proc.pid, core)
            yield system
    except LaunchError as exc:
        raise BenchError(str(exc)) from None
    finally:
        # Regions and the edge die with the supervisor; one that did not must not outlive the bench.
        for pid in system.pids:
            end_process(pid, work)


# -- overhead ------------------------------------------------------------------------------------------


def _check(url: str, expect_region: str | None = None) -> None:
    answer = httpx.get(url, timeout=10)
    if answer.status_code != 200:
        raise BenchError(f"GET {url} answered {answer.status_code}: {answer.text[:300]}")
    if expect_region is not None and answer.headers.get("x-edge-origin") != expect_region:
        raise BenchError(
            f"GET {url} was served by {answer.headers.get('x-edge-origin')}, not {expect_region}"
        )


def _signed_s3(topology: Topology, data: Path, work: Path) -> tuple[str, Path]:
    """The URL of the cover in Ireland's bucket and a wrk script sending the request the edge sends.

    The edge signs every request; wrk replays one signature, which S3 accepts for 15 minutes (SigV4
    has no nonce), so the region does the same work per request either way.
    """
    from bookstore.edge.cdn import Signer
    from bookstore.objectstore.namespace import site_bucket

    region = topology.region(HOME)
    path = f"/{site_bucket(HOME)}/{COVER}"
    access = s3_credentials(data, create=False)
    signer = Signer(access.access_key_id, access.secret_access_key)
    headers = signer.headers("GET", path, f"{region.address}:{region.s3_port}", HOME)
    script = work / "get-signed.lua"
    script.write_text(lua_script("GET", {k.decode(): v.decode() for k, v in headers}, None), encoding="utf-8")
    return f"{region.s3_url}{path}", script


@dataclass(frozen=True)
class Target:
    """One way to the same resource, driven by wrk with its own script."""

    label: str
    url: str
    script: Path


@dataclass(frozen=True)
class Best:
    """The better of a target's runs, and every run's requests/s."""

    result: Result
    runs: tuple[float, ...]


def _alternate(targets: list[Target], load: Load, core: int | None) -> dict[str, Best]:
    """Every target in turn, twice over; the better run of each is kept."""
    results: dict[str, list[Result]] = {t.label: [] for t in targets}
    for _ in range(2):
        for t in targets:
            if load.warmup_s > 0:
                run(t.url, load, duration_s=load.warmup_s, script=t.script, core=core)
            results[t.label].append(run(t.url, load, script=t.script, core=core))
    return {
        label: Best(max(rs, key=lambda r: r.requests_per_s), tuple(r.requests_per_s for r in rs))
        for label, rs in results.items()
    }


def _figures(label: str, best: dict[str, Best]) -> list[Figure]:
    """Requests/s and p99 of each way, and the edge's ratios to the others."""
    runs = "; ".join(f"{way} {', '.join(f'{x:,.0f}' for x in b.runs)}" for way, b in best.items())
    commands = " / ".join(f"`{b.result.command}`" for b in best.values())
    figures: list[Figure] = []
    for i, (way, b) in enumerate(best.items()):
        note = f"runs (req/s): {runs}; the better of each kept. {commands}" if i == 0 else ""
        figures.append(Figure(f"{label} {way}: requests/s", b.result.requests_per_s, "req/s", note=note))
        figures.append(Figure(f"{label} {way}: p99 latency", b.result.p99_ms, "ms"))
    edge, direct = best["through the edge"].result, best["straight to Ireland"].result
    api = label.startswith("API")
    figures += [
        Figure(
            f"{label}: edge / direct requests/s",
            edge.requests_per_s / direct.requests_per_s,
            "x",
            Goal.minimum(OVERHEAD_GOAL) if api else None,
        ),
        Figure(f"{label}: edge / direct p99 latency", edge.p99_ms / direct.p99_ms, "x"),
    ]
    if "through nginx" in best:
        nginx = best["through nginx"].result
        figures.append(
            Figure(
                f"{label}: edge / nginx requests/s",
                edge.requests_per_s / nginx.requests_per_s,
                "x",
                Goal.minimum(NGINX_GOAL) if api else None,
            )
        )
    return figures


_NGINX_CONF = """\
worker_processes 1;
pid {work}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {work}/body;
  proxy_temp_path {work}/proxy;
  fastcgi_temp_path {work}/fastcgi;
  uwsgi_temp_path {work}/uwsgi;
  scgi_temp_path {work}/scgi;
  upstream ireland {{ server {upstream}; keepalive 64; }}
  server {{
    listen {listen};
    location /api/ {{
      proxy_pass http://ireland/;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"""


@contextlib.contextmanager
def nginx_in_front(work: Path, upstream: str, check_path: str, core: int | None) -> Iterator[str]:
    """nginx (one worker, keep-alive upstream) proxying /api/ to `upstream`; yields its base URL."""
    binary = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)
    if binary is None:
        raise BenchError("nginx is not installed (`make bench` installs it: apt-get install -y nginx-light)")
    work.mkdir(parents=True, exist_ok=True)
    listen = f"{NGINX_HOST}:{free_port(NGINX_HOST)}"
    conf = work / "nginx.conf"
    conf.write_text(_NGINX_CONF.format(work=work, upstream=upstream, listen=listen), encoding="utf-8")
    argv = [binary, "-p", str(work), "-c", str(conf), "-e", str(work / "error.log"), "-g", "daemon off;"]
    check = subprocess.run([*argv[:-2], "-t"], capture_output=True, text=True, check=False)
    if check.returncode != 0:
        raise BenchError(f"nginx refused its configuration: {check.stderr.strip()}")
    base = f"http://{listen}"
    with running(argv, f"{base}{check_path}", work / "nginx.log", core=core):
        yield base


def _nginx_worker(work: Path) -> int:
    master = int((work / "nginx" / "nginx.pid").read_text().strip())
    return int(Path(f"/proc/{master}/task/{master}/children").read_text().split()[0])


def _interleaved(
    targets: list[Target], pids: dict[str, int], load: Load, rounds: int, seconds: int, core: int | None
) -> list[Figure]:
    """Short runs of every target in turn, `rounds` times: on a shared, busy machine the load drifts
    less within a round than over the long runs, so each round's ratios compare like with like; the
    median of the rounds' ratios is kept. Also the CPU time per request of the proxies (`pids`), which
    the machine's load changes far less than their requests/s."""
    rps: dict[str, list[float]] = {t.label: [] for t in targets}
    cpu: dict[str, list[float]] = {label: [] for label in pids}
    for _ in range(rounds):
        for t in targets:
            before = cpu_seconds(pids[t.label]) if t.label in pids else 0.0
            result = run(t.url, load, duration_s=seconds, script=t.script, core=core)
            rps[t.label].append(result.requests_per_s)
            if t.label in pids:
                cpu[t.label].append((cpu_seconds(pids[t.label]) - before) * 1e6 / result.requests)
    edge, nginx, direct = (rps[k] for k in ("through the edge", "through nginx", "straight to Ireland"))
    to_nginx = [e / n for e, n in zip(edge, nginx, strict=True)]
    to_direct = [e / d for e, d in zip(edge, direct, strict=True)]
    runs = "; ".join(f"{label} {', '.join(f'{x:,.0f}' for x in xs)}" for label, xs in rps.items())
    figures = [
        Figure(
            "API GET /books/{id}: edge / nginx requests/s, median of rounds",
            statistics.median(to_nginx),
            "x",
            Goal.minimum(NGINX_GOAL),
            note=f"{rounds} rounds of {seconds} s: {', '.join(f'{r:.2f}' for r in to_nginx)}; req/s: {runs}",
        ),
        Figure(
            "API GET /books/{id}: edge / direct requests/s, median of rounds",
            statistics.median(to_direct),
            "x",
        ),
    ]
    for label, xs in cpu.items():
        figures.append(
            Figure(
                f"API GET /books/{{id}} {label}: CPU time per request, median", statistics.median(xs), "us"
            )
        )
    return figures


def measure_overhead(
    work: Path,
    load: Load,
    *,
    with_static: bool = True,
    hold_s: float = 0.0,
    rounds: int = 0,
    seconds: int = 3,
) -> list[Figure]:
    """The API's figures (direct, nginx, edge), then static content's unless `with_static` is False.

    `rounds`: instead of the better of two long runs each, that many rounds of `seconds`-long runs
    (`_interleaved`). `hold_s`: keep the system up that long after the API's runs (for a profiler).
    """
    server_core, wrk_core = cores()
    with system_up(work / "overhead", (), wrk_core) as system:
        system.pin(server_core, wrk_core)
        topology = system.topology
        home = topology.region(HOME)
        direct = f"{home.api_url}/books/{BOOK}"
        through = f"{topology.edge.url}/api/books/{BOOK}"
        _check(direct)
        _check(through, HOME)
        script = work / "get.lua"
        script.write_text(lua_script("GET", {}, None), encoding="utf-8")
        upstream = f"{home.address}:{home.api_port}"
        with nginx_in_front(work / "nginx", upstream, f"/api/books/{BOOK}", wrk_core) as nginx:
            targets = [
                Target("straight to Ireland", direct, script),
                Target("through nginx", f"{nginx}/api/books/{BOOK}", script),
                Target("through the edge", through, script),
            ]
            if rounds:
                pids = {
                    "through the edge": system.control("GET", "/edge")["pid"],
                    "through nginx": _nginx_worker(work),
                }
                figures = _interleaved(targets, pids, load, rounds, seconds, wrk_core)
            else:
                figures = _figures("API GET /books/{id}", _alternate(targets, load, wrk_core))
            if hold_s > 0:
                edge_pid = system.control("GET", "/edge")["pid"]
                print(
                    f"edge pid {edge_pid}; " + "; ".join(f"{t.label}: {t.url}" for t in targets), flush=True
                )
                time.sleep(hold_s)
        if not with_static:
            return figures
        s3_direct, signed = _signed_s3(topology, system.data, work)
        s3_edge = f"{topology.edge.url}/{COVER}"
        _check(s3_edge, HOME)
        static = [
            Target("straight to Ireland", s3_direct, signed),
            Target("through the edge", s3_edge, script),
        ]
        figures += _figures("Static cover", _alternate(static, load, wrk_core))
        return figures


# -- RTO -----------------------------------------------------------------------------------------------


def _client(url: str, stop: threading.Event, out: list[tuple[float, int, str | None]]) -> None:
    with httpx.Client(timeout=30) as client:
        while not stop.is_set():
            try:
                answer = client.get(url)
                region = answer.json().get("regionId") if answer.status_code == 200 else None
                out.append((time.monotonic(), answer.status_code, region))
            except (httpx.HTTPError, ValueError):
                out.append((time.monotonic(), 0, None))


@dataclass(frozen=True)
class Rto:
    rto_s: float
    failed: int
    requests: int
    first_healthy_check_note: str


def measure_rto(work: Path, config: RtoConfig) -> Rto:
    _, other_core = cores()
    with system_up(work, config.edge_lines, other_core) as system:
        url = f"{system.topology.edge.url}/api/truth"
        _check(url, HOME)
        seen: list[tuple[float, int, str | None]] = []
        stop = threading.Event()
        client = threading.Thread(target=_client, args=(url, stop, seen), daemon=True)
        client.start()
        time.sleep(1.0)
        start = time.monotonic()
        system.control("POST", f"/api/{HOME}/break")
        try:
            deadline = start + RTO_TIMEOUT_S
            while time.monotonic() < deadline:
                time.sleep(0.1)
                after = [(t, s, r) for t, s, r in list(seen) if t >= start]
                last_bad = max((t for t, s, r in after if s != 200 or r != OTHER), default=start)
                if after and after[-1][0] - last_bad >= SETTLED_S and any(t > last_bad for t, _, _ in after):
                    break
            else:
                raise BenchError(
                    f"{config.label}: answers did not settle on {OTHER} within {RTO_TIMEOUT_S:.0f} s"
                )
        finally:
            stop.set()
            client.join(timeout=35)
            with contextlib.suppress(BenchError, httpx.HTTPError):
                system.control("POST", f"/api/{HOME}/repair")
        answers = [(t, s, r) for t, s, r in seen if t >= start]
        failed = [(t, s, r) for t, s, r in answers if s != 200 or r != OTHER]
        last_failed = max((t for t, _, _ in failed), default=start)
        recovered = next(t for t, s, _ in answers if t > last_failed and s == 200)
        status = httpx.get(
            f"{system.topology.edge.url}/edge/status",
            headers=operator_headers(operator_token(system.data)),
            timeout=10,
        ).json()
        target = next(t for t in status["targets"] if t["id"] == f"api:{HOME}")
        changes = [c for c in target["changes"] if not c["healthy"]]
        note = (
            f"health check saw it unhealthy: {changes[-1]['reason']}" if changes else "no health change seen"
        )
        return Rto(recovered - start, sum(1 for _, s, _ in failed if s != 200), len(answers), note)


def run_bench() -> Section:
    load = Load.from_env()
    figures: list[Figure] = []
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bookstore-bench-edge-") as tmp:
        work = Path(tmp)
        try:
            figures += measure_overhead(work, load)
        except BenchError as exc:
            failures.append(str(exc))
        for i, config in enumerate(RTO_CONFIGS):
            try:
                rto = measure_rto(work / f"rto-{i}", config)
            except BenchError as exc:
                failures.append(str(exc))
                continue
            goal = Goal.maximum(config.goal) if config.goal is not None else None
            figures.append(
                Figure(
                    f"RTO of the API break, {config.label}",
                    rto.rto_s,
                    "s",
                    goal,
                    note=f"{rto.failed} of {rto.requests} client requests failed during the switch; "
                    f"{rto.first_healthy_check_note}",
                )
            )
            figures.append(
                Figure(f"Failed idempotent requests during the break, {config.label}", rto.failed, "")
            )
    server_core, wrk_core = cores()
    pinned = (
        f"Ireland on core {server_core}; wrk, the edge, Singapore and the supervisor on core {wrk_core} "
        "(taskset)"
        if server_core is not None
        else "not pinned (fewer than two cores available)"
    )
    section = Section(
        module="edge",
        title="The edge: overhead and RTO",
        figures=figures,
        method=" ".join((__doc__ or "").split("\n\n", 1)[1].split()),
        context={
            "Load generator": (
                f"wrk {wrk_version()}; -t{load.threads} -c{load.connections} "
                f"-d{load.duration_s}s --latency, {load.warmup_s} s warm-up per run"
            ),
            "Pinning": pinned,
            "RTO client": "one httpx client, sequential GET /api/truth through the edge, no pause",
        },
    )
    if failures:
        raise PartialResult(section, failures)
    return section


def main() -> None:
    """`python -m bench.edge [--rounds R [--seconds S]] [--hold S]`: the API's overhead only, printed."""
    parser = argparse.ArgumentParser(prog="python -m bench.edge", description=main.__doc__)
    parser.add_argument("--hold", type=float, default=0.0, help="keep the system up S seconds after")
    parser.add_argument(
        "--rounds", type=int, default=0, help="R rounds of short runs, median ratio (default: as the bench)"
    )
    parser.add_argument("--seconds", type=int, default=3, help="each short run's length (with --rounds)")
    args = parser.parse_args()
    # SIGTERM (a background run's only stop) unwinds the blocks that stop the system and nginx.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory(prefix="bookstore-bench-edge-") as tmp:
        figures = measure_overhead(
            Path(tmp),
            Load.from_env(),
            with_static=False,
            hold_s=args.hold,
            rounds=args.rounds,
            seconds=args.seconds,
        )
    for figure in figures:
        print(f"{figure.name}: {figure.value:,.2f} {figure.unit}")
        if figure.note:
            print(f"    {figure.note}")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
