"""Three regions' real Replicators and SQLite stores under random writes, cuts, restarts and clock skew.

The regions talk through an in-process transport (tests/support/inprocess_peers.py) that carries every
entry through the wire format, and replication runs in bounded rounds chosen by hypothesis, so each
example is deterministic. At the end every link is healed and the regions exchange until nothing moves:
they must hold equal states, and every key the version its table's conflict rule keeps: the highest ever
written (last writer wins), or for orders the lowest (first writer wins: an order is written once).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import Coroutine
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any, TypeVar

import orjson
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from prometheus_client import CollectorRegistry

from bookstore.domain.errors import ConditionFailed
from bookstore.kernel.clock import SkewedClock, SystemClock
from bookstore.ports import FIRST_WRITER_WINS, Item, ItemAbsent, Key
from bookstore.replication.tables.model import Version
from bookstore.replication.tables.replicator import ReplicationMetrics, Replicator
from bookstore.storage.sqlite.replica import SqliteReplica
from bookstore.storage.sqlite.tables import SqliteDatabase, SqliteTable
from bookstore.tables import BOOKS, CARTS, ORDERS
from tests.support.inprocess_peers import InProcessPeer, LinkCut, Network

T = TypeVar("T")

REGIONS = ("eu-west-1", "ap-southeast-1", "us-east-1")
SCHEMAS = {"books": BOOKS, "carts": CARTS, "orders": ORDERS}
# Few keys, so that regions often write the same item concurrently.
KEYS: tuple[tuple[str, Key], ...] = (
    ("carts", {"customerId": "c1", "bookId": "b1"}),
    ("carts", {"customerId": "c1", "bookId": "b2"}),
    ("carts", {"customerId": "c2", "bookId": "b1"}),
    ("books", {"id": "k1"}),
    ("books", {"id": "k2"}),
    ("orders", {"customerId": "c1", "orderId": "k-retried"}),
    ("orders", {"customerId": "c2", "orderId": "k-retried"}),
)
PAIRS = tuple((a, b) for a in REGIONS for b in REGIONS if a != b)
LINKS = tuple(combinations(REGIONS, 2))
TITLES = ("Dune", "Ærø 📚", 'quote " and \\ backslash', "")
# Rounds of "every region pulls every peer" that must suffice to settle three regions (relays included).
SETTLE_ROUNDS = 6

regions = st.sampled_from(REGIONS)
pairs = st.sampled_from(PAIRS)
links = st.sampled_from(LINKS)
keys = st.sampled_from(range(len(KEYS)))


@dataclass(frozen=True)
class Written:
    """An acknowledged write: its version as the store reported it, and its image (None = delete)."""

    version: Version
    image: Item | None
    region: str


@dataclass
class Node:
    """One region as the machine runs it: its database, tables, replica store and replicator."""

    db: SqliteDatabase
    tables: dict[str, SqliteTable]
    replica: SqliteReplica
    replicator: Replicator


def _key_id(table: str, key: Key) -> str:
    return table + orjson.dumps(key, option=orjson.OPT_SORT_KEYS).decode()


class ReplicationMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="replication-stateful-"))
        self.loop = asyncio.new_event_loop()
        self.network = Network()
        # A region's clock belongs to its machine: it survives restarts of the region's process.
        self.clocks = {r: SkewedClock(SystemClock()) for r in REGIONS}
        self.nodes: dict[str, Node] = {}
        self.writes: dict[str, list[Written]] = {_key_id(t, k): [] for t, k in KEYS}
        # The newest version each region wrote itself, per key: that region may never go below it.
        self.own: dict[tuple[str, str], Version] = {}
        self.trimmed = False
        for region in REGIONS:
            self._open(region)

    # -- plumbing ------------------------------------------------------------------------------------

    def _open(self, region: str) -> None:
        db = SqliteDatabase(self.dir / f"{region}.db", region, self.clocks[region])
        tables = {name: db.table(schema) for name, schema in SCHEMAS.items()}
        replica = SqliteReplica(db)
        self.network.stores[region] = replica
        replicator = Replicator(
            replica,
            region,
            [self._peer(region, other) for other in REGIONS if other != region],
            clock=self.clocks[region],
            metrics=ReplicationMetrics(CollectorRegistry(), region),
            snapshot_page=4,
            digest_buckets=8,
            tables=tuple(SCHEMAS),
            # The skews drawn here (+-500 ms a region, so up to 1 s between two) are within the bound:
            # convergence under normal clock error. Beyond the bound is test_clock_bound's subject.
            max_clock_offset_ms=2_000,
        )
        self.nodes[region] = Node(db, tables, replica, replicator)

    def _peer(self, me: str, region: str, max_batches: int | None = None) -> InProcessPeer:
        return InProcessPeer(me, region, self.network, SCHEMAS, REGIONS, max_batches=max_batches)

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def _pull(self, dst: str, src: str, max_batches: int | None = None) -> bool:
        """One bounded round of `dst` following `src`; False when the link is cut."""
        try:
            self._run(self.nodes[dst].replicator.follow(self._peer(dst, src, max_batches)))
        except LinkCut:
            return False
        return True

    def _heads(self) -> dict[str, int]:
        return {r: node.replica.head_seq() for r, node in self.nodes.items()}

    def _settle(self) -> None:
        """Every region pulls every peer until a whole round logs nothing new anywhere."""
        for _ in range(SETTLE_ROUNDS):
            before = self._heads()
            for dst, src in PAIRS:
                assert self._pull(dst, src), "settling needs every link healed"
            if self._heads() == before:
                return
        raise AssertionError(f"regions still exchanging after {SETTLE_ROUNDS} rounds: {self._heads()}")

    # -- writes --------------------------------------------------------------------------------------

    def _write(self, region: str, index: int, op: str, value: int, title: str) -> None:
        table_name, key = KEYS[index]
        table = self.nodes[region].tables[table_name]
        before = table.version(key)
        if table_name == "orders":
            # Checkout: an order is created once, where its id is not known yet (any op creates it).
            try:
                table.put(
                    {**key, "books": [{"bookId": f"b{value}", "quantity": value}]}, condition=ItemAbsent()
                )
            except ConditionFailed:
                assert before is not None
                return
        elif op == "delete":
            table.delete(key)
        elif table_name == "carts" and op == "put":
            table.put({**key, "quantity": value})
        elif table_name == "carts":
            table.update(key, {"quantity": value, "updatedBy": region})
        elif op == "put":
            table.put({**key, "title": title, "category": f"cat{value % 3}", "price": value + 0.99})
        else:
            table.update(key, {"title": title, "stock": value})
        after = table.version(key)
        if after == before:
            assert op == "delete" and table.get(key) is None, f"{op} of {key} in {region} left no version"
            return
        assert after is not None and after[1] == region and (before is None or after > before)
        key_id = _key_id(table_name, key)
        self.writes[key_id].append(Written(after, table.get(key), region))
        self.own[(region, key_id)] = after

    @rule(region=regions, index=keys, value=st.integers(1, 9), title=st.sampled_from(TITLES))
    def put(self, region: str, index: int, value: int, title: str) -> None:
        self._write(region, index, "put", value, title)

    @rule(region=regions, index=keys, value=st.integers(1, 9), title=st.sampled_from(TITLES))
    def update(self, region: str, index: int, value: int, title: str) -> None:
        self._write(region, index, "update", value, title)

    @rule(region=regions, index=keys)
    def delete(self, region: str, index: int) -> None:
        self._write(region, index, "delete", 0, "")

    # -- replication and faults ----------------------------------------------------------------------

    @rule(pair=pairs, max_batches=st.sampled_from((None, 1, 2)))
    def pull(self, pair: tuple[str, str], max_batches: int | None) -> None:
        dst, src = pair
        self._pull(dst, src, max_batches)

    @rule(pair=pairs)
    def anti_entropy(self, pair: tuple[str, str]) -> None:
        a, b = pair
        with contextlib.suppress(LinkCut):
            self._run(self.nodes[a].replicator.anti_entropy(self._peer(a, b)))

    @rule(link=links)
    def cut(self, link: tuple[str, str]) -> None:
        self.network.cut(*link)

    @rule(link=links)
    def heal(self, link: tuple[str, str]) -> None:
        self.network.heal(*link)

    @rule(region=regions)
    def restart(self, region: str) -> None:
        self.nodes[region].db.close()
        self._open(region)

    @rule(region=regions, offset_ms=st.integers(-500, 500))
    def skew(self, region: str, offset_ms: int) -> None:
        self.clocks[region].offset_ms = offset_ms

    @rule()
    def settle_and_trim(self) -> None:
        """Once every region holds everything, trim every log and tombstone (retention 0), then re-cut.

        Trimming tombstones is only safe when no older version of their item is still on its way, which
        the retention window guarantees in production; settling first guarantees it here.
        """
        cuts = set(self.network.cuts)
        self.network.heal_all()
        self._settle()
        for region, node in self.nodes.items():
            peers = [r for r in REGIONS if r != region]
            node.replica.trim(peers, 0, self.clocks[region].now_ms())
        self.network.cuts = cuts
        self.trimmed = True

    # -- what must hold ------------------------------------------------------------------------------

    @invariant()
    def every_version_was_written_and_none_went_back(self) -> None:
        for region, node in self.nodes.items():
            for table_name, key in KEYS:
                key_id = _key_id(table_name, key)
                version = node.tables[table_name].version(key)
                own = self.own.get((region, key_id))
                if version is None:
                    assert own is None or self.trimmed, f"{region} lost its own write {own} of {key_id}"
                    continue
                written = {w.version: w for w in self.writes[key_id]}
                assert version in written, f"{region} holds {key_id} at {version}, never written"
                assert node.tables[table_name].get(key) == written[version].image
                if SCHEMAS[table_name].conflict_rule == FIRST_WRITER_WINS:
                    # An earlier creation elsewhere may replace this region's own; nothing later may.
                    assert own is None or version <= own, f"{region} went up from {own} to {version}"
                else:
                    assert own is None or version >= own, f"{region} went back from {own} to {version}"

    def teardown(self) -> None:
        try:
            self._converge_and_check()
        finally:
            for node in self.nodes.values():
                node.db.close()
            self.loop.run_until_complete(self.loop.shutdown_default_executor())
            self.loop.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    def _converge_and_check(self) -> None:
        self.network.heal_all()
        self._settle()
        digests = {r: node.replica.state_digest(tuple(SCHEMAS)) for r, node in self.nodes.items()}
        assert len(set(digests.values())) == 1, f"regions differ after settling: {digests}"
        for table_name, key in KEYS:
            key_id = _key_id(table_name, key)
            if not self.writes[key_id]:
                continue
            keep = min if SCHEMAS[table_name].conflict_rule == FIRST_WRITER_WINS else max
            newest = keep(self.writes[key_id], key=lambda w: w.version)
            for region, node in self.nodes.items():
                table = node.tables[table_name]
                version = table.version(key)
                if newest.image is None and version is None:
                    assert self.trimmed, f"{region} has no tombstone of {key_id} though nothing was trimmed"
                else:
                    assert version == newest.version, f"{region}: {key_id} at {version}, newest {newest}"
                assert table.get(key) == newest.image
        # The logs alone converged the regions: anti-entropy finds nothing left to repair. Once tombstones
        # were trimmed, regions may differ in tombstones only (each trims by its own clock), which
        # anti-entropy copies back; the live items must not change.
        for a, b in PAIRS:
            repaired = self._run(self.nodes[a].replicator.anti_entropy(self._peer(a, b)))
            assert self.trimmed or repaired == 0, f"anti-entropy {a} <- {b} repaired {repaired} when settled"
        after = {r: node.replica.state_digest(tuple(SCHEMAS)) for r, node in self.nodes.items()}
        assert after == digests, "anti-entropy changed live items of settled regions"


ReplicationMachine.TestCase.settings = settings(
    max_examples=25,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestReplicationConverges = ReplicationMachine.TestCase
