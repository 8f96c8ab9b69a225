"""A push to a real region's /replication/push stays within the body limit its API enforces (issue 16).

Anti-entropy pushed up to 5,000 entries in one request: with items of a few hundred bytes that is over
the region's 1 MiB limit, and every such push was refused with 413, round after round.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from bookstore.config import Topology
from bookstore.kernel.auth import PeerAuth
from bookstore.kernel.clock import HybridLogicalClock, SystemClock
from bookstore.kernel.http import MAX_BODY_BYTES
from bookstore.region.compose import build_region, region_app
from bookstore.region.services import RegionServices
from bookstore.replication.tables.http import HttpPeer
from bookstore.replication.tables.model import LogEntry
from bookstore.tables import BOOKS
from tests.support.threaded_server import serving

EU, AP = "eu-west-1", "ap-southeast-1"
SECRET = "the deployment's secret for the push limit test"


@pytest.fixture
def ap(tmp_path: Path) -> Iterator[tuple[RegionServices, HttpPeer]]:
    """Region AP's whole app (the API's framing in front of /replication/, as a region serves it), and
    EU's HttpPeer to it."""
    services = build_region(Topology(), AP, tmp_path)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(region_app(services, SECRET), log_level="warning", lifespan="off")
    try:
        with serving(config, sock) as (host, port):
            auth = PeerAuth(SECRET, EU, SystemClock(), destination=AP)
            regions = [r.id for r in services.topology.regions]
            yield (
                services,
                HttpPeer(
                    AP, f"http://{host}:{port}", me=EU, auth=auth, schemas={"books": BOOKS}, regions=regions
                ),
            )
    finally:
        services.close()


def book(i: int, description_bytes: int) -> LogEntry:
    now = SystemClock().now_ms()
    item = {"id": f"b{i:05d}", "name": f"Book {i}", "description": "x" * description_bytes}
    return LogEntry(
        seq=i + 1,
        table="books",
        kind="INSERT",
        key={"id": item["id"]},
        old=None,
        new=item,
        written_ms=now,
        origin=EU,
        version=(HybridLogicalClock.pack(now), EU),
        previous=None,
    )


def held(services: RegionServices, entries: list[LogEntry]) -> int:
    assert services.replica is not None
    return len(services.replica.entries_of("books", [e.key for e in entries]))


def test_a_push_of_many_large_entries_is_split_within_the_limit_and_applied(
    ap: tuple[RegionServices, HttpPeer],
) -> None:
    services, peer = ap
    # 2,000 entries of about 2 KB: 4 MB, four times what one request may carry.
    entries = [book(i, 2_000) for i in range(2_000)]

    async def push() -> list[LogEntry]:
        try:
            return await peer.push(entries)
        finally:
            await peer.aclose()

    assert asyncio.run(push()) == []
    assert held(services, entries) == len(entries)


def test_an_entry_alone_over_the_limit_is_returned_not_sent_and_the_others_go(
    ap: tuple[RegionServices, HttpPeer],
) -> None:
    services, peer = ap
    huge = book(0, MAX_BODY_BYTES)
    others = [book(i, 100) for i in range(1, 50)]

    async def push() -> list[LogEntry]:
        try:
            return await peer.push([huge, *others])
        finally:
            await peer.aclose()

    assert asyncio.run(push()) == [huge]
    assert held(services, others) == len(others)
    assert held(services, [huge]) == 0
