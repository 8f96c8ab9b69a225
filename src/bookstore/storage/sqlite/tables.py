"""SQLite tables: one file per region holding every table's items, versions, tombstones and change log."""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import orjson

from bookstore.domain.errors import ConditionFailed, StorageError, ValidationError
from bookstore.ports import (
    ChangeBatch,
    ChangeKind,
    ChangeRecord,
    Clock,
    Condition,
    Index,
    Item,
    Key,
    Page,
    SortRange,
    TableSchema,
)
from bookstore.replication.clock import HybridLogicalClock, SystemClock
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

# Tables without a sort key store this constant in the sort column, so one primary key shape fits all.
NO_SORT = ""
BUSY_TIMEOUT_MS = 10_000
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")

_DATABASE_SQL = """
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS hlc (id INTEGER PRIMARY KEY CHECK (id = 0), version INTEGER NOT NULL);
INSERT OR IGNORE INTO hlc (id, version) VALUES (0, 0);
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    tbl TEXT NOT NULL,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    old TEXT,
    new TEXT,
    written_ms INTEGER NOT NULL,
    origin TEXT NOT NULL,
    hlc INTEGER NOT NULL,
    region TEXT NOT NULL,
    prev_hlc INTEGER,
    prev_region TEXT
);
CREATE INDEX IF NOT EXISTS changes_by_table ON changes (tbl, seq);
COMMIT;
"""

Version = tuple[int, str]


@dataclass(frozen=True)
class LogEntry:
    """One record of the region's change log, with the versions replication needs."""

    seq: int
    table: str
    kind: ChangeKind
    key: Key
    old: Item | None
    new: Item | None
    written_ms: int
    origin: str
    version: Version
    # The version the item (or its tombstone) had before this change; None when it never existed here.
    previous: Version | None


def _checked_name(kind: str, name: str) -> str:
    if not _NAME.match(name):
        raise ValidationError(f"{kind} name {name!r} may hold only letters, digits, '_', '.' and '-'")
    return name


def _quoted(identifier: str) -> str:
    return '"' + identifier + '"'


def _json_path(attribute: str) -> str:
    if any(c in attribute for c in "\"'\\"):
        raise ValidationError(f"index attribute {attribute!r} may not contain quotes or backslashes")
    return f"json_extract(doc, '$.\"{attribute}\"')"


def _loads(doc: str | None) -> Item | None:
    return None if doc is None else cast(Item, orjson.loads(doc))


class SqliteDatabase:
    """One SQLite file (WAL) holding all of a region's tables and its change log.

    Safe from several threads (one writer connection behind a lock, one reader connection per thread)
    and from several processes on the same file (SQLite's locks, with a busy timeout). A write returns
    after its transaction committed to the WAL, so it survives a kill -9 of the process.
    """

    def __init__(
        self,
        path: Path,
        region: str,
        clock: Clock | None = None,
        *,
        hlc: HybridLogicalClock | None = None,
    ) -> None:
        self.path = Path(path)
        self.region = region
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.hlc = hlc if hlc is not None else HybridLogicalClock(self.clock)
        self._tables: dict[str, SqliteTable] = {}
        self._write_lock = threading.RLock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._closed = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = self._connect()
            self._writer.execute("PRAGMA journal_mode=WAL").fetchall()
            self._script(_DATABASE_SQL)
            # A restart with the wall clock behind the last version must still issue later versions.
            (stored,) = self._writer.execute("SELECT version FROM hlc WHERE id = 0").fetchone()
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"cannot open SQLite database {self.path}: {exc}") from exc
        self.hlc.advance(stored)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000
        )
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def _script(self, script: str) -> None:
        try:
            self._writer.executescript(script)
        except BaseException:
            if self._writer.in_transaction:
                self._writer.execute("ROLLBACK")
            raise

    def _reader(self) -> sqlite3.Connection:
        try:
            return cast(sqlite3.Connection, self._local.conn)
        except AttributeError:
            pass
        if self._closed:
            raise StorageError(f"SQLite database {self.path} is closed")
        conn = self._connect()
        with self._readers_lock:
            self._readers.append(conn)
        self._local.conn = conn
        return conn

    def table(self, schema: TableSchema) -> SqliteTable:
        """The table of `schema`, created (with its indexes) when absent."""
        with self._write_lock:
            existing = self._tables.get(schema.name)
            if existing is not None:
                if existing.schema != schema:
                    raise ValidationError(f"table {schema.name} is already open with another schema")
                return existing
            table = SqliteTable(self, schema)
            try:
                self._script(table.creation_sql())
            except sqlite3.Error as exc:
                raise StorageError(f"cannot create table {schema.name} in {self.path}: {exc}") from exc
            self._tables[schema.name] = table
            return table

    def read_log(self, after: int = 0, *, limit: int = 100, table: str | None = None) -> list[LogEntry]:
        """Log records with seq > `after`, in commit order; of one table when `table` is given."""
        check_limit(limit)
        sql = (
            "SELECT seq, tbl, kind, key, old, new, written_ms, origin, hlc, region, prev_hlc, prev_region "
            "FROM changes WHERE seq > ? "
        )
        params: tuple[Any, ...] = (after, limit)
        if table is not None:
            sql += "AND tbl = ? "
            params = (after, table, limit)
        try:
            rows = self._reader().execute(sql + "ORDER BY seq LIMIT ?", params).fetchall()
        except sqlite3.Error as exc:
            raise StorageError(f"cannot read the change log of {self.path}: {exc}") from exc
        return [
            LogEntry(
                seq=seq,
                table=tbl,
                kind=kind,
                key=orjson.loads(key),
                old=_loads(old),
                new=_loads(new),
                written_ms=written_ms,
                origin=origin,
                version=(hlc, region),
                previous=None if prev_hlc is None else (prev_hlc, prev_region),
            )
            for seq, tbl, kind, key, old, new, written_ms, origin, hlc, region, prev_hlc, prev_region in rows
        ]

    def close(self) -> None:
        with self._write_lock, self._readers_lock:
            if self._closed:
                return
            self._closed = True
            for conn in [*self._readers, self._writer]:
                conn.close()
            self._readers.clear()

    def __enter__(self) -> SqliteDatabase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SqliteTable:
    """The Table port over one SQL table of a SqliteDatabase; deletes leave versioned tombstones."""

    def __init__(self, db: SqliteDatabase, schema: TableSchema) -> None:
        self.schema = schema
        self._db = db
        self._name = _checked_name("table", schema.name)
        self._sql_table = _quoted("items_" + self._name)
        t = self._sql_table
        self._sql_get = f"SELECT doc FROM {t} WHERE pk = ? AND sk = ?"
        self._sql_current = f"SELECT doc, hlc, region FROM {t} WHERE pk = ? AND sk = ?"
        self._sql_upsert = (
            f"INSERT INTO {t} (pk, sk, doc, hlc, region) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (pk, sk) DO UPDATE SET "
            "doc = excluded.doc, hlc = excluded.hlc, region = excluded.region"
        )
        self._sql_changes = (
            "SELECT seq, kind, key, old, new, written_ms, origin FROM changes "
            "WHERE tbl = ? AND seq > ? ORDER BY seq LIMIT ?"
        )
        for index in schema.indexes:
            _checked_name("index", index.name)

    def creation_sql(self) -> str:
        """The statements creating this table and its secondary indexes (idempotent)."""
        statements = [
            "BEGIN IMMEDIATE",
            f"CREATE TABLE IF NOT EXISTS {self._sql_table} (pk NOT NULL, sk NOT NULL, doc TEXT, "
            "hlc INTEGER NOT NULL, region TEXT NOT NULL, PRIMARY KEY (pk, sk)) WITHOUT ROWID",
        ]
        for index in self.schema.indexes:
            columns = [_json_path(index.partition_key)]
            if index.sort_key is not None:
                columns.append(_json_path(index.sort_key))
            statements.append(
                f"CREATE INDEX IF NOT EXISTS {_quoted('ix_' + self._name + '_' + index.name)} "
                f"ON {self._sql_table} ({', '.join([*columns, 'pk', 'sk'])}) WHERE doc IS NOT NULL"
            )
        statements.append("COMMIT")
        return ";\n".join(statements) + ";"

    # -- reads ---------------------------------------------------------------------------------------

    def get(self, key: Key) -> Item | None:
        pk, sk = key_parts(self.schema, key)
        try:
            rows = self._db._reader().execute(self._sql_get, (pk, NO_SORT if sk is None else sk)).fetchall()
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
                self._db._reader().execute(self._sql_current, (pk, NO_SORT if sk is None else sk)).fetchall()
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
            rows = self._db._reader().execute("EXPLAIN QUERY PLAN " + sql, (*params, 1)).fetchall()
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
        try:
            rows = self._db._reader().execute(self._sql_changes, (self._name, after, limit)).fetchall()
        except sqlite3.Error as exc:
            raise StorageError(f"table {self.schema.name}: reading changes failed: {exc}") from exc
        records = [
            ChangeRecord(
                kind=kind,
                key=orjson.loads(key),
                old=_loads(old),
                new=_loads(new),
                written_ms=written_ms,
                origin=origin,
            )
            for _, kind, key, old, new, written_ms, origin in rows
        ]
        return ChangeBatch(records=records, cursor=str(rows[-1][0] if rows else after))

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
            rows = self._db._reader().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StorageError(f"table {self.schema.name}: query failed: {exc}") from exc
        items = [cast(Item, orjson.loads(row[0])) for row in rows[:limit]]
        if len(rows) <= limit:
            return Page(items=items)
        return Page(items=items, cursor=encode_cursor(list(rows[limit - 1][1 : 1 + width])))

    # -- writes --------------------------------------------------------------------------------------

    def put(self, item: Item, *, condition: Condition | None = None) -> None:
        key = check_item(self.schema, item)
        doc = orjson.dumps(item).decode()
        self._write(key, condition, lambda _old: doc)

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

    def _write(self, key: Key, condition: Condition | None, new_doc: Any) -> Item | None:
        """One transaction: check `condition`, write `new_doc(old)` (None = tombstone), log the change.

        Returns the old item.
        """
        pk, sk = key_parts(self.schema, key)
        sk_value: KeyValue = NO_SORT if sk is None else sk
        db = self._db
        with db._write_lock:
            conn = db._writer
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    old = self._write_locked(conn, key, pk, sk_value, condition, new_doc)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                return old
            except sqlite3.Error as exc:
                raise StorageError(f"table {self.schema.name}: write failed: {exc}") from exc

    def _write_locked(
        self,
        conn: sqlite3.Connection,
        key: Key,
        pk: KeyValue,
        sk: KeyValue,
        condition: Condition | None,
        new_doc: Any,
    ) -> Item | None:
        row = conn.execute(self._sql_current, (pk, sk)).fetchone()
        old_doc: str | None = None if row is None else row[0]
        old = _loads(old_doc)
        if not holds(condition, old):
            raise ConditionFailed(f"table {self.schema.name}: condition {condition} does not hold for {key}")
        doc: str | None = new_doc(old)
        if doc is None and old is None:
            return None
        kind: ChangeKind = "REMOVE" if doc is None else "INSERT" if old is None else "MODIFY"
        db = self._db
        candidate = db.hlc.now()
        # Another process writing to the same file shares this row, so versions stay unique and ordered.
        (version,) = conn.execute(
            "UPDATE hlc SET version = max(version + 1, ?) WHERE id = 0 RETURNING version", (candidate,)
        ).fetchone()
        if version != candidate:
            db.hlc.advance(version)
        conn.execute(self._sql_upsert, (pk, sk, doc, version, db.region))
        conn.execute(
            "INSERT INTO changes (tbl, kind, key, old, new, written_ms, origin, hlc, region, prev_hlc, "
            "prev_region) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                self._name,
                kind,
                orjson.dumps(key).decode(),
                old_doc,
                doc,
                db.clock.now_ms(),
                db.region,
                version,
                db.region,
                None if row is None else row[1],
                None if row is None else row[2],
            ),
        )
        return old
