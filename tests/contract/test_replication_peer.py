"""The peer protocol of table replication (replication/tables/replicator.Peer), one suite run against
both implementations: HttpPeer, signed requests to the real endpoints on a uvicorn server, and the
in-process InProcessPeer the property and clock tests use (tests/support/inprocess_peers.py). What the
fast tests learn through the fake holds over HTTP because both answer these the same way.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
import uvicorn
from starlette.applications import Starlette

from bookstore.kernel.auth import PeerAuth, PeerAuthMiddleware
from bookstore.kernel.clock import SystemClock
from bookstore.kernel.stream import ChangeFeed
from bookstore.ports import Key
from bookstore.replication.tables.http import HttpPeer, replication_routes
from bookstore.replication.tables.model import LogEntry, LogRead, Version
from bookstore.replication.tables.replicator import Peer
from bookstore.replication.tables.wire import MAX_KEYS
from bookstore.storage.sqlite.replica import SqliteReplica
from bookstore.storage.sqlite.tables import SqliteDatabase
from bookstore.tables import CARTS
from tests.support.inprocess_peers import InProcessPeer, Network
from tests.support.threaded_server import serving

EU, AP = "eu-west-1", "ap-southeast-1"
REGIONS = (EU, AP)
SCHEMAS = {"carts": CARTS}
SECRET = "the deployment's secret for the peer contract"
T = TypeVar("T")


@dataclass
class Side:
    """The peer region AP (its database) and a way for EU to open a Peer to it."""

    db: SqliteDatabase
    store: SqliteReplica
    open_peer: Callable[[], Peer]

    def put(self, customer: str, quantity: int) -> None:
        self.db.table(CARTS).put({"customerId": customer, "bookId": "b1", "quantity": quantity, "price": 9.5})


@pytest.fixture(params=["http", "inprocess"])
def side(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Side]:
    clock = SystemClock()
    db = SqliteDatabase(tmp_path / "ap.db", AP, clock)
    db.table(CARTS)
    store = SqliteReplica(db)
    try:
        if request.param == "inprocess":
            network = Network(stores={AP: store})
            yield Side(db, store, lambda: InProcessPeer(EU, AP, network, SCHEMAS, REGIONS, batch=500))
            return
        app = PeerAuthMiddleware(
            Starlette(routes=replication_routes(store, ChangeFeed(), SCHEMAS, REGIONS, clock=clock)),
            SECRET,
            clock,
            destination=AP,
        )
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        config = uvicorn.Config(app, log_level="warning", lifespan="off")
        with serving(config, sock) as (host, port):

            def open_peer() -> Peer:
                auth = PeerAuth(SECRET, EU, clock, destination=AP)
                return HttpPeer(
                    AP, f"http://{host}:{port}", me=EU, auth=auth, schemas=SCHEMAS, regions=REGIONS
                )

            yield Side(db, store, open_peer)
    finally:
        db.close()


def run(side: Side, use: Callable[[Peer], Awaitable[T]]) -> T:
    async def go() -> T:
        peer = side.open_peer()
        try:
            return await use(peer)
        finally:
            await peer.aclose()

    return asyncio.run(go())


async def _first_reads(peer: Peer, after: int, until_entries: int) -> list[LogRead]:
    """Batches of the stream until `until_entries` entries came (the HTTP stream never ends by itself)."""
    reads: list[LogRead] = []
    stream = peer.follow(after)
    try:
        async for read in stream:
            reads.append(read)
            if sum(len(r.entries) for r in reads) >= until_entries:
                break
    finally:
        await _close(stream)
    return reads


async def _close(stream: AsyncIterator[LogRead]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()


def test_following_yields_the_peer_s_log_in_order_and_at_once_when_empty(side: Side) -> None:
    first = run(side, lambda peer: _first_reads(peer, 0, 0))
    assert first[0].entries == [] and first[0].head_seq == 0
    side.put("c1", 1)
    side.put("c2", 2)
    reads = run(side, lambda peer: _first_reads(peer, 0, 2))
    entries = [e for r in reads for e in r.entries]
    assert [e.key["customerId"] for e in entries] == ["c1", "c2"]
    assert all(e.origin == AP for e in entries)
    assert reads[-1].last_seq == side.store.head_seq() and reads[-1].sent_ms is not None
    later = run(side, lambda peer: _first_reads(peer, reads[-1].last_seq, 0))
    assert later[0].entries == []


def test_a_snapshot_pages_through_every_item_with_a_cursor(side: Side) -> None:
    for i in range(5):
        side.put(f"c{i}", i)

    async def pages(peer: Peer) -> list[list[LogEntry]]:
        out, cursor = [], None
        while True:
            page = await peer.snapshot(cursor, 2)
            out.append(page.entries)
            if page.cursor is None:
                return out
            cursor = page.cursor

    got = run(side, pages)
    assert [len(p) for p in got] == [2, 2, 1]
    assert sorted(e.key["customerId"] for p in got for e in p) == [f"c{i}" for i in range(5)]


def test_digests_and_a_bucket_s_entries_are_the_peer_s(side: Side) -> None:
    side.put("c1", 1)

    async def both(peer: Peer) -> tuple[list[str], list[list[LogEntry]]]:
        digest = await peer.digest("carts", 4)
        return digest, [await peer.bucket("carts", b, 4) for b in range(4)]

    digest, buckets = run(side, both)
    assert digest == side.store.digest("carts", 4)
    assert [e.key["customerId"] for b in buckets for e in b] == ["c1"]


def test_a_bucket_s_keys_and_versions_then_the_entries_of_chosen_keys_are_the_peer_s(side: Side) -> None:
    for i in range(3):
        side.put(f"c{i}", i)
    side.db.table(CARTS).delete({"customerId": "c1", "bookId": "b1"})
    held = side.db.table(CARTS)

    async def both(peer: Peer) -> tuple[list[tuple[Key, Version]], list[LogEntry], list[LogEntry]]:
        versions = [v for b in range(4) for v in await peer.bucket_versions("carts", b, 4)]
        keys: list[Key] = [key for key, _ in versions] + [{"customerId": "absent", "bookId": "b1"}]
        many = await peer.entries("carts", [{"customerId": "c0", "bookId": "b1"}] * (MAX_KEYS + 1))
        return versions, await peer.entries("carts", keys), many

    versions, entries, many = run(side, both)
    expected = {f"c{i}": held.version({"customerId": f"c{i}", "bookId": "b1"}) for i in range(3)}
    assert {key["customerId"]: version for key, version in versions} == expected
    assert {e.key["customerId"]: e.version for e in entries} == expected  # the absent key left out
    assert {e.key["customerId"]: e.kind for e in entries}["c1"] == "REMOVE"
    assert len(many) == MAX_KEYS + 1  # asked in several requests


def test_pushed_entries_are_applied_at_the_peer(tmp_path: Path, side: Side) -> None:
    eu = SqliteDatabase(tmp_path / "eu.db", EU, SystemClock())
    try:
        eu.table(CARTS).put({"customerId": "pushed", "bookId": "b1", "quantity": 3, "price": 1.0})
        entries = SqliteReplica(eu).read_log(0, limit=10, old_images=False).entries
    finally:
        eu.close()
    run(side, lambda peer: peer.push(entries))
    item = side.db.table(CARTS).get({"customerId": "pushed", "bookId": "b1"})
    assert item is not None and item["quantity"] == 3


def test_an_acknowledgement_is_recorded_at_the_peer(side: Side) -> None:
    side.put("c1", 1)
    run(side, lambda peer: peer.ack(side.store.head_seq()))
    assert side.store.acks().get(EU) == side.store.head_seq()
