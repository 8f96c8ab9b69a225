"""CPU per replicated write of the sender and the receiver, two regions, 500 writes/s: one quick run.

    .venv/bin/python -m bench.write_cpu [--rate R] [--seconds S]
    PYTHONPATH=<other tree>/src:. .venv/bin/python -m bench.write_cpu      # another tree's regions

The regions bench's first phase at two regions only (bench.regions: its system, writer and counts), for
comparing trees in alternation on a shared machine: `bookstore up` of eu-west-1 and ap-southeast-1,
each pinned to a core of its own, links at 85 ms; a warm-up second at 100 writes/s; then the writer
process puts R items/s into eu-west-1's carts for S seconds. Printed: each region's CPU seconds over
the window (until ap-southeast-1 held every item) per item written, and the lag p99 of the items.
With PYTHONPATH naming another tree's src/, the regions and the writer run that tree's code.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from bench import regions
from bench.loadgen import cores

SOURCE, DEST = regions.REGIONS[:2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.write_cpu", description=__doc__)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args(argv)
    first, second = cores()
    ids = (SOURCE, DEST)
    with (
        tempfile.TemporaryDirectory(prefix="bookstore-bench-write-cpu-") as tmp,
        regions.system_up(Path(tmp), ids, {SOURCE: first, DEST: second}) as system,
    ):
        regions._connected(system, ids)
        regions._measure(system, ids, {r: 100.0 for r in ids}, 1.0)
        measured = regions._measure(system, ids, {SOURCE: args.rate}, args.seconds)
    written = sum(run.written.count for run in measured.runs)
    lags = measured.arrived[(SOURCE, DEST)].lags_ms
    p99 = lags[max(0, int(len(lags) * 0.99) - 1)]
    tree = os.environ.get("PYTHONPATH", "this checkout")
    print(
        f"{tree}: sender {measured.cpu_s[SOURCE] / written * 1e6:.0f} us/write, "
        f"receiver {measured.cpu_s[DEST] / written * 1e6:.0f} us/write, lag p99 {p99} ms, "
        f"{written} items; load {os.getloadavg()[0]:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
