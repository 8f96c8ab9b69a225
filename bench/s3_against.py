"""S3 throughput of this tree beside another git ref's, alternated in one run: ratios per round.

    .venv/bin/python -m bench.s3_against --against d181f21 [--rounds 3] [--parts capacity,throughput]

The machine is shared and noisy, so the two trees are measured in turn, in the same run, and only the
ratio of each pair is read. The ref is checked out (detached) in a temporary git worktree; one region
process of each tree (`bookstore region serve` of this virtualenv, PYTHONPATH=<the tree's src/>) runs
alone, pinned to the first core, with its own fresh data directory, and `bench.objects`'s own
`capacity` (wrk replaying boto3-presigned 4 KiB PUTs and GETs) and `throughput` (boto3 clients: PUT and
GET of 4 KiB and 8 MiB, the server's CPU over each window) drive it from the second core. Rounds
alternate which tree goes first, so a drift in the machine's load does not favour one side.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bench.loadgen import cores
from bench.objects import LARGE, SMALL, capacity, region_server, throughput

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("capacity", "throughput")


@contextlib.contextmanager
def checked_out(ref: str) -> Iterator[Path]:
    """The src/ of `ref`, checked out detached in a temporary worktree removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="bench-s3-against-") as tmp:
        tree = Path(tmp) / "tree"
        git = ["git", "-C", str(ROOT)]
        subprocess.run([*git, "worktree", "add", "--detach", str(tree), ref], check=True, capture_output=True)
        try:
            yield tree / "src"
        finally:
            subprocess.run(
                [*git, "worktree", "remove", "--force", str(tree)], check=False, capture_output=True
            )


def figures(src: Path, parts: tuple[str, ...]) -> dict[str, float]:
    """One tree's figures, higher is better: requests or MB per server CPU-second, wrk requests/s (and
    per server CPU-second)."""
    server_core, load_core = cores()
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-s3-against-run-") as tmp:
        work = Path(tmp)
        with region_server(work, server_core, src) as target:
            if "capacity" in parts:
                cpu: dict[str, float] = {}
                for op, result in capacity(target, work, load_core, cpu).items():
                    out[f"wrk {op} 4 KiB, requests/s"] = result.requests_per_s
                    # The wall rate follows the machine's load; the server's CPU per request does not.
                    out[f"wrk {op} 4 KiB, requests per server CPU-s"] = result.requests / cpu[op]
            if "throughput" in parts:
                for name, rate in throughput(target, load_core).items():
                    op, size = name.split()
                    if int(size) == SMALL:
                        out[f"{op} 4 KiB, requests per server CPU-s"] = rate.ops_per_cpu_s
                    elif int(size) == LARGE:
                        out[f"{op} 8 MiB, MB per server CPU-s"] = rate.mb_per_cpu_s
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--against", required=True, help="the git ref to compare with (e.g. d181f21)")
    parser.add_argument("--rounds", type=int, default=2, help="alternated rounds (default 2)")
    parser.add_argument("--parts", default=",".join(PARTS), help="capacity, throughput or both")
    args = parser.parse_args()
    parts = tuple(p for p in args.parts.split(",") if p)
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts {sorted(unknown)}; choose among {PARTS}")
    this = ROOT / "src"
    with checked_out(args.against) as before:
        for round_ in range(1, args.rounds + 1):
            order = [("before", before), ("this", this)]
            if round_ % 2 == 0:
                order.reverse()
            got = {label: figures(src, parts) for label, src in order}
            turns = " then ".join(label for label, _ in order)
            load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
            print(f"\nRound {round_} ({turns}), {args.against} beside this tree; load average {load}\n")
            print(f"| Figure | {args.against} | this tree | ratio |")
            print("|---|---:|---:|---:|")
            for name, old in got["before"].items():
                new = got["this"][name]
                print(f"| {name} | {old:,.0f} | {new:,.0f} | {new / old:.2f} x |", flush=True)


if __name__ == "__main__":
    main()
