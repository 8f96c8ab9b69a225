"""The blog's life cycle on MariaDB's own replication: two real servers replicating across simulated links."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest

from bookstore.blog.posts import Post
from bookstore.blog.repository import BlogRepository
from bookstore.config import Region, Topology, link_address
from bookstore.domain.errors import StorageError, Unavailable
from bookstore.netsim.simulator import LinkSimulator
from bookstore.replication.blog.mariadb import (
    SERVER_ARGS,
    Accounts,
    MysqlServer,
    configure_replica,
    diverged,
    errant_transactions,
    lag,
    make_primary,
    promote,
    rejoin,
    replica_status,
    switchover,
)
from bookstore.replication.blog.mariadb import create_accounts as create_accounts_on
from bookstore.storage.mysql.sql import MysqlSql
from tests.support import waiting
from tests.support.mariadb_server import MariaDBServer, mariadb_server

pytestmark = pytest.mark.xdist_group("mariadb")

EU, AP = "eu-west-1", "ap-southeast-1"
DB = "blog"
ACCOUNTS = Accounts("blog_app", "app-password-1", "repl", "repl-password-1")
DELAY_MS = 85.0
WAIT_S = 60.0

T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T], ok: Callable[[T], bool], timeout: float = WAIT_S) -> T:
    return waiting.wait_for(what, probe, ok, timeout, (StorageError,))


class Links:
    """A LinkSimulator on an event loop of its own thread, so blocking test code can drive it."""

    def __init__(self, topology: Topology, ports: list[int]) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="links", daemon=True)
        self.sim = LinkSimulator(topology, ports, delays={(EU, AP): DELAY_MS, (AP, EU): DELAY_MS})

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def start(self) -> None:
        self.thread.start()
        self.run(self.sim.start())

    def cut(self, cut: bool) -> None:
        async def change() -> None:
            if cut:
                self.sim.cut_both(EU, AP)
            else:
                self.sim.heal_both(EU, AP)

        self.run(change())

    def stop(self) -> None:
        self.run(self.sim.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


@dataclass
class Cluster:
    """Ireland's server (a) and Singapore's (b); each reaches the other only through the links."""

    a: MariaDBServer
    b: MariaDBServer
    topology: Topology
    links: Links

    def admin(self, server: MariaDBServer) -> MysqlServer:
        return MysqlServer(server.host, server.port, server.user, server.password)

    def reaches(self, src: str, server: MariaDBServer) -> tuple[str, int]:
        """Where region `src` reaches `server` (of the other region): its link address, the server's port."""
        dst = AP if src == EU else EU
        return link_address(self.topology, src, dst), server.port

    def app(self, server: MariaDBServer) -> MysqlSql:
        return MysqlSql(server.host, server.port, ACCOUNTS.app_user, ACCOUNTS.app_password, DB)


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    base = 1 + (os.getpid() % 120) * 2
    addresses = {EU: f"127.77.{base}.1", AP: f"127.77.{base + 1}.1"}

    def args(region: str) -> list[str]:
        return [*SERVER_ARGS, f"--bind-address=127.0.0.1,{addresses[region]}"]

    with (
        mariadb_server(1, args(EU), log_bin=True, gtid_strict_mode=True) as a,
        mariadb_server(2, args(AP), log_bin=True, gtid_strict_mode=True) as b,
    ):
        topology = Topology(
            regions=(
                Region(id=EU, name="Ireland", flag="IE", address=addresses[EU]),
                Region(id=AP, name="Singapore", flag="SG", address=addresses[AP]),
            ),
            active=(EU, AP),
            home_region=EU,
        )
        links = Links(topology, [a.port, b.port])
        links.start()
        try:
            yield Cluster(a, b, topology, links)
        finally:
            links.stop()


def new_post(title: str) -> Post:
    now = int(time.time() * 1000)
    return Post(0, "", title, f"About {title}.", f"<p>About {title}.</p>", f"About {title}.", "u1", "Ann",
                ("replication",), (), now, now)  # fmt: skip


def titles(repo: BlogRepository) -> list[str]:
    return [p.title for p in repo.posts(limit=1000)]


def retrying(call: Callable[[], T]) -> T:
    """The call, once more after a StorageError (a pooled connection to a server that restarted)."""
    try:
        return call()
    except StorageError:
        return call()


def test_the_blog_life_cycle_on_mariadb_gtid_replication(cluster: Cluster) -> None:
    a, b = cluster.admin(cluster.a), cluster.admin(cluster.b)
    for server in (a, b):
        create_accounts_on(server, DB, ACCOUNTS)
    make_primary(a, DB)
    ireland_db, singapore_db = cluster.app(cluster.a), cluster.app(cluster.b)
    try:
        ireland = BlogRepository.open(ireland_db, region=EU, primary_region=EU)
        first = ireland.insert_post(new_post("Published in Ireland"), explicit_slug=False)

        # Singapore replicates from Ireland through the link, read-only.
        configure_replica(
            b, a, database=DB, accounts=ACCOUNTS, region=AP, primary_region=EU, epoch=1,
            via=cluster.reaches(AP, cluster.a),
        )  # fmt: skip
        singapore = BlogRepository(singapore_db, region=AP)
        status = replica_status(b)
        assert status is not None and status.io_running and status.sql_running
        assert status.master == ":".join(map(str, cluster.reaches(AP, cluster.a)))
        wait_for("the post in Singapore", lambda: titles(singapore), lambda t: "Published in Ireland" in t)
        assert singapore.post(first.id) == ireland.post(first.id)
        # Each server's blog_meta is its own: Ireland's never replicated over Singapore's.
        meta = singapore.meta()
        assert meta.read_only and meta.primary_region == EU and meta.epoch == 1
        assert not ireland.meta().read_only

        # Singapore refuses writes: by its blog_meta (naming the primary), and by read_only itself for
        # an account without SUPER (error 1290 becomes Unavailable, not a storage failure).
        with pytest.raises(Unavailable, match=EU):
            singapore.insert_post(new_post("Refused"), explicit_slug=False)
        with pytest.raises(Unavailable, match="read-only"):
            singapore_db.execute("INSERT INTO blog_post_tags (post_id, tag) VALUES (1, 'sneaky')")
        caught_up = wait_for("no lag", lambda: lag(a, b), lambda lg: lg.transactions == 0)
        assert caught_up.seconds == 0 and caught_up.primary_pos == caught_up.replica_pos

        # A write Ireland takes while the link is cut never reaches Singapore; Ireland then dies.
        cluster.links.cut(True)
        time.sleep(0.3)
        ireland.insert_post(new_post("Written in Ireland during the cut"), explicit_slug=False)
        assert lag(a, b).transactions >= 1
        cluster.a.kill()

        # Singapore is promoted (epoch 2) and takes writes at once.
        promotion = promote(b, database=DB, region=AP)
        assert promotion.epoch == 2
        after = singapore.insert_post(
            new_post("Published in Singapore after the promotion"), explicit_slug=False
        )
        assert singapore.meta().primary_region == AP and not singapore.meta().read_only
        cluster.links.cut(False)

        # Ireland restarts read-only (every server does): its writes are refused even before it rejoins.
        cluster.a.start()
        with pytest.raises(Unavailable, match="read-only"):
            retrying(lambda: ireland.insert_post(new_post("Refused in Ireland"), explicit_slug=False))
        errant = errant_transactions(a, b)
        assert [(e.server_id, e.count) for e in errant] == [(1, 1)]

        # Ireland rejoins: its errant transaction is reported, its change records kept aside, and it
        # converges on Singapore's rows, following Singapore.
        report = rejoin(
            a, b, database=DB, accounts=ACCOUNTS, region=EU, old_reaches_new=cluster.reaches(EU, cluster.b)
        )
        assert [str(e) for e in report.errant] == [str(e) for e in errant]
        assert report.diverged == 2  # the post's row and its tag's
        kept = [d for d in diverged(a, DB) if d["table"] == "blog_posts"]
        assert [d["row"]["title"] for d in kept] == ["Written in Ireland during the cut"]
        assert kept[0]["newEpoch"] == 2 and kept[0]["newPrimary"] == AP
        expected = titles(singapore)
        assert "Written in Ireland during the cut" not in expected
        assert retrying(lambda: titles(ireland)) == expected
        assert ireland.post(after.id) == singapore.post(after.id)
        with pytest.raises(Unavailable, match=AP):
            ireland.insert_post(new_post("Refused after the rejoin"), explicit_slug=False)
        singapore.insert_post(new_post("Published in Singapore while Ireland follows"), explicit_slug=False)
        wait_for("Ireland follows Singapore", lambda: titles(ireland), lambda t: t == titles(singapore))

        # A planned switchover back to Ireland loses nothing.
        last = singapore.insert_post(new_post("The last post before the switchover"), explicit_slug=False)
        back = switchover(
            b, a, database=DB, accounts=ACCOUNTS, new_region=EU, old_region=AP,
            old_reaches_new=cluster.reaches(AP, cluster.a),
        )  # fmt: skip
        assert back.epoch == 3
        assert ireland.post(last.id) == singapore.post(last.id)
        assert titles(ireland) == titles(singapore)
        ireland.insert_post(new_post("Published in Ireland after the switchover"), explicit_slug=False)
        with pytest.raises(Unavailable, match=EU):
            singapore.insert_post(new_post("Refused in Singapore"), explicit_slug=False)
        wait_for("Singapore follows Ireland", lambda: titles(singapore), lambda t: t == titles(ireland))
        assert wait_for("no lag", lambda: lag(a, b), lambda lg: lg.transactions == 0).seconds == 0
    finally:
        ireland_db.close()
        singapore_db.close()
