"""SQLite tables: one file per region holding every table's items, versions, tombstones and change log."""

from __future__ import annotations

import hashlib
import logging
import re
import sqlite3
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, cast

import orjson

from bookstore.domain.errors import ConditionFailed, StorageError, ValidationError
from bookstore.kernel.clock import HybridLogicalClock, SystemClock
from bookstore.ports import (
    FIRST_WRITER_WINS,
    ChangeBatch,
    ChangeKind,
    ChangeRecord,
    Clock,
    Condition,
    Index,
    Item,
    Key,
    Outcome,
    Page,
    SortRange,
    TableSchema,
)
from bookstore.replication.tables import digests
from bookstore.replication.tables.model import LogRead, Version
from bookstore.storage.durability import DEFAULT as DEFAULT_DURABILITY
from bookstore.storage.durability import Durability
from bookstore.storage.items import (
    KeyValue,
    check_changes,
    check_item,
    check_limit,
    decode_cursor,
    encode_cursor,
    holds,
    is_key_value,
    key_parts,
    key_value,
    merged,
)
from bookstore.storage.sqlite import log as change_log
from bookstore.storage.sqlite.engine import SqliteEngine

# Tables without a sort key store this constant in the sort column, so one primary key shape fits all.
NO_SORT = ""
# Keys hash to this many bits; anti-entropy buckets are ranges of the hash space, so an index serves them.
KEY_HASH_BITS = digests.KEY_HASH_BITS
# Each row carries its hash (digests.row_hash) in its rhash column, computed by row_hashes where the row
# is written, so the digest triggers fold old and new hashes in plain SQL. What they say when they refuse
# a write that does not set it:
REFUSED = "rhash must be set to the hash of the row (row_hashes) by a write of its key, version or tombstone"
# A row's leaf and hash, as a digest reads them.
LEAF_AND_HASH = f"khash >> {digests.LEAF_SHIFT}, rhash"
# Where files of before held every table's leaves (tbl, leaf, x); each table has its own now (leaves_).
OLD_DIGESTS = "digests"
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
# Every write hashes its key: copying a hasher made once costs less than making one with its parameters.
_BLAKE2B_KEY = hashlib.blake2b(digest_size=KEY_HASH_BITS // 8)
# The writer's page cache. Each row written updates the key-hash index at a random place (anti-entropy
# needs it in hash order), so a batch of thousands dirties about one index page per row: with SQLite's
# 2 MB cache most of those pages are read again for every batch. A region applying a backlog of 400,000
# rows spent 31 us per row in SQLite so, 23 us with this cache (docs/performance.md). The WAL keeps
# SQLite's checkpoint every 1,000 pages: one every 10,000 pages saved 3 us more per row, but each such
# checkpoint held a commit for tens of ms and put replication's lag p99 at 2, 3 and 5 regions 20-60 ms
# over the link (python -m bench regions, alternated beside the default).
WRITER_CACHE_KIB = 64 * 1024
CHECKPOINT_PAGES = None

log = logging.getLogger("bookstore.storage.sqlite")


def _checked_name(kind: str, name: str) -> str:
    if not _NAME.match(name):
        raise ValidationError(f"{kind} name {name!r} may hold only letters, digits, '_', '.' and '-'")
    return name


def _quoted(identifier: str) -> str:
    return '"' + identifier + '"'


def _json_path(attribute: str, column: str = "doc") -> str:
    if any(c in attribute for c in "\"'\\"):
        raise ValidationError(f"index attribute {attribute!r} may not contain quotes or backslashes")
    return f"json_extract({column}, '$.\"{attribute}\"')"


def canonical_key_value(value: KeyValue) -> KeyValue:
    """`value` as every region spells it: SQLite holds 1 and 1.0 as one key, so they must hash alike."""
    if type(value) is float and value.is_integer():
        return int(value)
    return value


def key_hash(pk: KeyValue, sk: KeyValue) -> int:
    """A stable hash of a stored key (0 <= hash < 2**KEY_HASH_BITS), equal in every region and process."""
    return _key_hash(canonical_key_value(pk), canonical_key_value(sk))


def row_hashes(pk: KeyValue, sk: KeyValue, hlc: int, region: str, tombstone: bool) -> tuple[int, int]:
    """A row's key hash (key_hash) and row hash (digests.row_hash): its khash and rhash columns."""
    pk, sk = canonical_key_value(pk), canonical_key_value(sk)
    return _key_hash(pk, sk), digests.row_hash(pk, sk, hlc, region, tombstone)


def row_hash(pk: KeyValue, sk: KeyValue, hlc: int, region: str, tombstone: bool) -> int:
    """A row's hash (digests.row_hash of its key as every region spells it): its rhash column."""
    return digests.row_hash(canonical_key_value(pk), canonical_key_value(sk), hlc, region, tombstone)


def _key_hash(pk: KeyValue, sk: KeyValue) -> int:
    hasher = _BLAKE2B_KEY.copy()
    hasher.update(orjson.dumps([pk, sk]))
    return int.from_bytes(hasher.digest(), "big")


class SqliteDatabase:
    """One SQLite file (WAL) holding all of a region's tables and its change log.

    Safe from several threads and from several processes on the same file (see engine.SqliteEngine).
    A write returns after its transaction committed to the WAL, so it survives a kill -9 of the process
    (and a power loss under durability "power").

    The log (`changes`) is the stream of every table: local writes and changes applied from other
    regions (with their origin), in commit order by `seq`. Listeners added with `add_listener` are
    called after each commit that appended to it (by this handle; another process's writes call none).
    """

    def __init__(
        self,
        path: Path,
        region: str,
        clock: Clock | None = None,
        *,
        hlc: HybridLogicalClock | None = None,
        durability: Durability = DEFAULT_DURABILITY,
        trace_context: Callable[[], str | None] | None = None,
    ) -> None:
        self.path = Path(path)
        # The traceparent of the write's request, stored with its change record (None: tracing off).
        self.trace_context = trace_context
        self.region = region
        self.durability = durability
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.hlc = hlc if hlc is not None else HybridLogicalClock(self.clock)
        self._tables: dict[str, SqliteTable] = {}
        self._listeners: list[Callable[[], None]] = []
        self._listeners_lock = threading.Lock()
        # Whether the running group logged a change, and the newest version it issued (written to the
        # hlc row once, when the group ends).
        self._group_logged = False
        self._group_version: int | None = None
        self.engine = SqliteEngine(
            self.path,
            durability=durability,
            writer_cache_kib=WRITER_CACHE_KIB,
            checkpoint_pages=CHECKPOINT_PAGES,
        )
        self.engine.script(change_log.SCHEMA, "creating the change log")
        with self.engine.transaction("migrating the change log") as conn:
            change_log.migrate(conn)
            # A restart with the wall clock behind the last version must still issue later versions.
            stored = change_log.stored_version(conn)
        self.hlc.advance(stored)

    def transaction(self, what: str) -> AbstractContextManager[sqlite3.Connection]:
        """See SqliteEngine.transaction: inside `run_group` (on its thread), a savepoint of the group."""
        return self.engine.transaction(what)

    def next_version(self, conn: sqlite3.Connection) -> int:
        """Issue the version of a local write: from the HLC, above every version issued on this file."""
        candidate = self.hlc.now()
        if not self.engine.in_group():
            # Another process writing to the same file shares the hlc row, so versions stay unique.
            version = change_log.take_version(conn, candidate)
        else:
            # A group's transaction holds the file's write lock throughout, so no other process can issue
            # a version meanwhile: the row is read at the group's first write and written once, at its end.
            if self._group_version is None:
                self._group_version = change_log.stored_version(conn)
            version = self._group_version = max(self._group_version + 1, candidate)
        if version != candidate:
            self.hlc.advance(version)
        return version

    def run_group(self, units: Sequence[Callable[[], Any]]) -> list[Outcome]:
        """Run `units` (callables writing through this database's tables) in one transaction: group commit.

        Each unit is all-or-nothing: one that raises is rolled back alone and its exception is its
        outcome; the others commit together, once, before this returns. Their writes are durable only
        then (not when each write returns, as outside a group), so a caller acknowledges a unit only after
        this returned. A failed commit raises StorageError and keeps nothing. Listeners hear of the
        group's changes once, after the commit. Versions a failed unit took stay taken: issued versions
        need only be unique and rising. A unit may run twice (SqliteEngine.run_group's `rerun`: after
        a unit failed half-way, the group runs again), so it must change nothing but this database.
        """

        def store_version(conn: sqlite3.Connection) -> None:
            if self._group_version is not None:
                change_log.store_version(conn, self._group_version)

        def forget() -> None:
            # The group's transaction was rolled back and the file's lock let go: another process may
            # have issued versions meanwhile, so the next attempt reads the hlc row again.
            self._group_logged = False
            self._group_version = None

        forget()
        # Units here only write through this database (and GroupCommit's callers are told nothing
        # before the commit), so they may run again: run_group then spares them a savepoint each.
        outcomes = self.engine.run_group(units, before_commit=store_version, rerun=forget)
        if self._group_logged:
            self._group_logged = False
            self.notify()
        return outcomes

    def table(self, schema: TableSchema) -> SqliteTable:
        """The table of `schema`, created (with its indexes) when absent."""
        with self.engine.transaction(f"creating table {schema.name}") as conn:
            existing = self._tables.get(schema.name)
            if existing is not None:
                if existing.schema != schema:
                    raise ValidationError(f"table {schema.name} is already open with another schema")
                return existing
            table = SqliteTable(self, schema)
            table.create(conn)
        self._tables[schema.name] = table
        return table

    @property
    def tables(self) -> Mapping[str, SqliteTable]:
        """The tables opened on this handle, by name."""
        return dict(self._tables)

    # -- the log -------------------------------------------------------------------------------------

    def read_log(
        self,
        after: int = 0,
        *,
        limit: int = 100,
        tables: Collection[str] | None = None,
        exclude_origin: str | None = None,
        origins: Collection[str] | None = None,
        old_images: bool = True,
    ) -> LogRead:
        """Log records with seq > `after` in commit order, scanning at most `limit` rows (those of seq
        `after` + 1 to `after` + `limit`: seqs are given in order, and only trimming removes a prefix).

        Rows of other tables than `tables` (when given), of origin `exclude_origin`, or of an origin not
        in `origins` (when given) are scanned but not returned (nor read out of SQLite), and `last_seq`
        still moves past them, so a reader resuming after `last_seq` skips them for good.
        `old_images=False` leaves `old` None (a peer applying the entry never needs it).
        Raises LogTrimmed when records after `after` were trimmed away.
        """
        check_limit(limit)
        if type(after) is not int or after < 0:
            raise ValidationError(f"a log position is a non-negative integer, got {after!r}")
        sql, params = change_log.filtered_read(tables, exclude_origin, origins)
        try:
            with self.engine.read() as conn:
                change_log.check_not_trimmed(conn, after, self.region)
                head = change_log.head_seq(conn)
                # The rows scanned are those of seq after+1 .. through; the filter runs in SQLite, so a
                # row not asked for (a follower's own change, back from this region) is never fetched
                # nor decoded: a region draining a backlog read back every row it applied for the
                # backlog's origin, only to drop it here.
                through = max(after, min(after + limit, head))
                rows = conn.execute(sql, (after, through, *params)).fetchall()
        except sqlite3.Error as exc:
            raise StorageError(f"cannot read the change log of {self.path}: {exc}") from exc
        entries = [change_log.log_entry(row, old_image=old_images) for row in rows]
        return LogRead(entries=entries, last_seq=through, head_seq=head)

    def head_seq(self) -> int:
        """The seq of the newest record ever logged (0 when none), even if trimmed since."""
        try:
            return change_log.head_seq(self.engine.reader())
        except sqlite3.Error as exc:
            raise StorageError(f"cannot read the change log of {self.path}: {exc}") from exc

    def trimmed_through(self) -> int:
        """The highest seq trimmed from the log (0 when none): reading after less raises LogTrimmed."""
        try:
            return change_log.trimmed_through(self.engine.reader())
        except sqlite3.Error as exc:
            raise StorageError(f"cannot read the change log of {self.path}: {exc}") from exc

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Call `callback()` after every commit of this handle that appended to the log.

        It runs on the writing thread, outside the write lock; it should only signal (set an event,
        call_soon_threadsafe). Whatever it raises is logged, never passed on to the writer.
        """
        with self._listeners_lock:
            self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[], None]) -> None:
        with self._listeners_lock:
            if callback in self._listeners:
                self._listeners.remove(callback)

    def notify(self) -> None:
        """Tell the listeners the log grew: call after the commit that appended to it."""
        if self.engine.in_group():
            # A write of a group: its listeners hear of it once the group has committed.
            self._group_logged = True
            return
        with self._listeners_lock:
            listeners = list(self._listeners)
        for callback in listeners:
            try:
                callback()
            except Exception:
                log.exception("%s: a change-log listener failed", self.region)

    def close(self) -> None:
        self.engine.close()

    def __enter__(self) -> SqliteDatabase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SqliteTable:
    """The Table port over one SQL table of a SqliteDatabase; deletes leave versioned tombstones."""

    # Columns of an item row: the key, the item (NULL = tombstone), its version, the version it replaced
    # (for conflict detection), the log seq that wrote it (for tombstone trimming), its key hash, and
    # its row hash (what the digests XOR, written with the row: the triggers refuse a write without it).
    ROW_COLUMNS = "pk, sk, doc, hlc, region, prev_hlc, prev_region, seq, khash, rhash"

    def __init__(self, db: SqliteDatabase, schema: TableSchema) -> None:
        self.schema = schema
        self._db = db
        self._name = _checked_name("table", schema.name)
        self._sql_table = _quoted("items_" + self._name)
        t = self._sql_table
        self.sql_table = t
        # The table's leaves, one row per leaf: the XOR of the row hashes of its items and tombstones
        # whose key falls in the leaf. Keyed by rowid, so a trigger reaches a leaf by an integer seek and
        # rewrites it in place (one WITHOUT ROWID table keyed by (table, leaf) cost about 7,000 more
        # instructions per write: a text comparison per step of the seek, a delete and an insert).
        self.sql_leaves = _quoted("leaves_" + self._name)
        # The young rows a digest leaves out (versions at or above a bound), found through the log's
        # records of versions at or above it: the rows have no index of versions. A young row whose key
        # has no such record (written by raw SQL, or its record trimmed by a retention shorter than the
        # bound's age) stays in the digest, where it costs at most a comparison of its bucket.
        stored_pk = _json_path(schema.partition_key, "c.key")
        stored_sk = repr(NO_SORT) if schema.sort_key is None else _json_path(schema.sort_key, "c.key")
        self.sql_young = (
            f"SELECT DISTINCT i.pk, i.sk, i.khash >> {digests.LEAF_SHIFT}, i.rhash FROM changes AS c "
            f"INDEXED BY {change_log.VERSION_INDEX} "
            f"CROSS JOIN {t} AS i ON i.pk = {stored_pk} AND i.sk = {stored_sk} "
            "WHERE c.hlc >= ?1 AND c.tbl = ?2 AND i.hlc >= ?1"
        )
        self._sql_get = f"SELECT doc FROM {t} WHERE pk = ? AND sk = ?"
        # SQL the replica of this package shares: the current row of a key, and writing a whole row.
        self.sql_current = f"SELECT doc, hlc, region, prev_hlc, prev_region FROM {t} WHERE pk = ? AND sk = ?"
        # khash is the key's, so an update leaves it (and, in the triggers, the row's leaf) as it was.
        self.sql_upsert = (
            f"INSERT INTO {t} ({self.ROW_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (pk, sk) DO UPDATE SET doc = excluded.doc, hlc = excluded.hlc, "
            "region = excluded.region, prev_hlc = excluded.prev_hlc, prev_region = excluded.prev_region, "
            "seq = excluded.seq, rhash = excluded.rhash"
        )
        # Anti-entropy reads a bucket (a range of key hashes) with its versions from this index alone.
        # Named apart: the replica drops it during a large catch-up and builds it again afterwards.
        self.sql_key_index = _quoted("kh_" + self._name)
        self.sql_create_key_index = (
            f"CREATE INDEX IF NOT EXISTS {self.sql_key_index} ON {t} (khash, pk, sk, hlc, region)"
        )
        # A local write of a key it found stored: the row updated in place, where the upsert would first
        # try an insert, find the key taken and only then update (the same columns, the same triggers).
        self._sql_update = (
            f"UPDATE {t} SET doc = ?, hlc = ?, region = ?, prev_hlc = ?, prev_region = ?, seq = ?, rhash = ? "
            "WHERE pk = ? AND sk = ?"
        )
        self._sql_changes = (
            "SELECT seq, kind, key, old, new, written_ms, origin FROM changes "
            "WHERE tbl = ? AND seq > ? ORDER BY seq LIMIT ?"
        )
        for index in schema.indexes:
            _checked_name("index", index.name)
        # The key's attributes, and each attribute keying a secondary index with the index's name: what
        # an image applied from a peer is checked for (the replica's apply, per entry).
        self.key_names = (schema.partition_key, schema.sort_key)
        self.index_attributes = tuple(
            (attribute, index.name)
            for index in schema.indexes
            for attribute in (index.partition_key, index.sort_key)
            if attribute is not None
        )

    def create(self, conn: sqlite3.Connection) -> None:
        """Create this table and its indexes when absent, and bring a table of an older file up to date."""
        t = self._sql_table
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {t} (pk NOT NULL, sk NOT NULL, doc TEXT, hlc INTEGER NOT NULL, "
            "region TEXT NOT NULL, prev_hlc INTEGER, prev_region TEXT, seq INTEGER NOT NULL DEFAULT 0, "
            "khash INTEGER NOT NULL DEFAULT 0, rhash INTEGER, PRIMARY KEY (pk, sk)) WITHOUT ROWID"
        )
        present = change_log.columns(conn, t)
        for column, declaration in (
            ("prev_hlc", "INTEGER"),
            ("prev_region", "TEXT"),
            ("seq", "INTEGER NOT NULL DEFAULT 0"),
            ("khash", "INTEGER NOT NULL DEFAULT 0"),
            ("rhash", "INTEGER"),
        ):
            if column not in present:
                conn.execute(f"ALTER TABLE {t} ADD COLUMN {column} {declaration}")
        if "khash" not in present:
            rows = conn.execute(f"SELECT pk, sk FROM {t}").fetchall()
            conn.executemany(
                f"UPDATE {t} SET khash = ? WHERE pk = ? AND sk = ?",
                [(key_hash(pk, sk), pk, sk) for pk, sk in rows],
            )
        for index in self.schema.indexes:
            columns = [_json_path(index.partition_key)]
            if index.sort_key is not None:
                columns.append(_json_path(index.sort_key))
            conn.execute(
                f"CREATE INDEX IF NOT EXISTS {_quoted('ix_' + self._name + '_' + index.name)} "
                f"ON {t} ({', '.join([*columns, 'pk', 'sk'])}) WHERE doc IS NOT NULL"
            )
        conn.execute(self.sql_create_key_index)
        conn.execute(
            f"CREATE INDEX IF NOT EXISTS {_quoted('tomb_' + self._name)} ON {t} (seq) WHERE doc IS NULL"
        )
        self._create_digests(conn)

    def _create_digests(self, conn: sqlite3.Connection) -> None:
        """The table's digest leaves, kept right by triggers in the transaction of every write of a row.

        Every path that writes rows (local writes, applies, snapshots, trims, raw SQL) goes through the
        triggers, so none can forget them. A file from before them, or with other triggers than these
        (an older version's), gets its row hashes and leaves computed once here.
        """
        t = self._sql_table
        # Versions younger than anti-entropy's settle bound are taken back out of a digest through the
        # log's index of versions (sql_young). An index of the rows' versions cost every update of a row
        # a delete at a random place in it: 30,000 instructions a put, against 10,000 for an append to
        # the log's (python -m bench.write_instructions).
        conn.execute(f"DROP INDEX IF EXISTS {_quoted('hlc_' + self._name)}")
        conn.execute(change_log.CREATE_VERSION_INDEX)
        leaves_table = (
            f"CREATE TABLE IF NOT EXISTS {self.sql_leaves} (leaf INTEGER PRIMARY KEY, x INTEGER NOT NULL)"
        )
        triggers = self._digest_triggers()
        present = {
            trigger: sql
            for trigger, sql in conn.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = ?",
                ("items_" + self._name,),
            )
            if trigger.startswith("dg_")
        }
        if present == triggers and change_log.columns(conn, self.sql_leaves):
            return
        conn.execute(leaves_table)
        for trigger in present:
            conn.execute(f"DROP TRIGGER {_quoted(trigger)}")
        # With no trigger left, rows are written without touching the leaves, computed next. Every row
        # is hashed again: an older version's writes left rhash absent, or stale.
        rows = conn.execute(f"SELECT pk, sk, hlc, region, doc IS NULL FROM {t}").fetchall()
        hashes = [
            (row_hashes(pk, sk, hlc, region, bool(tombstone))[1], pk, sk)
            for pk, sk, hlc, region, tombstone in rows
        ]
        conn.executemany(f"UPDATE {t} SET rhash = ? WHERE pk = ? AND sk = ?", hashes)
        leaves = [0] * digests.LEAVES
        for leaf, x in conn.execute(f"SELECT {LEAF_AND_HASH} FROM {t}"):
            leaves[leaf] ^= x
        conn.execute(f"DELETE FROM {self.sql_leaves}")
        conn.executemany(f"INSERT INTO {self.sql_leaves} (leaf, x) VALUES (?, ?)", enumerate(leaves))
        if change_log.columns(conn, OLD_DIGESTS):
            conn.execute(f"DELETE FROM {OLD_DIGESTS} WHERE tbl = ?", (self._name,))
            if conn.execute(f"SELECT 1 FROM {OLD_DIGESTS} LIMIT 1").fetchone() is None:
                conn.execute(f"DROP TABLE {OLD_DIGESTS}")
        for sql in triggers.values():
            conn.execute(sql)

    def _digest_triggers(self) -> dict[str, str]:
        """The digest triggers of this table, by name: the statements that create them.

        They fold the rhash of the rows written in plain SQL, hashing nothing. SQLite has no XOR
        operator; (a | b) & ~(a & b) is one on its 64-bit integers (no arithmetic, so nothing overflows
        into a float). A write that leaves rhash NULL, or leaves it as it was while it changes what the
        hash is made of (key, version, tombstone flag), is refused: only raw SQL does that, and it could
        not keep the leaves right without hashing in SQL, which is what this design takes off every write.
        """
        t = self._sql_table

        def xor(a: str, b: str) -> str:
            return f"(({a}) | ({b})) & ~(({a}) & ({b}))"

        def fold(leaf_of: str, value: str, refused: str) -> str:
            # RAISE inside the expression rather than in a trigger of its own: every trigger a write
            # runs costs a frame of registers, and this one is the only trigger an upsert runs.
            return (
                f"UPDATE {self.sql_leaves} SET x = CASE WHEN {refused} THEN RAISE(ABORT, '{t}: {REFUSED}') "
                f"ELSE {xor('x', value)} END WHERE leaf = {leaf_of}.khash >> {digests.LEAF_SHIFT};"
            )

        same_key = "OLD.pk IS NEW.pk AND OLD.sk IS NEW.sk AND OLD.khash = NEW.khash"
        # The write changed what the row's hash is made of and left rhash as it was (or NULL). Never so
        # on our paths, so the changes are looked at only when rhash kept its value.
        refused = (
            "NEW.rhash IS NULL OR (NEW.rhash = OLD.rhash AND (OLD.pk IS NOT NEW.pk OR OLD.sk IS NOT NEW.sk "
            "OR OLD.hlc IS NOT NEW.hlc OR OLD.region IS NOT NEW.region "
            "OR (OLD.doc IS NULL) IS NOT (NEW.doc IS NULL)))"
        )
        bodies = {
            "dg_insert_": ("AFTER INSERT", None, fold("NEW", "NEW.rhash", "NEW.rhash IS NULL")),
            # Every update through the API or replication keeps the row's key (an upsert): its old and
            # new hashes fall in the same leaf and are folded in by one statement, the cost of every write.
            "dg_keep_": (
                "AFTER UPDATE",
                same_key,
                fold("NEW", xor("OLD.rhash", "NEW.rhash"), refused),
            ),
            # Only a statement that sets a key column runs this (our upserts do not).
            "dg_rekey_": (
                "AFTER UPDATE OF pk, sk, khash",
                f"NOT ({same_key})",
                fold("OLD", "OLD.rhash", "false") + " " + fold("NEW", "NEW.rhash", refused),
            ),
            "dg_delete_": ("AFTER DELETE", None, fold("OLD", "OLD.rhash", "false")),
        }
        triggers: dict[str, str] = {}
        for prefix, (event, when, body) in bodies.items():
            trigger = prefix + self._name
            condition = "" if when is None else f"WHEN {when} "
            triggers[trigger] = (
                f"CREATE TRIGGER {_quoted(trigger)} {event} ON {t} {condition}BEGIN {body} END"
            )
        return triggers

    def stored_key(self, key: Key) -> tuple[KeyValue, KeyValue]:
        """The (pk, sk) columns of `key`; ValidationError unless it holds exactly the key attributes."""
        pk, sk = key_parts(self.schema, key)
        return pk, NO_SORT if sk is None else sk

    def key_of_row(self, pk: KeyValue, sk: KeyValue) -> Key:
        """The key of a stored row, with the attributes in schema order."""
        if self.schema.sort_key is None:
            return {self.schema.partition_key: pk}
        return {self.schema.partition_key: pk, self.schema.sort_key: sk}

    # -- reads ---------------------------------------------------------------------------------------

    def get(self, key: Key) -> Item | None:
        pk, sk = key_parts(self.schema, key)
        try:
            rows = (
                self._db.engine.reader()
                .execute(self._sql_get, (pk, NO_SORT if sk is None else sk))
                .fetchall()
            )
        except sqlite3.Error as exc:
            raise StorageError(f"table {self.schema.name}: get failed: {exc}") from exc
        if not rows or rows[0][0] is None:
            return None
        return cast(Item, orjson.loads(rows[0][0]))

    def version(self, key: Key) -> Version | None:
        """The version of the item or of its tombstone; None when the key was never written here."""
        pk, sk = key_parts(self.schema, key)
        try:
            rows = (
                self._db.engine.reader()
                .execute(self.sql_current, (pk, NO_SORT if sk is None else sk))
                .fetchall()
            )
        except sqlite3.Error as exc:
            raise StorageError(f"table {self.schema.name}: version read failed: {exc}") from exc
        return (rows[0][1], rows[0][2]) if rows else None

    def query(
        self,
        partition: Any,
        *,
        index: str | None = None,
        sort_range: SortRange | None = None,
        descending: bool = False,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page:
        check_limit(limit)
        sql, params, width = self._query_sql(partition, index, sort_range, descending, cursor)
        return self._page(sql, (*params, limit + 1), width, limit)

    def explain_query(
        self,
        partition: Any,
        *,
        index: str | None = None,
        sort_range: SortRange | None = None,
        descending: bool = False,
        cursor: str | None = None,
    ) -> list[str]:
        """SQLite's plan for the statement `query` runs with these arguments, one line per step."""
        sql, params, _ = self._query_sql(partition, index, sort_range, descending, cursor)
        try:
            rows = self._db.engine.reader().execute("EXPLAIN QUERY PLAN " + sql, (*params, 1)).fetchall()
        except sqlite3.Error as exc:
            raise StorageError(f"table {self.schema.name}: explain failed: {exc}") from exc
        return [str(row[-1]) for row in rows]

    def scan(self, *, limit: int = 100, cursor: str | None = None) -> Page:
        check_limit(limit)
        sql = f"SELECT doc, pk, sk FROM {self._sql_table} WHERE doc IS NOT NULL "
        params: tuple[Any, ...] = ()
        if cursor is not None:
            sql += "AND (pk, sk) > (?, ?) "
            params = tuple(self._position(cursor, 2))
        return self._page(sql + "ORDER BY pk, sk LIMIT ?", (*params, limit + 1), 2, limit)

    def changes(self, cursor: str | None = None, *, limit: int = 100) -> ChangeBatch:
        check_limit(limit)
        after = 0
        if cursor is not None:
            try:
                after = int(cursor)
            except ValueError as exc:
                raise ValidationError(f"malformed change cursor {cursor!r}") from exc
        db = self._db
        try:
            with db.engine.read() as conn:
                if cursor is None:
                    after = change_log.trimmed_through(conn)
                else:
                    change_log.check_not_trimmed(conn, after, db.region)
                rows = conn.execute(self._sql_changes, (self._name, after, limit)).fetchall()
                head = change_log.head_seq(conn)
        except sqlite3.Error as exc:
            raise StorageError(f"table {self.schema.name}: reading changes failed: {exc}") from exc
        records = [
            ChangeRecord(
                kind=kind,
                key=orjson.loads(key),
                old=change_log.loads(old),
                new=change_log.loads(new),
                written_ms=written_ms,
                origin=origin,
            )
            for _, kind, key, old, new, written_ms, origin in rows
        ]
        # A short read saw every record of this table up to the head, so the cursor moves past other
        # tables' records too: trimming them must not send this reader to a re-sync.
        position = rows[-1][0] if len(rows) == limit else max(after, head)
        return ChangeBatch(records=records, cursor=str(position))

    def stream_head(self) -> str:
        return str(self._db.head_seq())

    def _query_sql(
        self,
        partition: Any,
        index: str | None,
        sort_range: SortRange | None,
        descending: bool,
        cursor: str | None,
    ) -> tuple[str, tuple[Any, ...], int]:
        schema = self.schema
        idx: Index | None = None if index is None else schema.index(index)
        pk_name = schema.partition_key if idx is None else idx.partition_key
        sk_name = schema.sort_key if idx is None else idx.sort_key
        partition = key_value(schema.name, pk_name, partition)
        low = None if sort_range is None else sort_range.low
        high = None if sort_range is None else sort_range.high
        if sk_name is None and (low, high) != (None, None):
            raise ValidationError(
                f"table {schema.name}: {index or 'the table'} has no sort key to range over"
            )
        if idx is None:
            where, sort, order = "pk = ?", "sk", ["sk"]
            select = "doc, sk"
        else:
            sort = "pk" if idx.sort_key is None else _json_path(idx.sort_key)
            where = f"{_json_path(idx.partition_key)} = ?"
            if idx.sort_key is not None:
                where += f" AND {sort} IS NOT NULL"
            order = [sort, "pk", "sk"] if idx.sort_key is not None else ["pk", "sk"]
            select = "doc, " + ", ".join(order)
        sql = f"SELECT {select} FROM {self._sql_table} WHERE {where} AND doc IS NOT NULL"
        params: list[Any] = [partition]
        if low is not None:
            sql += f" AND {sort} >= ?"
            params.append(low)
        if high is not None:
            sql += f" AND {sort} <= ?"
            params.append(high)
        if cursor is not None:
            sql += f" AND ({', '.join(order)}) {'<' if descending else '>'} ({', '.join('?' * len(order))})"
            params.extend(self._position(cursor, len(order)))
        direction = " DESC" if descending else ""
        sql += " ORDER BY " + ", ".join(column + direction for column in order) + " LIMIT ?"
        return sql, tuple(params), len(order)

    def _position(self, cursor: str, width: int) -> list[KeyValue]:
        position = decode_cursor(cursor)
        if not isinstance(position, list) or len(position) != width:
            raise ValidationError(f"malformed page cursor {cursor!r}")
        for value in position:
            if not is_key_value(value) and value != NO_SORT:
                raise ValidationError(f"malformed page cursor {cursor!r}")
        return position

    def _page(self, sql: str, params: tuple[Any, ...], width: int, limit: int) -> Page:
        try:
            rows = self._db.engine.reader().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StorageError(f"table {self.schema.name}: query failed: {exc}") from exc
        items = [cast(Item, orjson.loads(row[0])) for row in rows[:limit]]
        if len(rows) <= limit:
            return Page(items=items)
        return Page(items=items, cursor=encode_cursor(list(rows[limit - 1][1 : 1 + width])))

    # -- writes --------------------------------------------------------------------------------------

    def put(self, item: Item, *, condition: Condition | None = None) -> None:
        schema = self.schema
        key = check_item(schema, item)
        doc = orjson.dumps(item).decode()
        # check_item checked the key: its stored columns are taken as they are, not checked again. The
        # replaced item is read only for a condition (put returns nothing).
        pk = key[schema.partition_key]
        sk = NO_SORT if schema.sort_key is None else key[schema.sort_key]
        self._write(key, condition, lambda _old: doc, (pk, sk), old_wanted=condition is not None)

    def update(self, key: Key, changes: Mapping[str, Any], *, condition: Condition | None = None) -> Item:
        key_parts(self.schema, key)
        check_changes(self.schema, changes)
        result: list[Item] = []

        def apply(old: Item | None) -> str:
            new = merged(self.schema, dict(key), old, changes)
            result.append(new)
            return orjson.dumps(new).decode()

        self._write(dict(key), condition, apply)
        return result[0]

    def delete(self, key: Key, *, condition: Condition | None = None) -> Item | None:
        return self._write(dict(key), condition, lambda _old: None)

    def _write(
        self,
        key: Key,
        condition: Condition | None,
        new_doc: Any,
        stored: tuple[KeyValue, KeyValue] | None = None,
        *,
        old_wanted: bool = True,
    ) -> Item | None:
        """One transaction: check `condition`, write `new_doc(old)` (None = tombstone), log the change.

        Returns the old item (None without `old_wanted`: then new_doc is given None too). `stored` is
        the key's (pk, sk) columns when the caller checked them already.
        """
        pk, sk = self.stored_key(key) if stored is None else stored
        db = self._db
        with db.transaction(f"table {self.schema.name}: write") as conn:
            old, logged = self._write_locked(conn, key, pk, sk, condition, new_doc, old_wanted)
        if logged:
            db.notify()
        return old

    def _write_locked(
        self,
        conn: sqlite3.Connection,
        key: Key,
        pk: KeyValue,
        sk: KeyValue,
        condition: Condition | None,
        new_doc: Any,
        old_wanted: bool = True,
    ) -> tuple[Item | None, bool]:
        row = conn.execute(self.sql_current, (pk, sk)).fetchone()
        write_once = self.schema.conflict_rule == FIRST_WRITER_WINS
        if write_once and row is not None and row[0] is not None:
            # Replication keeps a key's lowest version: a later local write would be undone everywhere.
            raise ConditionFailed(
                f"table {self.schema.name}: {key} was written before, and its items are written once"
            )
        old_doc: str | None = None if row is None else row[0]
        old = change_log.loads(old_doc) if old_wanted else None
        if not holds(condition, old):
            raise ConditionFailed(f"table {self.schema.name}: condition {condition} does not hold for {key}")
        doc: str | None = new_doc(old)
        if doc is None and write_once:
            # A tombstone would carry the lowest version of the key and block its first write everywhere.
            raise ConditionFailed(f"table {self.schema.name}: items are written once and never deleted")
        # A delete of an absent key still writes a versioned tombstone: a write of the key that has not
        # arrived yet (made elsewhere, earlier) must lose to it by last-writer-wins, not come back.
        kind: ChangeKind = "REMOVE" if doc is None else "INSERT" if old_doc is None else "MODIFY"
        db = self._db
        version = db.next_version(conn)
        prev_hlc, prev_region = (None, None) if row is None else (row[1], row[2])
        now = db.clock.now_ms()
        if row is None:
            khash, rhash = row_hashes(pk, sk, version, db.region, doc is None)
        else:
            # The row exists, so the update keeps its key hash (it does not set khash):
            # hashing the key again would cost as much as hashing the row.
            rhash = row_hash(pk, sk, version, db.region, doc is None)
        seq = conn.execute(
            change_log.APPEND,
            (
                self._name,
                kind,
                orjson.dumps(key).decode(),
                old_doc,
                doc,
                now,
                db.region,
                version,
                db.region,
                prev_hlc,
                prev_region,
                now,
                db.trace_context() if db.trace_context is not None else None,
            ),
        ).lastrowid
        if row is None:
            conn.execute(
                self.sql_upsert, (pk, sk, doc, version, db.region, prev_hlc, prev_region, seq, khash, rhash)
            )
        else:
            conn.execute(
                self._sql_update, (doc, version, db.region, prev_hlc, prev_region, seq, rhash, pk, sk)
            )
        return old, True
