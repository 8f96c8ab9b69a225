"""Instructions a region spends per write it streams to 1 and to 4 followers, counted by callgrind.

    .venv/bin/python -m bench.sender_instructions [--against SRC ...] [--writes W] [--rate R]

The sender's side of bench.regions' curve without the noise of a shared machine: eu-west-1 of a
five-region topology (direct links, no supervisor, no link simulator) runs `bookstore region serve`
under `valgrind --tool=callgrind`; the other regions do not run. A follower process (not counted)
opens K follow streams to it, signed as K of the other regions, each asking for eu-west-1's changes
as a Replicator would, and reads their lines. A writer process (bench.replication's) puts W items
into eu-west-1's carts at R writes/s, which the region sees by its poll of the log's head. The
figure is everything the region process executed from the first write until every stream had the
last one, divided by W, for K = 1 and K = 4; the slope (K=4 - K=1) / 3 is the cost of one more
follower per write. At R = 10 every write goes out alone (a line per write per follower: pacing
never holds one back), so the slope is what one follower's line costs; at 500 writes/s a line
carries one or two writes. The region's poll of the log's head is set to 50 ms (POLL_S, through a
wrapper: under callgrind a poll every 2 ms would be most of what the process does, the same for
both K); what the region does at rest in the window (following its four absent peers, their
retries) counts in both K alike. For each source tree (this checkout, then each `--against` src/).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench.servers import running
from bookstore.runtime.secret import deployment_credentials
from bookstore.supervisor.launch import loopback_topology

REGIONS = ("eu-west-1", "ap-southeast-1", "us-east-1", "us-west-2", "sa-east-1")
SOURCE = REGIONS[0]
TOTALS = re.compile(r"^(?:summary|totals):\s+(\d+)", re.MULTILINE)
ROOT = Path(__file__).resolve().parent.parent
NETWORK = int(os.environ.get("BOOKSTORE_TEST_NETWORK", "100")) % 254 + 1
# The region under callgrind, with its poll of the log's head slowed (see the docstring).
REGION = (
    "import sys, bookstore.replication.tables.http as h; h.POLL_S = 0.05; "
    "from bookstore.cli import main; sys.argv[0] = 'bookstore'; main()"
)

# The follower process: K streams of eu-west-1's changes from its head, until each has `last`.
FOLLOWERS = """
import asyncio, sys
from pathlib import Path
from bookstore.kernel.auth import PeerAuth
from bookstore.kernel.clock import SystemClock
from bookstore.replication.tables.http import HttpPeer
from bookstore.runtime.secret import deployment_secret
from bookstore.tables import ALL
url, data, k = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
regions = sys.argv[4].split(",")
source, followers = regions[0], regions[1 : 1 + k]
schemas = {s.name: s for s in ALL}
async def follow(me, ready, until):
    auth = PeerAuth(deployment_secret(data), me, SystemClock(), destination=source)
    peer = HttpPeer(source, url, me=me, auth=auth, schemas=schemas, regions=regions, connect_timeout_s=60)
    async for read in peer.follow(0, origins=[source]):
        ready.set()
        if until[0] and read.last_seq >= until[0]:
            break
    await peer.aclose()
async def main():
    until = [0]
    readies = [asyncio.Event() for _ in followers]
    tasks = [asyncio.create_task(follow(me, r, until)) for me, r in zip(followers, readies)]
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 300)
    print("connected", flush=True)
    until[0] = int(await asyncio.to_thread(sys.stdin.readline))
    await asyncio.wait_for(asyncio.gather(*tasks), 300)
    print("done", flush=True)
asyncio.run(main())
"""


def _bookstore_env(src: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = f"{src}:{ROOT}" if src is not None else f"{ROOT / 'src'}:{ROOT}"
    return env


@contextlib.contextmanager
def _sender(work: Path, src: Path | None) -> Iterator[tuple[Path, str, int, Path]]:
    """eu-west-1 of the tree `src` under callgrind: its tables file, URL, pid and output file."""
    addresses = {r: f"127.{NETWORK}.{60 + i}.1" for i, r in enumerate(REGIONS)}
    path = work / "topology.toml"
    topology = loopback_topology(path, f"127.{NETWORK}.60.250", addresses)
    path.write_text('links = "direct"\n' + path.read_text(encoding="utf-8"), encoding="utf-8")
    data = work / "data"
    deployment_credentials(data)
    url = topology.region(SOURCE).api_url
    out = work / "callgrind.out"
    argv = ["env", f"PYTHONPATH={_bookstore_env(src)['PYTHONPATH']}", "valgrind", "--tool=callgrind"]
    argv += [f"--callgrind-out-file={out}", sys.executable, "-c", REGION]
    argv += ["region", "serve", "--region", SOURCE, "--data-dir", str(data), "--topology", str(path)]
    with running(argv, f"{url}/health", work / "region.log", core=None, timeout_s=600) as proc:
        yield data / SOURCE / "tables.db", url, proc.pid, out


def _callgrind(option: str, pid: int) -> None:
    subprocess.run(["callgrind_control", option, str(pid)], check=True, capture_output=True, timeout=300)


def _head(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return int(conn.execute("SELECT coalesce(max(seq), 0) FROM changes").fetchone()[0])


def _write(db: Path, count: int, rate: float, env: dict[str, str]) -> None:
    argv = [sys.executable, "-m", "bench.replication", str(db), f"sender-{time.time_ns()}"]
    argv += [f"--rate={rate}", f"--count={count}", f"--region={SOURCE}"]
    subprocess.run(argv, env=env, cwd=ROOT, check=True, capture_output=True, timeout=count / rate + 300)


def measure(src: Path | None, followers: int, writes: int, rate: float) -> float:
    """Instructions of the sender per write with `followers` streams, for the tree `src` (None: this one)."""
    env = _bookstore_env(src)
    with tempfile.TemporaryDirectory(prefix="bench-sender-instructions-") as tmp:
        work = Path(tmp)
        with _sender(work, src) as (db, url, pid, out):
            argv = [sys.executable, "-c", FOLLOWERS, url, str(work / "data"), str(followers), ",".join(REGIONS)]
            follower = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            assert follower.stdin is not None and follower.stdout is not None
            try:
                if follower.stdout.readline().strip() != "connected":
                    raise SystemExit("the followers did not connect")
                _write(db, 20, rate, env)  # warm-up: the streams' first lines, the writer's first commits
                time.sleep(2)
                before = set(out.parent.glob(out.name + ".*"))
                _callgrind("--zero", pid)
                _write(db, writes, rate, env)
                follower.stdin.write(f"{_head(db)}\n")
                follower.stdin.flush()
                if follower.stdout.readline().strip() != "done":
                    raise SystemExit("the followers did not receive every write")
                _callgrind("--dump", pid)
            finally:
                follower.kill()
                follower.wait()
            new = sorted(set(out.parent.glob(out.name + ".*")) - before)
            found = TOTALS.search(new[-1].read_text(encoding="utf-8", errors="replace"))
            if found is None:
                raise SystemExit(f"no instruction total in {new[-1]}")
            return int(found.group(1)) / writes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--against", type=Path, action="append", default=[], help="another tree's src/")
    parser.add_argument("--writes", type=int, default=100)
    parser.add_argument("--rate", type=float, default=10.0)
    args = parser.parse_args()
    trees: list[tuple[str, Path | None]] = [("this checkout", None)]
    trees += [(str(src), src.resolve()) for src in args.against]
    print(f"Instructions of the sender per write (callgrind, {args.writes} writes at {args.rate:g}/s)\n")
    print("| Tree | 1 follower | 4 followers | per follower more (slope) | 4 / 1 |")
    print("|---|---:|---:|---:|---:|")
    for name, src in trees:
        one = measure(src, 1, args.writes, args.rate)
        four = measure(src, 4, args.writes, args.rate)
        print(f"| {name} | {one:,.0f} | {four:,.0f} | {(four - one) / 3:,.0f} | {four / one:.2f} x |", flush=True)


if __name__ == "__main__":
    main()
