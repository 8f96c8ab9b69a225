"""A new region copies one snapshot and follows the other regions from the checkpoints it carried."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from bookstore.kernel.clock import HybridLogicalClock, SystemClock
from bookstore.replication.tables.model import LogEntry
from bookstore.replication.tables.replicator import ReplicationMetrics, Replicator
from bookstore.storage.sqlite.replica import SqliteReplica
from bookstore.storage.sqlite.tables import SqliteDatabase
from bookstore.tables import CARTS
from tests.support.inprocess_peers import InProcessPeer, Network

EU, AP, US = "eu-west-1", "ap-southeast-1", "us-east-1"
REGIONS = (EU, AP, US)
SCHEMAS = {"carts": CARTS}


def replicator(network: Network, me: str) -> Replicator:
    peers = [InProcessPeer(me, r, network, SCHEMAS, REGIONS, batch=50) for r in REGIONS if r != me]
    return Replicator(
        network.stores[me],
        me,
        peers,
        clock=SystemClock(),
        metrics=ReplicationMetrics(CollectorRegistry(), me),
        tables=tuple(SCHEMAS),
    )


@pytest.fixture
def three(tmp_path: Path) -> Iterator[tuple[Network, dict[str, SqliteDatabase]]]:
    """The three regions' stores on one in-process network, each with a carts table."""
    network = Network()
    dbs = {r: SqliteDatabase(tmp_path / f"{r}.db", r) for r in REGIONS}
    for region, db in dbs.items():
        db.table(CARTS)
        network.stores[region] = SqliteReplica(db)
    yield network, dbs
    for db in dbs.values():
        db.close()


def put(db: SqliteDatabase, customer: str, n: int) -> None:
    carts = db.table(CARTS)
    for i in range(n):
        carts.put({"customerId": customer, "bookId": f"b{i}", "quantity": 1 + i % 3, "price": 9.5})


def test_a_new_region_backfills_once_and_follows_the_others_from_the_snapshots_checkpoints(
    three: tuple[Network, dict[str, SqliteDatabase]],
) -> None:
    network, dbs = three
    replicators = {r: replicator(network, r) for r in REGIONS}

    async def converge(*regions: str) -> None:
        for _ in range(2):
            for region in regions:
                for peer in replicators[region].peers:
                    if peer.region in (EU, AP):
                        await replicators[region].follow(peer)

    put(dbs[EU], "eu", 120)
    put(dbs[AP], "ap", 80)
    asyncio.run(converge(EU, AP))
    # Writes the new region must get from AP's log after the checkpoint EU's snapshot carried, one of
    # them written after EU had followed AP.
    put(dbs[AP], "ap-later", 5)
    asyncio.run(converge(US))

    new = replicators[US]
    backfills = sum(
        sample.value
        for metric in new.metrics.backfills.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    )
    assert backfills == 1
    assert network.stores[US].checkpoint(EU) == network.stores[EU].head_seq()
    assert network.stores[US].checkpoint(AP) == network.stores[AP].head_seq()
    tables = ("carts",)
    assert network.stores[US].state_digest(tables) == network.stores[AP].state_digest(tables)
    assert len(dbs[US].table(CARTS).scan(limit=1000).items) == 205


class Watched(InProcessPeer):
    """An in-process peer that counts the digests asked of it (each the start of an anti-entropy round)."""

    digests = 0

    async def digest(self, table: str, buckets: int, before: int | None = None) -> list[str]:
        self.digests += 1
        return await super().digest(table, buckets, before)


def test_anti_entropy_waits_for_a_joining_region_to_complete_its_snapshot_then_repairs_it(
    three: tuple[Network, dict[str, SqliteDatabase]],
) -> None:
    network, dbs = three
    put(dbs[EU], "eu", 120)
    eu = replicator(network, EU)
    to_us = Watched(EU, US, network, SCHEMAS, REGIONS, batch=50)
    eu.peers = [to_us]
    joining = replicator(network, US)
    carts = ("carts",)

    async def join() -> None:
        # EU follows the new region at once (nothing to copy there) while US has not copied EU yet.
        await eu.follow(to_us)
        assert eu.connected[US]
        await eu._anti_entropy_all()
        assert to_us.digests == 0
        assert len(dbs[US].table(CARTS).scan(limit=1000).items) == 0
        # US copies EU's snapshot and follows EU's log: the join is complete.
        for peer in joining.peers:
            if peer.region == EU:
                await joining.follow(peer)
        # A change that reached EU only (relayed from AP before a link was lost): anti-entropy's to repair.
        network.stores[EU].apply(AP, [relayed_cart()], None)
        await eu._anti_entropy_all()

    asyncio.run(join())
    assert to_us.digests > 0
    assert network.stores[US].state_digest(carts) == network.stores[EU].state_digest(carts)
    assert len(dbs[US].table(CARTS).scan(limit=1000).items) == 121


class Silent(InProcessPeer):
    """An in-process peer whose digests time out with no message, as httpx's read timeouts may."""

    async def digest(self, table: str, buckets: int, before: int | None = None) -> list[str]:
        raise TimeoutError()


def test_a_failed_anti_entropy_round_says_what_failed_even_when_the_error_has_no_message(
    three: tuple[Network, dict[str, SqliteDatabase]], caplog: pytest.LogCaptureFixture
) -> None:
    network, _ = three
    eu = replicator(network, EU)
    eu.peers = [Silent(EU, US, network, SCHEMAS, REGIONS, batch=50)]
    eu.connected[US] = True
    # US has followed EU's log (its acknowledgement is here): not joining, so the round runs.
    network.stores[EU].record_ack(US, 0)
    with caplog.at_level("WARNING", logger="bookstore.replication"):
        asyncio.run(eu._anti_entropy_all())
    (said,) = [r.getMessage() for r in caplog.records if "anti-entropy with" in r.getMessage()]
    assert said == f"anti-entropy with {US} failed: TimeoutError: ", said


def relayed_cart() -> LogEntry:
    now = SystemClock().now_ms()
    return LogEntry(
        seq=1,
        table="carts",
        kind="INSERT",
        key={"customerId": "ap", "bookId": "b1"},
        old=None,
        new={"customerId": "ap", "bookId": "b1", "quantity": 1, "price": 9.5},
        written_ms=now,
        origin=AP,
        version=(HybridLogicalClock.pack(now), AP),
        previous=None,
    )
