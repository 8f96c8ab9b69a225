"""SqliteSql: the SqlDatabase port on one SQLite file (WAL), the blog's embedded default."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal, cast

from bookstore.blog.port import Executed, Param, Row
from bookstore.domain.errors import Conflict, StorageError
from bookstore.storage.durability import DEFAULT as DEFAULT_DURABILITY
from bookstore.storage.durability import Durability
from bookstore.storage.sqlite.engine import SqliteEngine


def _failure(path: Path, what: str, exc: sqlite3.Error | OverflowError) -> Exception:
    """The storage error an engine error becomes: Conflict for unique violations, else StorageError."""
    if isinstance(exc, sqlite3.IntegrityError) and (
        "UNIQUE constraint failed" in str(exc) or "PRIMARY KEY" in str(exc)
    ):
        return Conflict(f"{what}: a row with this key already exists ({exc})")
    return StorageError(f"SQLite {path}: {what} failed: {exc}")


def _executed(sql: str, cursor: sqlite3.Cursor) -> Executed:
    rowcount = max(cursor.rowcount, 0)
    # lastrowid belongs to the connection: after any other statement it still names the last insert.
    inserted = rowcount == 1 and sql.lstrip()[:7].upper() in ("INSERT ", "REPLACE")
    return Executed(rowcount=rowcount, last_id=cursor.lastrowid if inserted and cursor.lastrowid else None)


class _Session:
    """Statements on the writer connection inside the transaction that opened it."""

    def __init__(self, owner: SqliteSql, conn: sqlite3.Connection) -> None:
        self._owner = owner
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Param] = ()) -> Executed:
        try:
            return _executed(sql, self._conn.execute(sql, tuple(params)))
        except (sqlite3.Error, OverflowError) as exc:
            raise _failure(self._owner.path, "execute", exc) from exc

    def executemany(self, sql: str, rows: Sequence[Sequence[Param]]) -> int:
        try:
            cursor = self._conn.executemany(sql, [tuple(r) for r in rows])
        except (sqlite3.Error, OverflowError) as exc:
            raise _failure(self._owner.path, "executemany", exc) from exc
        return max(cursor.rowcount, 0)

    def query(self, sql: str, params: Sequence[Param] = ()) -> list[Row]:
        try:
            return cast(list[Row], self._conn.execute(sql, tuple(params)).fetchall())
        except (sqlite3.Error, OverflowError) as exc:
            raise _failure(self._owner.path, "query", exc) from exc


class SqliteSql:
    """The SqlDatabase port on a SQLite file, through the one engine (engine.SqliteEngine).

    WAL with synchronous=NORMAL: a committed transaction survives a kill -9 of the process (only an
    operating-system crash could lose the last ones); with durability "power", synchronous=FULL, it
    survives a power loss too. Write transactions are BEGIN IMMEDIATE, so they are
    serialised from their first statement, also against other processes using the same file.
    """

    dialect: Literal["sqlite"] = "sqlite"

    def __init__(self, path: Path | str, durability: Durability = DEFAULT_DURABILITY) -> None:
        self.path = Path(path)
        self.durability = durability
        self._local = threading.local()
        self.engine = SqliteEngine(
            self.path,
            durability=durability,
            translate=lambda what, exc: _failure(self.path, what, exc),
        )

    @contextmanager
    def transaction(self) -> Iterator[_Session]:
        if getattr(self._local, "in_transaction", False):
            raise StorageError(f"SQLite {self.path}: a transaction is already open on this thread")
        self._local.in_transaction = True
        try:
            with self.engine.transaction("transaction") as conn:
                yield _Session(self, conn)
        finally:
            self._local.in_transaction = False

    def execute(self, sql: str, params: Sequence[Param] = ()) -> Executed:
        with self.transaction() as tx:
            return tx.execute(sql, params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Param]]) -> int:
        with self.transaction() as tx:
            return tx.executemany(sql, rows)

    def query(self, sql: str, params: Sequence[Param] = ()) -> list[Row]:
        if getattr(self._local, "in_transaction", False):
            raise StorageError(
                f"SQLite {self.path}: inside a transaction, query through it, not the database"
            )
        conn = self.engine.reader()
        try:
            return cast(list[Row], conn.execute(sql, tuple(params)).fetchall())
        except (sqlite3.Error, OverflowError) as exc:
            raise _failure(self.path, "query", exc) from exc

    def close(self) -> None:
        self.engine.close()
