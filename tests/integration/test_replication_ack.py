"""A follower acknowledges its progress during a long stream, so the peer can trim without a new stream."""

from __future__ import annotations

import asyncio
from pathlib import Path

from prometheus_client import CollectorRegistry

from bookstore.replication.tables.replicator import ACK_EVERY_MS, ReplicationMetrics, Replicator
from bookstore.storage.sqlite.replica import SqliteReplica
from bookstore.storage.sqlite.tables import SqliteDatabase
from bookstore.tables import CARTS
from tests.support.inprocess_peers import InProcessPeer, Network

EU, AP = "eu-west-1", "ap-southeast-1"
SCHEMAS = {"carts": CARTS}


class SteppingClock:
    """A clock that moves forward by `step_ms` every time it is read: a long stream in no time."""

    def __init__(self, step_ms: int) -> None:
        self.now = 1_800_000_000_000
        self.step_ms = step_ms

    def now_ms(self) -> int:
        self.now += self.step_ms
        return self.now


def test_a_follower_acknowledges_while_its_stream_lasts(tmp_path: Path) -> None:
    network = Network()
    dbs = {r: SqliteDatabase(tmp_path / f"{r}.db", r) for r in (EU, AP)}
    for region, db in dbs.items():
        db.table(CARTS)
        network.stores[region] = SqliteReplica(db)
    carts = dbs[EU].table(CARTS)
    for i in range(6):
        carts.put({"customerId": "c1", "bookId": f"b{i}", "quantity": 1, "price": 9.5})
    replicator = Replicator(
        network.stores[AP],
        AP,
        [],
        clock=SteppingClock(ACK_EVERY_MS // 3),
        metrics=ReplicationMetrics(CollectorRegistry(), AP),
        tables=tuple(SCHEMAS),
    )
    # One batch per change, as a stream delivers a trickle of writes over a long time.
    peer = InProcessPeer(AP, EU, network, SCHEMAS, (EU, AP), batch=1)

    async def follow_then_let_acks_land() -> None:
        await replicator.follow(peer)
        for _ in range(10):
            await asyncio.sleep(0)

    asyncio.run(follow_then_let_acks_land())
    head = network.stores[EU].head_seq()
    assert network.stores[AP].checkpoint(EU) == head
    acked = network.stores[EU].acks()[AP]
    # The stream's start acknowledged 0; the acknowledgements sent during it moved on, never past
    # what the follower had stored.
    assert 0 < acked <= head
    for db in dbs.values():
        db.close()


def test_the_lag_summary_names_the_newest_lag_only_while_it_is_recent() -> None:
    from bookstore.replication.tables.replicator import RECENT_LAG_MS, LagWindow

    window = LagWindow()
    window.add(EU, 1_000_000, 95)
    window.add(EU, 1_000_500, 120)
    assert window.summary(1_000_600)[EU]["lastMs"] == 120.0
    later = window.summary(1_000_500 + RECENT_LAG_MS + 1)[EU]
    assert "lastMs" not in later and later["p50Ms"] == 95.0
