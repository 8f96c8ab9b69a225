"""The load generator: wrk runs pinned to its own core, its Lua request scripts, and its parsed results."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.report import BenchError, tool_version


@dataclass(frozen=True)
class Load:
    """How hard and how long wrk pushes; the same for every endpoint and the ceiling in one run."""

    threads: int = 1
    connections: int = 64
    duration_s: int = 10
    warmup_s: int = 2
    timeout_s: int = 10

    @classmethod
    def from_env(cls) -> Load:
        """Defaults, overridable by BENCH_CONNECTIONS, BENCH_DURATION, BENCH_WARMUP (seconds)."""
        return cls(
            connections=int(os.environ.get("BENCH_CONNECTIONS", cls.connections)),
            duration_s=int(os.environ.get("BENCH_DURATION", cls.duration_s)),
            warmup_s=int(os.environ.get("BENCH_WARMUP", cls.warmup_s)),
        )


@dataclass(frozen=True)
class Result:
    """What one wrk run measured."""

    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: int
    argv: tuple[str, ...]

    @property
    def command(self) -> str:
        return " ".join(a if " " not in a else repr(a) for a in self.argv)


_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_SUFFIX = {"": 1.0, "k": 1e3, "K": 1e3, "m": 1e6, "M": 1e6, "g": 1e9, "G": 1e9}
_NUMBER = r"([0-9]+(?:\.[0-9]+)?)"


def _duration_ms(number: str, unit: str) -> float:
    return float(number) * _UNITS_MS[unit]


def parse(output: str, argv: Sequence[str] = ()) -> Result:
    """Read wrk's `--latency` report. Raises BenchError when a figure the benchmarks need is missing."""
    percentiles: dict[str, float] = {}
    for m in re.finditer(rf"^\s*(50|99)(?:\.0+)?%\s+{_NUMBER}(us|ms|s|m|h)\s*$", output, re.MULTILINE):
        percentiles[m.group(1)] = _duration_ms(m.group(2), m.group(3))
    rps = re.search(rf"^Requests/sec:\s+{_NUMBER}\s*$", output, re.MULTILINE)
    total = re.search(rf"^\s*{_NUMBER}([kKmMgG]?) requests in ", output, re.MULTILINE)
    if rps is None or "50" not in percentiles or "99" not in percentiles or total is None:
        raise BenchError(f"unexpected wrk output (was --latency given?):\n{output}")
    non_2xx = re.search(r"^\s*Non-2xx or 3xx responses:\s+([0-9]+)", output, re.MULTILINE)
    sockets = re.search(
        r"Socket errors: connect ([0-9]+), read ([0-9]+), write ([0-9]+), timeout ([0-9]+)", output
    )
    return Result(
        requests_per_s=float(rps.group(1)),
        p50_ms=percentiles["50"],
        p99_ms=percentiles["99"],
        requests=round(float(total.group(1)) * _SUFFIX[total.group(2)]),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(x) for x in sockets.groups()) if sockets else 0,
        argv=tuple(argv),
    )


def lua_script(method: str, headers: Mapping[str, str], body: object | None) -> str:
    """A wrk script sending the same request every time; a static request keeps Lua off the hot path."""
    # JSON string literals are valid Lua string literals for the ASCII we send.
    lines = [f"wrk.method = {json.dumps(method)}"]
    for name, value in headers.items():
        lines.append(f"wrk.headers[{json.dumps(name)}] = {json.dumps(value, ensure_ascii=True)}")
    if body is not None:
        lines.append(f"wrk.body = {json.dumps(json.dumps(body, separators=(',', ':')), ensure_ascii=True)}")
    return "\n".join(lines) + "\n"


def wrk_version() -> str:
    m = re.search(r"wrk (\S+)", tool_version(["wrk", "-v"]))
    return m.group(1) if m else "unknown version"


def pin(argv: Sequence[str], core: int | None) -> list[str]:
    """Prefix argv with `taskset -c core` when taskset exists and the core is ours to use."""
    if core is None or shutil.which("taskset") is None or core not in os.sched_getaffinity(0):
        return list(argv)
    return ["taskset", "-c", str(core), *argv]


def cores() -> tuple[int | None, int | None]:
    """(server core, load-generator core): two different cores when there are two, else no pinning."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        return None, None
    return available[0], available[1]


def run(
    url: str,
    load: Load,
    *,
    duration_s: int | None = None,
    script: Path | None = None,
    core: int | None = None,
    allow_errors: bool = False,
) -> Result:
    """One wrk run against url. Non-2xx answers or socket errors make it a BenchError, unless allowed."""
    if shutil.which("wrk") is None:
        raise BenchError("wrk is not installed (`make bench` installs it: apt-get install -y wrk)")
    seconds = load.duration_s if duration_s is None else duration_s
    argv = [
        "wrk",
        f"-t{load.threads}",
        f"-c{load.connections}",
        f"-d{seconds}s",
        f"--timeout={load.timeout_s}s",
        "--latency",
    ]
    shown = list(argv)
    if script is not None:
        argv += ["-s", str(script)]
        # The report names the script, whose path is a temporary directory gone after the run.
        shown += ["-s", script.name]
    argv.append(url)
    shown.append(url)
    full = pin(argv, core)
    done = subprocess.run(full, capture_output=True, text=True, timeout=seconds + 60, check=False)
    if done.returncode != 0:
        raise BenchError(f"{' '.join(full)} exited {done.returncode}:\n{done.stderr or done.stdout}")
    result = parse(done.stdout, shown)
    if not allow_errors and (result.non_2xx or result.socket_errors):
        raise BenchError(
            f"{result.non_2xx} non-2xx answers and {result.socket_errors} socket errors "
            f"out of {result.requests} requests: the figure would not measure the real work\n{done.stdout}"
        )
    if result.requests == 0 or math.isnan(result.requests_per_s):
        raise BenchError(f"wrk completed no request against {url}")
    return result
