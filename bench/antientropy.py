"""Anti-entropy at 10k, 100k and 1M items: CPU per round, time to find and repair divergence, write cost."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from functools import partial
from pathlib import Path

import orjson
from prometheus_client import CollectorRegistry

from bench.procstat import memory_mib
from bench.report import Figure, Goal, Section
from bookstore.kernel.clock import HybridLogicalClock, SystemClock
from bookstore.ports import Item, Key
from bookstore.replication.tables.model import LogEntry, LogRead, SnapshotPage, Version
from bookstore.replication.tables.replicator import ReplicationMetrics, Replicator
from bookstore.replication.tables.wire import entry_json, parse_entries, parse_versions
from bookstore.storage.sqlite.log import VERSION_INDEX
from bookstore.storage.sqlite.replica import SqliteReplica
from bookstore.storage.sqlite.tables import SqliteDatabase, row_hashes
from bookstore.tables import BOOKS

HERE, THERE, ELSEWHERE = "eu-west-1", "ap-southeast-1", "us-east-1"
REGIONS = (HERE, THERE, ELSEWHERE)
SCHEMAS = {"books": BOOKS}
# BENCH=quick stops at 100k items; the full run goes to 1M (about a minute to build on this machine).
SIZES = (10_000, 100_000) if os.environ.get("BENCH") == "quick" else (10_000, 100_000, 1_000_000)
DIVERGENT = (1, 100, 10_000)
ROUNDS = 15
LOAD_BATCH = 20_000
WRITES = 5_000
# As regions run: digests of 64 buckets, versions younger than 10 s left out.
SETTLE_MS = 10_000
# The goal: a round at 1M items costs at most twice a round at 10k.
FLAT_GOAL = 2.0
REPAIR_GOALS_S = {1: 1.0, 100: 2.0, 10_000: 30.0}
WRITE_COST_GOAL = 1.25


class DirectPeer:
    """The Peer protocol over another store in this process, entries crossing the wire format."""

    def __init__(self, region: str, store: SqliteReplica, source: str) -> None:
        self.region = region
        self.store = store
        self.source = source

    def _wire(self, entries: Sequence[LogEntry]) -> list[LogEntry]:
        raw = orjson.loads(orjson.dumps([entry_json(e) for e in entries]))
        return parse_entries(raw, SCHEMAS, REGIONS)

    async def digest(self, table: str, buckets: int, before: int | None = None) -> list[str]:
        digest: list[str] = orjson.loads(orjson.dumps(self.store.digest(table, buckets, before)))
        return digest

    async def bucket(self, table: str, bucket: int, buckets: int) -> list[LogEntry]:
        return self._wire(self.store.bucket_entries(table, bucket, buckets))

    async def bucket_versions(self, table: str, bucket: int, buckets: int) -> list[tuple[Key, Version]]:
        versions = self.store.bucket_versions(table, bucket, buckets)
        return parse_versions(orjson.loads(orjson.dumps([[k, h, r] for k, (h, r) in versions])))

    async def entries(self, table: str, keys: Sequence[Key]) -> list[LogEntry]:
        return self._wire(self.store.entries_of(table, orjson.loads(orjson.dumps(list(keys)))))

    async def push(self, entries: list[LogEntry]) -> list[LogEntry]:
        # One batch, with no body limit in between: the figures are the stores' work (as before).
        if entries:
            self.store.apply(self.source, self._wire(entries), None)
        return []

    def follow(self, after: int, origins: Sequence[str] | None = None) -> AsyncGenerator[LogRead, None]:
        raise NotImplementedError("anti-entropy only")

    async def snapshot(self, after: str | None, limit: int) -> SnapshotPage:
        raise NotImplementedError("anti-entropy only")

    async def ack(self, seq: int) -> None:
        raise NotImplementedError("anti-entropy only")

    async def aclose(self) -> None:
        return None


def book(i: int, price: float = 15.98) -> Item:
    return {"id": f"b{i:07d}", "name": f"Book {i}", "author": "An Author", "category": "Cars", "price": price}


def build(path: Path, n: int, oldest_ms: int) -> None:
    """A region file holding `n` books, written as rows straight into the table (the digest triggers
    keep the leaves, as on every path that writes rows): the log is not what is measured here."""
    with SqliteDatabase(path, HERE) as db:
        table = db.table(BOOKS)
        for start in range(0, n, LOAD_BATCH):
            rows = []
            for i in range(start, min(n, start + LOAD_BATCH)):
                pk = f"b{i:07d}"
                hlc = HybridLogicalClock.pack(oldest_ms) + i
                khash, rhash = row_hashes(pk, "", hlc, HERE, False)
                rows.append((pk, "", orjson.dumps(book(i)).decode(), hlc, HERE, None, None, 0, khash, rhash))
            with db.transaction("loading books") as conn:
                conn.executemany(table.sql_upsert, rows)


def open_pair(work: Path, size: int) -> tuple[list[SqliteDatabase], Replicator, DirectPeer]:
    dbs = [SqliteDatabase(work / f"{size}-{r}.db", r) for r in (HERE, THERE)]
    for db in dbs:
        db.table(BOOKS)
        # As a running region's clock stands: the settle bound counts back from it.
        db.hlc.now()
    here, there = SqliteReplica(dbs[0]), SqliteReplica(dbs[1])
    peer = DirectPeer(THERE, there, HERE)
    replicator = Replicator(
        here,
        HERE,
        [peer],
        clock=SystemClock(),
        metrics=ReplicationMetrics(CollectorRegistry(), HERE),
        anti_entropy_settle_ms=SETTLE_MS,
        tables=("books",),
    )
    return dbs, replicator, peer


def cpu_s(action: Callable[[], object]) -> tuple[float, float]:
    """(CPU seconds of this process, wall seconds) of `action()`."""
    cpu, wall = time.process_time(), time.perf_counter()
    action()
    return time.process_time() - cpu, time.perf_counter() - wall


def one_round(replicator: Replicator, peer: DirectPeer) -> tuple[float, float, int]:
    """(CPU seconds, wall seconds, entries repaired here) of one anti-entropy round with `peer`."""
    cpu, wall = time.process_time(), time.perf_counter()
    repaired = asyncio.run(replicator.anti_entropy(peer))
    return time.process_time() - cpu, time.perf_counter() - wall, repaired


def whole_table_digest(db: SqliteDatabase) -> None:
    """The digest as it was computed before (every row spelt by SQLite, hashed by Python): the anchor."""
    hashers = [hashlib.blake2b(digest_size=16) for _ in range(64)]
    rows = db.engine.query(
        "SELECT khash, CAST(quote(pk) || ',' || quote(sk) || ',' || hlc || ',' || quote(region) AS BLOB) "
        'FROM "items_books" ORDER BY khash, pk, sk'
    )
    for khash, line in rows:
        hashers[(khash * 64) >> 32].update(line)


def diverge(db: SqliteDatabase, count: int, size: int, rng: random.Random) -> None:
    """`count` random books changed in one region only, by a third region's writes that reached it alone."""
    replica = SqliteReplica(db)
    now = SystemClock().now_ms() - 60_000
    entries = []
    for n, i in enumerate(rng.sample(range(size), count)):
        hlc = HybridLogicalClock.pack(now) + n
        entries.append(
            LogEntry(
                seq=1,
                table="books",
                kind="INSERT",
                key={"id": f"b{i:07d}"},
                old=None,
                new=book(i, 1.0),
                written_ms=now,
                origin=ELSEWHERE,
                version=(hlc, ELSEWHERE),
                previous=None,
            )
        )
    for start in range(0, len(entries), 5_000):
        replica.apply(ELSEWHERE, entries[start : start + 5_000], None)


def write_cost(work: Path, with_digests: bool) -> float:
    """Seconds of CPU per local put (each its own transaction), with or without the digest triggers."""
    path = work / f"writes-{with_digests}.db"
    with SqliteDatabase(path, HERE) as db:
        books = db.table(BOOKS)
        if not with_digests:
            with db.transaction("dropping the digests") as conn:
                triggers = "SELECT name FROM sqlite_master WHERE type = 'trigger' AND name GLOB 'dg_*'"
                for (trigger,) in conn.execute(triggers).fetchall():
                    conn.execute(f'DROP TRIGGER "{trigger}"')
                conn.execute(f'DROP INDEX "{VERSION_INDEX}"')
        for i in range(500):
            books.put(book(i))  # warm up

        def puts() -> None:
            for i in range(WRITES):
                books.put(book(i))

        cpu, _ = cpu_s(puts)
    return cpu / WRITES


def run_bench() -> Section:
    figures: list[Figure] = []
    rounds: dict[int, float] = {}
    notes: dict[int, str] = {}
    repairs: dict[int, tuple[float, float, int]] = {}
    rss: dict[int, float] = {}
    rss_at_start, _ = memory_mib(os.getpid())
    rng = random.Random(16)
    oldest_ms = SystemClock().now_ms() - 3_600_000
    with tempfile.TemporaryDirectory(prefix="bookstore-bench-antientropy-") as tmp:
        work = Path(tmp)
        for size in SIZES:
            started = time.perf_counter()
            build(work / f"{size}-{HERE}.db", size, oldest_ms)
            shutil.copyfile(work / f"{size}-{HERE}.db", work / f"{size}-{THERE}.db")
            built_s = time.perf_counter() - started
            dbs, replicator, peer = open_pair(work, size)
            try:
                samples = []
                for _ in range(ROUNDS):
                    cpu, _, repaired = one_round(replicator, peer)
                    assert repaired == 0, "regions built equal differ"
                    samples.append(cpu)
                rounds[size] = statistics.median(samples)
                # With both stores open after their rounds: what anti-entropy holds at this size.
                rss[size] = memory_mib(os.getpid())[0]
                old_cpu, _ = cpu_s(partial(whole_table_digest, dbs[0]))
                notes[size] = (
                    f"median of {ROUNDS} rounds; both regions' work in one process; built in "
                    f"{built_s:.0f} s; the whole-table digest of before took {old_cpu * 1000:.0f} ms CPU "
                    "for one region"
                )
                if size == SIZES[-1]:
                    for count in DIVERGENT:
                        diverge(dbs[1], count, size, rng)
                        cpu, wall, repaired = one_round(replicator, peer)
                        here, there = (SqliteReplica(db).digest("books", 4096) for db in dbs)
                        assert here == there, "the repair left the regions different"
                        repairs[count] = (wall, cpu, repaired)
            finally:
                for db in dbs:
                    db.close()
        before_s = min(write_cost(work, False) for _ in range(2))
        after_s = min(write_cost(work, True) for _ in range(2))

    smallest = SIZES[0]
    for size in SIZES:
        figures.append(
            Figure(f"Anti-entropy round, {size:,} items: CPU", rounds[size] * 1000, "ms", note=notes[size])
        )
    for size in SIZES:
        figures.append(
            Figure(
                f"Anti-entropy at {size:,} items: RSS of the process holding both regions' stores",
                rss[size],
                "MiB",
                note=f"VmRSS after the rounds, both stores open; {rss_at_start:.0f} MiB before any was built",
            )
        )
    figures.append(
        Figure(
            f"Anti-entropy round CPU, {SIZES[-1]:,} / {smallest:,} items",
            rounds[SIZES[-1]] / rounds[smallest],
            "x",
            Goal.maximum(FLAT_GOAL),
        )
    )
    for count, (wall, cpu, repaired) in repairs.items():
        figures.append(
            Figure(
                f"Find and repair {count:,} divergent {'item' if count == 1 else 'items'} "
                f"among {SIZES[-1]:,}: time",
                wall,
                "s",
                Goal.maximum(REPAIR_GOALS_S[count]),
                note=f"{cpu:.2f} s CPU; {repaired} entries applied here, the rest pushed",
            )
        )
    figures.append(
        Figure(
            "Local put: CPU with digest triggers / without",
            after_s / before_s,
            "x",
            Goal.maximum(WRITE_COST_GOAL),
            note=f"{after_s * 1e6:.0f} us against {before_s * 1e6:.0f} us per put ({WRITES} puts, best of 2)",
        )
    )
    return Section(
        module="antientropy",
        title="Anti-entropy at 10k, 100k and 1M items",
        figures=figures,
        method=" ".join(
            (
                "Two SQLite region files in one process, the second a copy of the first, holding N books;",
                "the region's Replicator runs anti-entropy rounds against the other store through the peer",
                "protocol with entries crossing the wire format (64 buckets, versions younger than 10 s",
                "left out, as regions run). A round reads each table's 4,096 digest leaves on both sides",
                "(kept by triggers as rows are written), so its CPU (this process's, both regions') should",
                "not grow with N. Divergence: 1, 100, then 10,000 random books of the largest table changed",
                "in the second region only (a third region's writes that reached it alone); the time is one",
                "round that finds the differing leaves and exchanges their rows, after which the leaves of",
                "both regions must be equal. Write cost: CPU per local put (one transaction each) on a",
                "fresh file with the digest triggers and the log's index of versions, against the same with",
                "them dropped (what a write cost before).",
            )
        ),
    )
