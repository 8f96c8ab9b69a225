"""A large catch-up (a backlog, a snapshot) applies without the key-hash indexes, then builds them again."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from bookstore.replication.tables import replicator as replicator_module
from bookstore.replication.tables.model import SnapshotPage
from bookstore.replication.tables.replicator import Replicator
from bookstore.storage.sqlite import replica as replica_module
from bookstore.storage.sqlite.replica import SqliteReplica
from bookstore.storage.sqlite.tables import SqliteDatabase
from bookstore.tables import CARTS
from tests.integration.test_replication_join import AP, EU, REGIONS, SCHEMAS, US
from tests.integration.test_replication_join import replicator as join_replicator
from tests.support.inprocess_peers import InProcessPeer, Network


class Watched(SqliteReplica):
    """The store, with what the replicator asked of its key-hash indexes and whether they were there."""

    def __init__(self, db: SqliteDatabase) -> None:
        super().__init__(db)
        self.calls: list[tuple[str, str, bool]] = []

    def defer_key_index(self, holder: str, coming: int) -> bool:
        deferred = super().defer_key_index(holder, coming)
        self.calls.append(("defer", holder, deferred))
        return deferred

    def restore_key_index(self, holder: str) -> bool:
        built = super().restore_key_index(holder)
        self.calls.append(("restore", holder, built and self.indexed()))
        return built

    def indexed(self) -> bool:
        rows = self.db.engine.reader().execute("SELECT count(*) FROM sqlite_master WHERE name = 'kh_carts'")
        return bool(rows.fetchone() == (1,))


@pytest.fixture
def network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Network]:
    """Three regions' stores on one in-process network; a backlog is 100 entries, worth deferring 200."""
    monkeypatch.setattr(replicator_module, "CATCH_UP_BATCH", 100)
    monkeypatch.setattr(replica_module, "DEFER_KEY_INDEX_MIN", 200)
    network = Network()
    dbs = [SqliteDatabase(tmp_path / f"{r}.db", r) for r in REGIONS]
    for db in dbs:
        db.table(CARTS)
        network.stores[db.region] = Watched(db)
    yield network
    for db in dbs:
        db.close()


def replicator(network: Network, me: str) -> Replicator:
    """The join tests' replicator, copying snapshots in pages of 50 entries."""
    made = join_replicator(network, me)
    made.snapshot_page = 50
    return made


def put(network: Network, region: str, customer: str, n: int) -> None:
    carts = network.stores[region].db.table(CARTS)
    for i in range(n):
        carts.put({"customerId": customer, "bookId": f"b{i}", "quantity": 1 + i % 3, "price": 9.5})


async def follow(replicator: Replicator, region: str) -> None:
    for peer in replicator.peers:
        if peer.region == region:
            await replicator.follow(peer)


def test_a_backlog_is_applied_without_the_key_hash_index_and_it_is_built_again_when_caught_up(
    network: Network,
) -> None:
    put(network, EU, "eu", 30)
    ap = replicator(network, AP)
    asyncio.run(follow(ap, EU))
    store = network.stores[AP]
    assert isinstance(store, Watched)
    assert store.calls == [("restore", "snapshots", False)]  # a snapshot of one page: nothing deferred
    put(network, EU, "eu-later", 600)
    asyncio.run(follow(ap, EU))
    # Asked once, at the start of the backlog; given back once less than a batch was left.
    assert store.calls[1:] == [("defer", EU, True), ("restore", EU, True)]
    assert store.checkpoint(EU) == network.stores[EU].head_seq()
    assert store.state_digest(("carts",)) == network.stores[EU].state_digest(("carts",))
    assert store.digest("carts") == network.stores[EU].digest("carts")


def test_a_snapshot_of_many_pages_is_copied_without_the_key_hash_index(network: Network) -> None:
    put(network, EU, "eu", 500)
    us = replicator(network, US)
    asyncio.run(follow(us, EU))
    store = network.stores[US]
    assert isinstance(store, Watched)
    assert store.calls == [("defer", "snapshots", True), ("restore", "snapshots", True)]
    assert store.state_digest(("carts",)) == network.stores[EU].state_digest(("carts",))
    assert store.digest("carts") == network.stores[EU].digest("carts")


class Broken(InProcessPeer):
    """A peer whose stream breaks after its second batch, as a lost link would."""

    async def follow(self, after: int, origins: object = None):  # type: ignore[no-untyped-def]
        sent = 0
        async for read in super().follow(after, origins):  # type: ignore[arg-type]
            yield read
            sent += 1
            if sent == 3:
                raise ConnectionError("link lost")


def test_a_catch_up_that_ends_in_an_error_builds_the_index_again(network: Network) -> None:
    put(network, EU, "eu", 1)
    ap = replicator(network, AP)
    asyncio.run(follow(ap, EU))
    put(network, EU, "eu-later", 600)
    ap.peers = [Broken(AP, EU, network, SCHEMAS, REGIONS, batch=50)]
    with pytest.raises(ConnectionError):
        asyncio.run(follow(ap, EU))
    store = network.stores[AP]
    assert isinstance(store, Watched)
    assert store.calls[1:] == [("defer", EU, True), ("restore", EU, True)]
    assert store.indexed()


class BrokenSnapshot(InProcessPeer):
    """A peer whose snapshot's third page fails, once, as a timeout under load would."""

    pages = 0

    async def snapshot(self, after: str | None, limit: int) -> SnapshotPage:
        BrokenSnapshot.pages += 1
        if BrokenSnapshot.pages == 3:
            raise TimeoutError()
        return await super().snapshot(after, limit)


def test_a_snapshot_that_fails_is_copied_again_without_building_the_index_in_between(
    network: Network,
) -> None:
    put(network, EU, "eu", 500)
    us = replicator(network, US)
    us.peers = [BrokenSnapshot(US, EU, network, SCHEMAS, REGIONS, batch=50)]
    with pytest.raises(TimeoutError):
        asyncio.run(follow(us, EU))
    store = network.stores[US]
    assert isinstance(store, Watched)
    assert store.calls == [("defer", "snapshots", True)]
    assert not store.indexed()  # a restart would build it; the copy begun again keeps it out
    asyncio.run(follow(us, EU))
    assert store.calls == [
        ("defer", "snapshots", True),
        ("defer", "snapshots", True),
        ("restore", "snapshots", True),
    ]
    assert store.state_digest(("carts",)) == network.stores[EU].state_digest(("carts",))
    assert store.digest("carts") == network.stores[EU].digest("carts")
