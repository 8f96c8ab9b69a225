"""Instructions per entry a region executes to receive a catch-up, counted by callgrind, beside another tree.

    .venv/bin/python -m bench.catch_up_instructions [--against SRC ...] [--entries N] [--serving]

What a restarted region does with each change of a backlog, in one process and one thread (so the
count does not depend on the load of the machine, nor on how threads interleave): the lines a follow
stream carries (read from a seeded log of cart puts and encoded by the sender's code, 2,000 entries a
line) are split as the tree's follower splits them (kernel.stream.Lines, or httpx's aiter_lines),
parsed by HttpPeer's reader (the wire's checks), applied by SqliteReplica in batches of
CATCH_UP_BATCH with the key-hash indexes deferred (a large catch-up), and their lags observed as the
Replicator observes them. With `--serving`, each batch applied is also read back as the source's
follow stream of DEST reads it while DEST drains (SOURCE follows DEST too): its log after the
stream's position, only DEST's own changes asked for, encoded as the sender encodes a line; the
backlog's rows, of origin SOURCE, are all filtered out. Each tree (this checkout's src/, then each
`--against` src/, through PYTHONPATH with this checkout's virtualenv) receives N and then 2N entries
under `valgrind --tool=callgrind`; the figure is the difference divided by N, so start-up and imports
cancel out. Not counted: the socket, HTTP framing, the event loop and the hops between threads.
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SOURCE, DEST = "eu-west-1", "ap-southeast-1"
TOTALS = re.compile(r"Collected : (\d+)")


def make_lines(path: Path, count: int) -> None:
    """A stream's lines for `count` cart puts, as the source region encodes them for DEST."""
    from bench.backlog import seed
    from bookstore import tables
    from bookstore.replication.tables.batches import encoded
    from bookstore.replication.tables.http import BATCH
    from bookstore.storage.sqlite.tables import SqliteDatabase

    with tempfile.TemporaryDirectory(prefix="bookstore-bench-catch-up-") as tmp:
        seed(Path(tmp) / "tables.db", "catch-up", count)
        with SqliteDatabase(Path(tmp) / "tables.db", SOURCE) as db, path.open("wb") as out:
            names = [schema.name for schema in tables.ALL]
            for schema in tables.ALL:
                db.table(schema)
            after = 0
            while (read := db.read_log(after, limit=BATCH, tables=names, exclude_origin=DEST)).entries:
                out.write(encoded(read).line(int(time.time() * 1000)))
                after = read.last_seq


def receive(lines: Path, count: int, *, serving: bool = False) -> None:
    """Receive the first `count` entries of `lines` as a restarted DEST would (see the module's doc)."""
    import httpx
    import orjson
    from prometheus_client import CollectorRegistry

    from bookstore import tables
    from bookstore.kernel.clock import SystemClock
    from bookstore.replication.tables.batches import encoded
    from bookstore.replication.tables.http import BATCH, HttpPeer
    from bookstore.replication.tables.replicator import CATCH_UP_BATCH, ReplicationMetrics, Replicator
    from bookstore.storage.sqlite.replica import SqliteReplica
    from bookstore.storage.sqlite.tables import SqliteDatabase

    schemas = {schema.name: schema for schema in tables.ALL}
    # Its client is never used: only its reader of a stream's lines.
    peer = HttpPeer(
        SOURCE, "http://unused", me=DEST, auth=httpx.Auth(), schemas=schemas, regions=[SOURCE, DEST]
    )
    clock = SystemClock()
    with tempfile.TemporaryDirectory(prefix="bookstore-bench-catch-up-") as tmp:
        db = SqliteDatabase(Path(tmp) / "tables.db", DEST, clock)
        for schema in tables.ALL:
            db.table(schema)
        store = SqliteReplica(db)
        metrics = ReplicationMetrics(CollectorRegistry(), DEST)
        replicator = Replicator(store, DEST, [peer], clock=clock, metrics=metrics, tables=list(schemas))
        # As region.process does after start-up.
        gc.freeze()
        gc.set_threshold(*_thresholds())
        store.defer_key_index(SOURCE, count)
        names = list(schemas)
        served = store.head_seq()

        def serve() -> None:
            # SOURCE's stream of this region's log: to the head, a read of BATCH rows at a time.
            nonlocal served
            while served < store.head_seq():
                read = store.read_log(
                    served, limit=BATCH, tables=names, exclude_origin=SOURCE, origins=[DEST], old_images=False
                )
                encoded(read)
                served = read.last_seq

        def apply(entries: list[object]) -> None:
            result = store.apply(SOURCE, entries, entries[-1].seq)  # type: ignore[arg-type, attr-defined]
            if serving:
                serve()
            now = clock.now_ms()
            observe = getattr(replicator, "_observe_lags", None)
            if observe is not None:
                observe(result.applied_entries, now)
                return
            # A tree from before _observe_lags: what its Replicator._apply did per entry.
            histogram = metrics.lag.labels(SOURCE, DEST)
            for entry in result.applied_entries:
                lag = max(0, now - entry.written_ms)
                replicator.lags.add(entry.origin, now, lag)
                histogram.observe(lag / 1000)

        split = _splitter()
        pending: list[object] = []
        received = 0
        with lines.open("rb") as stream:
            while received < count and (chunk := stream.read(65536)):
                for line in split(chunk):
                    read = peer._read(orjson.loads(line))
                    pending += read.entries
                    received += len(read.entries)
                    if len(pending) >= CATCH_UP_BATCH:
                        apply(pending)
                        pending = []
                    if received >= count:
                        break
        if pending:
            apply(pending)
        store.restore_key_index(SOURCE)
        db.close()


def _thresholds() -> tuple[int, ...]:
    """The collector's thresholds the tree's region process sets after start-up."""
    try:
        from bookstore.region.process import GC_THRESHOLDS
    except ImportError:  # a tree from before they were named
        return (50_000, 20, 10)
    return tuple(GC_THRESHOLDS)


def _splitter() -> Callable[[bytes], list[Any]]:
    """How the tree's follower splits a stream's bytes into lines: kernel.stream.Lines, or (a tree from
    before it) httpx's aiter_lines, text decoded and split as str.splitlines splits."""
    try:
        from bookstore.kernel.stream import Lines  # type: ignore[attr-defined, unused-ignore]
    except ImportError:
        from httpx._decoders import LineDecoder, TextDecoder

        text, split = TextDecoder(), LineDecoder()
        return lambda chunk: split.decode(text.decode(chunk))
    return Lines().feed  # type: ignore[no-any-return, unused-ignore]


def counted(src: Path, lines: Path, count: int, *, serving: bool = False) -> int:
    """The instructions callgrind counts for one process receiving `count` entries with `src`'s code."""
    with tempfile.TemporaryDirectory() as tmp:
        argv = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={tmp}/callgrind.out",
            sys.executable,
            "-m",
            "bench.catch_up_instructions",
            "--receive",
            str(lines),
            str(count),
            *(["--serving"] if serving else []),
        ]
        env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{ROOT}"}
        done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT, check=True)
    return int(TOTALS.findall(done.stderr)[-1])


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.catch_up_instructions", description=__doc__)
    parser.add_argument("--against", action="append", default=[], type=Path, help="another tree's src/")
    parser.add_argument("--entries", type=int, default=20_000, help="N (each tree receives N and 2N)")
    parser.add_argument("--receive", nargs=2, metavar=("LINES", "COUNT"), help=argparse.SUPPRESS)
    parser.add_argument(
        "--serving", action="store_true", help="also serve the source's follow stream back (see above)"
    )
    args = parser.parse_args()
    if args.receive:
        receive(Path(args.receive[0]), int(args.receive[1]), serving=args.serving)
        return 0
    with tempfile.TemporaryDirectory(prefix="bookstore-bench-catch-up-") as tmp:
        lines = Path(tmp) / "lines.ndjson"
        make_lines(lines, 2 * args.entries)
        for src in [ROOT / "src", *args.against]:
            once = counted(src, lines, args.entries, serving=args.serving)
            twice = counted(src, lines, 2 * args.entries, serving=args.serving)
            what = "received and served back" if args.serving else "received"
            print(f"{src}: {(twice - once) / args.entries:,.0f} instructions per entry {what}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
