"""Blog replication between regions in one process: the BlogPeer protocol over direct calls, with cuts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bookstore.blog.posts import Post, slugify
from bookstore.blog.repository import BlogRepository
from bookstore.domain import errors
from bookstore.kernel.clock import SystemClock
from bookstore.kernel.http import status_of
from bookstore.replication.blog.node import BlogReplication
from bookstore.replication.blog.peers import PeerRefused
from bookstore.replication.blog.store import BlogStore
from bookstore.replication.blog.wire import FollowRequest, PromoteRequest, parse_history
from bookstore.storage.sqlite.sql import SqliteSql


class LinkCut(ConnectionError):
    """The link between two regions is cut, or the peer is down: the request never reached it."""


def _wire(payload: Any) -> Any:
    return orjson.loads(orjson.dumps(payload))


@dataclass
class BlogNetwork:
    """The running regions' blog replications and the cut links (symmetric)."""

    nodes: dict[str, BlogReplication] = field(default_factory=dict)
    cuts: set[frozenset[str]] = field(default_factory=set)

    def cut(self, a: str, b: str) -> None:
        self.cuts.add(frozenset((a, b)))

    def isolate(self, region: str, regions: Sequence[str]) -> None:
        for other in regions:
            if other != region:
                self.cut(region, other)

    def heal(self, a: str, b: str) -> None:
        self.cuts.discard(frozenset((a, b)))

    def heal_all(self) -> None:
        self.cuts.clear()

    def reach(self, src: str, dst: str) -> BlogReplication:
        if frozenset((src, dst)) in self.cuts:
            raise LinkCut(f"the link {src} <-> {dst} is cut")
        node = self.nodes.get(dst)
        if node is None:
            raise LinkCut(f"{dst} is down")
        return node


class InProcessBlogPeer:
    """Region `me`'s view of peer `region`, answered by the peer's BlogReplication through the wire format.

    A stream checks the link at every line (the peer sends one at least every second), so a cut ends it
    as a real link's read timeout would, only sooner.
    """

    def __init__(self, me: str, region: str, network: BlogNetwork) -> None:
        self.me = me
        self.region = region
        self.network = network

    async def follow(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        target = self.network.reach(self.me, self.region)
        request = FollowRequest.model_validate(_wire(body))
        await target.adopt(
            request.epoch, request.primaryRegion, parse_history(request.history), request.region
        )
        stream = target.serve_follow(request)
        try:
            async for chunk in stream:
                self.network.reach(self.me, self.region)
                yield orjson.loads(chunk)
        finally:
            await stream.aclose()  # type: ignore[attr-defined]

    async def call(self, path: str, body: dict[str, Any], timeout_s: float = 10.0) -> dict[str, Any]:
        target = self.network.reach(self.me, self.region)
        try:
            if path == "state":
                out: dict[str, Any] = (await target.refresh()).json()
            elif path == "snapshot":
                out = await asyncio.to_thread(target.store.snapshot)
            elif path == "promote":
                req = PromoteRequest.model_validate(_wire(body))
                state = await target.promote(
                    min_epoch=req.minEpoch,
                    wait_for_lsn=req.waitForLsn,
                    timeout_s=req.timeoutS,
                    force=req.force,
                )
                out = state.json()
            else:
                raise AssertionError(f"no in-process endpoint {path}")
        except errors.BookstoreError as exc:
            status = status_of(exc)
            raise PeerRefused(self.region, status, {"error": exc.code, "message": exc.message}) from None
        result: dict[str, Any] = _wire(out)
        return result

    async def aclose(self) -> None:
        return None


@dataclass
class Region:
    """One region's blog: its database, repository and (while it runs) its replication loop."""

    region: str
    path: Path
    repository: BlogRepository
    replication: BlogReplication
    stop: asyncio.Event
    task: asyncio.Task[None]

    async def publish(self, title: str) -> Post:
        return await asyncio.to_thread(self.repository.insert_post, new_post(title), explicit_slug=False)

    async def titles(self) -> list[str]:
        posts = await asyncio.to_thread(self.repository.posts, limit=1000)
        return sorted(p.title for p in posts)

    async def halt(self) -> None:
        self.stop.set()
        await self.task


def new_post(title: str) -> Post:
    now = int(time.time() * 1000)
    return Post(
        0,
        slugify(title),
        title,
        f"Body of {title}",
        f"<p>Body of {title}</p>",
        title,
        "u1",
        "one",
        (),
        (),
        now,
        now,
    )


async def start_region(
    tmp_path: Path,
    region: str,
    regions: Sequence[str],
    network: BlogNetwork,
    *,
    home: str,
    confirm_timeout_s: float = 30.0,
) -> Region:
    """Opens (or reopens, after a halt) `region`'s blog database and runs its replication."""
    path = tmp_path / f"{region}.db"
    repository = BlogRepository.open(SqliteSql(path), region=region, primary_region=home)
    peers = [InProcessBlogPeer(region, r, network) for r in regions if r != region]
    replication = BlogReplication(
        BlogStore(repository, SystemClock()),
        peers,
        clock=SystemClock(),
        regions=regions,
        confirm_timeout_s=confirm_timeout_s,
    )
    network.nodes[region] = replication
    stop = asyncio.Event()
    task = asyncio.create_task(replication.run(stop))
    return Region(region, path, repository, replication, stop, task)


async def eventually(what: str, probe: Callable[[], Any], timeout_s: float = 20.0) -> None:
    """Waits until `probe()` (sync or async) is true; fails naming `what`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
