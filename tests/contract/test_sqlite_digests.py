"""Incremental digests on SQLite: the leaves kept by triggers always equal a digest computed from scratch."""

from __future__ import annotations

import sqlite3
import tempfile
from contextlib import closing
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bookstore.domain.errors import NotFound, StorageError, ValidationError
from bookstore.kernel.clock import HybridLogicalClock
from bookstore.ports import Item
from bookstore.replication.tables import digests
from bookstore.replication.tables.model import LogEntry
from bookstore.storage.sqlite.replica import SqliteReplica
from bookstore.storage.sqlite.tables import (
    REFUSED,
    SqliteDatabase,
    SqliteTable,
    canonical_key_value,
    key_hash,
)
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
    """The digest of every row of `table`, computed from scratch in Python (the reference).

    With `before`, a row whose version is at or above it is left out when the log holds a record of
    its key at or above it too: every write of ours logs one (raw SQL does not, and trims remove them).
    """
    leaves = [0] * digests.LEAVES
    rows = db.engine.query(f'SELECT pk, sk, hlc, region, doc IS NULL FROM "items_{table}"')
    logged = {
        tuple(orjson.loads(key).values())
        for (key,) in db.engine.query("SELECT key FROM changes WHERE tbl = ? AND hlc >= ?", (table, before))
    }
    for pk, sk, hlc, region, tombstone in rows:
        if before is not None and hlc >= before and ((pk,) in logged or (pk, sk) in logged):
            continue
        leaf = digests.leaf_of(key_hash(pk, sk))
        leaves[leaf] ^= digests.row_hash(
            canonical_key_value(pk), canonical_key_value(sk), hlc, region, bool(tombstone)
        )
    return digests.fold(leaves, digests.LEAVES)


def assert_row_hashes_are_right(db: SqliteDatabase, table: str) -> None:
    """Every stored rhash is its row's hash: none is missing or stale."""
    rows = db.engine.query(f'SELECT pk, sk, hlc, region, doc IS NULL, rhash FROM "items_{table}"')
    for pk, sk, hlc, region, tombstone, rhash in rows:
        expected = digests.row_hash(
            canonical_key_value(pk), canonical_key_value(sk), hlc, region, bool(tombstone)
        )
        assert rhash == expected, (pk, sk, hlc, region, tombstone)


RAW_DOC = "json_object('id', :pk, 'name', 'raw', 'category', 'Cars', 'price', 1)"
# Raw SQL on the items table (no path of ours writes so, but the triggers serve every writer), and
# whether the triggers refuse it: a write of a key, version or tombstone flag must set rhash rightly.
RAW_WRITES = {
    # An insert without rhash, a new version or a tombstone or a key with rhash left as it was.
    "INSERT INTO items_books (pk, sk, doc, hlc, region, khash) VALUES (:pk, '', "
    f"{RAW_DOC}, :hlc, 'raw', :khash) ON CONFLICT DO NOTHING": True,
    "UPDATE items_books SET hlc = hlc + 1 WHERE pk = :pk": True,
    "UPDATE items_books SET doc = NULL WHERE pk = :pk AND doc IS NOT NULL": True,
    "UPDATE items_books SET pk = :moved, khash = :moved_khash, doc = json_set(doc, '$.id', :moved) "
    "WHERE pk = :pk": True,
    "UPDATE items_books SET rhash = NULL WHERE pk = :pk": True,
    # Writes that set rhash to the row's hash, or change nothing it is made of, or delete.
    "INSERT INTO items_books (pk, sk, doc, hlc, region, khash, rhash) VALUES (:pk, '', "
    f"{RAW_DOC}, :hlc, 'raw', :khash, :rhash) ON CONFLICT (pk, sk) DO UPDATE SET doc = excluded.doc, "
    "hlc = excluded.hlc, region = excluded.region, rhash = excluded.rhash": False,
    "UPDATE items_books SET doc = json_set(doc, '$.name', 'renamed') WHERE pk = :pk": False,
    "UPDATE OR IGNORE items_books SET pk = :moved, khash = :moved_khash, rhash = :moved_rhash, "
    "doc = json_set(doc, '$.id', :moved) WHERE pk = :pk": False,
    "DELETE FROM items_books WHERE pk = :pk": False,
}


def raw_write(db: SqliteDatabase, statement: str, key: Any, hlc: int) -> bool:
    """Run one of RAW_WRITES on the row of `key`; whether the triggers refused it."""
    moved = f"{key}-moved"
    row = db.engine.query("SELECT hlc, region, doc IS NULL FROM items_books WHERE pk = ?", (key,))
    moved_rhash = None if not row else digests.row_hash(moved, "", row[0][0], row[0][1], bool(row[0][2]))
    values = {
        "pk": key,
        "hlc": hlc,
        "khash": key_hash(key, ""),
        "rhash": digests.row_hash(canonical_key_value(key), "", hlc, "raw", False),
        "moved": moved,
        "moved_khash": key_hash(moved, ""),
        "moved_rhash": moved_rhash,
    }
    try:
        with db.transaction("a raw write") as conn:
            conn.execute(statement, values)
    except StorageError as exc:
        assert REFUSED in str(exc)
        return True
    return False


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
    st.tuples(st.sampled_from(list(RAW_WRITES)), st.sampled_from(BOOK_IDS), st.integers(-3_000, 3_000)),
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
                elif op in RAW_WRITES:
                    before = replica.digest("books", digests.LEAVES)
                    if raw_write(db, op, key, HybridLogicalClock.pack(clock.now + n)):
                        assert replica.digest("books", digests.LEAVES) == before
                else:
                    clock.now += n
                assert replica.digest("books", digests.LEAVES) == recomputed(db, "books")
                assert_row_hashes_are_right(db, "books")
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


def test_each_raw_write_keeps_the_leaves_right_or_is_refused_as_expected(tmp_path: Path) -> None:
    with SqliteDatabase(tmp_path / "a.db", IRELAND, ManualClock()) as db:
        books = db.table(BOOKS)
        replica = SqliteReplica(db)
        for statement, refused in RAW_WRITES.items():
            for i in range(3):
                books.put(book(f"b{i}"))
            before = replica.digest("books", digests.LEAVES)
            # The row of b1 exists; the insert needs a key without one, so it is not DO NOTHING.
            key = "b9" if statement.startswith("INSERT") else "b1"
            assert raw_write(db, statement, key, HybridLogicalClock.pack(START_MS + 5)) is refused, statement
            after = replica.digest("books", digests.LEAVES)
            assert after == recomputed(db, "books")
            assert (after == before) is (refused or "renamed" in statement), statement
            assert_row_hashes_are_right(db, "books")


def test_a_plain_connection_can_delete_rows_and_cannot_write_them_without_their_hash(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    with SqliteDatabase(path, IRELAND, ManualClock()) as db:
        for i in range(3):
            db.table(BOOKS).put(book(f"b{i}"))
    # A connection of another program (the sqlite3 shell) needs nothing of ours: the triggers are SQL.
    with closing(sqlite3.connect(path)) as conn:
        for statement in (
            "INSERT INTO items_books (pk, sk, doc, hlc, region, khash) VALUES ('x', '', '{}', 1, 'r', 5)",
            "UPDATE items_books SET hlc = hlc + 1",
        ):
            with pytest.raises(sqlite3.IntegrityError, match="rhash must be set"):
                conn.execute(statement)
        with conn:
            conn.execute("DELETE FROM items_books WHERE pk = 'b1'")
    with SqliteDatabase(path, IRELAND, ManualClock()) as db:
        db.table(BOOKS)
        assert db.engine.query("SELECT count(*) FROM items_books") == [(2,)]
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
        # As an older version left the file: rows without their hash, no triggers, no leaves.
        for (trigger,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
            conn.execute(f'DROP TRIGGER "{trigger}"')
        conn.execute("DROP TABLE leaves_books")
        conn.execute("ALTER TABLE items_books DROP COLUMN rhash")
        conn.execute(
            "INSERT INTO items_books (pk, sk, doc, hlc, region, khash) VALUES ('late', '', '{}', 9, 'r', ?)",
            (key_hash("late", ""),),
        )
    with SqliteDatabase(path, IRELAND, ManualClock()) as db:
        db.table(BOOKS)
        replica = SqliteReplica(db)
        assert replica.digest("books", digests.LEAVES) == recomputed(db, "books") != expected
        assert_row_hashes_are_right(db, "books")
        db.table(BOOKS).put(book("b99"))
        assert replica.digest("books", digests.LEAVES) == recomputed(db, "books")


# The digest triggers of the first release of incremental digests, as they stood in its files, beside a
# `digests` table holding every table's leaves: they hashed rows by SQL functions, and rows had no rhash.
CALLBACK_TRIGGERS = (
    'CREATE TRIGGER "dg_insert_books" AFTER INSERT ON "items_books" BEGIN UPDATE digests SET x = '
    "bookstore_digest_xor(x, NEW.pk, NEW.sk, NEW.hlc, NEW.region, NEW.doc IS NULL) WHERE tbl = 'books' "
    "AND leaf = NEW.khash >> 20; END",
    'CREATE TRIGGER "dg_keep_books" AFTER UPDATE ON "items_books" WHEN OLD.pk IS NEW.pk AND OLD.sk IS '
    "NEW.sk AND OLD.khash = NEW.khash BEGIN UPDATE digests SET x = bookstore_digest_swap(x, NEW.pk, "
    "NEW.sk, OLD.hlc, OLD.region, OLD.doc IS NULL, NEW.hlc, NEW.region, NEW.doc IS NULL) WHERE tbl = "
    "'books' AND leaf = NEW.khash >> 20; END",
    'CREATE TRIGGER "dg_rekey_books" AFTER UPDATE ON "items_books" WHEN NOT (OLD.pk IS NEW.pk AND OLD.sk '
    "IS NEW.sk AND OLD.khash = NEW.khash) BEGIN UPDATE digests SET x = bookstore_digest_xor(x, OLD.pk, "
    "OLD.sk, OLD.hlc, OLD.region, OLD.doc IS NULL) WHERE tbl = 'books' AND leaf = OLD.khash >> 20; "
    "UPDATE digests SET x = bookstore_digest_xor(x, NEW.pk, NEW.sk, NEW.hlc, NEW.region, NEW.doc IS NULL) "
    "WHERE tbl = 'books' AND leaf = NEW.khash >> 20; END",
    'CREATE TRIGGER "dg_delete_books" AFTER DELETE ON "items_books" BEGIN UPDATE digests SET x = '
    "bookstore_digest_xor(x, OLD.pk, OLD.sk, OLD.hlc, OLD.region, OLD.doc IS NULL) WHERE tbl = 'books' "
    "AND leaf = OLD.khash >> 20; END",
)


def _callback_xor(x: int, pk: Any, sk: Any, hlc: int, region: str, tombstone: int) -> int:
    return x ^ digests.row_hash(
        canonical_key_value(pk), canonical_key_value(sk), hlc, region, bool(tombstone)
    )


def _callback_swap(x: int, pk: Any, sk: Any, *versions: Any) -> int:
    old, new = versions[:3], versions[3:]
    return _callback_xor(_callback_xor(x, pk, sk, *old), pk, sk, *new)


def test_a_file_with_the_callback_triggers_gets_row_hashes_and_leaves_of_its_own(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    clock = ManualClock()
    with SqliteDatabase(path, IRELAND, clock) as db:
        books = db.table(BOOKS)
        for i in range(20):
            books.put(book(f"b{i}"))
        books.delete({"id": "b3"})
        leaves = [int(x, 16) for x in recomputed(db, "books")]
    with closing(sqlite3.connect(path)) as conn, conn:
        # The file as that release wrote it, then written to by it (its functions, its triggers).
        conn.create_function("bookstore_digest_xor", 6, _callback_xor)
        conn.create_function("bookstore_digest_swap", 9, _callback_swap)
        conn.execute('DROP TABLE "leaves_books"')
        for (trigger,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
            conn.execute(f'DROP TRIGGER "{trigger}"')
        conn.execute("ALTER TABLE items_books DROP COLUMN rhash")
        conn.execute(
            "CREATE TABLE digests (tbl TEXT NOT NULL, leaf INTEGER NOT NULL, x INTEGER NOT NULL, "
            "PRIMARY KEY (tbl, leaf)) WITHOUT ROWID"
        )
        conn.executemany(
            "INSERT INTO digests VALUES (?, ?, ?)",
            [
                (table, leaf, x - (1 << 64) if x >> 63 else x)
                for table in ("books", "carts")
                for leaf, x in enumerate(leaves)
            ],
        )
        for statement in CALLBACK_TRIGGERS:
            conn.execute(statement)
        conn.execute("UPDATE items_books SET hlc = hlc + 1, doc = NULL WHERE pk IN ('b1', 'b2')")
        conn.execute("DELETE FROM items_books WHERE pk = 'b4'")
        conn.execute(
            "INSERT INTO items_books (pk, sk, doc, hlc, region, khash) VALUES ('late', '', ?, 9, 'r', ?)",
            (orjson.dumps(book("late")).decode(), key_hash("late", "")),
        )
    with SqliteDatabase(path, IRELAND, clock) as db:
        books = db.table(BOOKS)
        replica = SqliteReplica(db)
        assert replica.digest("books", digests.LEAVES) == recomputed(db, "books")
        assert_row_hashes_are_right(db, "books")
        # The carts' leaves stay where they were until that table is opened, and the old table goes then.
        assert db.engine.query("SELECT DISTINCT tbl FROM digests") == [("carts",)]
        books.put(book("b1", 3))
        books.delete({"id": "b5"})
        replica.apply(SINGAPORE, [remote("b6", clock.now + 1_000, False, 4)], None)
        assert replica.digest("books", digests.LEAVES) == recomputed(db, "books")
        db.table(CARTS)
        assert not db.engine.query("SELECT name FROM sqlite_master WHERE name = 'digests'")
        assert replica.digest("carts", digests.LEAVES) == recomputed(db, "carts")


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
        conn.execute("UPDATE leaves_books SET x = 0")
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
        (hlc,) = db.engine.query("SELECT hlc FROM items_books WHERE pk = 'b2'")[0]
        # No path of ours rewrites a key, but raw SQL may: the rekey trigger keeps the leaves right.
        with db.transaction("rekeying a row") as conn:
            conn.execute(
                "UPDATE items_books SET pk = 'moved', khash = ?, rhash = ? WHERE pk = 'b2'",
                (key_hash("moved", ""), digests.row_hash("moved", "", hlc, IRELAND, False)),
            )
        assert replica.digest("books", digests.LEAVES) == recomputed(db, "books")


def test_young_versions_are_left_out_through_the_log_and_a_file_with_the_rows_index_loses_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "a.db"
    clock = ManualClock()
    with SqliteDatabase(path, IRELAND, clock) as db:
        books = db.table(BOOKS)
        books.put(book("b1"))
        # As the previous version left the file: an index of the rows' versions, none of the log's.
        with db.transaction("the previous indexes") as conn:
            conn.execute('CREATE INDEX "hlc_books" ON items_books (hlc)')
            conn.execute("DROP INDEX changes_by_version")
    with SqliteDatabase(path, IRELAND, clock) as db:
        db.table(BOOKS)
        indexes = {name for (name,) in db.engine.query("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert "hlc_books" not in indexes and "changes_by_version" in indexes
        replica = SqliteReplica(db)
        old = replica.digest("books", digests.LEAVES)
        clock.now += 5_000
        bound = HybridLogicalClock.pack(clock.now)
        db.table(BOOKS).put(book("b3"))  # young rows, logged: a local write and an applied one
        replica.apply(SINGAPORE, [remote("b2", clock.now + 10, False, 2)], None)
        assert replica.digest("books", digests.LEAVES, bound) == old == recomputed(db, "books", bound)
        assert replica.digest("books", digests.LEAVES) != old
        # Its record trimmed (a retention shorter than the bound's age), a young row stays in.
        replica.record_ack(SINGAPORE, replica.head_seq())
        replica.trim([SINGAPORE], 0, clock.now + 1)
        assert replica.digest("books", digests.LEAVES, bound) == replica.digest("books", digests.LEAVES)


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
