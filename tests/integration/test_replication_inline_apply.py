"""A follower applies a small live batch on the event loop, and on a thread while another write runs there."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path

from prometheus_client import CollectorRegistry

from bookstore.replication.tables.model import ApplyResult, LogEntry
from bookstore.replication.tables.replicator import INLINE_APPLY, ReplicationMetrics, Replicator
from bookstore.storage.sqlite.replica import SqliteReplica
from bookstore.storage.sqlite.tables import SqliteDatabase
from bookstore.tables import CARTS
from tests.support.inprocess_peers import InProcessPeer, Network

EU, AP = "eu-west-1", "ap-southeast-1"
SCHEMAS = {"carts": CARTS}


class ThreadRecordingReplica(SqliteReplica):
    """AP's store, recording the thread of each apply and the entries it got."""

    def __init__(self, db: SqliteDatabase) -> None:
        super().__init__(db)
        self.applies: list[tuple[int, int]] = []

    def apply(self, source: str, entries: Sequence[LogEntry], checkpoint: int | None) -> ApplyResult:
        self.applies.append((threading.get_ident(), len(entries)))
        return super().apply(source, entries, checkpoint)


def _regions(tmp_path: Path, writes: int) -> tuple[Network, ThreadRecordingReplica, Replicator]:
    network = Network()
    eu = SqliteDatabase(tmp_path / "eu.db", EU)
    eu.table(CARTS)
    network.stores[EU] = SqliteReplica(eu)
    ap = SqliteDatabase(tmp_path / "ap.db", AP)
    ap.table(CARTS)
    store = ThreadRecordingReplica(ap)
    network.stores[AP] = store
    carts = eu.table(CARTS)
    for i in range(writes):
        carts.put({"customerId": "c1", "bookId": f"b{i}", "quantity": 1, "price": 9.5})
    replicator = Replicator(
        store,
        AP,
        [],
        clock=ap.clock,
        metrics=ReplicationMetrics(CollectorRegistry(), AP),
        tables=tuple(SCHEMAS),
    )
    store.apply(EU, [], 0)  # following from the start of EU's log: no backfill
    store.applies.clear()
    return network, store, replicator


def test_small_live_batches_are_applied_on_the_loop_and_large_ones_on_a_thread(tmp_path: Path) -> None:
    network, store, replicator = _regions(tmp_path, 4 + INLINE_APPLY + 1)
    loop_thread = threading.get_ident()
    small = InProcessPeer(AP, EU, network, SCHEMAS, (EU, AP), batch=1, max_batches=4)
    asyncio.run(replicator.follow(small))
    # Four lines of one entry (those queued meanwhile applied as one batch): all on the loop.
    assert sum(count for _, count in store.applies) == 4
    assert {thread for thread, _ in store.applies} == {loop_thread}
    store.applies.clear()
    large = InProcessPeer(AP, EU, network, SCHEMAS, (EU, AP), batch=INLINE_APPLY + 1, max_batches=1)
    asyncio.run(replicator.follow(large))
    [(thread, count)] = store.applies
    assert count == INLINE_APPLY + 1 and thread != loop_thread
    store.db.close()
    network.stores[EU].db.close()


def test_while_a_write_runs_on_a_thread_a_small_batch_waits_on_a_thread_too(tmp_path: Path) -> None:
    network, store, replicator = _regions(tmp_path, 2)
    loop_thread = threading.get_ident()
    release = threading.Event()

    async def follow_during_a_long_write() -> None:
        # A write of the replicator's own on a thread (a trim, a catch-up) holding on.
        long_write = asyncio.create_task(replicator._writing_on_thread(release.wait, 10.0))
        await asyncio.sleep(0.01)
        peer = InProcessPeer(AP, EU, network, SCHEMAS, (EU, AP), batch=1)
        await replicator.follow(peer)
        release.set()
        await long_write

    asyncio.run(follow_during_a_long_write())
    assert sum(count for _, count in store.applies) == 2
    assert all(thread != loop_thread for thread, _ in store.applies)
    store.db.close()
    network.stores[EU].db.close()
