"""The floor under the edge: nginx, the edge and the barest Python proxy, alternated in edge.py's setup.

    BENCH_WARMUP=0 python -m bench.edge_floor [--rounds R] [--seconds S] [--only LABEL ...]

Issue 16 asks the edge for at least 0.8x nginx's requests/s on the same core. This answers whether a
Python proxy on uvloop can get there at all, and how much of the gap is the edge's features and
uvicorn's protocol rather than the floor: the same `bookstore up` as bench/edge.py (Ireland pinned to
one core; wrk, the proxies, Singapore and the supervisor on the other), the same wrk command and
script, and these ways to GET /api/books/{id} (/books/{id} straight), each run for S seconds in turn,
R rounds:
- straight to Ireland, also with the five headers the edge adds to what it forwards (X-Request-Id,
  X-Forwarded-For/-Host/-Proto, X-Bookstore-Client), through nginx (edge.py's configuration), through
  the edge;
- through bench/bare_proxy.py with `find` framing (bytes.find both ways, the answer forwarded as is)
  and with `httptools` framing (both sides parsed with callbacks, request and reply rebuilt);
- through bench/lean_edge.py: that httptools floor with the edge's per-request features (a prototype).
Per way: requests/s (median of the rounds, and each round's ratio to nginx's), the proxy process's CPU
time per request (user + system from /proc over the run), Ireland's and wrk's (its rusage as a waited-for
child): whether the proxy's core (wrk's plus the proxy's CPU) or Ireland's limits.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import signal
import statistics
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.edge import BOOK, HOME, NGINX_HOST, _check, _nginx_worker, nginx_in_front, system_up
from bench.loadgen import Load, cores, lua_script, run
from bench.procstat import cpu_seconds
from bench.servers import running
from bookstore.supervisor.launch import free_port

DIRECT = "straight to Ireland"
DIRECT_HEADERS = "straight to Ireland, the edge's headers"
NGINX = "through nginx"
EDGE = "through the edge"
BARE_FIND = "bare proxy, find"
BARE_HTTPTOOLS = "bare proxy, httptools"
LEAN = "lean edge prototype"
WAYS = (DIRECT, DIRECT_HEADERS, NGINX, EDGE, BARE_FIND, BARE_HTTPTOOLS, LEAN)


@dataclass
class Way:
    """One way to the book: its URL, the proxy's pid (None: straight), and what each run measured."""

    label: str
    url: str
    pid: int | None
    script: str = "get.lua"
    rps: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)
    home_cpu_us: list[float] = field(default_factory=list)
    wrk_cpu_us: list[float] = field(default_factory=list)


@contextlib.contextmanager
def python_proxy(
    work: Path, name: str, module: str, args: list[str], core: int | None
) -> Iterator[tuple[str, int]]:
    """`python -m module --listen (a free port) args` until the block ends, its output in work/name.log;
    yields (base URL, pid)."""
    listen = f"{NGINX_HOST}:{free_port(NGINX_HOST)}"
    argv = [sys.executable, "-m", module, "--listen", listen, *args]
    base = f"http://{listen}"
    work.mkdir(parents=True, exist_ok=True)
    with running(argv, f"{base}/api/books/{BOOK}", work / f"{name}.log", core=core) as proc:
        yield base, proc.pid


def _children_cpu() -> float:
    """User + system CPU seconds of this process's waited-for children: wrk's, around one run (taskset
    execs it, so the child is wrk itself)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(work: Path, load: Load, rounds: int, seconds: int, only: tuple[str, ...]) -> list[Way]:
    """Every way in turn, `rounds` times; see the module."""
    server_core, wrk_core = cores()
    with contextlib.ExitStack() as stack:
        system = stack.enter_context(system_up(work / "overhead", (), wrk_core))
        system.pin(server_core, wrk_core)
        topology = system.topology
        home = topology.region(HOME)
        home_pid = next(
            r["pid"] for r in system.control("GET", "/regions")["regions"] if r["regionId"] == HOME
        )
        upstream = f"{home.address}:{home.api_port}"
        path = f"/api/books/{BOOK}"
        nginx = stack.enter_context(nginx_in_front(work / "nginx", upstream, path, wrk_core))
        bare = ["--upstream", upstream, "--framing"]
        find, find_pid = stack.enter_context(
            python_proxy(work, "find", "bench.bare_proxy", [*bare, "find"], wrk_core)
        )
        parsed, parsed_pid = stack.enter_context(
            python_proxy(work, "httptools", "bench.bare_proxy", [*bare, "httptools"], wrk_core)
        )
        topology_file = ["--topology", str(work / "overhead" / "topology.toml")]
        lean, lean_pid = stack.enter_context(
            python_proxy(work, "lean", "bench.lean_edge", topology_file, wrk_core)
        )
        ways = [
            Way(DIRECT, f"{home.api_url}/books/{BOOK}", None),
            Way(DIRECT_HEADERS, f"{home.api_url}/books/{BOOK}", None, "get-forwarded.lua"),
            Way(NGINX, f"{nginx}{path}", _nginx_worker(work)),
            Way(EDGE, f"{topology.edge.url}{path}", system.control("GET", "/edge")["pid"]),
            Way(BARE_FIND, f"{find}{path}", find_pid),
            Way(BARE_HTTPTOOLS, f"{parsed}{path}", parsed_pid),
            Way(LEAN, f"{lean}{path}", lean_pid),
        ]
        ways = [w for w in ways if not only or w.label in only or w.label == NGINX]
        for way in ways:
            _check(way.url, HOME if way.label in (EDGE, LEAN) else None)
        (work / "get.lua").write_text(lua_script("GET", {}, None), encoding="utf-8")
        # What the edge adds to every request it forwards (proxy.Proxy.forward), sent by wrk itself: the
        # region's share of the edge's cost.
        forwarded = {
            "x-request-id": "9f3c2a51d0e84b7c",
            "x-forwarded-for": "127.0.0.1",
            "x-bookstore-client": "127.0.0.1;" + "0" * 64,
            "x-forwarded-host": topology.edge.url.removeprefix("http://"),
            "x-forwarded-proto": "http",
        }
        (work / "get-forwarded.lua").write_text(lua_script("GET", forwarded, None), encoding="utf-8")
        for _ in range(rounds):
            for way in ways:
                home_before = cpu_seconds(home_pid)
                before = cpu_seconds(way.pid) if way.pid is not None else 0.0
                wrk_before = _children_cpu()
                result = run(way.url, load, duration_s=seconds, script=work / way.script, core=wrk_core)
                way.wrk_cpu_us.append((_children_cpu() - wrk_before) * 1e6 / result.requests)
                way.rps.append(result.requests_per_s)
                way.home_cpu_us.append((cpu_seconds(home_pid) - home_before) * 1e6 / result.requests)
                if way.pid is not None:
                    way.cpu_us.append((cpu_seconds(way.pid) - before) * 1e6 / result.requests)
        return ways


def _listed(xs: list[float], spec: str) -> str:
    return ", ".join(format(x, spec) for x in xs)


def report(ways: list[Way]) -> str:
    """One line per way: requests/s, its ratio to nginx's per round, CPU per request (medians)."""
    nginx = next(w for w in ways if w.label == NGINX)
    direct = next((w for w in ways if w.label == DIRECT), None)
    lines = []
    for way in ways:
        to_nginx = [r / n for r, n in zip(way.rps, nginx.rps, strict=True)]
        parts = [
            f"{way.label}: {statistics.median(way.rps):,.0f} req/s (runs {_listed(way.rps, ',.0f')})",
            f"/ nginx {statistics.median(to_nginx):.2f} x (rounds {_listed(to_nginx, '.2f')})",
        ]
        if direct is not None:
            to_direct = [r / d for r, d in zip(way.rps, direct.rps, strict=True)]
            parts.append(f"/ direct {statistics.median(to_direct):.2f} x")
        if way.cpu_us:
            cpu = statistics.median(way.cpu_us)
            parts.append(f"proxy CPU {cpu:.1f} us/req ({_listed(way.cpu_us, '.1f')})")
        parts.append(f"Ireland CPU {statistics.median(way.home_cpu_us):.1f} us/req")
        parts.append(f"wrk CPU {statistics.median(way.wrk_cpu_us):.1f} us/req")
        lines.append("; ".join(parts))
    return "\n".join(lines)


def main() -> None:
    """`python -m bench.edge_floor [--rounds R] [--seconds S] [--only LABEL ...]`: figures printed."""
    parser = argparse.ArgumentParser(prog="python -m bench.edge_floor", description=main.__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--only", nargs="*", default=(), choices=WAYS, help="these ways (and nginx) only")
    args = parser.parse_args()
    # SIGTERM (a background run's only stop) unwinds the blocks that stop the system and the proxies.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bookstore-bench-edge-floor-") as tmp:
        ways = measure(Path(tmp), Load.from_env(), args.rounds, args.seconds, tuple(args.only))
    print(report(ways))
    after = os.getloadavg()
    print(f"load average: before {load_before[0]:.2f}, after {' '.join(f'{x:.2f}' for x in after)}")


if __name__ == "__main__":
    main()
