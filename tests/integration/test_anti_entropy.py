"""Anti-entropy between two regions' Replicators: random divergence is found and repaired by exchanging
the rows of differing leaves only, and no tombstone is ever resurrected."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from bookstore.kernel.clock import HybridLogicalClock
from bookstore.ports import Item, Key
from bookstore.replication.tables import replicator as replicator_module
from bookstore.replication.tables.model import LogEntry, Version
from bookstore.replication.tables.replicator import ReplicationMetrics, Replicator
from bookstore.storage.sqlite.replica import SqliteReplica
from bookstore.storage.sqlite.tables import SqliteDatabase, SqliteTable
from bookstore.tables import BOOKS, CARTS
from tests.support.inprocess_peers import InProcessPeer, Network

IRELAND, SINGAPORE, VIRGINIA = "eu-west-1", "ap-southeast-1", "us-east-1"
REGIONS = (IRELAND, SINGAPORE, VIRGINIA)
SCHEMAS = {"books": BOOKS, "carts": CARTS}
START_MS = 1_700_000_000_000
BOOKS_HELD = 300


class ManualClock:
    def __init__(self) -> None:
        self.now = START_MS

    def now_ms(self) -> int:
        return self.now


class CountingPeer(InProcessPeer):
    """An in-process peer that counts the leaves compared, the entries taken from it and pushed to it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fetched: list[int] = []
        self.pulled = 0
        self.pushed = 0

    async def bucket(self, table: str, bucket: int, buckets: int) -> list[LogEntry]:
        raise AssertionError("a repair moves the entries of differing keys only, never a whole bucket")

    async def bucket_versions(self, table: str, bucket: int, buckets: int) -> list[tuple[Key, Version]]:
        self.fetched.append(bucket)
        return await super().bucket_versions(table, bucket, buckets)

    async def entries(self, table: str, keys: Sequence[Key]) -> list[LogEntry]:
        found = await super().entries(table, keys)
        self.pulled += len(found)
        return found

    async def push(self, entries: list[LogEntry]) -> list[LogEntry]:
        self.pushed += len(entries)
        return await super().push(entries)


@dataclass
class Pair:
    home: Path
    clock: ManualClock = field(default_factory=ManualClock)
    network: Network = field(default_factory=Network)

    def __post_init__(self) -> None:
        self.dbs = {r: SqliteDatabase(self.home / f"{r}.db", r, self.clock) for r in (IRELAND, SINGAPORE)}
        self.books: dict[str, SqliteTable] = {}
        self.replicas: dict[str, SqliteReplica] = {}
        for region, db in self.dbs.items():
            self.books[region] = db.table(BOOKS)
            db.table(CARTS)
            self.replicas[region] = SqliteReplica(db)
            self.network.stores[region] = self.replicas[region]
        self.peer = CountingPeer(IRELAND, SINGAPORE, self.network, SCHEMAS, REGIONS)
        self.replicator = Replicator(
            self.replicas[IRELAND],
            IRELAND,
            [self.peer],
            clock=self.clock,
            metrics=ReplicationMetrics(CollectorRegistry(), IRELAND),
            tables=tuple(SCHEMAS),
        )

    def close(self) -> None:
        for db in self.dbs.values():
            db.close()

    def anti_entropy(self) -> int:
        self.peer.fetched.clear()
        self.peer.pulled = self.peer.pushed = 0
        return asyncio.run(self.replicator.anti_entropy(self.peer))

    def states(self) -> set[str]:
        return {replica.state_digest(SCHEMAS) for replica in self.replicas.values()}

    def seed(self) -> None:
        """Both regions hold the same BOOKS_HELD books, copied as a backfill would."""
        for i in range(BOOKS_HELD):
            self.books[IRELAND].put(book(i))
        page = self.replicas[IRELAND].snapshot(None, 5000)
        self.replicas[SINGAPORE].apply(IRELAND, page.entries, None)


def book(i: int, price: float = 9.5) -> Item:
    return {"id": f"b{i:04d}", "name": f"Book {i}", "category": "Cars", "price": price}


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    made = Pair(tmp_path)
    yield made
    made.close()


def relayed(key: int, hlc_ms: int, tombstone: bool) -> LogEntry:
    """A change from a third region that reached one region only (its link to the other was lost)."""
    return LogEntry(
        seq=1,
        table="books",
        kind="REMOVE" if tombstone else "INSERT",
        key={"id": f"b{key:04d}"},
        old=None,
        new=None if tombstone else book(key, 1.0),
        written_ms=hlc_ms,
        origin=VIRGINIA,
        version=(HybridLogicalClock.pack(hlc_ms), VIRGINIA),
        previous=None,
    )


# What one lost change does to one key: written in one region only (an update, a delete, a new key), a
# write in each (a conflict), or a third region's change that reached one side.
kinds = st.sampled_from(("update", "delete", "new", "both", "relayed-delete", "relayed-put"))
divergence = st.lists(st.tuples(st.integers(0, BOOKS_HELD + 50), kinds, st.booleans()), max_size=25)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(divergence)
def test_divergence_injected_at_random_is_found_and_repaired_without_resurrecting_a_tombstone(
    changes: list[tuple[int, str, bool]],
) -> None:
    with tempfile.TemporaryDirectory() as home:
        pair = Pair(Path(home))
        try:
            pair.seed()
            assert len(pair.states()) == 1 and pair.anti_entropy() == 0
            assert pair.peer.fetched == [] and pair.peer.pushed == 0
            touched: set[int] = set()
            for key, kind, on_ireland in changes:
                here, there = (IRELAND, SINGAPORE) if on_ireland else (SINGAPORE, IRELAND)
                pair.clock.now += 1
                if kind == "update":
                    pair.books[here].put(book(key, 2.0))
                elif kind == "delete":
                    pair.books[here].delete({"id": f"b{key:04d}"})
                elif kind == "new":
                    pair.books[here].put(book(BOOKS_HELD + 1000 + key))
                    key = BOOKS_HELD + 1000 + key
                elif kind == "both":
                    pair.books[here].put(book(key, 3.0))
                    pair.books[there].delete({"id": f"b{key:04d}"})
                else:
                    change = relayed(key, pair.clock.now, kind == "relayed-delete")
                    pair.replicas[here].apply(VIRGINIA, [change], None)
                touched.add(key)
            # The newest version written of each key: what every region must hold once repaired.
            newest: dict[int, tuple[Any, Item | None]] = {}
            for region in (IRELAND, SINGAPORE):
                for key in touched:
                    version = pair.books[region].version({"id": f"b{key:04d}"})
                    if version is not None:
                        item = pair.books[region].get({"id": f"b{key:04d}"})
                        newest[key] = max(
                            newest.get(key, (version, item)), (version, item), key=lambda v: v[0]
                        )

            pair.anti_entropy()
            assert len(pair.states()) == 1
            assert pair.replicas[IRELAND].digest("books") == pair.replicas[SINGAPORE].digest("books")
            for key, (version, item) in newest.items():
                for region in (IRELAND, SINGAPORE):
                    assert pair.books[region].version({"id": f"b{key:04d}"}) == version
                    # A delete with the newest version stays deleted: no tombstone is resurrected.
                    assert pair.books[region].get({"id": f"b{key:04d}"}) == item
            # Only differing leaves are compared, and only the entries of differing keys cross.
            assert len(set(pair.peer.fetched)) <= len(touched)
            assert pair.peer.pulled <= len(touched) and pair.peer.pushed <= len(touched)
            assert pair.anti_entropy() == 0 and pair.peer.fetched == []
        finally:
            pair.close()


def test_versions_younger_than_the_settle_time_wait_for_a_later_round(pair: Pair) -> None:
    pair.seed()
    pair.replicator.anti_entropy_settle_ms = 10_000
    pair.clock.now += 60_000
    pair.books[SINGAPORE].put(book(7, 4.0))
    assert pair.anti_entropy() == 0 and pair.peer.fetched == []  # may still be on its way
    pair.clock.now += 10_001
    pair.books[IRELAND].put(book(999))  # moves Ireland's hybrid clock past the settle time
    assert pair.anti_entropy() == 1
    assert pair.books[IRELAND].get({"id": "b0007"}) == book(7, 4.0)


def test_a_round_on_equal_tables_reads_no_rows_and_a_repair_only_differing_leaves(pair: Pair) -> None:
    pair.seed()
    pair.books[SINGAPORE].delete({"id": "b0003"})
    assert pair.anti_entropy() == 1
    assert len(pair.peer.fetched) == 1 and pair.peer.pulled == 1 and pair.peer.pushed == 0
    assert pair.books[IRELAND].get({"id": "b0003"}) is None
    # Ireland writes the key again later: the newer item wins over the tombstone, in both regions.
    pair.clock.now += 5
    pair.books[IRELAND].put(book(3, 8.0))
    assert pair.anti_entropy() == 0 and pair.peer.pushed == 1
    assert pair.books[SINGAPORE].get({"id": "b0003"}) == book(3, 8.0)


def test_a_repair_of_many_leaves_of_one_bucket_asks_for_the_bucket_s_versions_at_once(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(replicator_module, "REPAIR_SPAN_LEAVES", 1)
    pair.seed()
    for i in range(0, BOOKS_HELD, 3):
        pair.books[SINGAPORE].put(book(i, 5.0))
    pair.books[IRELAND].delete({"id": "b0001"})
    assert pair.anti_entropy() == len(range(0, BOOKS_HELD, 3))
    assert len(pair.states()) == 1 and pair.peer.pushed == 1
    assert set(pair.peer.fetched) <= set(range(64))  # whole buckets of 64, never a leaf
    assert pair.books[SINGAPORE].get({"id": "b0001"}) is None
