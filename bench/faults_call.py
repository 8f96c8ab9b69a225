"""Instructions of the region's fault-switch layer per API request, for callgrind: N calls in one process.

    SRC=<a checkout's src> N=<0|20000> PYTHONHASHSEED=0 valgrind --tool=callgrind \
        --callgrind-out-file=/dev/null .venv/bin/python bench/faults_call.py

Awaits `RegionFaults.__call__` N times on an API GET (no fault set, an inner app that returns at once);
the figure is (total with N - total with 0) / N, read from callgrind's "Collected" line. SRC (through
sys.path) puts another checkout's code under the same interpreter: the anchor of the same run.
"""

from __future__ import annotations

import asyncio
import os
import sys

sys.path.insert(0, os.environ.get("SRC", "src"))

from bookstore.kernel.clock import SystemClock
from bookstore.region.faults import RegionFaults

SCOPE = {
    "type": "http",
    "path": "/books/bk-cook-001",
    "server": ("127.0.1.1", 8000),
    "method": "GET",
    "headers": [(b"host", b"127.0.1.1:8000"), (b"user-agent", b"x"), (b"accept", b"*/*")],
}


async def _app(scope: object, receive: object, send: object) -> None:
    return None


async def _calls(n: int) -> None:
    faults = RegionFaults(_app, "eu-west-1", "secret", SystemClock(), 9000, test_faults=False)
    for _ in range(n):
        await faults(SCOPE, None, None)  # type: ignore[arg-type]


if __name__ == "__main__":
    asyncio.run(_calls(int(os.environ.get("N", "20000"))))
