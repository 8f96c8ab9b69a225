"""CPU per replicated write of the sender and the receivers, 2 (or N) regions, 500 writes/s: one quick run.

    .venv/bin/python -m bench.write_cpu [--rate R] [--seconds S] [--regions N]
    PYTHONPATH=<other tree>/src:. .venv/bin/python -m bench.write_cpu      # another tree's regions

The regions bench's first phase at one size only (bench.regions: its system, writer and counts), for
comparing trees in alternation on a shared machine: `bookstore up` of the first N of its regions
(eu-west-1, ap-southeast-1, ...), eu-west-1 pinned to a core of its own and the others to the other
core, as bench.regions pins them, links at 85 ms; a warm-up second at 100 writes/s; then the writer
process puts R items/s into eu-west-1's carts for S seconds. Printed: the sender's and the busiest
receiver's CPU seconds over the window (until every region held every item) per item written, and
the worst pair's lag p99. With PYTHONPATH naming another tree's src/, the regions and the writer run
that tree's code.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from bench import regions
from bench.loadgen import cores

SOURCE = regions.REGIONS[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.write_cpu", description=__doc__)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--regions", type=int, choices=range(2, len(regions.REGIONS) + 1), default=2)
    args = parser.parse_args(argv)
    first, second = cores()
    ids = regions.REGIONS[: args.regions]
    with (
        tempfile.TemporaryDirectory(prefix="bookstore-bench-write-cpu-") as tmp,
        regions.system_up(Path(tmp), ids, {r: first if r == SOURCE else second for r in ids}) as system,
    ):
        regions._connected(system, ids)
        regions._measure(system, ids, {r: 100.0 for r in ids}, 1.0)
        measured = regions._measure(system, ids, {SOURCE: args.rate}, args.seconds)
    written = sum(run.written.count for run in measured.runs)
    receivers = [r for r in ids if r != SOURCE]
    busiest = max(receivers, key=lambda r: measured.cpu_s[r])
    p99 = max(measured.arrived[(SOURCE, r)].percentile(0.99) for r in receivers)
    tree = os.environ.get("PYTHONPATH", "this checkout")
    print(
        f"{tree}: {len(ids)} regions, sender {measured.cpu_s[SOURCE] / written * 1e6:.0f} us/write, "
        f"receiver (busiest) {measured.cpu_s[busiest] / written * 1e6:.0f} us/write, "
        f"lag p99 (worst pair) {p99:.0f} ms, {written} items; load {os.getloadavg()[0]:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
