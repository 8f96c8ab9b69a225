"""Server processes under test: started pinned to a core, awaited until they answer, stopped afterwards."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import ssl
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from bench.loadgen import pin
from bench.report import BenchError
from bookstore.runtime.operator import control_call
from bookstore.supervisor.launch import stop


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@contextlib.contextmanager
def running(
    argv: Sequence[str],
    ready_url: str,
    log: Path,
    *,
    core: int | None,
    timeout_s: float = 60.0,
    verify: ssl.SSLContext | bool = True,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run argv (pinned to core) until the block ends; ready once ready_url answers 200 (`verify`: its
    certificate's CA, for a server with TLS)."""
    with log.open("wb") as out:
        proc = subprocess.Popen(pin(argv, core), stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise BenchError(f"{' '.join(argv)} exited {proc.returncode} at start:\n{_tail(log)}")
            try:
                if httpx.get(ready_url, timeout=1.0, verify=verify).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise BenchError(f"{ready_url} did not answer within {timeout_s:.0f} s:\n{_tail(log)}")
            time.sleep(0.2)
        yield proc
    finally:
        stop(proc, grace_s=15)


def pin_threads(pid: int, core: int | None) -> None:
    """Pin every thread of a running process (taskset -a), e.g. a region the supervisor started."""
    if core is None or shutil.which("taskset") is None:
        return
    argv = ["taskset", "-a", "-p", "-c", str(core), str(pid)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BenchError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}")


def end_process(pid: int, marker: Path) -> None:
    """SIGTERM, then SIGKILL, a process this bench started whose command line names `marker`."""
    try:
        # A pid is reused once its process is gone: end only a process started for this bench.
        if str(marker).encode() not in Path(f"/proc/{pid}/cmdline").read_bytes():
            return
    except OSError:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)


def control(control_url: str, token: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """One call to `bookstore up`'s control API with its operator token; BenchError unless it answers 200."""
    answer = control_call(control_url, token, method, path, body)
    if answer.status_code != 200:
        raise BenchError(f"control API {method} {path} answered {answer.status_code}: {answer.text[:300]}")
    return answer.json()


def set_link_delay(control_url: str, token: str, a: str, b: str, delay_ms: float) -> None:
    """The link a <-> b at `delay_ms` one way both ways, without jitter, loss or cut; checked after."""
    body = {"delayMs": delay_ms, "jitterMs": 0, "loss": 0, "cut": False, "both": True}
    control(control_url, token, "POST", f"/links/{a}/{b}", body)
    for src, dst in ((a, b), (b, a)):
        state = control(control_url, token, "GET", f"/links/{src}/{dst}")
        if (state["delayMs"], state["jitterMs"], state["loss"], state["cut"]) != (delay_ms, 0, 0, False):
            raise BenchError(f"the link {src} -> {dst} is not at {delay_ms} ms without loss: {state}")
