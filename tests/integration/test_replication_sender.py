"""The sender's side of following, over the real endpoints: what a region reads and sends its followers."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bookstore.kernel.auth import PeerAuth, PeerAuthMiddleware
from bookstore.kernel.clock import SystemClock
from bookstore.kernel.stream import ChangeFeed
from bookstore.ports import Table
from bookstore.replication.tables import http
from bookstore.replication.tables.http import HttpPeer, replication_routes
from bookstore.replication.tables.model import LogEntry, LogRead
from bookstore.storage.sqlite.replica import SqliteReplica
from bookstore.storage.sqlite.tables import SqliteDatabase
from bookstore.tables import CARTS
from tests.support.threaded_server import serving

AP, EU, US = "ap-southeast-1", "eu-west-1", "us-east-1"
REGIONS = (AP, EU, US)
SCHEMAS = {"carts": CARTS}
SECRET = "the deployment's secret for the sender's tests"
CLOCK = SystemClock()
WRITES = 20


class CountingReplica(SqliteReplica):
    """AP's store, counting its reads of the log and the rows they return (one read of a change returns
    it once)."""

    def __init__(self, db: SqliteDatabase) -> None:
        super().__init__(db)
        self.rows_read = 0
        self.reads = 0
        self._lock = threading.Lock()

    def read_log(
        self,
        after: int,
        *,
        limit: int,
        tables: Collection[str] | None = None,
        exclude_origin: str | None = None,
        origins: Collection[str] | None = None,
        old_images: bool = True,
    ) -> LogRead:
        read = super().read_log(
            after,
            limit=limit,
            tables=tables,
            exclude_origin=exclude_origin,
            origins=origins,
            old_images=old_images,
        )
        with self._lock:
            self.rows_read += len(read.entries)
            self.reads += 1
        return read


@dataclass
class Sender:
    """Region AP serving /replication/ on a uvicorn server; its commits are seen by the feed's poll."""

    url: str
    carts: Table
    store: CountingReplica

    def peer(self, me: str) -> HttpPeer:
        auth = PeerAuth(SECRET, me, CLOCK, destination=AP)
        return HttpPeer(AP, self.url, me=me, auth=auth, schemas=SCHEMAS, regions=REGIONS)

    async def put(self, n: int) -> None:
        await asyncio.to_thread(self.carts.put, {"customerId": f"c{n}", "bookId": "b1", "quantity": 1})


@contextmanager
def sender(tmp_path: Path, inner: Callable[[ASGIApp], ASGIApp] | None = None) -> Iterator[Sender]:
    """`inner` wraps the routes inside PeerAuthMiddleware, as a region's FastAPI stack does."""
    db = SqliteDatabase(tmp_path / "ap.db", AP, CLOCK)
    carts = db.table(CARTS)
    store = CountingReplica(db)
    feed = ChangeFeed()
    routes: ASGIApp = Starlette(routes=replication_routes(store, feed, SCHEMAS, REGIONS, clock=CLOCK))
    app = PeerAuthMiddleware(
        inner(routes) if inner is not None else routes,
        SECRET,
        CLOCK,
        destination=AP,
    )
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        with serving(uvicorn.Config(app, log_level="warning", lifespan="off"), sock) as (host, port):
            yield Sender(f"http://{host}:{port}", carts, store)
    finally:
        feed.close()
        db.close()


def us_entry(tmp_path: Path) -> LogEntry:
    """A change written in us-east-1, as its log holds it."""
    with SqliteDatabase(tmp_path / "us.db", US, CLOCK) as us:
        us.table(CARTS).put({"customerId": "from-us", "bookId": "b1", "quantity": 1})
        return SqliteReplica(us).read_log(0, limit=10, old_images=False).entries[0]


async def reads_until(
    peer: HttpPeer, origins: list[str], connected: asyncio.Event, enough: int
) -> list[LogRead]:
    """The stream's batches from the log's start until `enough` entries came."""
    reads: list[LogRead] = []
    stream = peer.follow(0, origins=origins)
    try:
        async for read in stream:
            connected.set()
            reads.append(read)
            if sum(len(r.entries) for r in reads) >= enough:
                return reads
    finally:
        await stream.aclose()
        await peer.aclose()
    return reads


async def eu_following_writes(ap: Sender) -> list[LogRead]:
    """EU's stream of AP's changes while AP makes WRITES writes 5 ms apart."""
    connected = asyncio.Event()
    following = asyncio.create_task(reads_until(ap.peer(EU), [AP], connected, WRITES))
    await asyncio.wait_for(connected.wait(), 10)
    for n in range(WRITES):
        await ap.put(n)
        await asyncio.sleep(0.005)
    return await asyncio.wait_for(following, 30)


def test_two_peers_at_one_position_get_every_change_from_one_read_of_it(tmp_path: Path) -> None:
    async def run(ap: Sender) -> list[list[LogEntry]]:
        connected = [asyncio.Event(), asyncio.Event()]
        following = [
            asyncio.create_task(reads_until(ap.peer(me), [AP], c, WRITES))
            for me, c in zip((EU, US), connected, strict=True)
        ]
        for event in connected:
            await asyncio.wait_for(event.wait(), 10)
        for n in range(WRITES):
            await ap.put(n)
            await asyncio.sleep(0.005)
        return [
            [e for read in reads for e in read.entries]
            for reads in await asyncio.wait_for(asyncio.gather(*following), 30)
        ]

    with sender(tmp_path) as ap:
        eu, us = asyncio.run(run(ap))
        rows_read = ap.store.rows_read
    assert [e.key["customerId"] for e in eu] == [f"c{n}" for n in range(WRITES)]
    assert [(e.seq, e.version) for e in us] == [(e.seq, e.version) for e in eu]
    # Each change was read once for both streams (it was twice, once per stream, before they shared).
    assert rows_read == WRITES


def test_a_stream_at_the_head_reads_the_log_once_per_commit(tmp_path: Path) -> None:
    with sender(tmp_path) as ap:
        reads = asyncio.run(eu_following_writes(ap))
        log_reads = ap.store.reads
    assert sum(len(r.entries) for r in reads) == WRITES
    # One read per commit seen (fewer when commits come together), besides the stream's first two and
    # a wake-up of the feed's first poll, or a commit that raced a read: a read that reached the head
    # with nothing committed since is not made again (twice per commit before: 42 reads).
    assert log_reads <= WRITES + 5


def test_a_stream_caught_up_sends_writes_that_come_fast_in_few_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A gap long enough that the writes below all come within one.
    monkeypatch.setattr(http, "LINE_GAP_S", 1.0, raising=False)

    with sender(tmp_path) as ap:
        reads = asyncio.run(eu_following_writes(ap))
    lines = [len(r.entries) for r in reads if r.entries]
    assert sum(lines) == WRITES
    # The first write at once, the rest together once the gap passed (or a line each without the gap,
    # the poll seeing each commit alone).
    assert len(lines) <= 3


def test_rows_a_follower_does_not_ask_for_move_its_position_without_a_line_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The position's news waits for the next line that carries entries (or for an hour).
    monkeypatch.setattr(http, "PROGRESS_S", 3600.0, raising=False)
    relayed = us_entry(tmp_path)

    async def run(ap: Sender) -> list[LogRead]:
        connected = asyncio.Event()
        # EU asks AP for us-east-1's changes only (it cannot reach us-east-1): AP's own are not for it.
        following = asyncio.create_task(reads_until(ap.peer(EU), [US], connected, 1))
        await asyncio.wait_for(connected.wait(), 10)
        for n in range(WRITES):
            await ap.put(n)
            await asyncio.sleep(0.005)
        await asyncio.to_thread(ap.store.apply, US, [relayed], None)
        return await asyncio.wait_for(following, 30)

    with sender(tmp_path) as ap:
        reads = asyncio.run(run(ap))
    # The first line, then the relayed change with the position past every row before it: not a line
    # per commit of AP's own (21 lines before).
    assert [(len(r.entries), r.last_seq) for r in reads] == [(0, 0), (1, WRITES + 1)]
    assert reads[1].entries[0].key == relayed.key


def test_a_follower_hears_of_its_position_past_rows_it_does_not_ask_for(tmp_path: Path) -> None:
    async def run(ap: Sender) -> LogRead:
        stream = ap.peer(EU).follow(0, origins=[US])
        try:
            first = await anext(stream)
            assert first.last_seq == 0
            for n in range(WRITES):
                await ap.put(n)
            async for read in stream:
                if read.last_seq == WRITES:
                    return read
        finally:
            await stream.aclose()
        raise AssertionError("the stream ended")

    with sender(tmp_path) as ap:
        read = asyncio.run(asyncio.wait_for(run(ap), 30))
    assert read.entries == [] and read.head_seq == WRITES


class SendsSeen:
    """An app's layer that wraps send, as the region's error handlers and framing do: it counts what
    crosses it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.bodies = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def counted(message: Message) -> None:
            self.bodies += message["type"] == "http.response.body"
            await send(message)

        await self.app(scope, receive, counted)


def test_a_streams_lines_skip_the_layers_that_wrap_send_inside_peer_auth(tmp_path: Path) -> None:
    layers: list[SendsSeen] = []

    def inner(app: ASGIApp) -> ASGIApp:
        layers.append(SendsSeen(app))
        return layers[-1]

    with sender(tmp_path, inner) as ap:
        reads = asyncio.run(eu_following_writes(ap))
    assert sum(len(r.entries) for r in reads) == WRITES
    # The start went through the layer (it sees statuses), the lines did not: each had crossed four
    # such layers in a region, for every follower and every write (main: a body message per line).
    assert len(reads) > 2 and layers[0].bodies <= 1
