"""Table replication storage on SQLite: log reads, apply, conflicts, snapshots, digests, trimming."""

from __future__ import annotations

import inspect
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from bookstore.domain.errors import ConditionFailed, ValidationError
from bookstore.kernel.clock import HybridLogicalClock
from bookstore.ports import Item, ItemExists, TableSchema
from bookstore.replication.tables.model import ApplyResult, LogEntry, LogTrimmed
from bookstore.storage.sqlite import replica as replica_module
from bookstore.storage.sqlite.replica import LOOKUP_KEYS, SqliteReplica
from bookstore.storage.sqlite.tables import SqliteDatabase, SqliteTable
from bookstore.tables import BOOKS, CARTS, ORDERS

IRELAND, SINGAPORE, VIRGINIA = "eu-west-1", "ap-southeast-1", "us-east-1"
START_MS = 1_700_000_000_000


class ManualClock:
    """A wall clock the test moves by hand."""

    def __init__(self, now_ms: int = START_MS) -> None:
        self.now = now_ms

    def now_ms(self) -> int:
        return self.now


@dataclass
class Region:
    db: SqliteDatabase
    replica: SqliteReplica
    books: SqliteTable
    orders: SqliteTable
    clock: ManualClock

    @property
    def name(self) -> str:
        return self.db.region


@pytest.fixture
def open_region(tmp_path: Path) -> Iterator[Any]:
    opened: list[SqliteDatabase] = []

    def open_(name: str, clock: ManualClock | None = None) -> Region:
        clock = clock if clock is not None else ManualClock()
        db = SqliteDatabase(tmp_path / f"{name}.db", name, clock)
        opened.append(db)
        books, orders = db.table(BOOKS), db.table(ORDERS)
        return Region(db, SqliteReplica(db), books, orders, clock)

    yield open_
    for db in opened:
        db.close()


def book(i: int, **extra: Any) -> Item:
    return {"id": f"b{i:03d}", "name": f"Book {i}", "category": "Cars", "price": 15.98, **extra}


def pull(dst: Region, src: Region, limit: int = 50) -> list[ApplyResult]:
    """`dst` applies everything new in `src`'s log, batch by batch, as the replicator does."""
    results: list[ApplyResult] = []
    while True:
        after = dst.replica.checkpoint(src.name) or 0
        read = src.replica.read_log(after, limit=limit, exclude_origin=dst.name)
        if read.last_seq == after:
            return results
        results.append(dst.replica.apply(src.name, read.entries, read.last_seq))


def exchange(*regions: Region) -> None:
    """Pull between every pair until nothing new is applied anywhere."""
    while True:
        applied = sum(
            r.applied for dst in regions for src in regions if src is not dst for r in pull(dst, src)
        )
        if applied == 0:
            return


def state(region: Region) -> str:
    return region.replica.state_digest(["books", "orders"])


# -- read_log -------------------------------------------------------------------------------------------


def test_read_log_filters_rows_but_its_last_seq_passes_them(open_region: Any) -> None:
    a, b = open_region(IRELAND), open_region(SINGAPORE)
    b.books.put(book(90))
    pull(a, b)  # seq 1 of a: origin Singapore
    a.books.put(book(1))  # 2
    a.orders.put({"customerId": "c", "orderId": "o1"})  # 3
    a.books.update({"id": "b001"}, {"price": 2})  # 4
    a.orders.put({"customerId": "c", "orderId": "o2"})  # 5

    everything = a.replica.read_log(0, limit=100)
    assert [e.seq for e in everything.entries] == [1, 2, 3, 4, 5]
    assert (everything.last_seq, everything.head_seq) == (5, 5)
    assert everything.entries[0].origin == SINGAPORE and everything.entries[1].origin == IRELAND

    orders = a.replica.read_log(0, limit=3, tables=["orders"])
    assert [e.seq for e in orders.entries] == [3] and orders.last_seq == 3 and orders.head_seq == 5
    rest = a.replica.read_log(orders.last_seq, limit=3, tables=["orders"])
    assert [e.seq for e in rest.entries] == [5] and rest.last_seq == 5

    mine = a.replica.read_log(0, limit=1, exclude_origin=SINGAPORE)
    assert mine.entries == [] and mine.last_seq == 1  # the filtered row still moves the reader on
    none = a.replica.read_log(0, limit=2, tables=["carts"])
    assert none.entries == [] and none.last_seq == 2

    with pytest.raises(ValidationError):
        a.replica.read_log(-1, limit=10)
    at_head = a.replica.read_log(5, limit=10)
    assert at_head.entries == [] and at_head.last_seq == 5 and at_head.head_seq == 5
    assert a.replica.read_log(3, limit=1).entries[0].old == book(1)
    without_old = a.replica.read_log(3, limit=1, old_images=False)
    assert without_old.entries[0].old is None and without_old.entries[0].new == book(1, price=2)


def test_read_log_in_batches_returns_each_row_asked_for_once_and_moves_past_the_rest(
    open_region: Any,
) -> None:
    # The filters run in SQL over a range of seqs: read batch by batch, every filter must still give
    # the rows the whole log holds for it, in order, and each batch's last_seq must pass its rows.
    a, b, c = open_region(IRELAND), open_region(SINGAPORE), open_region(VIRGINIA)
    for i in range(6):
        b.books.put(book(100 + i))
        c.orders.put({"customerId": "c", "orderId": f"v{i}"})
    for i in range(9):
        if i % 2:
            a.books.put(book(i))
        else:
            a.orders.put({"customerId": "c", "orderId": f"o{i}"})
        if i % 3 == 0:
            pull(a, b)
            pull(a, c)
    everything = a.replica.read_log(0, limit=100).entries
    assert len(everything) == 21 and {e.origin for e in everything} == {IRELAND, SINGAPORE, VIRGINIA}
    filters: list[dict[str, Any]] = [
        {"exclude_origin": SINGAPORE},
        {"exclude_origin": SINGAPORE, "origins": [IRELAND, VIRGINIA]},
        {"origins": [VIRGINIA]},
        {"origins": []},
        {"tables": ["books"], "exclude_origin": IRELAND},
        {"tables": ["orders", "books"]},
        {"tables": []},
    ]
    for chosen in filters:
        wanted = [
            e.seq
            for e in everything
            if ("tables" not in chosen or e.table in chosen["tables"])
            and e.origin != chosen.get("exclude_origin")
            and ("origins" not in chosen or e.origin in chosen["origins"])
        ]
        for limit in (1, 2, 5, 21, 40):
            got: list[int] = []
            positions: list[int] = []
            after = 0
            while True:
                read = a.replica.read_log(after, limit=limit, **chosen)
                assert read.head_seq == 21
                assert all(after < e.seq <= read.last_seq for e in read.entries)
                got += [e.seq for e in read.entries]
                if read.last_seq == after:
                    break
                positions.append(read.last_seq)
                after = read.last_seq
            assert got == wanted, (chosen, limit)
            assert positions == [min(21, n * limit) for n in range(1, len(positions) + 1)], (chosen, limit)
            assert positions[-1] == 21


# -- apply: newer, older, equal; tombstones; relays ---------------------------------------------------


def test_apply_keeps_newer_versions_and_skips_older_and_equal_ones(open_region: Any) -> None:
    a, b = open_region(IRELAND), open_region(SINGAPORE)
    a.books.put(book(1))
    a.books.put(book(1, price=20))
    first, second = a.replica.read_log(0, limit=10).entries

    result = b.replica.apply(IRELAND, [second], None)
    assert (result.applied, result.skipped, result.conflicts) == (1, 0, [])
    assert result.applied_entries == [second]
    assert b.books.get({"id": "b001"}) == book(1, price=20)
    assert b.books.version({"id": "b001"}) == second.version

    older = b.replica.apply(IRELAND, [first], None)
    equal = b.replica.apply(IRELAND, [second, second], None)
    assert (older.applied, older.skipped, equal.applied, equal.skipped) == (0, 1, 0, 2)
    assert b.books.get({"id": "b001"}) == book(1, price=20)
    log = b.replica.read_log(0, limit=10).entries
    assert len(log) == 1 and log[0].kind == "INSERT" and log[0].old is None  # nothing local was there


def test_a_batch_applies_in_order_and_compares_with_its_own_earlier_entries(open_region: Any) -> None:
    a, b = open_region(IRELAND), open_region(SINGAPORE)
    a.books.put(book(1))
    a.books.update({"id": "b001"}, {"price": 30})
    a.books.delete({"id": "b001"})
    a.books.put(book(1, name="again"))
    entries = a.replica.read_log(0, limit=10).entries
    result = b.replica.apply(IRELAND, entries + entries[:2], 4)
    assert (result.applied, result.skipped) == (4, 2)
    assert b.books.get({"id": "b001"}) == book(1, name="again")
    log = b.replica.read_log(0, limit=10).entries
    assert [e.kind for e in log] == ["INSERT", "MODIFY", "REMOVE", "INSERT"]
    assert [e.old for e in log] == [None, book(1), book(1, price=30), None]
    assert b.replica.checkpoint(IRELAND) == 4


def test_a_large_batch_compares_every_key_with_the_version_held_here(open_region: Any) -> None:
    # More keys than one statement looks up (LOOKUP_KEYS), in two tables: each entry meets its own
    # stored version, whichever chunk of the look-up found it.
    a, b = open_region(IRELAND), open_region(SINGAPORE)
    a_carts, b_carts = a.db.table(CARTS), b.db.table(CARTS)
    count = LOOKUP_KEYS + 45
    for i in range(count):
        a.books.put(book(i))
        a_carts.put({"customerId": "c", "bookId": f"b{i:03d}", "quantity": 1})
    first = a.replica.read_log(0, limit=5000).entries
    for i in range(count):
        a.books.update({"id": f"b{i:03d}"}, {"price": 1})
        a_carts.update({"customerId": "c", "bookId": f"b{i:03d}"}, {"quantity": 2})
    second = a.replica.read_log(len(first), limit=5000).entries
    # Singapore holds the second version of every other key and the first of the rest.
    held = [e for i, e in enumerate(second) if i % 2 == 0] + [e for i, e in enumerate(first) if i % 2 == 1]
    assert b.replica.apply(IRELAND, held, None).applied == 2 * count

    older = b.replica.apply(IRELAND, first, None)
    assert (older.applied, older.skipped) == (0, 2 * count)
    newer = b.replica.apply(IRELAND, second, None)
    assert (newer.applied, newer.skipped) == (count, count)
    assert state(a) == state(b)
    assert [b_carts.get({"customerId": "c", "bookId": f"b{i:03d}"}) for i in (0, count - 1)] == [
        {"customerId": "c", "bookId": f"b{i:03d}", "quantity": 2} for i in (0, count - 1)
    ]
    modified = b.replica.read_log(2 * count, limit=5000).entries
    assert [e.kind for e in modified] == ["MODIFY"] * count
    assert all(e.old is not None and e.old != e.new for e in modified)


def test_a_batch_of_many_rows_writes_what_its_entries_one_by_one_write(open_region: Any) -> None:
    # Rows go in ROWS_PER_INSERT to a statement: a batch of several such statements and a remainder,
    # in two tables, holding keys written, changed and removed again within it, must leave the items,
    # digests and log that applying its entries one at a time leaves.
    a, whole, one_by_one = open_region(IRELAND), open_region(SINGAPORE), open_region(VIRGINIA)
    a_carts = a.db.table(CARTS)
    count = 2 * replica_module.ROWS_PER_INSERT + 37
    for i in range(count):
        a.books.put(book(i))
        a_carts.put({"customerId": f"c{i % 7}", "bookId": f"b{i:03d}", "quantity": 1})
        if i % 3 == 0:
            a.books.update({"id": f"b{i // 2:03d}"}, {"price": i})
        if i % 5 == 0:
            a_carts.delete({"customerId": f"c{(i // 2) % 7}", "bookId": f"b{i // 2:03d}"})
    whole.db.table(CARTS), one_by_one.db.table(CARTS)
    entries = a.replica.read_log(0, limit=5000).entries
    assert len(entries) > 2 * count
    result = whole.replica.apply(IRELAND, entries, entries[-1].seq)
    assert (result.applied, result.skipped) == (len(entries), 0)
    for entry in entries:
        one_by_one.replica.apply(IRELAND, [entry], entry.seq)

    def log(region: Region) -> list[tuple[Any, ...]]:
        read = region.replica.read_log(0, limit=5000)
        return [
            (e.seq, e.table, e.kind, e.key, e.old, e.new, e.origin, e.version, e.previous)
            for e in read.entries
        ]

    for region in (whole, one_by_one):
        assert region.replica.state_digest(["books", "carts"]) == a.replica.state_digest(["books", "carts"])
        for table in ("books", "carts"):
            assert region.replica.digest(table, 4096) == a.replica.digest(table, 4096)
    assert log(whole) == log(one_by_one)
    assert whole.replica.head_seq() == one_by_one.replica.head_seq() == len(entries)


def test_tombstones_win_and_lose_by_version(open_region: Any) -> None:
    a, b = open_region(IRELAND), open_region(SINGAPORE)
    a.books.put(book(1))
    pull(b, a)
    a.books.delete({"id": "b001"})
    pull(b, a)
    assert b.books.get({"id": "b001"}) is None
    assert b.books.version({"id": "b001"}) == a.books.version({"id": "b001"})
    assert b.replica.read_log(0, limit=10).entries[-1].kind == "REMOVE"

    # A later write over the tombstone wins back in the region that deleted.
    b.books.put(book(1, name="back"))
    pull(a, b)
    assert a.books.get({"id": "b001"}) == book(1, name="back")

    # An older tombstone (the delete) loses to the live item.
    delete = a.replica.read_log(0, limit=10, tables=["books"]).entries[1]
    stale = delete._replace(seq=99, previous=None)
    result = a.replica.apply(SINGAPORE, [stale], None)
    assert result.applied == 0 and a.books.get({"id": "b001"}) == book(1, name="back")


def test_a_tombstone_for_an_unknown_key_is_stored_and_logged_to_relay_on(open_region: Any) -> None:
    a, b, c = open_region(IRELAND), open_region(SINGAPORE), open_region(VIRGINIA)
    a.books.put(book(7))
    pull(c, a)  # Virginia has the item; Singapore never saw it
    a.books.delete({"id": "b007"})
    delete = a.replica.read_log(1, limit=10).entries
    result = b.replica.apply(IRELAND, delete, None)
    assert result.applied == 1
    assert b.books.get({"id": "b007"}) is None and b.books.version({"id": "b007"}) == delete[0].version
    relayed = b.replica.read_log(0, limit=10).entries
    assert [(e.kind, e.old, e.origin) for e in relayed] == [("REMOVE", None, IRELAND)]
    pull(c, b)  # through Singapore only
    assert c.books.get({"id": "b007"}) is None


def test_a_delete_before_the_write_arrives_wins_in_both_regions(open_region: Any) -> None:
    # Issue 12 item 1: a cart row written in Ireland, deleted (by a checkout) in Singapore before the
    # row reached it. Singapore's delete must leave a tombstone that beats the earlier write everywhere.
    a, b = open_region(IRELAND), open_region(SINGAPORE)
    carts = {r.name: r.db.table(CARTS) for r in (a, b)}
    key = {"customerId": "c", "bookId": "b1"}
    carts[IRELAND].put({**key, "quantity": 2})
    b.clock.now += 5
    assert carts[SINGAPORE].delete(key) is None  # absent here: a tombstone all the same
    exchange(a, b)
    for region in (a, b):
        assert carts[region.name].get(key) is None
        assert carts[region.name].version(key) == carts[SINGAPORE].version(key)
    # The removal reached Ireland's stream as a removal of the row it held.
    assert [(r.kind, r.old is None) for r in carts[IRELAND].changes().records] == [
        ("INSERT", True),
        ("REMOVE", False),
    ]
    # An older write arriving once more (a repair, a relay) does not bring the row back.
    (write,) = a.replica.read_log(0, limit=10, tables=["carts"]).entries[:1]
    assert b.replica.apply(IRELAND, [write._replace(seq=99)], None).applied == 0
    assert carts[SINGAPORE].get(key) is None


def test_an_order_is_never_removed_or_blocked_by_a_tombstone(open_region: Any) -> None:
    a, b = open_region(IRELAND), open_region(SINGAPORE)
    key = {"customerId": "c", "orderId": "o1"}
    a.orders.put({**key, "books": []})
    (placed,) = a.replica.read_log(0, limit=10).entries
    # A removal of the order (from a peer of another version, or forged) is skipped, before or after it.
    removal = placed._replace(kind="REMOVE", new=None, version=(placed.version[0] - 1, SINGAPORE))
    assert b.replica.apply(IRELAND, [removal], None).applied == 0 and b.orders.version(key) is None
    assert b.replica.apply(IRELAND, [placed], None).applied == 1
    later = removal._replace(version=(placed.version[0] + 1, SINGAPORE))
    assert b.replica.apply(IRELAND, [later], None).applied == 0
    assert b.orders.get(key) == {**key, "books": []}


def test_relayed_entries_keep_their_origin_version_and_previous_version(open_region: Any) -> None:
    a, b, c = open_region(IRELAND), open_region(SINGAPORE), open_region(VIRGINIA)
    a.books.put(book(1))
    a.books.update({"id": "b001"}, {"price": 1})
    original = a.replica.read_log(0, limit=10).entries
    pull(b, a)
    pull(c, b)  # Virginia hears of Ireland's writes through Singapore only
    relayed = c.replica.read_log(0, limit=10).entries
    assert [(e.origin, e.version, e.previous, e.written_ms) for e in relayed] == [
        (e.origin, e.version, e.previous, e.written_ms) for e in original
    ]
    assert [e.kind for e in relayed] == ["INSERT", "MODIFY"]
    assert c.books.get({"id": "b001"}) == book(1, price=1)
    # Stream consumers in Virginia see Ireland's writes with their origin.
    assert [(r.kind, r.origin) for r in c.books.changes().records] == [
        ("INSERT", IRELAND),
        ("MODIFY", IRELAND),
    ]


def test_applied_versions_move_the_clock_so_later_local_writes_win(open_region: Any, tmp_path: Path) -> None:
    ahead = ManualClock(START_MS + 60_000)
    a, b = open_region(IRELAND, ahead), open_region(SINGAPORE)
    a.books.put(book(1))
    pull(b, a)
    b.db.close()
    # Restarted, with its clock a minute behind the version it applied, Singapore still writes above it.
    b = open_region(SINGAPORE, b.clock)
    b.books.put(book(1, name="later"))
    assert b.books.version({"id": "b001"}) > a.books.version({"id": "b001"})
    pull(a, b)
    assert a.books.get({"id": "b001"}) == book(1, name="later")


# -- conflicts ------------------------------------------------------------------------------------------


def test_concurrent_writes_are_conflicts_recorded_with_one_winner_on_both_sides(open_region: Any) -> None:
    a, b, c = open_region(IRELAND), open_region(SINGAPORE), open_region(VIRGINIA)
    a.books.put(book(1, name="irish"))
    b.clock.now += 5  # Singapore writes later: its version wins everywhere
    b.books.put(book(1, name="singaporean"))
    a_version, b_version = a.books.version({"id": "b001"}), b.books.version({"id": "b001"})
    assert a_version is not None and b_version is not None and b_version > a_version

    at_a = pull(a, b)
    at_b = pull(b, a)
    assert [len(r.conflicts) for r in at_a + at_b] == [1, 1]
    for region in (a, b):
        assert region.books.get({"id": "b001"}) == book(1, name="singaporean")
        assert region.replica.conflict_count() == 1
        (conflict,) = region.replica.conflicts()
        assert conflict.table == "books" and conflict.key == {"id": "b001"}
        assert (conflict.winner_version, conflict.winner_image) == (b_version, book(1, name="singaporean"))
        assert (conflict.loser_version, conflict.loser_image) == (a_version, book(1, name="irish"))
    assert a.replica.conflicts()[0].source == SINGAPORE and b.replica.conflicts()[0].source == IRELAND
    assert state(a) == state(b)

    # Virginia hears both sides (in either order, through both regions): one conflict, recorded once.
    exchange(a, b, c)
    assert c.replica.conflict_count() == 1 and a.replica.conflict_count() == 1
    assert c.books.get({"id": "b001"}) == book(1, name="singaporean")
    assert state(a) == state(b) == state(c)


def test_a_concurrent_delete_and_update_conflict_and_the_higher_version_wins(open_region: Any) -> None:
    a, b = open_region(IRELAND), open_region(SINGAPORE)
    a.books.put(book(1))
    exchange(a, b)
    b.clock.now += 10
    a.books.update({"id": "b001"}, {"price": 2})
    b.books.delete({"id": "b001"})
    exchange(a, b)
    assert a.books.get({"id": "b001"}) is None and b.books.get({"id": "b001"}) is None
    (conflict,) = a.replica.conflicts()
    assert conflict.winner_image is None and conflict.loser_image == book(1, price=2)
    assert conflict.winner_version == b.books.version({"id": "b001"})
    assert b.replica.conflicts() == [replace(conflict, source=IRELAND, detected_ms=START_MS + 10)]


def test_out_of_order_delivery_is_not_a_conflict(open_region: Any) -> None:
    a, b = open_region(IRELAND), open_region(SINGAPORE)
    a.books.put(book(1))
    a.books.update({"id": "b001"}, {"price": 2})
    first, second = a.replica.read_log(0, limit=10).entries
    assert b.replica.apply(IRELAND, [second], None).conflicts == []
    late = b.replica.apply(IRELAND, [first], None)
    assert (late.applied, late.skipped, late.conflicts) == (0, 1, [])
    assert b.replica.conflict_count() == 0 and b.books.get({"id": "b001"}) == book(1, price=2)


def test_a_change_meeting_a_local_write_based_on_it_is_not_a_conflict(open_region: Any) -> None:
    a, b = open_region(IRELAND), open_region(SINGAPORE)
    a.books.put(book(1))
    pull(b, a)
    b.books.update({"id": "b001"}, {"price": 3})  # based on Ireland's write
    original = a.replica.read_log(0, limit=1).entries
    assert b.replica.apply(VIRGINIA, original, None).conflicts == []  # the same write again, relayed late
    assert [len(r.conflicts) for r in pull(a, b)] == [0]  # Ireland: Singapore's write follows its own
    assert a.replica.conflict_count() == 0 and b.replica.conflict_count() == 0
    assert a.books.get({"id": "b001"}) == book(1, price=3)


def order(customer: str, order_id: str, *lines: tuple[str, int], region: str = IRELAND) -> Item:
    books = [{"bookId": b, "quantity": q, "price": 10.0} for b, q in lines]
    return {"customerId": customer, "orderId": order_id, "books": books, "region": region}


def test_an_order_written_in_two_regions_keeps_its_first_version_on_every_path(open_region: Any) -> None:
    """Orders are first-writer-wins: the follow stream, backfill and anti-entropy all keep the lowest."""
    a, b, c = open_region(IRELAND), open_region(SINGAPORE), open_region(VIRGINIA)
    key = {"customerId": "c", "orderId": "k-retried"}
    first, later = order("c", "k-retried", ("b1", 2)), order("c", "k-retried", ("b2", 5), region=SINGAPORE)
    a.orders.put(first)
    b.clock.now += 5  # Singapore accepts the same key with other lines, later, before Ireland's arrives
    b.orders.put(later)
    c.clock.now += 10
    c.orders.put(order("c", "k-retried", ("b3", 1), region=VIRGINIA))
    kept = a.orders.version(key)
    replaced = b.orders.version(key)
    assert kept is not None and replaced is not None and kept < replaced

    # The follow stream, both ways: each side meets the other's version as a conflict, the first wins.
    assert [len(r.conflicts) for r in pull(a, b) + pull(b, a)] == [1, 1]
    for region in (a, b):
        assert region.orders.get(key) == first and region.orders.version(key) == kept
        (conflict,) = region.replica.conflicts()
        assert conflict.table == "orders" and conflict.key == key
        assert (conflict.winner_version, conflict.winner_image) == (kept, first)
        assert (conflict.loser_version, conflict.loser_image) == (replaced, later)
    # Singapore's stream shows its own version replaced by the kept one (best sellers follow it).
    (modify,) = [r for r in b.orders.changes().records if r.kind == "MODIFY"]
    assert (modify.old, modify.new) == (later, first)
    assert [r.kind for r in a.orders.changes().records] == ["INSERT"]

    # Backfill: Virginia copies Singapore's snapshot, and keeps the first version over its own.
    page = b.replica.snapshot(None, 100)
    c.replica.apply(SINGAPORE, page.entries, page.head_seq)
    assert c.orders.get(key) == first and c.orders.version(key) == kept

    # Anti-entropy, pull and push: a region still holding a later version is repaired, never the reverse.
    d = open_region("eu-central-1")
    d.clock.now += 20
    d.orders.put(order("c", "k-retried", ("b4", 9), region="eu-central-1"))
    for bucket in range(4):
        a.replica.apply("eu-central-1", d.replica.bucket_entries("orders", bucket, 4), None)
        d.replica.apply(IRELAND, a.replica.bucket_entries("orders", bucket, 4), None)
    assert a.orders.get(key) == d.orders.get(key) == first
    assert a.replica.digest("orders", 4) == d.replica.digest("orders", 4) == b.replica.digest("orders", 4)
    exchange(a, b, c)
    assert state(a) == state(b) == state(c)


# -- checkpoints and atomic batches -------------------------------------------------------------------


def test_checkpoints_are_stored_with_their_batch_and_a_bad_batch_changes_nothing(open_region: Any) -> None:
    a, b = open_region(IRELAND), open_region(SINGAPORE)
    assert b.replica.checkpoint(IRELAND) is None and b.replica.checkpoints() == {}
    for i in range(3):
        a.books.put(book(i))
    read = a.replica.read_log(0, limit=10)
    b.replica.apply(IRELAND, read.entries, read.last_seq)
    b.replica.apply(VIRGINIA, [], 17)  # a read of only filtered rows still moves the checkpoint
    assert b.replica.checkpoints() == {IRELAND: 3, VIRGINIA: 17}

    a.books.put(book(3))
    good = a.replica.read_log(3, limit=10).entries
    malformed = [
        good[0]._replace(table="nope"),
        good[0]._replace(key={"isbn": "x"}),
        good[0]._replace(kind="REMOVE"),
        good[0]._replace(new={"id": "other"}),
        good[0]._replace(version=(-1, IRELAND)),
        good[0]._replace(previous=(1, "")),
        good[0]._replace(kind="UPSERT"),
    ]
    for bad in malformed:
        with pytest.raises(ValidationError):
            b.replica.apply(IRELAND, [*good, bad], 4)
    with pytest.raises(ValidationError):
        b.replica.apply(IRELAND, good, -1)
    assert b.books.get({"id": "b003"}) is None and b.replica.checkpoint(IRELAND) == 3
    assert b.replica.head_seq() == 3


def key_hash_indexes(region: Region) -> set[str]:
    rows = region.db.engine.reader().execute(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'kh%'"
    )
    return {name for (name,) in rows}


def bucket_rows(region: Region) -> list[tuple[Any, ...]]:
    return sorted(
        (str(key), version)
        for bucket in range(64)
        for key, version in region.replica.bucket_versions("books", bucket)
    )


def test_a_large_catch_up_applies_without_the_key_hash_indexes_and_builds_them_again(
    open_region: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(replica_module, "DEFER_KEY_INDEX_MIN", 100)
    a, b = open_region(IRELAND), open_region(SINGAPORE)
    for i in range(300):
        a.books.put(book(i))
    for i in range(300, 340):
        b.books.put(book(i))
    assert key_hash_indexes(b) == {"kh_books", "kh_orders"}
    assert not b.replica.defer_key_index(IRELAND, 99)  # too few to be worth building them again
    assert not b.replica.defer_key_index(IRELAND, 9)
    assert key_hash_indexes(b) == {"kh_books", "kh_orders"}

    assert b.replica.defer_key_index(IRELAND, 300)
    assert b.replica.defer_key_index(VIRGINIA, 300)  # a second catch-up at once
    assert key_hash_indexes(b) == set()
    pull(b, a, limit=64)
    pull(a, b)
    assert state(a) == state(b)
    # Without the index a bucket's versions come from the table: slower, the same rows.
    without = bucket_rows(b)
    assert len(without) == 340
    b.replica.restore_key_index(IRELAND)
    assert key_hash_indexes(b) == set()  # Virginia's catch-up still runs
    b.replica.restore_key_index(VIRGINIA)
    b.replica.restore_key_index(VIRGINIA)  # done twice: nothing more to do
    assert key_hash_indexes(b) == {"kh_books", "kh_orders"}
    assert bucket_rows(b) == without
    assert b.replica.digest("books") == a.replica.digest("books")


def test_a_catch_up_into_many_rows_keeps_the_key_hash_indexes(
    open_region: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(replica_module, "DEFER_KEY_INDEX_MIN", 100)
    b = open_region(SINGAPORE)
    for i in range(500):
        b.books.put(book(i))
    # Building the index again over 500 rows would cost more than 120 rows written into it.
    assert not b.replica.defer_key_index(IRELAND, 120)
    assert key_hash_indexes(b) == {"kh_books", "kh_orders"}
    b.replica.restore_key_index(IRELAND)
    assert key_hash_indexes(b) == {"kh_books", "kh_orders"}


def test_a_file_left_without_its_key_hash_indexes_has_them_again_when_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(replica_module, "DEFER_KEY_INDEX_MIN", 1)
    db = SqliteDatabase(tmp_path / "x.db", SINGAPORE)
    db.table(BOOKS).put(book(1))
    assert SqliteReplica(db).defer_key_index(IRELAND, 10)
    db.close()  # as a kill -9 during the catch-up would leave it
    with closing(sqlite3.connect(tmp_path / "x.db")) as conn:
        assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'kh_books'").fetchone() == (0,)
    reopened = SqliteDatabase(tmp_path / "x.db", SINGAPORE)
    reopened.table(BOOKS)
    found = (
        reopened.engine.reader().execute("SELECT name FROM sqlite_master WHERE name = 'kh_books'").fetchall()
    )
    reopened.close()
    assert found == [("kh_books",)]


def numbered_batch(number: int, size: int) -> list[LogEntry]:
    """Batch `number` of Ireland's inserts, each key new; the same entries in the test and its child."""
    return [
        LogEntry(
            seq=number * size + i + 1,
            table="books",
            kind="INSERT",
            key={"id": f"k{number}-{i:05d}"},
            old=None,
            new={"id": f"k{number}-{i:05d}", "batch": number, "pad": "x" * 200},
            written_ms=1_700_000_000_000,
            origin="eu-west-1",
            version=(HybridLogicalClock.pack(1_700_000_000_000 + number, i), "eu-west-1"),
            previous=None,
        )
        for i in range(size)
    ]


# Applies one batch, then a second one in a transaction that stops (says "mid" and sleeps) once its log
# records are written and before its items are: the parent kills it there.
APPLIER = (
    """
import sys
import time
from pathlib import Path

from bookstore.kernel.clock import HybridLogicalClock
from bookstore.replication.tables.model import LogEntry
from bookstore.storage.sqlite import replica as replica_module
from bookstore.storage.sqlite.replica import LOOKUP_KEYS, SqliteReplica
from bookstore.storage.sqlite.tables import SqliteDatabase
from bookstore.tables import BOOKS

"""
    + inspect.getsource(numbered_batch)
    + """

path, size = Path(sys.argv[1]), int(sys.argv[2])
db = SqliteDatabase(path, "ap-southeast-1")
db.table(BOOKS)
replica = SqliteReplica(db)
replica.apply("eu-west-1", numbered_batch(0, size), size)
print("first", flush=True)
in_second = False


def stall(statement):
    global in_second
    if statement.startswith("BEGIN"):
        in_second = True
    elif in_second and statement.startswith('INSERT INTO "items_books"'):
        print("mid", flush=True)
        time.sleep(60)


db.engine.trace_writes(stall)  # where to stop the transaction
replica.apply("eu-west-1", numbered_batch(1, size), 2 * size)
print("finished", flush=True)
"""
)


@pytest.mark.system
def test_a_kill_9_in_the_middle_of_a_batch_leaves_all_of_it_or_none(tmp_path: Path) -> None:
    path, size = tmp_path / "singapore.db", 2000
    process = subprocess.Popen(
        [sys.executable, "-c", APPLIER, str(path), str(size)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline(), process.stdout.readline()]
        assert lines == ["first\n", "mid\n"], process.stderr.read() if process.stderr else ""
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == -signal.SIGKILL

    with SqliteDatabase(path, SINGAPORE) as db:
        books, replica = db.table(BOOKS), SqliteReplica(db)
        assert replica.checkpoint(IRELAND) == size
        log = replica.read_log(0, limit=3 * size)
        assert len(log.entries) == size and log.head_seq == size
        assert {e.key["id"][:3] for e in log.entries} == {"k0-"}
        assert books.get({"id": f"k0-{size - 1:05d}"}) is not None
        assert books.get({"id": "k1-00000"}) is None and books.version({"id": "k1-00000"}) is None
        # The interrupted batch applies whole when it comes again.
        result = replica.apply(IRELAND, numbered_batch(1, size), 2 * size)
        assert (result.applied, result.skipped) == (size, 0)
        assert replica.checkpoint(IRELAND) == 2 * size and books.get({"id": "k1-00000"}) is not None


# -- snapshots ------------------------------------------------------------------------------------------


def test_a_snapshot_pages_over_every_item_and_tombstone_once(open_region: Any) -> None:
    a, c = open_region(IRELAND), open_region(VIRGINIA)
    for i in range(23):
        a.books.put(book(i))
    for i in range(0, 23, 4):
        a.books.delete({"id": f"b{i:03d}"})
    for i in range(9):
        a.orders.put({"customerId": f"c{i % 3}", "orderId": f"o{i}"})

    pages = []
    cursor: str | None = None
    while True:
        page = a.replica.snapshot(cursor, 7)
        pages.append(page)
        if page.cursor is None:
            break
        cursor = page.cursor
        if len(pages) == 2:  # writes while paging reach the copy through the log
            a.books.put(book(100))
            a.books.delete({"id": "b001"})
    entries = [e for p in pages for e in p.entries]
    assert all(len(p.entries) <= 7 for p in pages) and len(pages) == 5
    keys = [(e.table, tuple(e.key.values())) for e in entries]
    assert len(keys) == len(set(keys)) == 23 + 9 + 1
    tombstones = {e.key["id"] for e in entries if e.kind == "REMOVE"}
    assert tombstones == {f"b{i:03d}" for i in range(0, 23, 4)}
    assert all(e.new is None for e in entries if e.kind == "REMOVE")
    sample = next(e for e in entries if e.key == {"id": "b002"})
    assert sample.version == a.books.version({"id": "b002"}) and sample.origin == IRELAND
    assert sample.written_ms == HybridLogicalClock.physical_ms(sample.version[0])
    assert a.replica.snapshot(None, 100, tables=["orders"]).entries == [
        e for e in entries if e.table == "orders"
    ]

    # Backfill: apply every page, then follow the log from the first page's head.
    for page in pages:
        c.replica.apply(IRELAND, page.entries, None)
    c.replica.apply(IRELAND, [], pages[0].head_seq)
    pull(c, a)
    assert state(c) == state(a)
    assert c.books.version({"id": "b004"}) == a.books.version({"id": "b004"})  # tombstones copied too
    with pytest.raises(ValidationError):
        a.replica.snapshot("not-a-cursor", 5)


def test_a_snapshot_page_ending_exactly_with_a_table_goes_on_with_the_next(open_region: Any) -> None:
    a, c = open_region(IRELAND), open_region(VIRGINIA)
    for i in range(5):
        a.books.put(book(i))
    for i in range(4):
        a.orders.put({"customerId": "c", "orderId": f"o{i}"})
    for limit in (1, 5, 9, 10):  # 5: the first page is exactly the books; 9: every entry, then nothing
        entries = []
        cursor: str | None = None
        while True:
            page = a.replica.snapshot(cursor, limit)
            entries += page.entries
            if page.cursor is None:
                break
            cursor = page.cursor
        keys = [(e.table, tuple(e.key.values())) for e in entries]
        assert len(keys) == len(set(keys)) == 9, (limit, keys)
    for entry in entries:
        c.replica.apply(IRELAND, [entry], None)
    assert state(c) == state(a)


# -- digests and repair ---------------------------------------------------------------------------------


def test_digests_are_equal_exactly_when_contents_are_and_bucket_entries_repair(open_region: Any) -> None:
    a, b = open_region(IRELAND), open_region(SINGAPORE)
    for i in range(40):
        a.books.put(book(i))
    a.books.delete({"id": "b005"})
    exchange(a, b)
    assert a.replica.digest("books", 16) == b.replica.digest("books", 16)
    assert len(a.replica.digest("books")) == 64 and state(a) == state(b)

    # Divergence as a lost change would leave it: each side holds a write the other never got.
    a.books.update({"id": "b010"}, {"price": 1})
    b.books.delete({"id": "b020"})
    b.books.put(book(200))
    ours, theirs = a.replica.digest("books", 16), b.replica.digest("books", 16)
    differing = [i for i, (x, y) in enumerate(zip(ours, theirs, strict=True)) if x != y]
    assert 1 <= len(differing) <= 3
    assert state(a) != state(b)
    for bucket in differing:
        a.replica.apply(SINGAPORE, b.replica.bucket_entries("books", bucket, 16), None)
        b.replica.apply(IRELAND, a.replica.bucket_entries("books", bucket, 16), None)
    assert a.replica.digest("books", 16) == b.replica.digest("books", 16)
    assert state(a) == state(b) and a.books.get({"id": "b200"}) == book(200)
    assert b.books.get({"id": "b010"}) == book(10, price=1) and a.books.get({"id": "b020"}) is None

    every = [e for bucket in range(16) for e in a.replica.bucket_entries("books", bucket, 16)]
    assert len(every) == 41 and len({e.key["id"] for e in every}) == 41
    with pytest.raises(ValidationError):
        a.replica.bucket_entries("books", 16, 16)


def test_digests_see_a_different_version_of_the_same_contents(open_region: Any) -> None:
    a, b = open_region(IRELAND), open_region(SINGAPORE)
    a.books.put(book(1))
    b.books.put(book(1))
    assert a.replica.digest("books", 4) != b.replica.digest("books", 4)
    assert state(a) != state(b)  # the state digest covers versions too
    exchange(a, b)
    assert a.replica.digest("books", 4) == b.replica.digest("books", 4) and state(a) == state(b)


# -- trimming -------------------------------------------------------------------------------------------


def test_trimming_waits_for_every_peer_and_the_retention(open_region: Any) -> None:
    a = open_region(IRELAND)
    for i in range(6):
        a.books.put(book(i))
    a.books.delete({"id": "b000"})  # seq 7
    a.clock.now += 1_000
    a.books.put(book(50))  # seq 8, logged a second later
    consumer = a.books.changes(limit=2)
    peers = [SINGAPORE, VIRGINIA]
    retention = 10_000

    a.replica.record_ack(SINGAPORE, 8)
    assert a.replica.trim(peers, retention, a.clock.now + 60_000) == 0  # Virginia never acknowledged
    a.replica.record_ack(VIRGINIA, 7)
    assert a.replica.trim(peers, retention, a.clock.now) == 0  # nothing is old enough
    assert a.replica.acks() == {SINGAPORE: 8, VIRGINIA: 7}

    # Seqs 1..7 are older than the retention; the 8th is not yet.
    now = START_MS + retention + 500
    assert a.replica.trim(peers, retention, now) == 7 + 1  # seven records and the tombstone of b000
    assert a.replica.trimmed_through() == 7 and a.books.version({"id": "b000"}) is None
    assert [e.seq for e in a.replica.read_log(7, limit=10).entries] == [8]
    with pytest.raises(LogTrimmed) as trimmed:
        a.replica.read_log(6, limit=10)
    assert trimmed.value.trimmed_through == 7
    with pytest.raises(LogTrimmed):
        a.books.changes(consumer.cursor)  # a stream consumer that fell behind must re-sync
    assert [r.key for r in a.books.changes().records] == [{"id": "b050"}]  # from the oldest record kept

    # The peer that acknowledged 7 holds back the 8th even once it is old.
    assert a.replica.trim(peers, retention, now + 60_000) == 0
    a.replica.record_ack(VIRGINIA, 8)
    assert a.replica.trim(peers, retention, now + 60_000) == 1
    assert a.replica.read_log(8, limit=10).entries == [] and a.replica.head_seq() == 8
    a.books.put(book(51))
    assert [e.seq for e in a.replica.read_log(8, limit=10).entries] == [9]


def test_a_trimmed_log_keeps_a_consumer_on_another_table_going(open_region: Any) -> None:
    a = open_region(IRELAND)
    a.orders.put({"customerId": "c", "orderId": "o1"})
    orders_cursor = a.orders.changes().cursor
    for i in range(5):
        a.books.put(book(i))
    orders_cursor = a.orders.changes(orders_cursor).cursor  # sees no order, but moves past the books
    a.replica.record_ack(SINGAPORE, 6)
    assert a.replica.trim([SINGAPORE], 0, a.clock.now + 1) == 6
    assert a.orders.changes(orders_cursor).records == []
    a.orders.put({"customerId": "c", "orderId": "o2"})
    assert [r.key["orderId"] for r in a.orders.changes(orders_cursor).records] == ["o2"]


def test_trimming_keeps_tombstones_whose_version_is_recent(open_region: Any) -> None:
    a, b = open_region(IRELAND), open_region(SINGAPORE)
    b.books.put(book(1))
    pull(a, b)
    b.clock.now += 100_000  # Singapore's clock runs ahead: its delete carries a later time
    b.books.delete({"id": "b001"})
    a.clock.now += 60_000
    pull(a, b)
    a.replica.record_ack(SINGAPORE, a.replica.head_seq())
    assert a.replica.trim([SINGAPORE], 20_000, a.clock.now + 30_000) == 2  # the log only
    assert a.books.version({"id": "b001"}) is not None
    assert a.replica.trim([SINGAPORE], 20_000, START_MS + 100_000 + 20_001) == 1
    assert a.books.version({"id": "b001"}) is None


# -- wake-ups -------------------------------------------------------------------------------------------


def test_listeners_wake_after_local_writes_and_applies_that_log(open_region: Any) -> None:
    a, b = open_region(IRELAND), open_region(SINGAPORE)
    calls: list[str] = []

    def broken() -> None:
        raise RuntimeError("a listener's failure never reaches the writer")

    b.replica.add_listener(lambda: calls.append("b"))
    b.replica.add_listener(broken)
    b.books.put(book(1))
    assert calls == ["b"]
    b.books.delete({"id": "nothing-here"})  # a tombstone all the same: logged
    assert calls == ["b", "b"]
    with pytest.raises(ConditionFailed):
        b.books.delete({"id": "nothing-here"}, condition=ItemExists())  # logs nothing
    assert calls == ["b", "b"]
    a.books.put(book(2))
    entries = a.replica.read_log(0, limit=10).entries
    b.replica.apply(IRELAND, entries, 1)
    assert calls == ["b", "b", "b"]
    b.replica.apply(IRELAND, entries, 1)  # skipped: nothing logged
    assert calls == ["b", "b", "b"]


# -- files from before replication ----------------------------------------------------------------------


def test_a_file_written_before_replication_is_brought_up_to_date(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.executescript(
            """
            CREATE TABLE hlc (id INTEGER PRIMARY KEY CHECK (id = 0), version INTEGER NOT NULL);
            INSERT INTO hlc VALUES (0, 0);
            CREATE TABLE changes (seq INTEGER PRIMARY KEY AUTOINCREMENT, tbl TEXT NOT NULL,
                kind TEXT NOT NULL, key TEXT NOT NULL, old TEXT, new TEXT, written_ms INTEGER NOT NULL,
                origin TEXT NOT NULL, hlc INTEGER NOT NULL, region TEXT NOT NULL, prev_hlc INTEGER,
                prev_region TEXT);
            CREATE TABLE "items_books" (pk NOT NULL, sk NOT NULL, doc TEXT, hlc INTEGER NOT NULL,
                region TEXT NOT NULL, PRIMARY KEY (pk, sk)) WITHOUT ROWID;
            """
        )
        version = HybridLogicalClock.pack(START_MS)
        conn.execute(
            "INSERT INTO items_books VALUES ('b001', '', ?, ?, 'eu-west-1')",
            (orjson.dumps(book(1)).decode(), version),
        )
        conn.execute(
            "INSERT INTO changes (tbl, kind, key, old, new, written_ms, origin, hlc, region) "
            "VALUES ('books', 'INSERT', ?, NULL, ?, ?, 'eu-west-1', ?, 'eu-west-1')",
            (orjson.dumps({"id": "b001"}).decode(), orjson.dumps(book(1)).decode(), START_MS, version),
        )
    clock = ManualClock(START_MS + 5_000)
    with (
        SqliteDatabase(path, IRELAND, clock) as old,
        SqliteDatabase(tmp_path / "new.db", SINGAPORE, clock) as new,
    ):
        old.table(BOOKS)
        new.table(BOOKS)
        before, after = SqliteReplica(old), SqliteReplica(new)
        read = before.read_log(0, limit=10)
        after.apply(IRELAND, read.entries, read.last_seq)
        assert before.digest("books", 8) == after.digest("books", 8)  # key hashes filled in
        assert [e.key for e in before.bucket_entries("books", 0, 1)] == [{"id": "b001"}]
        before.record_ack(SINGAPORE, 1)
        # The old record counts as logged when it was written, so it is old enough to trim.
        assert before.trim([SINGAPORE], 1_000, clock.now) == 1


def test_a_trimmed_tombstone_is_not_brought_back_by_repairs(open_region: Any) -> None:
    a, b = open_region("eu-west-1"), open_region("ap-southeast-1")
    a.books.put(book(1))
    a.books.delete({"id": "b001"})
    exchange(a, b)
    for region, peer in ((a, b), (b, a)):
        region.replica.record_ack(peer.name, peer.replica.head_seq())
        region.clock.now += 10_000
    assert a.replica.trim([b.name], retention_ms=0, now_ms=a.clock.now) > 0
    assert a.books.version({"id": "b001"}) is None

    def repair(dst: Region, src: Region) -> int:
        applied = 0
        for bucket, (mine, theirs) in enumerate(
            zip(dst.replica.digest("books"), src.replica.digest("books"), strict=True)
        ):
            if mine != theirs:
                applied += dst.replica.apply(
                    src.name, src.replica.bucket_entries("books", bucket), None
                ).applied
        return applied

    head = a.replica.head_seq()
    assert repair(a, b) == 0  # b still holds the tombstone; a does not take it back
    assert a.books.version({"id": "b001"}) is None and a.replica.head_seq() == head
    assert b.replica.trim([a.name], retention_ms=0, now_ms=b.clock.now) > 0
    assert repair(b, a) == 0 and repair(a, b) == 0
    assert a.replica.digest("books") == b.replica.digest("books")
    assert b.books.version({"id": "b001"}) is None


def test_digests_spell_a_whole_real_key_as_the_integer_it_equals(open_region: Any) -> None:
    # One key written as 2.0 in one region and as 2 in the other: SQLite keeps each spelling where it
    # was first written, and the regions hold one item (the same version) under it.
    schema = TableSchema("ranked", "list", "rank")
    a, b = open_region(IRELAND), open_region(SINGAPORE)
    a_ranked, b_ranked = a.db.table(schema), b.db.table(schema)
    a_ranked.put({"list": "top", "rank": 2.0, "title": "two, as a real"})
    b_ranked.put({"list": "top", "rank": 2, "title": "two, as an integer"})
    a_ranked.put({"list": "it's", "rank": 2.5, "title": "quoted"})
    exchange(a, b)
    assert a_ranked.get({"list": "top", "rank": 2}) == b_ranked.get({"list": "top", "rank": 2.0})
    assert a.replica.digest("ranked", 8) == b.replica.digest("ranked", 8)
    b_ranked.update({"list": "top", "rank": 2}, {"title": "changed"})
    assert a.replica.digest("ranked", 8) != b.replica.digest("ranked", 8)


def test_a_digest_bounded_by_a_version_leaves_younger_versions_out(open_region: Any) -> None:
    a, b = open_region(IRELAND), open_region(SINGAPORE)
    a.books.put(book(1))
    exchange(a, b)
    a.books.put(book(2))  # not yet in b: as if still on its way
    (young,) = [e.version[0] for e in a.replica.read_log(0, limit=10).entries if e.key == {"id": "b002"}]
    assert a.replica.digest("books", 8) != b.replica.digest("books", 8)
    assert a.replica.digest("books", 8, before=young) == b.replica.digest("books", 8, before=young)
    assert a.replica.digest("books", 8, before=young + 1) != b.replica.digest("books", 8, before=young + 1)
