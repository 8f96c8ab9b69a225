"""One region's blog on MariaDB (`[storage] blog = "mysql"`): MariaDB's GTID replication run at run time.

The region's repository writes through the application's account (no SUPER: `read_only` holds against
it); this node drives the region's own server through the administrative account, with the functions
of `mariadb.py`:
- set-up (`open_mysql_blog`, at the region's start): the accounts on its server; the home region's server,
  when fresh, becomes the first primary (epoch 1); any other fresh server a read-only replica of it.
- every second it reads each server's `blog_meta` (the ones that answer) and finds the writable primary
  of the highest epoch (ranked by `(epoch, region)` as everywhere). A server that is not it and still
  takes writes, or does not replicate from it, is deposed: it is fenced at once (read_only) and rejoins
  by itself (`mariadb.rejoin`: its writes past the fork kept in `blog_diverged`, its tables re-synced
  from a consistent snapshot, replication from the primary). A (re)started primary takes no write
  before that first look.
- promotion (`promote`) needs a majority of the regions' servers unless forced, then fences every other
  server that answers: a deposed primary's server stops taking writes even while its region is down.
- switchover: `mariadb.switchover` (fence, MASTER_GTID_WAIT, promote, the old primary follows).
The same endpoints (`routes.blog_routes`) and status as the embedded replication serve the operator,
the edge and `bookstore status`; the row-change streams between regions are not used (MariaDB ships).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from bookstore.blog.port import SqlDatabase
from bookstore.blog.repository import BlogRepository
from bookstore.config import MysqlDsn, Region, Topology, parse_mysql_dsn
from bookstore.domain import errors
from bookstore.ports import Clock
from bookstore.replication.blog import mariadb
from bookstore.replication.blog.mariadb import Accounts, MysqlServer
from bookstore.replication.blog.metrics import BlogMetrics
from bookstore.replication.blog.state import Adoption, BlogState, Epoch, epoch_rank
from bookstore.replication.blog.store import BlogStore
from bookstore.replication.blog.wire import SWITCHOVER_TIMEOUT_S, FollowRequest

log = logging.getLogger("bookstore.blog.mariadb")

# How often the node looks at every server's state (and fences or rejoins its own).
TICK_S: Final = 1.0
# How often the replica's lag is measured for the status.
LAG_S: Final = 0.25
# How long a write waits for the first look before it is refused with 503.
GATE_WAIT_S: Final = 5.0
# How long a fresh replica waits for the home region's server to hold the blog's database.
SETUP_WAIT_S: Final = 60.0
REPL_USER: Final = "bookstore_repl"


@dataclass(frozen=True)
class MysqlBlogTopology:
    """Every active region's server (administrative account), this region's application account."""

    region: str
    home: str
    database: str
    servers: dict[str, MysqlServer]
    accounts: Accounts

    @classmethod
    def of(cls, topology: Topology, region: Region) -> MysqlBlogTopology:
        app = parse_mysql_dsn(region.blog_dsn or "")
        home = parse_mysql_dsn(topology.home.blog_dsn or "")
        servers = {}
        for r in topology.regions:
            if r.id in topology.active and r.blog_admin_dsn:
                admin = parse_mysql_dsn(r.blog_admin_dsn, database=False)
                servers[r.id] = MysqlServer(admin.host, admin.port, admin.user, admin.password)
        # Every server must know the one replication account's password: derived from the home region's
        # application password, which every region's topology holds.
        repl_password = hmac.new(home.password.encode(), b"bookstore blog replication", hashlib.sha256)
        return cls(
            region=region.id,
            home=topology.home_region,
            database=app.database,
            servers=servers,
            accounts=Accounts(app.user, app.password, REPL_USER, repl_password.hexdigest()[:32]),
        )

    @property
    def mine(self) -> MysqlServer:
        return self.servers[self.region]


def _meta_or_none(server: MysqlServer, database: str) -> dict[str, str] | None:
    """A server's blog_meta, or None when it does not answer or holds none yet."""
    try:
        meta = mariadb.blog_meta(server, database)
    except Exception:  # a server down (StorageError), or no blog database on it yet
        return None
    return meta if "epoch" in meta else None


def open_mysql_blog(
    topology: Topology, region: Region, clock: Clock, connect: Callable[[MysqlDsn], SqlDatabase]
) -> BlogRepository:
    """The region's blog repository on its MariaDB server, the server set up for replication first.

    `connect` opens the SQL adapter on a DSN: the region's composition root chooses it
    (storage/mysql/sql.MysqlSql), so replication imports no storage adapter.
    """
    mt = MysqlBlogTopology.of(topology, region)
    app = parse_mysql_dsn(region.blog_dsn or "")
    mariadb.create_accounts(mt.mine, mt.database, mt.accounts)
    fresh = _meta_or_none(mt.mine, mt.database) is None and mariadb.replica_status(mt.mine) is None
    if fresh and region.id == mt.home:
        mariadb.make_primary(mt.mine, mt.database)
        db = connect(app)
        repository = BlogRepository.open(db, region=region.id, primary_region=mt.home, clock=clock)
        log.info("region=%s event=mariadb_first_primary server=%s", region.id, mt.mine)
        return repository
    if fresh:
        home = mt.servers[mt.home]
        deadline = time.monotonic() + SETUP_WAIT_S
        while _meta_or_none(home, mt.database) is None:
            if time.monotonic() > deadline:
                raise errors.Unavailable(
                    f"the home region's MariaDB server {home} holds no blog yet after {SETUP_WAIT_S:g} s"
                )
            time.sleep(0.2)
        mariadb.configure_replica(
            mt.mine,
            home,
            database=mt.database,
            accounts=mt.accounts,
            region=region.id,
            primary_region=mt.home,
            epoch=1,
        )
    db = connect(app)
    return BlogRepository(db, region=region.id, clock=clock)


@dataclass(frozen=True)
class _Seen:
    """One server's state as its blog_meta says, and whether it takes writes."""

    region: str
    epoch: int
    primary_region: str
    writable: bool

    @property
    def rank(self) -> tuple[int, str]:
        return epoch_rank(self.epoch, self.primary_region)


class MariaDbBlog:
    """One region's blog replication on MariaDB: the endpoints' BlogNode, the status, the loop."""

    def __init__(
        self,
        repository: BlogRepository,
        mysql: MysqlBlogTopology,
        *,
        clock: Clock,
        metrics: BlogMetrics | None = None,
        regions: Sequence[str] = (),
    ) -> None:
        self.mysql = mysql
        self.region = mysql.region
        self.clock = clock
        self.store = BlogStore(repository, clock, record_first_epoch=not repository.meta().read_only)
        self.regions = set(regions) | set(mysql.servers) | {self.region}
        self.metrics = metrics or BlogMetrics(None, self.region)
        self.state: BlogState = self.store.read_state()
        self.confirmed = threading.Event()
        self.views: dict[str, _Seen | None] = {}
        self._lag: mariadb.Lag | None = None
        # Whether this region's server replicates from the primary of the highest epoch (the last look).
        self._following = False
        self._lock = asyncio.Lock()
        repository.write_gate = self.gate
        m = self.metrics
        m.epoch.set_function(lambda: self.state.epoch)
        m.read_only.set_function(lambda: 0 if self.state.writable else 1)
        m.position.set_function(lambda: self.state.applied_lsn)
        m.behind.set_function(lambda: self.lag_entries() or 0)
        m.diverged.set_function(self.store.diverged_count)

    # the gate and the state ----------------------------------------------------------------------------

    def gate(self) -> None:
        """Before every write: a (re)started primary waits for the first look at the other servers."""
        if not self.confirmed.wait(GATE_WAIT_S):
            raise errors.Unavailable(
                f"the blog in {self.region} is checking the other MariaDB servers' epochs; "
                "retry in a few seconds"
            )

    async def refresh(self) -> BlogState:
        self.state = await asyncio.to_thread(self.store.read_state)
        return self.state

    async def adopt(self, epoch: int, primary: str, history: Sequence[Epoch], source: str) -> Adoption | None:
        raise errors.Conflict(
            f"the blog in {self.region} replicates through MariaDB; there is no row-change stream to follow"
        )

    async def serve_follow(self, body: FollowRequest) -> AsyncIterator[bytes]:
        raise errors.Conflict(f"the blog in {self.region} replicates through MariaDB")
        yield b""  # pragma: no cover - makes this an async generator

    def lag_entries(self) -> int | None:
        """Transactions of the primary this replica has not applied (None for a primary, or when unknown)."""
        if self.state.role != "replica" or not self._following or self._lag is None:
            return None
        return self._lag.transactions

    def _measure_lag(self) -> None:
        """The replica's lag by GTID, measured now."""
        lag = None
        primary = self.mysql.servers.get(self.state.primary_region)
        if self.state.role == "replica" and self._following and primary is not None:
            with contextlib.suppress(Exception):
                lag = mariadb.lag(primary, self.mysql.mine)
        self._lag = lag

    # looking at the servers ------------------------------------------------------------------------------

    def _look(self) -> dict[str, _Seen | None]:
        seen: dict[str, _Seen | None] = {}
        for region, server in self.mysql.servers.items():
            meta = _meta_or_none(server, self.mysql.database)
            if meta is None:
                seen[region] = None
                continue
            try:
                with server.connect() as conn, conn.cursor() as c:
                    c.execute("SELECT @@GLOBAL.read_only")
                    row = c.fetchone()
                    server_read_only = bool(row and int(row[0]))
            except Exception:
                seen[region] = None
                continue
            seen[region] = _Seen(
                region,
                int(meta.get("epoch", "1")),
                meta.get("primary_region", ""),
                meta.get("read_only") == "0" and not server_read_only,
            )
        return seen

    def _best(self, seen: Mapping[str, _Seen | None]) -> _Seen | None:
        """The writable primary of the highest (epoch, region) among the servers that answer."""
        primaries = [
            s for s in seen.values() if s is not None and s.writable and s.primary_region == s.region
        ]
        return max(primaries, key=lambda s: s.rank, default=None)

    def _tick(self) -> str | None:
        """One look: fences and rejoins this region's server when another is the primary; returns what
        it did (for the log), None when nothing."""
        seen = self._look()
        self.views = seen
        best = self._best(seen)
        mine = seen.get(self.region)
        if best is None or mine is None:
            self._following = False
            return None
        if best.region == self.region:
            self._following = False
            return None
        status = mariadb.replica_status(self.mysql.mine)
        primary = self.mysql.servers[best.region]
        following = (
            status is not None
            and status.sql_running
            and status.master == f"{primary.host}:{primary.port}"
            and mine.epoch == best.epoch
            and mine.primary_region == best.region
            and not mine.writable
        )
        self._following = following
        if following:
            return None
        # Deposed (still writable at a lower epoch) or following a former primary: fence, then rejoin.
        mariadb.fence(self.mysql.mine, self.mysql.database, epoch=best.epoch, primary_region=best.region)
        report = mariadb.rejoin(
            self.mysql.mine,
            primary,
            database=self.mysql.database,
            accounts=self.mysql.accounts,
            region=self.region,
        )
        self._following = True
        self.metrics.epoch_changes.labels("resynced").inc()
        return (
            f"rejoined as a replica of {best.region} at epoch {best.epoch}: "
            f"{report.diverged} diverged write(s) kept, errant {','.join(str(e) for e in report.errant)}"
        )

    async def run(self, stop: asyncio.Event) -> None:
        lag = asyncio.create_task(self._watch_lag(stop), name="blog-mariadb-lag")
        try:
            await self._look_every_tick(stop)
        finally:
            lag.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await lag

    async def _watch_lag(self, stop: asyncio.Event) -> None:
        """Measures the lag often (a thread; never under the lock a promotion holds), so a status read
        soon after the last write sees it: /status must not wait on the servers."""
        while not stop.is_set():
            await asyncio.to_thread(self._measure_lag)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=LAG_S)

    async def _look_every_tick(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                async with self._lock:
                    did = await asyncio.to_thread(self._tick)
                    await self.refresh()
                if did:
                    log.warning("region=%s event=mariadb_blog_rejoined detail=%s", self.region, did)
            except Exception as exc:  # a server down: look again next tick, never give up
                log.warning("region=%s event=mariadb_blog_look_failed error=%s", self.region, exc)
            self.confirmed.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=TICK_S)

    # operations ------------------------------------------------------------------------------------------

    def electorate(self) -> set[str]:
        return self.regions | {h.primary_region for h in self.state.history}

    async def promote(
        self,
        *,
        min_epoch: int = 0,
        wait_for_lsn: int | None = None,
        timeout_s: float = SWITCHOVER_TIMEOUT_S,
        force: bool = False,
    ) -> BlogState:
        """Makes this region's server the primary of a new epoch, then fences every other that answers.

        Unless `force`, a majority of the regions' servers must answer (Conflict otherwise).
        """
        async with self._lock:
            state = await self.refresh()
            if state.writable:
                return state
            seen = await asyncio.to_thread(self._look)
            electorate = self.electorate()
            reached = {r for r, s in seen.items() if s is not None} & electorate | {self.region}
            if not force and len(reached) * 2 <= len(electorate):
                missing = sorted(electorate - reached)
                raise errors.Conflict(
                    f"promotion of the blog in {self.region} refused: it reaches {len(reached)} of the "
                    f"{len(electorate)} regions' MariaDB servers ({', '.join(sorted(electorate))}), not a "
                    f"majority; no answer from {', '.join(missing)}. If those are down (not just cut off), "
                    'promote with --force (CLI) or {"force": true}'
                )
            known = max([min_epoch, state.epoch, *(s.epoch for s in seen.values() if s is not None)])
            promotion = await asyncio.to_thread(
                mariadb.promote,
                self.mysql.mine,
                database=self.mysql.database,
                region=self.region,
                min_epoch=known,
            )
            for region, server in self.mysql.servers.items():
                if region == self.region or seen.get(region) is None:
                    continue
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(
                        mariadb.fence,
                        server,
                        self.mysql.database,
                        epoch=promotion.epoch,
                        primary_region=self.region,
                    )
            state = await self.refresh()
        self.confirmed.set()
        self.metrics.epoch_changes.labels("promoted").inc()
        log.warning("region=%s event=mariadb_blog_promoted epoch=%d", self.region, promotion.epoch)
        return state

    async def switchover(self, target: str, timeout_s: float = SWITCHOVER_TIMEOUT_S) -> dict[str, Any]:
        """Planned: fence this primary, let `target` apply everything, promote it; nothing is lost."""
        if target == self.region:
            return {"from": self.region, "to": target, **self.state.json()}
        new = self.mysql.servers.get(target)
        if new is None:
            raise errors.ValidationError(f"unknown region {target!r}")
        async with self._lock:
            if not (await self.refresh()).writable:
                raise errors.Conflict(f"the blog in {self.region} is not the primary")
            promotion = await asyncio.to_thread(
                mariadb.switchover,
                self.mysql.mine,
                new,
                database=self.mysql.database,
                accounts=self.mysql.accounts,
                new_region=target,
                old_region=self.region,
                timeout_s=timeout_s,
            )
            await self.refresh()
        return {"from": self.region, "to": target, "epoch": promotion.epoch, **self.state.json()}

    async def rejoin(self) -> dict[str, Any]:
        """Re-syncs this region's server from the primary's now (what the loop does by itself)."""
        async with self._lock:
            seen = await asyncio.to_thread(self._look)
            best = self._best(seen)
            if best is None:
                raise errors.Unavailable(
                    "no MariaDB server answers as the primary; promote one (`bookstore blog promote REGION`)"
                )
            if best.region == self.region:
                raise errors.Conflict(f"the blog in {self.region} is the primary (epoch {best.epoch})")
            report = await asyncio.to_thread(
                mariadb.rejoin,
                self.mysql.mine,
                self.mysql.servers[best.region],
                database=self.mysql.database,
                accounts=self.mysql.accounts,
                region=self.region,
            )
            state = await self.refresh()
        return {
            **state.json(),
            "diverged": report.diverged,
            "divergedTotal": await asyncio.to_thread(self.store.diverged_count),
        }

    # status ----------------------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        st = self.state
        behind = self.lag_entries()
        return {
            **{k: v for k, v in st.json().items() if k != "history"},
            # A replica not (yet) replicating from the primary of the highest epoch must still rejoin.
            "needsRejoin": st.needs_rejoin or (st.role == "replica" and not self._following),
            "engine": "mariadb",
            "headLsn": self.store.head()[0],
            "confirmed": self.confirmed.is_set(),
            "lagEntries": behind,
            "lagSeconds": None if self._lag is None or st.role != "replica" else self._lag.seconds,
            "lag": None,
            "diverged": self.store.diverged_count(),
            "peers": {
                r: None
                if s is None
                else {"epoch": s.epoch, "primaryRegion": s.primary_region, "writable": s.writable}
                for r, s in self.views.items()
                if r != self.region
            },
            "history": [h.json() for h in st.history],
        }
