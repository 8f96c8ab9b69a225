"""Instructions a sender spends per write it streams to 1 and to 4 followers, counted by callgrind.

    .venv/bin/python -m bench.sender_instructions [--against SRC ...] [--writes W]

The sender's side of bench.regions' curve without the noise of a shared machine. A process under
`valgrind --tool=callgrind` serves a region's replication routes (its SQLite tables and log, the
ChangeFeed, PeerAuthMiddleware, uvicorn with the region's listener settings: uvloop, the coalescing
httptools protocol) and makes the writes itself: W times, 50 ms apart, two puts into carts back to
back (one line carries both, as a paced line carries a tick's writes at 500 writes/s). A follower
process (not counted) opens K follow streams to it, signed as K other regions, each asking for the
sender's own changes as a Replicator does, and reads their lines. The figure is everything the
sender process executed from the first write until every stream had the last one, divided by the
2 W writes, for K = 1 and K = 4; the slope (K=4 - K=1) / 3 is what one more follower costs per write.
The feed's poll of the log's head (for other processes' commits) is set to an hour: every write here
is announced by its commit, and polls every 2 ms counted as often as callgrind's pace let the wall
time run (K=1 moved by +-6 % from run to run with them). Left out: the region's FastAPI stack (the
same on both sides of a comparison unless a change is about it), its other loops (anti-entropy,
blog, objects) and the link simulator's hop (another process). For each source tree (this checkout,
then each `--against` src/).
SENDER_INSTRUCTIONS_KEEP=PREFIX keeps each run's callgrind dump as PREFIX-K (for callgrind_annotate).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TOTALS = re.compile(r"^(?:summary|totals):\s+(\d+)", re.MULTILINE)
ROOT = Path(__file__).resolve().parent.parent
REGIONS = ("eu-west-1", "ap-southeast-1", "us-east-1", "us-west-2", "sa-east-1")
SECRET = "the sender_instructions bench's shared secret"
ADDRESS = f"127.{int(os.environ.get('BOOKSTORE_TEST_NETWORK', '100')) % 254 + 1}.70.1"

# The process under callgrind: the sender. argv: work directory, writes.
SENDER = """
import asyncio, socket, sys, time
from pathlib import Path
from starlette.applications import Starlette
import uvicorn
from bookstore.kernel.auth import PeerAuthMiddleware
from bookstore.kernel.clock import SystemClock
from bookstore.kernel.stream import ChangeFeed
import bookstore.replication.tables.http as replication_http
from bookstore.replication.tables.http import replication_routes
from bookstore.runtime.listeners import Limits, server_config
from bookstore.storage.sqlite.replica import SqliteReplica
from bookstore.storage.sqlite.tables import SqliteDatabase
from bookstore.tables import ALL, CARTS
work, writes, address, secret = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
regions = sys.argv[5].split(",")
clock = SystemClock()
db = SqliteDatabase(work / "tables.db", regions[0], clock)
carts = db.table(CARTS)
store = SqliteReplica(db)
feed = ChangeFeed()
store.add_listener(feed.notify)
# The writes are this process's, each announced to the feed: no poll of the head is needed, and one every
# 2 ms would count as many times as the wall time under callgrind allowed (a third of the total).
replication_http.POLL_S = 3600.0
routes = replication_routes(store, feed, {s.name: s for s in ALL}, regions, clock=clock)
app = PeerAuthMiddleware(Starlette(routes=routes), secret, clock, destination=regions[0])
sock = socket.socket()
sock.bind((address, 0))
config = server_config(app, limits=Limits(keep_alive_s=65), lifespan="off", log_level="warning")
server = uvicorn.Server(config)

async def writer():
    while not (work / "go").exists():
        await asyncio.sleep(0.1)
    for n in range(writes):
        for k in (0, 1):
            carts.put({"customerId": f"c{n}", "bookId": f"b{k}", "quantity": n})
        await asyncio.sleep(0.05)
    (work / "wrote").write_text(str(db.head_seq()))

async def main():
    feed.bind(asyncio.get_running_loop())
    task = asyncio.create_task(writer())
    (work / "port").write_text(str(sock.getsockname()[1]))
    await server.serve(sockets=[sock])
    task.cancel()

asyncio.run(main())
"""

# The follower process: K streams of the sender's changes from the start, until each has `last`.
FOLLOWERS = """
import asyncio, sys
import httpx
from bookstore.kernel.auth import PeerAuth
from bookstore.kernel.clock import SystemClock
from bookstore.replication.tables.http import HttpPeer
from bookstore.tables import ALL
url, k, secret, regions = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4].split(",")
source = regions[0]
schemas = {s.name: s for s in ALL}
async def follow(me, ready, until):
    auth = PeerAuth(secret, me, SystemClock(), destination=source)
    peer = HttpPeer(source, url, me=me, auth=auth, schemas=schemas, regions=regions, connect_timeout_s=60)
    peer.client.timeout = httpx.Timeout(600)  # the sender runs under callgrind: its lines come slowly
    async for read in peer.follow(0, origins=[source]):
        ready.set()
        if until[0] and read.last_seq >= until[0]:
            break
    await peer.aclose()
async def main():
    until = [0]
    readies = [asyncio.Event() for _ in range(k)]
    tasks = [asyncio.create_task(follow(me, r, until)) for me, r in zip(regions[1 : 1 + k], readies)]
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 600)
    print("connected", flush=True)
    until[0] = int(await asyncio.to_thread(sys.stdin.readline))
    await asyncio.wait_for(asyncio.gather(*tasks), 600)
    print("done", flush=True)
asyncio.run(main())
"""


def _wait_for(path: Path, proc: subprocess.Popen[bytes], timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while not path.exists() or not path.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"no {path.name} from the sender (exit {proc.poll()})")
        time.sleep(0.1)
    return path.read_text()


def measure(src: Path | None, followers: int, writes: int) -> float:
    """Instructions of the sender per write with `followers` streams, for the tree `src` (None: this one)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = f"{src}:{ROOT}" if src is not None else f"{ROOT / 'src'}:{ROOT}"
    regions = ",".join(REGIONS)
    with tempfile.TemporaryDirectory(prefix="bench-sender-instructions-") as tmp:
        work = Path(tmp)
        out = work / "callgrind.out"
        argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, "-c", SENDER]
        argv += [str(work), str(writes), ADDRESS, SECRET, regions]
        with (work / "sender.log").open("wb") as log:
            sender = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        follower: subprocess.Popen[str] | None = None
        try:
            port = _wait_for(work / "port", sender, 900)
            time.sleep(1)
            url = f"http://{ADDRESS}:{port}"
            argv = [sys.executable, "-c", FOLLOWERS, url, str(followers), SECRET, regions]
            follower = subprocess.Popen(
                argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
            )
            assert follower.stdin is not None and follower.stdout is not None
            if follower.stdout.readline().strip() != "connected":
                raise SystemExit("the followers did not connect")
            time.sleep(2)
            subprocess.run(["callgrind_control", "--zero", str(sender.pid)], check=True, capture_output=True)
            (work / "go").write_text("go")
            head = _wait_for(work / "wrote", sender, 900)
            follower.stdin.write(f"{head}\n")
            follower.stdin.flush()
            if follower.stdout.readline().strip() != "done":
                raise SystemExit("the followers did not receive every write")
            subprocess.run(["callgrind_control", "--dump", str(sender.pid)], check=True, capture_output=True)
            dumps = sorted(out.parent.glob(out.name + ".*"))
            if keep := os.environ.get("SENDER_INSTRUCTIONS_KEEP"):
                shutil.copy(dumps[-1], f"{keep}-{followers}")
            found = TOTALS.search(dumps[-1].read_text(encoding="utf-8", errors="replace"))
            if found is None:
                raise SystemExit(f"no instruction total in {dumps[-1]}")
            return int(found.group(1)) / (2 * writes)
        finally:
            for proc in (follower, sender):
                if proc is not None:
                    proc.kill()
                    proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--against", type=Path, action="append", default=[], help="another tree's src/")
    parser.add_argument("--writes", type=int, default=100, help="pairs of writes, 50 ms apart (default 100)")
    args = parser.parse_args()
    trees: list[tuple[str, Path | None]] = [("this checkout", None)]
    trees += [(str(src), src.resolve()) for src in args.against]
    print(
        f"Instructions of the sender per write (callgrind, {2 * args.writes} writes in pairs 50 ms apart)\n"
    )
    print("| Tree | 1 follower | 4 followers | each follower more (slope) | 4 / 1 |")
    print("|---|---:|---:|---:|---:|")
    for name, src in trees:
        one = measure(src, 1, args.writes)
        four = measure(src, 4, args.writes)
        print(
            f"| {name} | {one:,.0f} | {four:,.0f} | {(four - one) / 3:,.0f} | {four / one:.2f} x |",
            flush=True,
        )


if __name__ == "__main__":
    main()
