"""Incremental digests on SQLite: the leaves kept by triggers always equal a digest computed from scratch."""

from __future__ import annotations

import sqlite3
import tempfile
from contextlib import closing
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bookstore.domain.errors import NotFound, StorageError, ValidationError
from bookstore.kernel.clock import HybridLogicalClock
from bookstore.ports import Item
from bookstore.replication.tables import digests
from bookstore.replication.tables.model import LogEntry
from bookstore.storage.sqlite.replica import SqliteReplica
from bookstore.storage.sqlite.tables import SqliteDatabase, SqliteTable, canonical_key_value, key_hash
from bookstore.tables import BOOKS, CARTS

IRELAND, SINGAPORE = "eu-west-1", "ap-southeast-1"
START_MS = 1_700_000_000_000
# A number among the keys: 1 and 1.0 are one key to SQLite, and must hash alike.
BOOK_IDS: tuple[Any, ...] = ("b1", "b2", "b3", "b4", 7)


class ManualClock:
    def __init__(self) -> None:
        self.now = START_MS

    def now_ms(self) -> int:
        return self.now


def recomputed(db: SqliteDatabase, table: str, before: int | None = None) -> list[str]:
    """The digest of every row of `table`, computed from scratch in Python (the reference)."""
    leaves = [0] * digests.LEAVES
    rows = db.engine.query(f'SELECT pk, sk, hlc, region, doc IS NULL FROM "items_{table}"')
    for pk, sk, hlc, region, tombstone in rows:
        if before is not None and hlc >= before:
            continue
        leaf = digests.leaf_of(key_hash(pk, sk))
        leaves[leaf] ^= digests.row_hash(
            canonical_key_value(pk), canonical_key_value(sk), hlc, region, bool(tombstone)
        )
    return digests.fold(leaves, digests.LEAVES)


def book(key: Any, price: float = 9.5) -> Item:
    return {"id": key, "name": f"Book {key}", "category": "Cars", "price": price}


def remote(key: Any, hlc_ms: int, tombstone: bool, price: float) -> LogEntry:
    """A change as Singapore would send it, with a version that may be older or newer than ours."""
    hlc = HybridLogicalClock.pack(hlc_ms)
    return LogEntry(
        seq=1,
        table="books",
        kind="REMOVE" if tombstone else "INSERT",
        key={"id": key},
        old=None,
        new=None if tombstone else book(key, price),
        written_ms=hlc_ms,
        origin=SINGAPORE,
        version=(hlc, SINGAPORE),
        previous=None,
    )


def put_then_fail(books: SqliteTable, item: Item) -> None:
    books.put(item)
    raise NotFound("a unit rolled back after its write")


ops = st.one_of(
    st.tuples(st.just("put"), st.sampled_from(BOOK_IDS), st.integers(1, 50)),
    st.tuples(st.just("delete"), st.sampled_from(BOOK_IDS), st.just(0)),
    st.tuples(st.just("remote"), st.sampled_from(BOOK_IDS), st.integers(-3_000, 3_000)),
    st.tuples(st.just("remote-delete"), st.sampled_from(BOOK_IDS), st.integers(-3_000, 3_000)),
    st.tuples(st.just("group"), st.sampled_from(BOOK_IDS), st.integers(1, 50)),
    st.tuples(st.just("trim"), st.just(""), st.integers(0, 5_000)),
    st.tuples(st.just("tick"), st.just(""), st.integers(1, 2_000)),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ops, max_size=30))
def test_every_path_that_writes_rows_keeps_the_leaves_equal_to_a_digest_from_scratch(
    steps: list[tuple[str, Any, int]],
) -> None:
    with tempfile.TemporaryDirectory() as home:
        clock = ManualClock()
        db = SqliteDatabase(Path(home) / "a.db", IRELAND, clock)
        books = db.table(BOOKS)
        db.table(CARTS)
        replica = SqliteReplica(db)
        try:
            for op, key, n in steps:
                if op == "put":
                    books.put(book(key, n))
                elif op == "delete":
                    books.delete({"id": key})
                elif op in ("remote", "remote-delete"):
                    replica.apply(SINGAPORE, [remote(key, clock.now + n, op == "remote-delete", 3)], None)
                elif op == "group":
                    db.run_group(
                        [partial(books.put, book(key, n)), partial(put_then_fail, books, book(key, n + 1))]
                    )
                elif op == "trim":
                    replica.record_ack(SINGAPORE, replica.head_seq())
                    replica.trim([SINGAPORE], n, clock.now)
                else:
                    clock.now += n
                assert replica.digest("books", digests.LEAVES) == recomputed(db, "books")
            bound = HybridLogicalClock.pack(clock.now - 1_000)
            assert replica.digest("books", digests.LEAVES, bound) == recomputed(db, "books", bound)
            # Every bucket count folds the same leaves.
            assert replica.digest("books", 8) == digests.fold(
                [int(x, 16) for x in recomputed(db, "books")], 8
            )

            # A copy made from snapshot pages (a backfill) holds the same digests.
            copy = SqliteDatabase(Path(home) / "b.db", SINGAPORE, clock)
            copy.table(BOOKS)
            copy.table(CARTS)
            target = SqliteReplica(copy)
            cursor: str | None = None
            while True:
                page = replica.snapshot(cursor, 2)
                target.apply(IRELAND, page.entries, None)
                if page.cursor is None:
                    break
                cursor = page.cursor
            assert target.digest("books", 64) == replica.digest("books", 64)
            copy.close()
        finally:
            db.close()


def test_a_connection_without_the_digest_function_cannot_write_rows(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    with SqliteDatabase(path, IRELAND, ManualClock()) as db:
        db.table(BOOKS).put(book("b1"))
        before = SqliteReplica(db).digest("books")
    with closing(sqlite3.connect(path)) as conn:
        for statement in (
            "INSERT INTO items_books (pk, sk, doc, hlc, region, khash) VALUES ('x', '', '{}', 1, 'r', 5)",
            "UPDATE items_books SET hlc = hlc + 1",
            "DELETE FROM items_books",
        ):
            with pytest.raises(sqlite3.OperationalError, match="no such function"):
                conn.execute(statement)
        conn.rollback()
    with SqliteDatabase(path, IRELAND, ManualClock()) as db:
        db.table(BOOKS)
        assert SqliteReplica(db).digest("books") == before
        assert SqliteReplica(db).digest("books", digests.LEAVES) == recomputed(db, "books")


def test_a_file_from_before_the_digest_triggers_gets_its_leaves_computed_once(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    with SqliteDatabase(path, IRELAND, ManualClock()) as db:
        books = db.table(BOOKS)
        for i in range(30):
            books.put(book(f"b{i}"))
        books.delete({"id": "b3"})
        expected = recomputed(db, "books")
    with closing(sqlite3.connect(path)) as conn, conn:
        # As an older version left the file: rows, no triggers, no leaves.
        for (trigger,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
            conn.execute(f'DROP TRIGGER "{trigger}"')
        conn.execute("DELETE FROM digests")
        conn.execute(
            "INSERT INTO items_books (pk, sk, doc, hlc, region, khash) VALUES ('late', '', '{}', 9, 'r', ?)",
            (key_hash("late", ""),),
        )
    with SqliteDatabase(path, IRELAND, ManualClock()) as db:
        db.table(BOOKS)
        replica = SqliteReplica(db)
        assert replica.digest("books", digests.LEAVES) == recomputed(db, "books") != expected
        db.table(BOOKS).put(book("b99"))
        assert replica.digest("books", digests.LEAVES) == recomputed(db, "books")


def test_a_file_with_the_two_statement_update_trigger_gets_the_one_statement_triggers(
    tmp_path: Path,
) -> None:
    path = tmp_path / "a.db"
    with SqliteDatabase(path, IRELAND, ManualClock()) as db:
        books = db.table(BOOKS)
        for i in range(10):
            books.put(book(f"b{i}"))
    with closing(sqlite3.connect(path)) as conn, conn:
        # As the first version of the triggers left the file: one update trigger folding OLD and NEW apart.
        for kind in ("keep", "rekey"):
            conn.execute(f'DROP TRIGGER "dg_{kind}_books"')
        conn.execute('CREATE TRIGGER "dg_update_books" AFTER UPDATE ON items_books BEGIN SELECT 1; END')
        conn.execute("UPDATE digests SET x = 0")
    with SqliteDatabase(path, IRELAND, ManualClock()) as db:
        books = db.table(BOOKS)
        with closing(sqlite3.connect(path)) as conn:
            names = {
                name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
            }
        assert names == {"dg_insert_books", "dg_keep_books", "dg_rekey_books", "dg_delete_books"}
        replica = SqliteReplica(db)
        assert replica.digest("books", digests.LEAVES) == recomputed(db, "books")
        books.put(book("b1"))
        assert replica.digest("books", digests.LEAVES) == recomputed(db, "books")


def test_an_update_that_changes_a_rows_key_moves_its_hash_between_leaves(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    with SqliteDatabase(path, IRELAND, ManualClock()) as db:
        books = db.table(BOOKS)
        for i in range(10):
            books.put(book(f"b{i}"))
        replica = SqliteReplica(db)
        # No path of ours rewrites a key, but raw SQL may: the rekey trigger keeps the leaves right.
        with db.transaction("rekeying a row") as conn:
            conn.execute(
                "UPDATE items_books SET pk = 'moved', khash = ? WHERE pk = 'b2'", (key_hash("moved", ""),)
            )
        assert replica.digest("books", digests.LEAVES) == recomputed(db, "books")


def test_bucket_counts_are_powers_of_two_up_to_the_leaves(tmp_path: Path) -> None:
    with SqliteDatabase(tmp_path / "a.db", IRELAND, ManualClock()) as db:
        db.table(BOOKS)
        replica = SqliteReplica(db)
        assert len(replica.digest("books", 1)) == 1 and len(replica.digest("books", digests.LEAVES)) == 4096
        for bad in (0, 3, 48, digests.LEAVES * 2):
            with pytest.raises(ValidationError):
                replica.digest("books", bad)
        with pytest.raises(ValidationError):
            replica.bucket_entries("books", 8, 8)
        with pytest.raises(ValidationError):
            replica.digest("nope")
    with pytest.raises(StorageError):
        replica.digest("books")  # closed
