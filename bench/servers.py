"""Server processes under test: started pinned to a core, awaited until they answer, stopped afterwards."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx

from bench.loadgen import pin
from bench.report import BenchError


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@contextlib.contextmanager
def running(
    argv: Sequence[str], ready_url: str, log: Path, *, core: int | None, timeout_s: float = 60.0
) -> Iterator[subprocess.Popen[bytes]]:
    """Run argv (pinned to core) until the block ends; ready once ready_url answers 200."""
    with log.open("wb") as out:
        proc = subprocess.Popen(pin(argv, core), stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise BenchError(f"{' '.join(argv)} exited {proc.returncode} at start:\n{_tail(log)}")
            try:
                if httpx.get(ready_url, timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise BenchError(f"{ready_url} did not answer within {timeout_s:.0f} s:\n{_tail(log)}")
            time.sleep(0.2)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
