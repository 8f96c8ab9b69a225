"""The merge: conflict detection, last- and first-writer-wins; regions converging under writes, cuts, relays
and restarts."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from bookstore.domain.errors import ConditionFailed
from bookstore.kernel.clock import HybridLogicalClock, SkewedClock
from bookstore.ports import FIRST_WRITER_WINS, LAST_WRITER_WINS, Item, ItemAbsent, TableSchema
from bookstore.replication.tables.model import LogEntry, Version, concurrent, supersedes
from bookstore.storage.sqlite.replica import SqliteReplica
from bookstore.storage.sqlite.tables import SqliteDatabase, SqliteTable

KV = TableSchema("kv", "k")
# Immutable items, as orders: the first version written of a key is the one every region keeps.
ONCE = TableSchema("once", "k", conflict_rule=FIRST_WRITER_WINS)
REGIONS = ("eu-west-1", "ap-southeast-1", "us-east-1")
# A number among the keys: 1 and 1.0 are one key to SQLite, and must hash and digest alike.
KEYS: tuple[Any, ...] = ("a", "b", "c", 1)
START_MS = 1_700_000_000_000

versions = st.tuples(st.integers(0, 40), st.sampled_from(REGIONS))


class ManualClock:
    """The wall clock every region shares, moved by the test."""

    def __init__(self) -> None:
        self.now = START_MS

    def now_ms(self) -> int:
        return self.now


# -- the conflict rule -------------------------------------------------------------------------------


@given(versions, st.none() | versions, versions, st.none() | versions)
def test_both_sides_of_a_pair_agree_whether_it_was_a_conflict(
    a: Version, a_prev: Version | None, b: Version, b_prev: Version | None
) -> None:
    assert concurrent(a, a_prev, b, b_prev) == concurrent(b, b_prev, a, a_prev)


def test_the_conflict_rule_on_the_cases_that_matter() -> None:
    v1, v2, v3 = (1, "eu-west-1"), (2, "ap-southeast-1"), (3, "eu-west-1")
    assert concurrent(v2, None, v1, None)  # both created the item without seeing the other
    assert concurrent(v3, v1, v2, v1)  # both changed v1
    assert not concurrent(v1, None, None, None)  # nothing here yet
    assert not concurrent(v2, None, v2, None)  # the same write again
    assert not concurrent(v2, v1, v1, None)  # the next write after ours
    assert not concurrent(v1, None, v2, v1)  # late delivery of what our write was based on
    assert not concurrent(v3, v2, v1, None)  # a gap (v2 not seen yet) but built on a newer base


@given(versions, versions)
def test_each_rule_keeps_one_version_of_any_two_whatever_their_order(a: Version, b: Version) -> None:
    for rule, keep in ((LAST_WRITER_WINS, max), (FIRST_WRITER_WINS, min)):
        # Applying b over a, or a over b, leaves the same version: the rule's choice.
        after_b = b if supersedes(rule, b, a) else a
        after_a = a if supersedes(rule, a, b) else b
        assert after_b == after_a == keep(a, b)
        assert not supersedes(rule, a, a)


# -- regions converging ------------------------------------------------------------------------------


@dataclass
class Cluster:
    """Three regions on their own files; one region's clock skewed; links that can be cut."""

    home: Path
    skew_ms: int
    base: ManualClock = field(default_factory=ManualClock)
    dbs: list[SqliteDatabase] = field(default_factory=list)
    replicas: list[SqliteReplica] = field(default_factory=list)
    tables: list[SqliteTable] = field(default_factory=list)
    once: list[SqliteTable] = field(default_factory=list)
    cut: frozenset[int] | None = None
    # Every version written locally, with the image written (None for a delete).
    written: dict[Any, list[tuple[Version, Item | None]]] = field(default_factory=dict)
    # Every version of the first-writer-wins table created locally, with its image.
    created: dict[Any, list[tuple[Version, Item]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.clocks = [SkewedClock(self.base, self.skew_ms if i == 0 else 0) for i in range(len(REGIONS))]
        for i in range(len(REGIONS)):
            self.dbs.append(self._open(i))
            self.tables.append(self.dbs[i].table(KV))
            self.once.append(self.dbs[i].table(ONCE))
            self.replicas.append(SqliteReplica(self.dbs[i]))

    def _open(self, i: int) -> SqliteDatabase:
        return SqliteDatabase(self.home / f"{REGIONS[i]}.db", REGIONS[i], self.clocks[i])

    def restart(self, i: int) -> None:
        self.dbs[i].close()
        self.dbs[i] = self._open(i)
        self.tables[i] = self.dbs[i].table(KV)
        self.once[i] = self.dbs[i].table(ONCE)
        self.replicas[i] = SqliteReplica(self.dbs[i])

    def put(self, i: int, key: Any, value: int) -> None:
        before = self.tables[i].version({"k": key})
        item = {"k": key, "v": value, "by": REGIONS[i]}
        self.tables[i].put(item)
        self._written(i, key, item, before)

    def create(self, i: int, key: Any, value: int) -> None:
        """Write an immutable item, as checkout writes an order: only where the key is absent."""
        item = {"k": key, "v": value, "by": REGIONS[i]}
        try:
            self.once[i].put(item, condition=ItemAbsent())
        except ConditionFailed:
            return
        version = self.once[i].version({"k": key})
        assert version is not None
        self.created.setdefault(key, []).append((version, item))

    def delete(self, i: int, key: Any) -> None:
        before = self.tables[i].version({"k": key})
        self.tables[i].delete({"k": key})  # present or not: a tombstone, newer than what it saw
        self._written(i, key, None, before)

    def _written(self, i: int, key: Any, image: Item | None, before: Version | None) -> None:
        version = self.tables[i].version({"k": key})
        # A local write supersedes whatever the region held, whatever its clock says.
        assert version is not None and (before is None or version > before)
        self.written.setdefault(key, []).append((version, image))

    def linked(self, i: int, j: int) -> bool:
        return self.cut != frozenset((i, j))

    def pull(self, dst: int, src: int, limit: int) -> int:
        """One batch of `src`'s log applied at `dst`, as the replicator does; the number applied."""
        replica = self.replicas[dst]
        after = replica.checkpoint(REGIONS[src]) or 0
        read = self.replicas[src].read_log(after, limit=limit, exclude_origin=REGIONS[dst])
        if read.last_seq == after:
            return 0
        return replica.apply(REGIONS[src], read.entries, read.last_seq).applied

    def quiesce(self) -> None:
        """Pull over every link that is up until a whole round changes nothing."""
        while True:
            progressed = False
            for dst in range(len(REGIONS)):
                for src in range(len(REGIONS)):
                    if src == dst or not self.linked(dst, src):
                        continue
                    while True:
                        before = self.replicas[dst].checkpoint(REGIONS[src])
                        applied = self.pull(dst, src, 7)
                        progressed |= applied > 0
                        if self.replicas[dst].checkpoint(REGIONS[src]) == before:
                            break
            if not progressed:
                return

    def close(self) -> None:
        for db in self.dbs:
            db.close()


region = st.integers(0, len(REGIONS) - 1)
directed_pair = st.sampled_from([(d, s) for d in range(len(REGIONS)) for s in range(len(REGIONS)) if d != s])
link = st.sampled_from([(0, 1), (0, 2), (1, 2)])
put = st.tuples(st.just("put"), region, st.sampled_from(KEYS), st.integers(0, 99))
create = st.tuples(st.just("create"), region, st.sampled_from(KEYS), st.integers(0, 99))
pull = st.tuples(st.just("pull"), directed_pair, st.integers(1, 4))
operations = st.lists(
    st.one_of(
        put,
        put,
        create,
        pull,
        pull,
        st.tuples(st.just("delete"), region, st.sampled_from(KEYS)),
        st.tuples(st.just("cut"), link),
        st.tuples(st.just("heal")),
        st.tuples(st.just("restart"), region),
        st.tuples(st.just("tick"), st.integers(0, 300)),
    ),
    max_size=60,
)


@settings(max_examples=50, deadline=None)
@given(operations, st.integers(-500, 500), st.none() | link)
# A write reaches a region whose clock is behind (or equal, with a lower region id): its next write
# must still be newer. Without the link to the third region nothing relays the newer version back.
@example([("put", 1, "a", 1), ("pull", (0, 1), 4), ("put", 0, "a", 2)], -300, (0, 2))
@example([("put", 2, "a", 0), ("pull", (0, 2), 1), ("put", 0, "a", 0)], 0, None)
# The same immutable item created in two regions before either saw the other: the first one stays,
# also where the later one arrived first, and when it reaches the first region only through the third.
@example([("create", 0, "a", 1), ("tick", 5), ("create", 1, "a", 2), ("pull", (2, 1), 4)], 0, (0, 1))
def test_regions_converge_on_the_highest_version_or_the_first_created_of_every_key(
    ops: list[tuple[Any, ...]], skew_ms: int, cut_at_the_end: tuple[int, int] | None
) -> None:
    with tempfile.TemporaryDirectory() as home:
        cluster = Cluster(Path(home), skew_ms)
        try:
            for op in ops:
                match op:
                    case ("put", i, key, value):
                        cluster.put(i, key, value)
                    case ("create", i, key, value):
                        cluster.create(i, key, value)
                    case ("delete", i, key):
                        cluster.delete(i, key)
                    case ("pull", (dst, src), limit) if cluster.linked(dst, src):
                        cluster.pull(dst, src, limit)
                    case ("cut", pair):
                        cluster.cut = frozenset(pair)
                    case ("heal",):
                        cluster.cut = None
                    case ("restart", i):
                        cluster.restart(i)
                    case ("tick", ms):
                        cluster.base.now += ms
            # One link may stay cut to the end: its two regions then converge through the third.
            cluster.cut = None if cut_at_the_end is None else frozenset(cut_at_the_end)
            cluster.quiesce()

            digests = {replica.state_digest(["kv", "once"]) for replica in cluster.replicas}
            assert len(digests) == 1
            for name in ("kv", "once"):
                assert len({tuple(replica.digest(name, 8)) for replica in cluster.replicas}) == 1
            for key in KEYS:
                kept = min(cluster.created.get(key, []), default=None, key=lambda created: created[0])
                for once in cluster.once:
                    # The first version created anywhere, whichever region learnt of which first.
                    assert once.version({"k": key}) == (None if kept is None else kept[0])
                    assert once.get({"k": key}) == (None if kept is None else kept[1])
            for key in KEYS:
                history = cluster.written.get(key)
                for table in cluster.tables:
                    if history is None:
                        assert table.version({"k": key}) is None
                        continue
                    version, image = max(history, key=lambda written: written[0])
                    assert table.version({"k": key}) == version
                    assert table.get({"k": key}) == image
        finally:
            cluster.close()


@settings(max_examples=30, deadline=None)
@given(st.data())
def test_applying_the_same_changes_in_any_order_and_any_number_of_times_gives_one_state(
    data: st.DataObject,
) -> None:
    entries: list[LogEntry] = []
    for n, (table, key, region_name, ms, deleted) in enumerate(
        data.draw(
            st.lists(
                st.tuples(
                    st.sampled_from(["kv", "once"]),
                    st.sampled_from(KEYS),
                    st.sampled_from(REGIONS),
                    st.integers(0, 20),
                    st.booleans(),
                ),
                min_size=1,
                max_size=12,
            )
        )
    ):
        version = (HybridLogicalClock.pack(START_MS + ms, n), region_name)
        deleted = deleted and table == "kv"  # immutable items are never deleted
        entries.append(
            LogEntry(
                seq=n + 1,
                table=table,
                kind="REMOVE" if deleted else "INSERT",
                key={"k": key},
                old=None,
                new=None if deleted else {"k": key, "n": n},
                written_ms=START_MS + ms,
                origin=region_name,
                version=version,
                previous=None,
            )
        )
    # Each region receives the changes in its own order, some of them twice, split into two batches:
    # whichever way they arrive (the follow stream, a backfill, anti-entropy's pull or push), each goes
    # through the same merge.
    orders = [
        data.draw(st.permutations(entries + data.draw(st.lists(st.sampled_from(entries), max_size=6))))
        for _ in range(2)
    ]
    states = []
    with tempfile.TemporaryDirectory() as home:
        for i, order in enumerate(orders):
            with SqliteDatabase(Path(home) / f"{i}.db", REGIONS[0], ManualClock()) as db:
                kv, once = db.table(KV), db.table(ONCE)
                replica = SqliteReplica(db)
                cut = data.draw(st.integers(0, len(order)))
                replica.apply("peer", order[:cut], None)
                replica.apply("peer", order[cut:], None)
                states.append(
                    (
                        replica.state_digest(["kv", "once"]),
                        replica.digest("kv", 8),
                        replica.digest("once", 8),
                    )
                )
                for store, keep in ((kv, max), (once, min)):
                    for key in KEYS:
                        written = [e for e in entries if e.table == store.schema.name and e.key == {"k": key}]
                        if written:
                            winner = keep(written, key=lambda e: e.version)
                            assert store.version({"k": key}) == winner.version
                            assert store.get({"k": key}) == winner.new
    assert states[0] == states[1]
